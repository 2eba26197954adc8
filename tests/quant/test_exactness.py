"""Bit accuracy: every quantized layer equals the numpy integer reference (== , float64, TF32 off)."""
import numpy as np
import pytest
import torch

from quant import intref
from quant.exactness import check_exactness, summary


def _expected_layers(depth: int) -> int:
    return 1 + depth * 6 + 1  # conv1, per block in_proj, qk, pv, out_proj, c_fc, c_proj; proj


def test_intref_rounding_is_half_to_even_and_clamps():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 300.0, -300.0])
    assert intref.quantize(x, 1.0, 8, True).tolist() == [0, 2, 2, 0, -2, 127, -128]
    assert intref.quantize(x, 1.0, 8, True, narrow=True).tolist()[-1] == -127
    assert intref.quantize(x, 1.0, 8, False).tolist() == [0, 2, 2, 0, 0, 255, 0]
    assert intref.requant(np.array([3, 5, -3]), 0.5, 1.0, 8, True).tolist() == [2, 2, -2]  # shift by 1, ties to even
    assert intref.acc_bits(127 * 127 * 768) == 25


def test_int_matmul_exact_beyond_float64_bound():
    a = np.full((1, 4), 2**28, np.int64)
    b = np.full((4, 1), 2**28 + 1, np.int64)
    assert intref.int_matmul(a, b)[0, 0] == 4 * 2**28 * (2**28 + 1)


def test_tiny_w8a8_every_layer_exact(tiny_random, tiny_w8a8, images):
    res = check_exactness(tiny_w8a8, images(tiny_random, 2, "eval"))
    s = summary(res)
    assert s["layers"] == _expected_layers(tiny_random.geometry.depth)
    bad = [(r.name, r.checks) for r in res if not r.exact]
    assert not bad, bad
    assert s["ulp_max"] == 0.0
    for r in res:
        assert r.acc_max_abs > 0 and r.acc_bits == intref.acc_bits(r.acc_max_abs) and r.acc_bits <= 32
        if r.kind in ("linear", "conv"):
            assert set(r.checks) >= {"input_requant", "weight_quant", "output"}
        if r.kind == "pv_matmul":
            assert r.checks["out_proj_input_shift_requant"]


@pytest.mark.parametrize("precision", ["w4a8", "w3a5"])
def test_tiny_wxay_every_layer_exact(tiny_random, make_calibrated, images, precision):
    qv = make_calibrated(tiny_random, precision, n=4)
    res = check_exactness(qv, images(tiny_random, 1, "eval"))
    assert all(r.exact for r in res), [(r.name, r.checks) for r in res if not r.exact]
    w_bits = {r.name: r for r in res}
    assert w_bits["conv1"].exact


def test_tiny_float_scales_integer_parts_exact_and_ulps_reported(tiny_random, make_calibrated, images):
    qv = make_calibrated(tiny_random, "w8a8", scales="float", n=4)
    res = check_exactness(qv, images(tiny_random, 1, "eval"))
    assert all(r.exact for r in res)  # quantizers, int32 bias: still integer-exact
    assert all("output" not in r.checks for r in res)  # dequantised outputs are judged in ULPs
    ulp = summary(res)["ulp_max"]
    assert np.isfinite(ulp) and ulp > 0


@pytest.mark.slow
def test_minmax_and_mse_calibration_exact(tiny_random, make_calibrated, images):
    for method in ("minmax", "mse"):
        qv = make_calibrated(tiny_random, "w8a8", method=method, n=4)
        res = check_exactness(qv, images(tiny_random, 1, "eval"))
        assert all(r.exact for r in res), method


@pytest.mark.slow
def test_vitb32_random_every_layer_exact(vitb32_random):
    """All 74 quantized layers / matmuls of a random ViT-B-32 on one image, power-of-two scales."""
    from quant.brevitas_model import build_quant_visual
    from quant.calibration import calibrate
    from quant.recipes import parse_precision

    torch.manual_seed(0)
    qv = build_quant_visual(vitb32_random.model.visual, parse_precision("w8a8"))
    calibrate(qv, [torch.randn(2, 3, 224, 224)])
    res = check_exactness(qv, torch.randn(1, 3, 224, 224))
    assert len(res) == _expected_layers(12)
    assert all(r.exact for r in res), [(r.name, r.checks) for r in res if not r.exact]
    assert max(r.acc_bits for r in res) <= 32
