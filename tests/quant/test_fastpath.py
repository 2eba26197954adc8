"""The fast path gives outputs identical (==) to the Brevitas model."""
import pytest
import torch

from quant.brevitas_model import quant_tapped_forward
from quant.fastpath import FakeQuant, build_fast_visual


def _same(a, b):
    return all(torch.equal(u, v) for u, v in zip(a.tokens, b.tokens)) and torch.equal(a.embedding, b.embedding)


def test_fast_equals_brevitas_po2(tiny_random, tiny_w8a8, images):
    fv = build_fast_visual(tiny_w8a8)
    x = images(tiny_random, 16, "eval")
    with torch.no_grad():
        assert _same(quant_tapped_forward(tiny_w8a8, x), quant_tapped_forward(fv, x))
        y = torch.randn(3, 3, 56, 56) * 3  # out-of-distribution input: clamping paths too
        assert _same(quant_tapped_forward(tiny_w8a8, y), quant_tapped_forward(fv, y))


@pytest.mark.parametrize("precision,scales", [("w8a8", "float"), ("w4a6", "po2"), ("w3a3", "float")])
def test_fast_equals_brevitas_other_recipes(tiny_random, make_calibrated, images, precision, scales):
    qv = make_calibrated(tiny_random, precision, scales=scales, n=4)
    fv = build_fast_visual(qv)
    x = images(tiny_random, 8, "eval")
    with torch.no_grad():
        assert _same(quant_tapped_forward(qv, x), quant_tapped_forward(fv, x))


def test_fakequant_fused_equals_divide_round_clamp():
    x = torch.randn(10000) * 10
    x[:4] = torch.tensor([0.25, 0.75, -0.25, 1e6])
    for s in (2.0**-3, 2.0**-7):
        f = FakeQuant(torch.tensor(s), -128, 127)
        assert f.po2
        ref = torch.clamp(torch.round(x / s), -128, 127) * s
        assert torch.equal(f(x), ref)
        f.fused = True
        assert torch.equal(f(x), ref)


@pytest.mark.slow
def test_fast_equals_brevitas_vitb32(vitb32_random):
    from quant.brevitas_model import build_quant_visual
    from quant.calibration import calibrate
    from quant.recipes import parse_precision

    torch.manual_seed(1)
    qv = build_quant_visual(vitb32_random.model.visual, parse_precision("w8a8"))
    calibrate(qv, [torch.randn(2, 3, 224, 224)])
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert _same(quant_tapped_forward(qv, x), quant_tapped_forward(build_fast_visual(qv), x))
