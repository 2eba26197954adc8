"""Exact results: integer SAV, the reciprocal-of-N mean, the comparator at logit(tau)."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from fxp_helpers import make_tokens, round_fraction

from exitlogic.fixedpoint import ExitUnit, Fmt, float_reference, logit
from exitlogic.fixedpoint import stages as st


def _spec_with(spec, **formats):
    import copy

    new = copy.deepcopy(spec)
    new.formats.update(formats)
    new.ranges = {}
    return new


def test_sav_integer_is_exact(generous):
    """T = N*sum||q||^2 - ||sum q||^2 equals N^2 * SAV / s^2 computed with exact rationals."""
    rng = np.random.default_rng(5)
    q = make_tokens(rng, 12)
    q[0] = 127  # extremes: all max, alternating extremes
    q[1, 1::2] = -128
    q[1, 2::2] = 127
    ctx = st.Ctx(n=q.shape[0], keep=True)
    st.sav_exact(q, -4, generous, generous.constants(), ctx)
    T, _ = ctx.codes["sav.T"]
    N = q.shape[1] - 1
    for i in range(q.shape[0]):
        toks = [[int(v) for v in row] for row in q[i, 1:]]
        mean = [Fraction(sum(col), N) for col in zip(*toks)]
        sav_codes = sum(sum((Fraction(v) - m) ** 2 for v, m in zip(row, mean)) for row in toks) / N
        assert Fraction(int(T[i])) == sav_codes * N * N
    assert T[0] == 0


@pytest.mark.parametrize("rounding", ["TRN", "RND", "RND_CONV"])
@pytest.mark.parametrize("scale_exp", [-5, -2, 0])
def test_sav_scaling_exact(generous, rounding, scale_exp):
    spec = _spec_with(generous, **{"sav.out": Fmt(16, 12, False, rounding, "SAT"),
                                   "sav.recip": Fmt(14, -11, False, rounding, "SAT")})
    rng = np.random.default_rng(6)
    q = make_tokens(rng, 30)
    ctx = st.Ctx(n=q.shape[0], keep=True)
    out = st.sav_exact(q, scale_exp, spec, spec.constants(), ctx)
    T, _ = ctx.codes["sav.T"]
    R2, fr2 = spec.constants()["sav.recip"], spec.formats["sav.recip"].F
    f_out = spec.formats["sav.out"]
    for i in range(q.shape[0]):
        exact = Fraction(int(T[i])) * Fraction(R2, 2 ** fr2) * Fraction(2) ** (2 * scale_exp)
        assert int(out[i]) == min(round_fraction(exact * 2 ** f_out.F, rounding), f_out.max_code)


@pytest.mark.parametrize("rounding", ["TRN", "RND", "RND_CONV"])
@pytest.mark.parametrize("recip_w", [6, 12, 24])
def test_ssa_reciprocal_mean_exact(generous, rounding, recip_w):
    """x = cast(acc * quantize(1/N) * s): equal to the exact rational with the stated rounding."""
    N = generous.n_tokens
    spec = _spec_with(generous, **{"ssa.recip": Fmt(recip_w, -5, False, rounding, "SAT"),
                                   "ssa.out": Fmt(14, 4, True, rounding, "SAT")})
    R = spec.constants()["ssa.recip"]
    assert R == round_fraction(Fraction(1, N) * 2 ** (recip_w + 5), rounding)
    rng = np.random.default_rng(8)
    q = make_tokens(rng, 60)
    for scale_exp in (-5, -1):
        ctx = st.Ctx(n=q.shape[0])
        x = st.ssa_mean(q, scale_exp, spec, spec.constants(), ctx)
        acc = q[:, 1:, :].astype(np.int64).sum(axis=1)
        f_out = spec.formats["ssa.out"]
        for a, got in zip(acc.ravel().tolist(), x.ravel().tolist()):
            exact = Fraction(a) * Fraction(R, 2 ** (recip_w + 5)) * Fraction(2) ** scale_exp
            want = min(max(round_fraction(exact * 2 ** f_out.F, rounding), f_out.min_code), f_out.max_code)
            assert got == want


def test_comparator_stage_flips_at_threshold(generous):
    f_g = generous.formats["gate.out"]
    for tau in (0.5, 0.2, 0.44, 0.92, 0.7310585786300049):
        thr = logit(tau)
        T = math.ceil(math.ldexp(thr, f_g.F))
        g = np.array([T - 2, T - 1, T, T + 1], np.int64)
        exit_ = g >= T  # the stage's comparator, on codes
        vals = g * f_g.lsb
        assert list(exit_) == [False, False, True, True]
        assert list(vals >= thr) == list(exit_)  # same decision as comparing the fixed value with logit(tau)


@pytest.mark.parametrize("tau", [0.5, 0.44, 0.92, 0.2])
def test_unit_exit_flips_exactly_at_logit_tau(world, generous, tau):
    """w = 0: g = b' exactly; b' on the grid point at / just below / just above logit(tau)."""
    f_g = generous.formats["gate.out"]
    generous = _spec_with(generous, **{"gate.b": f_g})  # b' exactly representable
    thr = logit(tau)
    T = math.ceil(math.ldexp(thr, f_g.F))
    q = make_tokens(np.random.default_rng(9), 4)
    for delta, want in ((-1, False), (0, True), (1, True)):
        p = dict(world["params"][6])
        p.update({"gate.w": np.zeros(3, np.float32), "gate.mu": np.zeros(3, np.float32),
                  "gate.sigma": np.ones(3, np.float32), "tau": tau})
        p["gate.b"] = np.array([(T + delta) * f_g.lsb])  # exactly representable in gate.b and gate.out
        u = ExitUnit(generous, {6: p}, world["text"], world["logit_scale"])
        out = u.run(6, q, 2.0 ** -5)
        assert np.all(out["gate_logit"] == (T + delta) * f_g.lsb)
        assert np.all(out["exit"] == want)
        ref = float_reference(p, world["text"], world["logit_scale"], q, 2.0 ** -5)
        assert np.all(ref["exit"] == want)
    # the threshold itself, when representable (tau = 0.5 -> 0): g == logit(tau) exits, one LSB less does not
    assert math.ceil(math.ldexp(logit(0.5), f_g.F)) == 0
