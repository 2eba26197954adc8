"""The fast paths of the bit-true unit give the same integers as the general ones (``==``).

- ``requant`` with one shift for all elements (``_requant_scalar``) vs the per-element path;
- ``ExitUnit(cache=...)``: parameter codes and tables shared between units of different specs;
- ``run_stages(only=affected_stages(...))`` from a snapshot vs a full run;
- the width search (shared cache, only the affected stages re-run) vs the plain re-run of every stage
  from the knob's stage on, with fresh units.
"""
from __future__ import annotations

import numpy as np
import pytest

from common.errors import InputError
from exitlogic.fixedpoint import ExitUnit, Fmt, search_widths
from exitlogic.fixedpoint import fixed as FX
from exitlogic.fixedpoint import search as S
from exitlogic.fixedpoint.spec import STAGE_ORDER
from exitlogic.fixedpoint.unit import affected_stages


def _codes(rng, n=4000):
    edge = np.array([0, 1, -1, 2, -2, 3, -3, (1 << 61) - 1, -(1 << 61) + 1, 1 << 40, -(1 << 40), (1 << 20) + (1 << 19),
                     -((1 << 20) + (1 << 19)), 5 << 7, -(5 << 7), 7 << 7, -(7 << 7)], np.int64)
    mags = rng.integers(0, 61, n)
    rand = (rng.integers(0, 1 << 62, n, dtype=np.int64) >> (61 - mags + 1)) * rng.choice([-1, 1], n)
    return np.concatenate([edge, rand.astype(np.int64)])


@pytest.mark.parametrize("rounding", ["TRN", "RND", "RND_CONV"])
@pytest.mark.parametrize("overflow", ["SAT", "WRAP"])
def test_requant_scalar_shift_equals_general(rounding, overflow):
    rng = np.random.default_rng(7)
    c = _codes(rng)
    for signed in (True, False):
        for W, I in ((8, 3), (18, 6), (31, -4), (60, 70), (12, 12), (1, 1)):
            if not signed and W < 1:
                continue
            fmt = Fmt(W, I, signed, rounding, overflow)
            for src in (-80, -70, -3, 0, 1, fmt.F - 63, fmt.F - 62, fmt.F - 1, fmt.F, fmt.F + 1, fmt.F + 5,
                        fmt.F + 61, fmt.F + 62, fmt.F + 70):
                fast = FX.requant(c, src, fmt)
                ref = FX._requant_general(c, np.full(c.shape, src, np.int64), fmt)
                assert np.array_equal(fast.codes, ref.codes), (fmt, src)
                assert np.array_equal(fast.overflow, ref.overflow), (fmt, src)
                assert fast.codes.dtype == np.int64


def _outputs_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if k == "intermediates":
            assert a[k].keys() == b[k].keys()
            for n in a[k]:
                assert np.array_equal(a[k][n][0], b[k][n][0]) and a[k][n][1] == b[k][n][1], n
        else:
            assert np.array_equal(a[k], b[k]), k


def test_unit_cache_gives_the_same_codes(world, generous):
    params, t, ls = world["params"], world["text"], world["logit_scale"]
    narrow = S._with(S._with(generous, "fc1.weight", 12), "gelu.phi", 10)
    cache = {}
    for spec in (generous, narrow, generous, narrow):  # hits and misses in both directions
        cached = ExitUnit(spec, params, t, ls, cache=cache)
        plain = ExitUnit(spec, params, t, ls)
        for L in params:
            for k in ("ln.weight", "ln.bias", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"):
                assert np.array_equal(cached.layers[L][k], plain.layers[L][k])
            q, s = world["samples"][L]
            _outputs_equal(cached.run(L, q[:60], s, keep=True), plain.run(L, q[:60], s, keep=True))
        assert np.array_equal(cached.text_q, plain.text_q)
        assert all(np.array_equal(cached.tables[n], plain.tables[n]) for n in plain.tables)
    assert len(cache) > 0
    with pytest.raises(ValueError):  # shared codes are read-only
        ExitUnit(generous, params, t, ls, cache=cache).layers[next(iter(params))]["fc1.weight"][0, 0] = 1


def test_affected_stages():
    assert affected_stages("sav") == ("sav", "gate")
    assert affected_stages("ssa") == tuple(n for n in STAGE_ORDER if n != "sav")
    assert affected_stages("fc2") == ("fc2", "l2", "sim", "softmax", "gate")
    assert affected_stages("gate") == ("gate",)


@pytest.mark.parametrize("knob", ["sav.out", "sav.recip", "ssa.out", "ln.var", "fc1.weight", "exp.out", "gate.out"])
def test_resume_only_affected_stages_equals_full_run(world, generous, knob):
    params, t, ls = world["params"], world["text"], world["logit_scale"]
    base_unit = ExitUnit(generous, params, t, ls)
    new_spec = S._with(generous, knob, S._current(generous, knob) - 6)
    new_unit = ExitUnit(new_spec, params, t, ls)
    _, stage_of = S._knobs(generous, None, True)
    first = stage_of(knob)
    for L in params:
        q, s = world["samples"][L]
        base = base_unit.start(L, q[:80], s)
        base_unit.run_stages(base)
        resumed = ExitUnit.snapshot(base, first, affected_stages(first))
        new_unit.run_stages(resumed, first, only=affected_stages(first))
        _outputs_equal(new_unit.outputs(resumed), new_unit.run(L, q[:80], s))


def test_search_fast_paths_equal_plain_reruns(world, generous, monkeypatch):
    params, t, ls = world["params"], world["text"], world["logit_scale"]
    sub = {L: (q[:150], s) for L, (q, s) in world["samples"].items()}
    knobs = ["fc1.weight", "sav.out", "ln.diff", "exp.out", "gate.out"]
    kw = dict(target=0.99, knobs=knobs, criterion="route", full_pred=np.zeros(150, np.int64), safety=2.0,
              order="memory")
    fast = search_widths(generous, params, t, ls, sub, **kw)

    def plain_try(self, spec, first_stage):  # the search before the fast paths: fresh units, every later stage
        self.evaluations += 1
        try:
            unit = ExitUnit(spec, {L: self.params[L] for L in self.samples}, self.text, self.ls)
        except InputError:
            return None
        states = {}
        for layer, base in self.base_states.items():
            state = ExitUnit.snapshot(base, first_stage)
            try:
                unit.run_stages(state, first_stage)
            except InputError:
                return None
            states[layer] = state
        return self.score(unit, states)

    monkeypatch.setattr(S._Evaluator, "try_spec", plain_try)
    plain = search_widths(generous, params, t, ls, sub, **kw)
    assert fast.steps == plain.steps and fast.evaluations == plain.evaluations
    assert fast.spec.to_json() == plain.spec.to_json()
    assert any(s["to"] < s["from"] for s in fast.steps)


def test_int_matmul_one_gemm_when_the_l1_bound_allows():
    rng = np.random.default_rng(3)
    n, k, m = 64, 256, 300  # n * m * k >= 4e6: the float64 path (numpy's int64 matmul is the exact reference)
    for bits_a, bits_b in ((26, 22), (30, 14), (20, 33), (40, 12), (50, 3), (33, 11)):
        a = rng.integers(-(1 << bits_a), 1 << bits_a, (n, k), dtype=np.int64) >> rng.integers(0, 12, (n, 1))
        b = rng.integers(-(1 << bits_b), 1 << bits_b, (k, m), dtype=np.int64)
        a[0, :] = (1 << bits_a) - 1  # a row of maxima: the L1 bound is reached by a real dot product
        b[:, 0] = (1 << bits_b) - 1
        assert np.array_equal(FX.int_matmul(a, b), a @ b), (bits_a, bits_b)
    # just below 2**53 (one GEMM; the limb split alone would take two) and just above (limbs)
    for top in ((1 << 53) - 1, (1 << 53) + (1 << 20)):
        a = np.full((n, k), top // (k * 2047), np.int64)
        a[:, 1::2] *= -1
        b = np.full((k, m), 2047, np.int64)
        b[::3] = -2045
        assert np.array_equal(FX.int_matmul(a, b), a @ b)


def test_interp_lut_equals_the_per_element_formula():
    from exitlogic.fixedpoint import stages as ST

    rng = np.random.default_rng(5)
    for entries, fa, sigma, fmt in ((1024, 20, -6, Fmt(20, 1, False)), (1024, 3, -6, Fmt(22, 1, False)),
                                    (256, 30, -4, Fmt(18, 1, False, "RND")), (64, 2, 1, Fmt(12, 1, False, "TRN"))):
        table = rng.integers(0, 1 << (fmt.W - 1), entries + 1).astype(np.int64)
        top = entries << max(fa + sigma, 0) if fa + sigma >= 0 else entries >> -(fa + sigma)
        a = np.concatenate([rng.integers(0, max(top, 1), (50, 40)).reshape(-1), [0, max(top - 1, 0)]]).reshape(-1, 2)
        ctx_fast, ctx_ref = ST.Ctx(n=a.shape[0]), ST.Ctx(n=a.shape[0])
        fast = ST.interp_lut("exp.out", a, fa, sigma, table, fmt, ctx_fast)
        sh = fa + sigma  # the formula as documented, element by element
        idx = ST._floor_shift(a, sh)
        shp = max(sh, 0)
        fr = a - (idx << np.int64(shp)) if sh > 0 else np.zeros_like(a)
        ref = ctx_ref.cast("exp.out", (table[idx] << np.int64(shp)) + (table[idx + 1] - table[idx]) * fr, fmt.F + shp, fmt)
        assert np.array_equal(fast, ref) and np.array_equal(ctx_fast.overflow["exp.out"], ctx_ref.overflow["exp.out"])


def test_ctx_count_without_events_is_zero_per_sample():
    from exitlogic.fixedpoint import stages as ST

    ctx = ST.Ctx(n=3)
    ctx.count("x", np.zeros((3, 4), bool))
    ctx.count("x", np.array([[0, 1], [1, 1], [0, 0]], bool))
    ctx.count("x", np.bool_(True))
    assert ctx.overflow["x"].tolist() == [2, 3, 1] and ctx.overflow["x"].dtype == np.int64


@pytest.mark.parametrize("rounding", ["TRN", "RND", "RND_CONV"])
def test_requant_per_row_shift_equals_the_full_shift_array(rounding):
    rng = np.random.default_rng(11)
    c = _codes(rng, 3000)[:3000].reshape(300, 10)
    for fmt in (Fmt(20, 4, True, rounding, "SAT"), Fmt(16, 2, False, rounding, "WRAP")):
        frac = rng.integers(fmt.F - 70, fmt.F + 70, (300, 1))
        row = FX.requant(c, frac, fmt)
        full = FX._requant_general(c, np.broadcast_to(frac, c.shape).copy(), fmt)
        assert np.array_equal(row.codes, full.codes) and np.array_equal(row.overflow, full.overflow)
        assert row.codes.shape == c.shape == row.overflow.shape
