"""hls4ml exit blocks: bit-exact C-simulation, comparator, report shape, sanitising, spec/policy pairing."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest


def _block(compiled, kind):
    return next(b for n, b in compiled["report"]["blocks"].items() if b["kind"] == kind)


# ---- C-simulation ------------------------------------------------------------------------------------

def test_csim_bit_exact_on_both_blocks(compiled, hls_world):
    rep = compiled["report"]
    assert set(rep["blocks"]) == {f"head_L{hls_world['layer']}", f"gate_L{hls_world['layer']}"}
    for name, b in rep["blocks"].items():
        c = b["csim"]
        assert c["vectors"] == hls_world["vectors"].tokens[hls_world["layer"]].shape[0]
        assert c["exact_match"] == 1.0 and c["mismatches"] == 0, name
        assert math.isfinite(c["float_error"]["max_abs"])
        assert "timing_s" not in b  # wall times live in hls_timings.json (benchmarks/bench_hls.py has the target)
    gate = _block(compiled, "gate")
    assert gate["csim"]["exit_match"] == 1.0
    assert rep["exact_match"] == 1.0


def test_head_block_layers_and_types(compiled, hls_world):
    """Stock Dense for fc1/fc2, custom layers for the rest; every result type is the spec's format."""
    spec = compiled["unit"].spec
    hm = compiled[f"head_L{hls_world['layer']}"]
    classes = {layer.name: layer.class_name for layer in hm.get_layers()}
    assert classes["fc1"] == classes["fc2"] == "Dense"
    assert classes["ssa"] == "LraeeSSAMean" and classes["ln"] == "LraeeLayerNorm" and classes["gelu"] == "LraeeGELU"
    want = {"ssa": "ssa.out", "ln": "ln.out", "fc1": "fc1.out", "gelu": "gelu.out", "fc2": "fc2.out"}
    for layer in hm.get_layers():
        if layer.name in want:
            p = layer.get_output_variable().type.precision
            f = spec.formats[want[layer.name]]
            assert (p.width, p.integer, p.signed) == (f.W, f.I, f.signed)
            assert str(p.rounding_mode).endswith(f.rounding) and str(p.saturation_mode).endswith(f.overflow)


def test_comparator_decision_equals_fixed_point_model_at_the_threshold(compiled, hls_world):
    """Scan conf one LSB at a time across the threshold: g and the exit bit equal stages.gate, g == T included."""
    from exitlogic.fixedpoint import stages as st

    unit = compiled["unit"]
    L = hls_world["layer"]
    hm = compiled[f"gate_L{L}"]
    fm = unit.spec.formats
    P = unit.layers[L]
    wq, bq, thr = P["gate.w"], P["gate.b"], P["gate.thr"]
    val = lambda c, f: math.ldexp(float(c), -fm[f].F)  # noqa: E731
    margin_c = 1 << (fm["margin.out"].F - 3)
    lo, hi = unit.spec.ranges.get("sav.out", (0.0, 1.0))
    sav_c = int((lo + hi) / 2 * (1 << fm["sav.out"].F))
    w_conf, w_marg, w_sav = (val(wq[0], "gate.w_conf"), val(wq[1], "gate.w_margin"), val(wq[2], "gate.w_sav"))
    g_of = lambda cc, sc: (val(bq, "gate.b") + w_conf * val(cc, "conf.out") + w_marg * val(margin_c, "margin.out")  # noqa: E731
                           + w_sav * val(sc, "sav.out"))
    assert w_conf != 0
    T = val(thr, "gate.out")
    c0 = int(round((T - g_of(0, sav_c)) / w_conf * (1 << fm["conf.out"].F)))
    conf_c = [np.arange(c0 - 400, c0 + 401)]  # the conf scan crosses the threshold
    sav_s = [np.full(801, sav_c)]
    if w_sav != 0:  # a fine scan: one SAV LSB moves g by much less than one gate.out LSB, so g == T is hit
        s0 = int(round(sav_c + (T - g_of(c0, sav_c)) / w_sav * (1 << fm["sav.out"].F)))
        sav_s.append(np.arange(s0 - 3000, s0 + 3001))
        conf_c.append(np.full(6001, c0))
    conf_c = np.clip(np.concatenate(conf_c), 0, fm["conf.out"].max_code).astype(np.int64)
    sav = np.clip(np.concatenate(sav_s), 0, fm["sav.out"].max_code).astype(np.int64)
    n = conf_c.size
    margin = np.full(n, margin_c, np.int64)
    ctx = st.Ctx(n=n)
    g_ref, exit_ref = st.gate(conf_c, margin, sav, wq, bq, thr, unit.spec, ctx)
    x = np.stack([np.ldexp(conf_c.astype(float), -fm["conf.out"].F), np.ldexp(margin.astype(float), -fm["margin.out"].F),
                  np.ldexp(sav.astype(float), -fm["sav.out"].F)], axis=1)
    y = np.asarray(hm.predict(np.ascontiguousarray(x)), np.float64).reshape(n, 2)
    g_hls = np.rint(np.ldexp(y[:, 0], fm["gate.out"].F)).astype(np.int64)
    assert np.array_equal(g_hls, g_ref)
    assert np.array_equal(y[:, 1] == 1.0, exit_ref) and set(np.unique(y[:, 1])) <= {0.0, 1.0}
    assert exit_ref.any() and (~exit_ref).any()
    if w_sav != 0:
        assert np.any(g_ref == thr), "the scan should hit g == T exactly (the comparator's edge)"


# ---- projects, report ----------------------------------------------------------------------------------

def test_projects_are_ready_to_synthesize(compiled):
    rep = compiled["report"]
    for name, b in rep["blocks"].items():
        d = Path(compiled["out"]) / b["project_dir"]
        assert d.resolve().parent == Path(compiled["out"]).resolve()
        assert (d / "build_prj.tcl").is_file() and (d / "firmware" / "nnet_utils" / "nnet_lraee.h").is_file()
        tcl = (d / "project.tcl").read_text()
        assert rep["part"] in tcl and "5" in tcl
        top = (d / "firmware" / f"{b['project_name']}.cpp").read_text()
        assert "nnet::lraee_" in top
        cfg = (d / "hls4ml_config.yml").read_text()  # hls4ml's config, without a pickled torch module
        assert "PytorchModel" not in cfg and "!!python/object" not in cfg and f"ProjectName: {b['project_name']}" in cfg
        assert "Interpreting Model" in (d / "hls4ml_log.txt").read_text()  # hls4ml's printout, per project
    assert "Vitis HLS" in rep["synthesis"]["how"] or "vitis_hls" in rep["synthesis"]["how"]
    saved = json.loads((Path(compiled["out"]) / "hls_report.json").read_text())
    assert saved["exact_match"] == 1.0


def test_report_is_the_same_for_any_worker_count(compiled, hls_world, tmp_path):
    """The blocks are built on a thread pool (one per core by default): one worker gives the same report."""
    from hls.flow import run

    w = hls_world
    rep = run(w["policy"], w["vectors"], tmp_path / "o", layers=[w["layer"]], workers=1, log=lambda *a: None)
    assert len(rep["blocks"]) == 2
    assert json.dumps(rep, sort_keys=True) == json.dumps(compiled["report"], sort_keys=True)


def test_report_feeds_hwsim(compiled):
    from hwsim.config import ArchConfig
    from hwsim.costs import exit_unit_timing

    path = Path(compiled["out"]) / "hls_report.json"
    rep = json.loads(path.read_text())
    assert isinstance(rep["latency_cycles"], int) and rep["latency_cycles"] > 0
    assert isinstance(rep["interval_cycles"], int) and rep["interval_cycles"] > 0
    arch = ArchConfig()
    arch = arch.model_copy(update={"exit_unit": arch.exit_unit.model_copy(update={"hls_report": str(path)})})
    assert exit_unit_timing(arch) == (rep["latency_cycles"], rep["interval_cycles"])
    for b in rep["blocks"].values():
        e = b["estimate"]
        for k in ("dsp", "bram_18k", "lut", "ff", "latency_cycles", "interval_cycles"):
            assert isinstance(e[k], int) and e[k] >= 0
        assert e["latency_ns"] == pytest.approx(e["latency_cycles"] * rep["clock_period_ns"])


def test_estimate_formulas():
    from hls.blocks import dense_defaults, valid_reuse_factors
    from hls.estimate import FORMULAS, bram18, dsp_per_mult, layer_estimate

    assert dsp_per_mult(26, 22) == 2 and dsp_per_mult(18, 18) == 1 and dsp_per_mult(27, 18) == 1
    assert dsp_per_mult(4, 30) == 0
    assert bram18(1025, 22) == 3 and bram18(64, 22) == 0 and bram18(128, 2816) == 79
    assert dense_defaults(768, 768, None) == ("Resource", 4608) and 4608 in valid_reuse_factors(768, 768)
    assert dense_defaults(3, 1, None) == ("Latency", 1)
    e = layer_estimate("fc1", {"class": "Dense", "n_in": 768, "n_out": 768, "strategy": "Resource",
                               "reuse_factor": 4608, "mult_widths": [26, 22], "accum": "ap_fixed<60,12>",
                               "rom_bits": {"weight": (768 * 768, 22), "bias": (768, 22)}}, "dataflow")
    assert e["multipliers"] == 128 and e["dsp"] == 256 and e["interval_cycles"] == 4608
    assert e["bram_18k"] == math.ceil(128 * 22 / 36) * math.ceil(4608 / 512) + bram18(768, 22)
    assert {"dsp", "bram_18k", "latency_cycles", "interval_cycles"} <= set(FORMULAS) | {"dsp_per_multiplier"}


# ---- sanitising, validation ----------------------------------------------------------------------------

def test_hostile_names_are_sanitised():
    from common.errors import InputError
    from hls.blocks import BlockOptions, sanitize_identifier
    from hls.extension import cpp_type
    from hls.flow import inside

    s = sanitize_identifier('../../x"; system("rm -rf /"); //')
    assert s == "x_system_rm_rf" and s.isidentifier()
    assert sanitize_identifier("9lives") == "p_9lives" and sanitize_identifier("class") == "class_prj"
    with pytest.raises(InputError):
        sanitize_identifier("../;;//")
    with pytest.raises(InputError):
        BlockOptions(part="xcvu9p; rm -rf /").validate()
    with pytest.raises(InputError):
        BlockOptions(knobs={"fc1; evil": None}).validate()
    with pytest.raises(ValueError):
        cpp_type("ap_fixed<8,3>; system(0)")
    with pytest.raises(InputError):
        inside(Path("/tmp/a"), Path("/tmp/a/../b"))
    assert BlockOptions(project="my prj!").validate().project == "my_prj"


def test_cli_hostile_project_name_stays_inside_out(run_cli, hls_world, tmp_path):
    out = tmp_path / "gen"
    evil = '../../pwn"; system("touch /tmp/pwned"); //'
    rc, so, err = run_cli("hls", "--policy", hls_world["policy_dir"], "--out", out, "--tokens", "derived",
                          "--cache-dir", hls_world["cache"], "--vectors", 8, "--layers", hls_world["layer"],
                          "--no-compile", "--project", evil)
    assert rc == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen"]
    rep = json.loads((out / "hls_report.json").read_text())
    for b in rep["blocks"].values():
        assert b["project_name"].startswith("pwn_system_touch_tmp_pwned_")
        assert (out / b["project_dir"]).resolve().parent == out.resolve()
        cpp = (out / b["project_dir"] / "firmware" / f"{b['project_name']}.cpp").read_text()
        assert "system(" not in cpp and '"; ' not in cpp
    assert "synthesis needs Vitis HLS or Vivado HLS" in so


def test_spec_from_another_policy_is_refused(run_cli, hls_world, compiled, tmp_path):
    spec = json.loads((Path(compiled["out"]) / "fixedpoint_spec.json").read_text())
    assert spec["policy_sha256"] == hls_world["policy"].meta["policy_sha256"]
    other = dict(spec, policy_sha256="f" * 64)
    bad = tmp_path / "other_spec.json"
    bad.write_text(json.dumps(other))
    args = ["hls", "--policy", hls_world["policy_dir"], "--out", tmp_path / "o", "--tokens", "derived",
            "--cache-dir", hls_world["cache"], "--vectors", 8, "--layers", hls_world["layer"], "--no-compile"]
    rc, _, err = run_cli(*args, "--spec", bad)
    assert rc == 2 and "sha256" in err and "re-run the width search" in err
    good = tmp_path / "spec.json"
    good.write_text(json.dumps(spec))
    rc, _, err = run_cli(*args, "--spec", good)
    assert rc == 0, err
    rep = json.loads((tmp_path / "o" / "hls_report.json").read_text())
    assert rep["spec"]["source"] == "file"


@pytest.mark.parametrize("extra, needle", [
    (["--reuse", "fc1=7"], "not valid"),
    (["--strategy", "fc1=Fast"], "allowed: Latency, Resource"),
    (["--reuse", "fc1"], "LAYER=VALUE"),
    (["--layers", "99"], "not candidate layers"),
    (["--blocks", "head,evil"], "allowed: head, gate"),
    (["--clock-mhz", "0"], "positive"),
])
def test_cli_rejects_bad_knobs(run_cli, hls_world, tmp_path, extra, needle):
    rc, _, err = run_cli("hls", "--policy", hls_world["policy_dir"], "--out", tmp_path / "o", "--tokens", "derived",
                         "--cache-dir", hls_world["cache"], "--vectors", 4, "--no-compile", *extra)
    assert rc == 2 and needle in err, err


# ---- slow: the full 1,000 vectors on every candidate layer; the other backend and io_stream ------------

@pytest.mark.slow
def test_csim_bit_exact_1000_vectors_every_block(run_cli, small_policy, tmp_path):
    pol, cache = small_policy
    out = tmp_path / "full"
    rc, so, err = run_cli("hls", "--policy", pol, "--out", out, "--tokens", "derived", "--cache-dir", cache,
                          "--vectors", 1000)
    assert rc == 0, err + so
    rep = json.loads((out / "hls_report.json").read_text())
    from exitlogic.artifacts import load_policy

    cands = load_policy(pol).candidate_layers
    assert set(rep["blocks"]) == {f"{k}_L{L}" for L in cands for k in ("head", "gate")}
    for b in rep["blocks"].values():
        assert b["csim"]["vectors"] == 1000 and b["csim"]["exact_match"] == 1.0
        if b["kind"] == "gate":
            assert b["csim"]["exit_match"] == 1.0


@pytest.mark.slow
def test_vivado_backend_io_stream_bit_exact(hls_world, tmp_path):
    from hls.blocks import BlockOptions
    from hls.flow import run

    w = hls_world
    rep = run(w["policy"], w["vectors"], tmp_path / "vivado", layers=[w["layer"]],
              opts=BlockOptions(backend="Vivado", io_type="io_stream", clock_period_ns=4.0), log=lambda *a: None)
    assert rep["backend"] == "Vivado" and rep["io_type"] == "io_stream"
    for b in rep["blocks"].values():
        assert b["csim"]["exact_match"] == 1.0
        assert b["estimate"]["pipeline_style"] == "dataflow"
