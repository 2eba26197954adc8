"""ap_fixed rounding / overflow against the `quantizers` package (hls4ml's, bit-exact) and exact rationals."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from fxp_helpers import round_fraction
from quantizers.fixed_point.fixed_point_ops_np import get_fixed_quantizer_np

from exitlogic.fixedpoint.fixed import Fmt, FormatError, quantize, requant, to_float

MODES = [(r, o) for r in ("TRN", "RND", "RND_CONV") for o in ("WRAP", "SAT")]
SHAPES = [(1, 1), (2, 0), (3, -2), (5, 2), (8, 8), (8, 3), (12, -3), (16, 6), (20, 1), (24, 30)]


def _values(rng, f: Fmt):
    span = max(abs(f.min_value), f.max_value) * 3 + 4 * f.lsb
    x = rng.uniform(-span, span, 3000)
    ties = (rng.integers(-(2 ** (f.W + 1)), 2 ** (f.W + 1), 800) + 0.5) * f.lsb  # exact half-LSB ties
    quarters = np.round(x / f.lsb * 4) * f.lsb / 4
    edges = np.array([f.max_value, f.max_value + f.lsb / 2, f.max_value + f.lsb, f.min_value,
                      f.min_value - f.lsb / 2, f.min_value - f.lsb, 0.0, -f.lsb / 2, f.lsb / 2])
    return np.concatenate([x, ties, quarters, edges])


@pytest.mark.parametrize("rounding,overflow", MODES)
@pytest.mark.parametrize("signed", [True, False])
def test_quantize_matches_quantizers(rounding, overflow, signed):
    rng = np.random.default_rng(7)
    qz = get_fixed_quantizer_np(rounding, overflow)
    for W, I in SHAPES:
        f = Fmt(W, I, signed, rounding, overflow)
        x = _values(rng, f)
        ref = qz(x, *f.kif())
        got = quantize(x, f)
        assert np.array_equal(to_float(got.codes, f.F), ref), f
        # overflow events: exactly the values whose rounded value left the range
        rounded = get_fixed_quantizer_np(rounding, "SAT")(x, *Fmt(60, 60 - f.F, True).kif())
        assert np.array_equal(got.overflow, (rounded > f.max_value) | (rounded < f.min_value)), f


@pytest.mark.parametrize("rounding,overflow", MODES)
@pytest.mark.parametrize("signed", [True, False])
def test_requant_matches_quantizers(rounding, overflow, signed):
    """Casting exact wide codes (up to 30 fractional bits) equals quantizers on the same exact values."""
    rng = np.random.default_rng(11)
    qz = get_fixed_quantizer_np(rounding, overflow)
    for W, I in SHAPES:
        f = Fmt(W, I, signed, rounding, overflow)
        src = min(30, 57 - f.I)  # exact codes stay below 2**61
        c = np.round(_values(rng, f) * 2.0 ** src).astype(np.int64)
        ref = qz(c / 2.0 ** src, *f.kif())
        got = requant(c, src, f)
        assert np.array_equal(to_float(got.codes, f.F), ref), f


def _cast_fraction(fr: Fraction, f: Fmt) -> int:
    code = round_fraction(fr * Fraction(2) ** f.F, f.rounding)
    if f.overflow == "SAT":
        return min(max(code, f.min_code), f.max_code)
    m = code % (1 << f.W)
    return m - (1 << f.W) if f.signed and m > f.max_code else m


@pytest.mark.parametrize("rounding,overflow", MODES)
def test_requant_variable_binary_point_exact(rounding, overflow):
    """Per-element binary points (left and right shifts, huge shifts) against exact rationals."""
    rng = np.random.default_rng(3)
    f = Fmt(14, 4, True, rounding, overflow)
    c = rng.integers(-(2 ** 40), 2 ** 40, 4000).astype(np.int64)
    frac = rng.integers(-20, 80, 4000).astype(np.int64)
    got = requant(c, frac, f)
    for ci, fi, gi, oi in zip(c.tolist(), frac.tolist(), got.codes.tolist(), got.overflow.tolist()):
        fr = Fraction(ci) / Fraction(2) ** fi
        assert gi == _cast_fraction(fr, f), (ci, fi)
        rounded = round_fraction(fr * 2 ** f.F, rounding)
        assert oi == (rounded > f.max_code or rounded < f.min_code)


def test_format_naming_and_errors():
    assert Fmt(18, 6, True, "RND_CONV", "SAT").ap_type() == "ap_fixed<18,6,AP_RND_CONV,AP_SAT>"
    assert Fmt(8, 0, False, "TRN", "WRAP").ap_type() == "ap_ufixed<8,0,AP_TRN,AP_WRAP>"
    f = Fmt(10, -3, False)
    assert f.F == 13 and f.max_value == (2 ** 10 - 1) * 2.0 ** -13
    assert Fmt.from_json(f.to_json()) == f
    with pytest.raises(FormatError):
        Fmt(0, 0)
    with pytest.raises(FormatError):
        Fmt(61, 3)
    with pytest.raises(FormatError, match="rounding"):
        Fmt(8, 2, rounding="RND_ZERO")
    with pytest.raises(OverflowError):
        requant(np.array([2 ** 62]), 0, Fmt(8, 8))


@pytest.mark.parametrize("bx, bw, k", [(26, 21, 768), (30, 26, 128), (40, 20, 768), (12, 40, 512)])
def test_int_matmul_through_float64_limbs_is_exact(bx, bw, k):
    from exitlogic.fixedpoint.fixed import int_matmul

    rng = np.random.default_rng(bx + bw)
    x = rng.integers(-2 ** bx, 2 ** bx, (700, k))
    w = rng.integers(-2 ** bw, 2 ** bw, (k, 300))
    x[0], x[1], w[:, 0] = 2 ** bx - 1, -2 ** bx, -2 ** bw  # the extremes of both operands
    assert np.array_equal(int_matmul(x, w), x @ w)
