"""The exit unit on the two integer patch-token sums (what a feature store keeps) equals the unit on all tokens."""
from __future__ import annotations

import numpy as np
import pytest

from exitlogic.fixedpoint import TapSums, float_reference


def test_unit_on_sums_equals_unit_on_tokens_bit_for_bit(world, unit):
    for L, (q, s) in world["samples"].items():
        a = unit.run(L, q, s, keep=True)
        b = unit.run(L, TapSums.of_tokens(q), s, keep=True)
        for k in ("pred", "conf", "margin", "sav", "gate_logit", "exit", "overflow.total"):
            assert np.array_equal(a[k], b[k]), k
        for name, (codes, frac) in a["intermediates"].items():
            assert np.array_equal(codes, b["intermediates"][name][0]) and frac == b["intermediates"][name][1], name


def test_reference_on_sums_matches_tokens(world):
    """Same predictions and exit decisions; SAV from the exact integer numerator differs by rounding only."""
    for L, (q, s) in world["samples"].items():
        p = world["params"][L]
        a = float_reference(p, world["text"], world["logit_scale"], q, s)
        b = float_reference(p, world["text"], world["logit_scale"], TapSums.of_tokens(q), s)
        assert np.array_equal(a["pred"], b["pred"]) and np.array_equal(a["exit"], b["exit"])
        assert np.allclose(a["sav"], b["sav"], rtol=1e-12, atol=0)
        assert np.allclose(a["conf"], b["conf"], rtol=1e-12, atol=0)


def test_sums_are_checked(unit, world):
    from common.errors import InputError

    L, (q, s) = next(iter(world["samples"].items()))
    ts = TapSums.of_tokens(q)
    with pytest.raises(InputError, match="tap sums"):
        unit.run(L, TapSums(ts.s1[:, :-1], ts.s2, ts.n_tokens), s)
    with pytest.raises(InputError, match="outside the range"):
        unit.run(L, TapSums(ts.s1 + 10_000, ts.s2, ts.n_tokens), s)
    assert ts.shape == q.shape and len(ts[:5]) == 5
