"""Issue 13 item 4: operand widths follow the trace's recipe (weight_bits, act_bits in its meta)
unless the arch YAML sets them; bytes and MAC energy scale with the widths."""
import json

import numpy as np
import pytest

from common.errors import InputError
from hwsim.config import with_trace_precision
from hwsim.costs import build_costs
from hwsim.energy import HOROWITZ45
from hwsim.memory import gemm_memory
from hwsim.trace import synthetic_trace, write_trace
from hwsim import workload as W

from hwsim_helpers import CANDS, TINY, arch, run_cli


def test_mac_energy_scales_with_the_widths():
    t = HOROWITZ45
    assert t.mac_pj(8, 8, 32) == 0.2 + 0.1                      # Horowitz int8 mult + int32 add
    assert t.mac_pj(4, 8, 32) == 0.1 + 0.1                      # W4A8: half the partial products
    assert t.mac_pj(16, 16, 48) == 0.2 * 4 + 0.1 * 1.5
    # the quadratic law against Horowitz's own int32 multiply (3.1 pJ): 3.2 pJ, within 3.3%
    mult32 = t.mac_pj(32, 32, 0)
    assert mult32 == 3.2 and abs(mult32 / t.int32_mult - 1) < 0.033
    assert "Weste" in t.mac_scaling and "Horowitz" in t.mac_scaling


def test_known_gemm_bytes_follow_the_widths():
    """16 x 64 x 32 on ws 8x8, 0.5 KiB buffers (256-byte halves): nothing stays on chip.
    ifmap 1024 B x 4 column folds, weights K*N x 4 bits, outputs 512 B, psum spills
    2 x 512 x 4 B x 7 row folds."""
    kw = dict(array__rows=8, array__cols=8, array__dataflow="ws", sram__ifmap_kb=0.5, sram__filter_kb=0.5,
              sram__ofmap_kb=0.5)
    w4 = gemm_memory(16, 64, 32, 1, True, arch(precision__weight_bits=4, precision__act_bits=8, **kw))
    w8 = gemm_memory(16, 64, 32, 1, True, arch(**kw))
    assert float(w4.dram_bytes) == 4096 + 1024 + 512 + 28672 == 34304
    assert float(w8.dram_bytes) - float(w4.dram_bytes) == 64 * 32 * (8 - 4) / 8
    assert float(w4.sram_filter_bits) == 64 * 32 * 4 and float(w8.sram_filter_bits) == 64 * 32 * 8
    assert float(w4.sram_ifmap_bits) == float(w8.sram_ifmap_bits) == 16 * 64 * 4 * 8
    # attention GEMMs (weights False) multiply activations: the weight width does not apply
    a4 = gemm_memory(16, 64, 32, 1, False, arch(precision__weight_bits=4, **kw))
    assert float(a4.dram_bytes) == float(gemm_memory(16, 64, 32, 1, False, arch(**kw)).dram_bytes)


def test_trace_recipe_sets_the_widths_unless_the_yaml_does(tmp_path):
    assert with_trace_precision(arch(), {"weight_bits": 4, "act_bits": 8})[1] == {
        "weight_bits": 4, "act_bits": 8, "source": {"weight_bits": "trace", "act_bits": "trace"}}
    a, info = with_trace_precision(arch(precision__operand_bits=8), {"weight_bits": 4, "act_bits": 6})
    assert (a.precision.weights, a.precision.activations, info["source"]["weight_bits"]) == (8, 8, "arch")
    a, info = with_trace_precision(arch(precision__act_bits=16), {"weight_bits": 4})
    assert (a.precision.weights, a.precision.activations) == (4, 16)
    assert info["source"] == {"weight_bits": "trace", "act_bits": "arch"}
    assert with_trace_precision(a, {"weight_bits": 2})[0] == a                    # resolved once
    assert with_trace_precision(arch(), None)[1]["source"]["act_bits"] == "default"


def test_sim_reports_recipe_widths_and_mac_energy(tmp_path):
    """A W4A8 trace: Linear-layer MACs cost 0.2 pJ, attention MACs (8 x 8) 0.3 pJ; weight DRAM
    bytes halve. The arch YAML's weight_bits overrides the trace."""
    el, cor = synthetic_trace(40, 12, CANDS, seed=0)
    write_trace(tmp_path / "t.csv", el, CANDS, 12, num_classes=25, correct=cor, geometry=TINY,
                extra_meta={"weight_bits": 4, "act_bits": 8})
    (tmp_path / "a.yaml").write_text("batch: {policy: stream}\n")
    (tmp_path / "b.yaml").write_text("batch: {policy: stream}\nprecision: {weight_bits: 8}\n")
    res = {}
    for name in ("a", "b"):
        rc, out, err = run_cli(["sim", "--arch", str(tmp_path / f"{name}.yaml"), "--trace", str(tmp_path / "t.csv"),
                                "--out", str(tmp_path / name), "--load-sweep", "none"])
        assert rc == 0, err
        res[name] = json.loads((tmp_path / name / "summary.json").read_text())
    assert res["a"]["precision"] == {"weight_bits": 4, "act_bits": 8,
                                     "source": {"weight_bits": "trace", "act_bits": "trace"}}
    assert res["b"]["precision"]["weight_bits"] == 8 and res["b"]["precision"]["source"]["weight_bits"] == "arch"
    # one block at group size 1: MAC energy from the widths, weight bytes from weight_bits
    a4 = arch(precision__weight_bits=4, precision__act_bits=8)
    c4, c8 = build_costs(a4, TINY, 25, 1), build_costs(arch(), TINY, 25, 1)
    lin = sum(g.macs for g in W.block_gemms(TINY) if g.batching == "rows")
    att = sum(g.macs for g in W.block_gemms(TINY) if g.batching == "count")
    assert c4.energy["block"]["mac"][1] == lin * (0.1 + 0.1) + att * (0.2 + 0.1)
    assert c8.energy["block"]["mac"][1] == lin * 0.30000000000000004 + att * 0.30000000000000004
    weights = sum(g.weight_elems() for g in W.block_gemms(TINY))
    d4 = c4.energy["block"]["dram"][1] / (HOROWITZ45.dram_64b / 8)
    d8 = c8.energy["block"]["dram"][1] / (HOROWITZ45.dram_64b / 8)
    assert d8 - d4 == pytest.approx(weights / 2, abs=1e-6)          # bytes: K x N x (8 - 4) / 8 per weight matrix
    ee_a, ee_b = res["a"]["early_exit"], res["b"]["early_exit"]
    assert ee_a["energy_pj"]["mac"] < ee_b["energy_pj"]["mac"] and ee_a["macs"] == ee_b["macs"]


def test_bad_recipe_bits_in_meta(tmp_path):
    from hwsim.trace import read_trace
    el, _ = synthetic_trace(5, 12, CANDS, seed=0)
    mp = write_trace(tmp_path / "t.csv", el, CANDS, 12, num_classes=25, extra_meta={"weight_bits": "4"})
    with pytest.raises(InputError, match=r"t.meta.json: weight_bits: '4'; allowed: an integer in 1..64"):
        read_trace(tmp_path / "t.csv")
    meta = json.loads(mp.read_text())
    meta["weight_bits"], meta["act_bits"] = 4, 0
    mp.write_text(json.dumps(meta))
    with pytest.raises(InputError, match="act_bits: 0"):
        read_trace(tmp_path / "t.csv")
    meta["act_bits"] = 8
    mp.write_text(json.dumps(meta))
    assert read_trace(tmp_path / "t.csv").meta["weight_bits"] == 4
    assert np.array_equal(read_trace(tmp_path / "t.csv").exit_layer, el)
