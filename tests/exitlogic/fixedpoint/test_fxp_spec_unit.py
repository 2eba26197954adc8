"""Spec JSON, validation errors naming the stage, policy hash, end to end, search, torch-freedom."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fxp_helpers import make_tokens

from common.errors import InputError
from exitlogic.fixedpoint import (ExitUnit, FixedPointSpec, Fmt, PolicyMismatch, WidthError, integer_bits,
                                  integer_bits_required, memory_bits, observed_ranges, search_widths)

REPO = Path(__file__).resolve().parents[3]


def test_json_roundtrip_and_shape(generous, tmp_path):
    path = tmp_path / "spec.json"
    generous.save(path)
    obj = json.loads(path.read_text())
    assert obj["schema"] == "lraee/fixedpoint-spec" and obj["version"] == 1
    assert obj["geometry"] == {"n_tokens": 49, "d": 128, "e": 128, "k": 25}
    assert obj["formats"]["fc1.out"]["ap"].startswith("ap_fixed<")
    assert set(obj["constants"]) == {"ssa.recip", "sav.recip", "ln.recip", "ln.eps"}
    assert obj["units"]["ln.rsqrt"]["kind"] == "rsqrt" and "gelu" in obj["luts"]
    back = FixedPointSpec.load(path, policy_sha256="a" * 64)
    assert back == generous and back.source == str(path)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temporary


def test_policy_hash_mismatch_refused(generous, world, tmp_path):
    path = tmp_path / "spec.json"
    generous.save(path)
    with pytest.raises(PolicyMismatch) as ei:
        FixedPointSpec.load(path, policy_sha256="b" * 64)
    msg = str(ei.value)
    assert str(path) in msg and "\n" not in msg and isinstance(ei.value, InputError)
    spec = FixedPointSpec.load(path)
    with pytest.raises(PolicyMismatch, match=str(path)):
        ExitUnit(spec, world["params"], world["text"], world["logit_scale"], policy_sha256="c" * 64)


def test_hand_edited_constant_refused(generous, tmp_path):
    obj = generous.to_json()
    obj["constants"]["ssa.recip"]["code"] += 1
    p = tmp_path / "spec.json"
    p.write_text(json.dumps(obj))
    with pytest.raises(InputError, match="constants.ssa.recip"):
        FixedPointSpec.load(p)


def test_width_too_small_for_calibrated_range_names_stage(generous):
    spec = copy.deepcopy(generous)
    lo, hi = spec.ranges["fc1.out"]
    spec.formats["fc1.out"] = spec.formats["fc1.out"].replace(I=integer_bits(lo, hi, True) - 1)
    with pytest.raises(WidthError, match=r"stage 'fc1\.out'.*calibrated range.*needs I >= "):
        spec.validate()


def test_param_width_too_small_names_stage(generous, world):
    spec = copy.deepcopy(generous)
    spec.formats["fc2.weight"] = Fmt(12, -2, True)  # holds [-0.125, 0.125): weights are ~N(0, 0.09)
    with pytest.raises(WidthError, match=r"stage 'fc2\.weight' \(layer 6\)"):
        ExitUnit(spec, world["params"], world["text"], world["logit_scale"])


@pytest.mark.parametrize("name,fmt,pattern", [
    ("ssa.acc", Fmt(12, 12, True, "TRN"), r"stage 'ssa\.acc' needs W >= 14"),
    ("sav.acc", Fmt(30, 30, False, "TRN"), r"stage 'sav\.acc' needs W >= "),
    ("ln.rsqrt.mant", Fmt(26, 2, False, "RND"), r"stage 'ln\.rsqrt\.mant'.*TRN"),
    ("conf.out", Fmt(20, 0, False), r"stage 'conf\.out'.*needs I >= 1"),
    ("sav.out", Fmt(20, 8, True), r"stage 'sav\.out'.*unsigned"),
    ("ssa.recip", Fmt(8, -8, False), r"stage 'ssa\.recip'.*does not fit"),
])
def test_structural_width_errors_name_stage(generous, name, fmt, pattern):
    spec = copy.deepcopy(generous)
    spec.formats[name] = fmt
    with pytest.raises(WidthError, match=pattern):
        spec.validate()


def test_intermediate_too_wide_names_stage(generous, world):
    spec = copy.deepcopy(generous)
    spec.formats["fc1.weight"] = Fmt(40, 1, True)  # 26 + 40 + 7 bits > 61
    with pytest.raises(WidthError, match=r"stage 'fc1'"):
        ExitUnit(spec, world["params"], world["text"], world["logit_scale"])


def test_integer_bits_rule():
    assert integer_bits(-1.0, 0.99, True) == 1 and integer_bits(-1.0, 1.0, True) == 2
    assert integer_bits(-0.3, 0.2, True) == 0 and integer_bits(0, 5.0, False) == 3
    assert integer_bits(0, 0, True) == 1 and integer_bits(0, 0.7, False, margin_bits=1) == 1
    req = integer_bits_required({"fc1.out": (-3.0, 2.5), "fc1.weight": (-0.4, 0.3), "ssa.recip": (0, 1)})
    assert req == {"fc1.out": 4, "fc1.weight": 0}


def test_end_to_end_agreement_and_counters(unit, world):
    """Generous widths: exit and pred decisions agree with the float policy on >= 99% of samples."""
    agree_e = agree_p = total = 0
    for L, (q, s) in world["samples"].items():
        out = unit.run(L, q, s)
        ref = unit.float_reference(L, q, s)
        agree_e += int(np.sum(out["exit"] == ref["exit"]))
        agree_p += int(np.sum(out["pred"] == ref["pred"]))
        total += q.shape[0]
        assert 0.2 < ref["exit"].mean() < 0.8  # the test exercises both decisions
        assert np.max(np.abs(out["conf"] - ref["conf"])) < 1e-3
        assert np.max(np.abs(out["sav"] - ref["sav"])) < 1e-3
        assert int(out["overflow.total"].sum()) == 0
    assert agree_e / total >= 0.99 and agree_p / total >= 0.99


def test_overflow_counters_per_stage(world, generous):
    spec = copy.deepcopy(generous)
    spec.ranges = {}
    for mode in ("SAT", "WRAP"):
        spec.formats["fc1.out"] = Fmt(16, 1, True, "RND_CONV", mode)  # [-1, 1): the data reaches ~4
        u = ExitUnit(spec, world["params"], world["text"], world["logit_scale"])
        q, s = world["samples"][6]
        out = u.run(6, q[:50], s)
        assert np.all(out["overflow.fc1.out"] > 0)
        assert np.array_equal(out["overflow.total"], out["overflow.fc1.out"])


def test_vectorised_speed(unit):
    rng = np.random.default_rng(0)
    q = make_tokens(rng, 2000)
    t0 = time.perf_counter()
    for L in (6, 8, 10):
        unit.run(L, q, 2.0 ** -4)
    assert time.perf_counter() - t0 < 20  # about 1 s on one core


def test_search_shrinks_and_keeps_agreement(world, generous):
    sub = {6: (world["samples"][6][0][:150], world["samples"][6][1])}
    params = {6: world["params"][6]}
    knobs = ["fc1.weight", "fc1.out", "gelu.out", "lut:gelu", "sim.logit", "gate.out"]
    res = search_widths(generous, params, world["text"], world["logit_scale"], sub, target=0.99, knobs=knobs)
    assert res.exit_agreement >= 0.99 and res.pred_agreement >= 0.99
    assert [s["knob"] for s in res.steps] == knobs  # already in pipeline order
    assert all(s["to"] <= s["from"] for s in res.steps) and any(s["to"] < s["from"] for s in res.steps)
    assert res.memory["total_bits"] < res.memory_start["total_bits"]
    # the result is a valid spec and runs
    u = ExitUnit(res.spec, params, world["text"], world["logit_scale"])
    out = u.run(6, *sub[6])
    assert out["exit"].shape == (150,)


def test_memory_and_ranges(world, generous):
    mem = memory_bits(generous, 3)
    fm = generous.formats
    assert mem["weights_per_layer_bits"] >= 128 * 128 * fm["fc1.weight"].W
    assert mem["lut_detail_bits"]["gelu"] == 1025 * fm["gelu.phi"].W
    assert mem["total_bits"] == mem["weights_bits"] + mem["lut_bits"] + mem["constants_bits"]
    r = observed_ranges(world["params"], world["text"], world["logit_scale"],
                        {6: (world["samples"][6][0][:20], world["samples"][6][1])})
    assert r["conf.out"][1] <= 1.0 and r["sav.out"][0] >= 0


def test_package_never_imports_torch():
    """Importing and running the whole package (spec, unit, search) leaves torch unimported."""
    code = (
        "import sys, numpy as np\n"
        "sys.path.insert(0, 'tests/exitlogic/fixedpoint')\n"
        "from fxp_helpers import make_params, make_tokens\n"
        "import exitlogic.fixedpoint as fp\n"
        "from exitlogic.fixedpoint import fixed, stages, spec, unit, search, validate\n"
        "rng = np.random.default_rng(0)\n"
        "p = {3: make_params(rng, d=16, e=8)}\n"
        "t = rng.standard_normal((4, 8)); t /= np.linalg.norm(t, axis=1, keepdims=True)\n"
        "smp = {3: (make_tokens(rng, 20, n_tokens=5, d=16), 0.125)}\n"
        "sp = fp.default_spec(p, t, 50.0, smp)\n"
        "out = fp.ExitUnit(sp, p, t, 50.0).run(3, *smp[3])\n"
        "fp.search_widths(sp, p, t, 50.0, smp, target=0.9, knobs=['fc1.out'])\n"
        "fp.search_widths(sp, p, t, 50.0, smp, target=0.5, knobs=['fc1.out'], criterion='route',\n"
        "                 full_pred=np.zeros(20, np.int64), order='memory')\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)\n"
        "print('ok', out['exit'].shape)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok (20,)", r.stderr


def test_unit_checks_parameters_against_the_exit_head_geometry(world, generous):
    """The unit's parameter shapes are the spec's ExitHeadGeometry (d -> d -> e), the heads' and hwsim's."""
    from quant.geometry import ExitHeadGeometry

    assert generous.head == ExitHeadGeometry.lraee(generous.d, generous.e)
    shapes = generous.head.param_shapes()
    assert shapes["fc1.weight"] == (generous.d, generous.d) and shapes["fc2.weight"] == (generous.e, generous.d)
    layer = next(iter(world["params"]))
    bad = {L: dict(p) for L, p in world["params"].items()}
    bad[layer]["fc2.weight"] = np.zeros((generous.e, generous.d + 1), np.float32)
    with pytest.raises(InputError, match=rf"layer {layer}: parameter 'fc2.weight' has shape \[{generous.e}, "
                                         rf"{generous.d + 1}\], expected \[{generous.e}, {generous.d}\]"):
        ExitUnit(generous, bad, world["text"], world["logit_scale"])
