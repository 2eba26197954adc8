"""Issue 15: service vs sojourn latency and load, overlapped resources, the layer-pipelined
architecture, what bounds a config, and ``memory: scalesim`` in the accelerator model."""
import dataclasses
import json

import numpy as np
import pytest

from common.errors import InputError
from hwsim.closed_form import evaluate
from hwsim.costs import bound_of, build_costs
from hwsim.replay import replay
from hwsim.trace import synthetic_trace

from hwsim_helpers import CANDS, TINY, VIT_B_32, arch, make_trace, run_cli

VIT_B_16 = dataclasses.replace(VIT_B_32, model="ViT-B-16", patch_size=16, grid=14, patch_tokens=196, tokens=197)


def _trace(n=301, seed=3):
    el, cor = synthetic_trace(n, 12, CANDS, seed=seed)
    return make_trace(el, correct=cor)


def _pipe(**kw):
    d = {"architecture": "pipelined",
         "stages": [{"blocks": [1, 6], "array": {"rows": 32, "cols": 32}},
                    {"blocks": [7, 12], "array": {"rows": 16, "cols": 32}}]}
    d.update(kw)
    from hwsim.config import arch_from_dict
    return arch_from_dict(d)


# ---- 1. latency and load ---------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["static", "stream"])
def test_service_latency_excludes_queueing(policy):
    a = arch(batch__policy=policy)
    tr = _trace()
    c = build_costs(a, TINY, 25, a.effective_batch)
    r, f = replay(a, c, tr), evaluate(c, tr, policy, a.effective_batch)
    np.testing.assert_array_equal(r["_service_latency_us"], f["_service_latency_us"])
    # closed arrivals: the sojourn is mostly waiting; service is one group's run
    assert r["service_latency_us"]["p50"] * 10 < r["latency_us"]["p50"]
    B = a.effective_batch
    full_group = sum(int(c.array_cycles[s][B] + c.vector_cycles[s][B]) for s in ("patch", "final")) + 12 * int(
        c.array_cycles["block"][B] + c.vector_cycles["block"][B]) + 4 * int(
        c.array_cycles["head"][B] + c.vector_cycles["head"][B] + c.exit_cycles[B])
    assert r["service_latency_us"]["p99"] <= full_group / a.clock_mhz + 1e-9


def test_regroup_records_service_start():
    a = arch(batch__policy="regroup")
    tr = _trace()
    r = replay(a, build_costs(a, TINY, 25, 8), tr)
    assert (r["start_cycles"] <= r["finish_cycles"]).all() and (r["start_cycles"] >= r["arrival_cycles"]).all()
    assert r["service_latency_us"]["p50"] < r["latency_us"]["p50"]


def test_load_sweep_seeded_and_monotone():
    from hwsim.load import capacity_img_s, load_sweep
    a = arch(batch__policy="stream")
    tr = _trace(400)
    s1 = load_sweep(a, TINY, tr, (0.1, 0.5, 0.9), slo_us=2000.0)
    s2 = load_sweep(a, TINY, tr, (0.1, 0.5, 0.9), slo_us=2000.0)
    assert s1 == s2                                             # seeded Poisson arrivals
    assert s1["capacity_img_s"] == pytest.approx(capacity_img_s(a, TINY, tr))
    rows = s1["rows"]
    for r in rows:
        assert r["rate_img_s"] == pytest.approx(r["load"] * s1["capacity_img_s"])
        assert 0 <= r["slo_attainment"] <= 1
        assert r["sojourn_p50_us"] >= r["service_p50_us"] - 1e-9
    soj = [r["sojourn_p99_us"] for r in rows]
    assert soj[0] <= soj[1] <= soj[2]
    assert rows[0]["slo_attainment"] >= rows[2]["slo_attainment"]
    # at low load a stream sample waits little: sojourn close to service
    assert rows[0]["sojourn_p50_us"] < 1.2 * rows[0]["service_p50_us"]


def test_sim_cli_reports_service_and_load(tmp_path):
    from hwsim.trace import write_trace
    el, cor = synthetic_trace(120, 12, CANDS, seed=0)
    write_trace(tmp_path / "t.csv", el, CANDS, 12, num_classes=25, correct=cor, geometry=TINY)
    rc, out, err = run_cli(["sim", "--trace", str(tmp_path / "t.csv"), "--out", str(tmp_path / "o"),
                            "--load", "0.7", "--load-sweep", "0.2,0.7"])
    assert rc == 0, err
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert s["at_load"]["load"] == 0.7 and [r["load"] for r in s["load_sweep"]["rows"]] == [0.2, 0.7]
    assert s["bound"]["bound"] in ("compute", "dram_bandwidth", "psum_spill", "vector_unit", "exit_unit")
    assert "service_latency_us" in (tmp_path / "o" / "samples.csv").read_text().splitlines()[0]
    assert "at load 0.7" in out
    for bad, field in ((["--load-sweep", "0.2,x"], "--load-sweep"), (["--load", "0"], "--load"),
                       (["--size-stages", "64"], "--size-stages")):
        rc, _, err = run_cli(["sim", "--trace", str(tmp_path / "t.csv"), "--out", str(tmp_path / "b"), *bad])
        assert rc == 2 and field in err and err.count("\n") == 1


# ---- 2. overlap ------------------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["static", "stream"])
@pytest.mark.parametrize("mode", ["closed", "poisson"])
def test_overlap_bounded_by_busy_and_serial_sum(policy, mode):
    from hwsim.overlap import evaluate_overlap
    a = arch(batch__policy=policy, overlap=True, arrivals__mode=mode, arrivals__rate_per_s=3000)
    tr = _trace()
    c = build_costs(a, TINY, 25, a.effective_batch)
    o = evaluate_overlap(a, c, tr)
    assert o["makespan_cycles"] >= max(o["busy_cycles"].values())
    assert o["makespan_cycles"] <= o["serial_sum_cycles"] + int(o["arrival_cycles"].max())
    assert (o["finish_cycles"] >= o["start_cycles"]).all() and (o["start_cycles"] >= o["arrival_cycles"]).all()
    if mode == "closed":
        serial = evaluate(c, tr, policy, a.effective_batch)
        assert o["makespan_cycles"] < serial["makespan_cycles"]        # two groups overlap
        assert o["energy_pj"]["mac"] == serial["energy_pj"]["mac"]    # same work


def test_overlap_one_sample_one_layer_is_the_stage_sum():
    from hwsim.overlap import evaluate_overlap
    a = arch(batch__policy="stream", overlap=True)
    tr = make_trace([12])
    c = build_costs(a, TINY, 25, 1)
    o = evaluate_overlap(a, c, tr)
    # layer 1 cannot overlap anything: DRAM, then compute, vector (no head at 1)
    first = int(c.dram_cycles["block"][1] + c.dram_cycles["patch"][1] + c.compute_cycles["block"][1]
                + c.compute_cycles["patch"][1] + c.vector_cycles["block"][1] + c.vector_cycles["patch"][1])
    assert o["makespan_cycles"] >= first
    assert o["makespan_cycles"] <= o["serial_sum_cycles"]


def test_overlap_config_errors():
    assert arch(overlap=True, batch__policy="regroup").overlap          # issue 15: regroup is supported
    with pytest.raises(InputError, match="max_in_flight"):
        arch(overlap=True, batch__max_in_flight=2)


@pytest.mark.parametrize("policy", ["static", "stream"])
@pytest.mark.parametrize("mode", ["closed", "poisson"])
@pytest.mark.parametrize("df", ["ws", "os"])
def test_overlap_replay_equals_closed_form(policy, mode, df):
    """Where both apply (static, stream), the SimPy resources give the closed form's schedule."""
    from hwsim.overlap import evaluate_overlap
    from hwsim.overlap_replay import replay_overlap
    a = arch(batch__policy=policy, overlap=True, arrivals__mode=mode, arrivals__rate_per_s=3000, array__dataflow=df)
    tr = _trace()
    c = build_costs(a, TINY, 25, a.effective_batch)
    o, r = evaluate_overlap(a, c, tr), replay_overlap(a, c, tr)
    np.testing.assert_array_equal(r["finish_cycles"], o["finish_cycles"])
    np.testing.assert_array_equal(r["start_cycles"], o["start_cycles"])
    assert r["makespan_cycles"] == o["makespan_cycles"] and r["busy_cycles"] == o["busy_cycles"]
    assert r["energy_pj"] == o["energy_pj"] and r["serial_sum_cycles"] == o["serial_sum_cycles"]


@pytest.mark.parametrize("df", ["ws", "os", "is"])
@pytest.mark.parametrize("size", [1, 8])
@pytest.mark.parametrize("gbps", [0.8, 12.8])
def test_overlap_regroup_bounded_by_busy_and_non_overlapped(df, size, gbps):
    """Closed arrivals: every resource's busy time <= overlapped makespan <= the non-overlapped
    regroup replay's makespan (the analytical memory model charges every DRAM cycle there)."""
    from hwsim.overlap import evaluate_overlapped
    a = arch(batch__policy="regroup", batch__size=size, array__dataflow=df, dram__bandwidth_gbps=gbps)
    tr = _trace(97, seed=1)
    c = build_costs(a, TINY, 25, size)
    o = evaluate_overlapped(a.model_copy(update={"overlap": True}), c, tr)
    s = replay(a, c, tr)
    assert o["evaluator"] == "overlap_replay"
    assert max(o["busy_cycles"].values()) <= o["makespan_cycles"] <= s["makespan_cycles"]
    assert o["makespan_cycles"] <= o["serial_sum_cycles"]
    assert o["macs"] == s["macs"]                                      # the same work, regrouped
    assert (o["finish_cycles"] > 0).all() and (o["finish_cycles"] >= o["start_cycles"]).all()


def test_overlap_regroup_poisson_and_cli(tmp_path):
    from hwsim.overlap import evaluate_overlapped
    from hwsim.trace import write_trace
    a = arch(batch__policy="regroup", overlap=True, arrivals__mode="poisson", arrivals__rate_per_s=3000)
    tr = _trace()
    o = evaluate_overlapped(a, build_costs(a, TINY, 25, 8), tr)
    assert o["makespan_cycles"] >= max(o["busy_cycles"].values())
    assert o["makespan_cycles"] <= o["serial_sum_cycles"] + int(o["arrival_cycles"].max())
    assert (o["start_cycles"] >= o["arrival_cycles"]).all() and (o["finish_cycles"] >= o["start_cycles"]).all()
    el, cor = synthetic_trace(60, 12, CANDS, seed=0)
    write_trace(tmp_path / "t.csv", el, CANDS, 12, num_classes=25, correct=cor, geometry=TINY)
    (tmp_path / "a.yaml").write_text("overlap: true\nbatch: {policy: regroup, size: 4}\n")
    rc, out, err = run_cli(["sim", "--arch", str(tmp_path / "a.yaml"), "--trace", str(tmp_path / "t.csv"),
                            "--out", str(tmp_path / "o"), "--load-sweep", "none"])
    assert rc == 0, err
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert s["early_exit"]["evaluator"] == "overlap_replay"


# ---- 3. pipelined ----------------------------------------------------------------------------
def test_one_stage_pipeline_equals_monolithic_stream():
    from hwsim.config import arch_from_dict
    from hwsim.pipelined import evaluate_pipelined
    p = arch_from_dict({"architecture": "pipelined", "stages": [{"blocks": [1, 12]}]})
    tr = _trace()
    s = evaluate_pipelined(p, TINY, tr)
    a = arch(batch__policy="stream")
    f = evaluate(build_costs(a, TINY, 25, 1), tr, "stream", 1)
    assert s["makespan_cycles"] == f["makespan_cycles"]
    np.testing.assert_array_equal(s["_latency_us"], f["_latency_us"])
    for k in ("mac", "sram", "dram", "vector", "exit"):
        assert s["energy_pj"][k] == pytest.approx(f["energy_pj"][k])


def test_pipeline_bottleneck_and_reach():
    from hwsim.pipelined import evaluate_pipelined
    p = _pipe()
    rng = np.random.default_rng(0)
    tr = make_trace(rng.permutation(np.r_[np.full(600, 4), np.full(400, 12)]))   # 60 % exit in stage 1
    s = evaluate_pipelined(p, TINY, tr)
    st = s["pipeline"]["stages"]
    assert st[1]["reach_fraction"] == pytest.approx(0.4)
    assert s["throughput_img_s"] == pytest.approx(s["pipeline"]["throughput_bound_img_s"], rel=0.02)
    # a stage serves only the samples that reach it
    none = evaluate_pipelined(p, TINY, make_trace(np.full(50, 6)))
    assert none["pipeline"]["stages"][1]["busy_cycles"] == 0
    full = evaluate_pipelined(p, TINY, tr.full_depth())
    assert s["throughput_img_s"] > full["throughput_img_s"]
    # conditional buffers: depth >= 1 sample at every candidate, sized in activations
    kib = TINY.tokens * TINY.width / 1024
    for b in s["pipeline"]["conditional_buffers"]:
        assert b["depth_samples"] >= 1 and b["kib"] == pytest.approx(b["depth_samples"] * kib)


def test_conditional_buffer_fills_when_the_next_stage_is_slower():
    from hwsim.pipelined import evaluate_pipelined
    slow2 = _pipe(stages=[{"blocks": [1, 6], "array": {"rows": 64, "cols": 64}},
                          {"blocks": [7, 12], "array": {"rows": 8, "cols": 8}}])
    tr = make_trace(np.full(40, 12))
    s = evaluate_pipelined(slow2, TINY, tr)
    b6 = next(b for b in s["pipeline"]["conditional_buffers"] if b["layer"] == 6)
    assert b6["at_stage_boundary"] and b6["depth_samples"] > 10      # closed arrivals pile up before stage 2
    assert s["pipeline"]["bottleneck_stage"] == 2


def test_allocate_pes_within_budget_and_better_than_equal_split():
    from hwsim.pipelined import allocate_pes, evaluate_pipelined
    p = _pipe(stages=[{"blocks": [1, 6], "array": {"rows": 32, "cols": 16}},
                      {"blocks": [7, 12], "array": {"rows": 32, "cols": 16}}])
    tr = make_trace(np.random.default_rng(1).permutation(np.r_[np.full(700, 6), np.full(300, 12)]))
    sized, info = allocate_pes(p, TINY, tr, 1024)
    assert info["pes"] <= 1024
    assert sum(st.array.rows * st.array.cols for st in sized.stages) == info["pes"]
    a, b = evaluate_pipelined(sized, TINY, tr), evaluate_pipelined(p, TINY, tr)
    assert a["throughput_img_s"] >= b["throughput_img_s"]
    assert sized.stages[0].array.rows * sized.stages[0].array.cols > sized.stages[1].array.rows * sized.stages[1].array.cols
    with pytest.raises(InputError, match="--pe-budget"):
        allocate_pes(p, TINY, tr, 10)


def test_pipelined_config_errors():
    with pytest.raises(InputError, match=r"stages\[1\].blocks starts at 8, expected 7"):
        _pipe(stages=[{"blocks": [1, 6]}, {"blocks": [8, 12]}])
    with pytest.raises(InputError, match="needs stages"):
        _pipe(stages=[])
    with pytest.raises(InputError, match="only used with architecture: pipelined"):
        arch(stages=[{"blocks": [1, 12]}])
    with pytest.raises(InputError, match="architecture.*allowed: monolithic, pipelined"):
        arch(architecture="systolic")
    from hwsim.pipelined import evaluate_pipelined
    with pytest.raises(InputError, match="stages covering blocks 1..12"):
        evaluate_pipelined(_pipe(stages=[{"blocks": [1, 10]}]), TINY, _trace())


def test_pipeline_sweep_cli(tmp_path):
    g = tmp_path / "g.json"
    g.write_text(json.dumps(dataclasses.asdict(TINY)))
    a = tmp_path / "p.yaml"
    a.write_text("architecture: pipelined\nstages:\n  - {blocks: [1, 6], array: {rows: 16, cols: 16}}\n"
                 "  - {blocks: [7, 12], array: {rows: 16, cols: 16}}\n")
    rc, out, err = run_cli(["pipeline-sweep", "--arch", str(a), "--geometry", str(g), "--probs", "0,0.6",
                            "--n", "200", "--out", str(tmp_path / "o")])
    assert rc == 0, err
    s = json.loads((tmp_path / "o" / "sweep.json").read_text())
    rows = {(r["exit_probability"], r["design"]): r for r in s["rows"]}
    assert rows[(0.6, "sized")]["throughput_img_s"] > rows[(0.6, "no_exit")]["throughput_img_s"]
    assert rows[(0.6, "sized")]["pes_total"] <= 512 and rows[(0.6, "no_exit")]["pes_total"] <= 512
    assert (tmp_path / "o" / "sweep.png").stat().st_size > 1000
    rc, _, err = run_cli(["pipeline-sweep", "--arch", str(a), "--geometry", str(g), "--probs", "1.5",
                          "--out", str(tmp_path / "b")])
    assert rc == 2 and "--probs" in err


# ---- 5. bounds -------------------------------------------------------------------------------
def test_ws128_on_vit_b16_is_psum_spill_bound_and_slower_than_ws32():
    # one image per group (stream): the default 128 KiB ofmap buffer holds a 32-column psum
    # tile of 197 rows in its 64 KiB half (197 x 32 x 4 B = 25 KiB) but not a 128-column one (101 KiB)
    big, small = arch(array__rows=128, array__cols=128), arch()
    cb, cs = build_costs(big, VIT_B_16, 1000, 1), build_costs(small, VIT_B_16, 1000, 1)
    assert bound_of(cb, 1)["bound"] == "psum_spill" and bound_of(cs, 1)["bound"] == "compute"
    assert cb.array_cycles["block"][1] > cs.array_cycles["block"][1]
    # buffers scaled with the array (16 x) remove the spill
    scaled = arch(array__rows=128, array__cols=128, sram__ifmap_kb=4096, sram__filter_kb=4096, sram__ofmap_kb=2048)
    cx = build_costs(scaled, VIT_B_16, 1000, 1)
    assert bound_of(cx, 1)["bound"] == "compute"
    assert cx.array_cycles["block"][1] < cs.array_cycles["block"][1]
    # batch 8 stacks 1576 rows: every array size spills with the default buffers
    assert bound_of(build_costs(small, VIT_B_16, 1000, 8), 8)["bound"] == "psum_spill"


def test_dse_rows_say_bound_and_scale_sram(tmp_path):
    from hwsim.trace import write_trace
    el, cor = synthetic_trace(60, 12, CANDS, seed=0)
    write_trace(tmp_path / "t.csv", el, CANDS, 12, num_classes=25, correct=cor, geometry=TINY)
    (tmp_path / "s.yaml").write_text("parameters:\n  array.rows: [16, 64]\nscale_sram_with_array: {reference_pes: 512}\n")
    rc, _, err = run_cli(["dse", "--space", str(tmp_path / "s.yaml"), "--trace", str(tmp_path / "t.csv"),
                          "--out", str(tmp_path / "o"), "--workers", "1", "--no-progress"])
    assert rc == 0, err
    import csv
    rows = list(csv.DictReader((tmp_path / "o" / "results.csv").open()))
    assert [float(r["sram_kb"]) for r in rows] == [640 * 512 / 512, 640 * 2048 / 512]
    assert all(r["bound"] in ("compute", "dram_bandwidth", "psum_spill", "vector_unit") for r in rows)
    assert all(float(r["service_latency_p95_us"]) < float(r["latency_p95_us"]) for r in rows)
    assert "service_latency_p95_us" in (tmp_path / "o" / "pareto.csv").read_text().splitlines()[0]
    (tmp_path / "s.yaml").write_text("parameters:\n  array.rows: [16]\nscale_sram_with_array: 2\n")
    rc, _, err = run_cli(["dse", "--space", str(tmp_path / "s.yaml"), "--trace", str(tmp_path / "t.csv"),
                          "--out", str(tmp_path / "o2"), "--workers", "1", "--no-progress"])
    assert rc == 2 and "scale_sram_with_array" in err


# ---- 4. memory: scalesim in the accelerator model --------------------------------------------
def test_memory_scalesim_mode_uses_scalesim_counts():
    from hwsim.memory import gemm_memory
    from hwsim.scalesim_memory import scalesim_memory
    a = arch(memory="scalesim", array__rows=8, array__cols=4, sram__ifmap_kb=64, sram__filter_kb=64,
             sram__ofmap_kb=64, clock_mhz=1000, dram__bandwidth_gbps=10)
    g = gemm_memory(20, 9, 12, 1, True, a)
    r = scalesim_memory(20, 9, 12, 8, 4, "ws", 64, 64, 64, 10)
    assert int(g.dram_bytes) == int(r.ifmap_dram_reads + r.filter_dram_reads + r.ofmap_dram_writes) == 320 + 110 + 480
    assert int(g.stall_cycles) == 0 and int(g.compute_cycles) == 227
    c = build_costs(arch(memory="scalesim"), TINY, 25, 8)
    assert c.array_cycles["block"][8] > 0


def test_compare_variants_run(tmp_path):
    """The designs lraee run puts side by side: each variant is an arch YAML lraee sim runs."""
    import yaml
    from hwsim.compare import VARIANTS, split_layer, variants
    from hwsim.trace import write_trace
    assert split_layer([4, 6, 8, 10], 12) == 6 and split_layer([], 12) == 6 and split_layer([3, 9], 12) == 3
    base = {"array": {"rows": 16, "cols": 16}, "batch": {"size": 4}}
    vs = variants(base, [4, 6, 8, 10], 12)
    assert tuple(vs) == VARIANTS
    el, cor = synthetic_trace(60, 12, CANDS, seed=0)
    write_trace(tmp_path / "t.csv", el, CANDS, 12, num_classes=25, correct=cor, geometry=TINY)
    for name, (a, flags) in vs.items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(a))
        rc, _, err = run_cli(["sim", "--arch", str(tmp_path / f"{name}.yaml"), "--trace", str(tmp_path / "t.csv"),
                              "--out", str(tmp_path / name), "--load-sweep", "none",
                              *[str(x) for k, v in flags.items() for x in ("--" + k.replace("_", "-"), v)]])
        assert rc == 0, (name, err)
        s = json.loads((tmp_path / name / "summary.json").read_text())
        assert s["at_load"]["load"] == 0.5
    s = json.loads((tmp_path / "pipelined" / "summary.json").read_text())
    assert s["arch"]["architecture"] == "pipelined" and s["early_exit"]["pipeline"]["pes_total"] <= 256
    assert [st["blocks"] for st in s["arch"]["stages"]] == [[1, 6], [7, 12]]


def test_dse_over_a_pipelined_base(tmp_path):
    from hwsim.trace import write_trace
    el, cor = synthetic_trace(60, 12, CANDS, seed=0)
    write_trace(tmp_path / "t.csv", el, CANDS, 12, num_classes=25, correct=cor, geometry=TINY)
    (tmp_path / "p.yaml").write_text("architecture: pipelined\nstages:\n  - {blocks: [1, 6]}\n  - {blocks: [7, 12]}\n")
    (tmp_path / "s.yaml").write_text("base: p.yaml\nparameters:\n  clock_mhz: [250, 500]\n")
    rc, _, err = run_cli(["dse", "--space", str(tmp_path / "s.yaml"), "--trace", str(tmp_path / "t.csv"),
                          "--out", str(tmp_path / "o"), "--workers", "1", "--no-progress"])
    assert rc == 0, err
    import csv
    rows = list(csv.DictReader((tmp_path / "o" / "results.csv").open()))
    assert [r["evaluator"] for r in rows] == ["pipelined"] * 2 and rows[0]["bound"].startswith("stage")
    assert float(rows[1]["throughput_img_s"]) == pytest.approx(2 * float(rows[0]["throughput_img_s"]), rel=0.05)  # DRAM per cycle halves
    assert int(rows[0]["pes"]) == 2048
