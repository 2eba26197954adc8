"""Float LRA-EE policy core on constructed cases with known answers (numpy only)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from exitlogic import analyses as A
from exitlogic.baselines import pabee_route
from hwsim.workload import cumulative_fraction, flops_saving, head_fraction
from exitlogic.gates import bce, fit_gate, logit, stack_features
from exitlogic.policy import apply_route, default_grid, route, sweep
from exitlogic.pruning import parse_exit_layers, select_candidates
from quant.geometry import shipped_geometry


def test_grid_is_the_papers():
    g = default_grid()
    assert len(g) == 25 and g[0] == 0.20 and g[-1] == 0.92


def test_route_first_passing_candidate():
    scores = np.array([[0.9, 0.9, 0.9], [0.1, 0.6, 0.9], [0.1, 0.1, 0.1], [0.1, 0.1, 0.5]])
    assert route(scores, [0.5, 0.5, 0.5]).tolist() == [0, 1, 3, 2]
    assert route(scores, [0.95, 0.95, 0.5]).tolist() == [2, 2, 3, 2]


def test_sweep_equals_brute_force():
    rng = np.random.default_rng(0)
    n, C = 300, 3
    scores = rng.random((n, C))
    corr = rng.random((n, C)) < 0.6
    full = rng.random(n) < 0.5
    cum = np.array([0.5, 0.7, 0.9])
    grid = np.linspace(0.1, 0.9, 5)
    res = sweep(scores, corr, full, cum, grid, head_fraction=0.01)
    assert len(res.accuracy) == 5 ** 3
    for m, combo in enumerate(itertools.product(range(5), repeat=C)):
        assert tuple(res.combos[m]) == combo
        pos = route(scores, grid[list(combo)])
        ok = np.where(pos < C, corr[np.arange(n), np.minimum(pos, C - 1)], full)
        assert res.accuracy[m] == ok.sum() / n
        comp = np.where(pos < C, cum[np.minimum(pos, C - 1)], 1.0) + 0.01 * np.minimum(pos + 1, C)
        assert res.compute[m] == pytest.approx(comp.mean(), abs=1e-9)


def test_lct_on_a_constructed_case():
    """Layer 1 is right exactly on the first 40 samples and its gate says so; layer 2 never is."""
    n = 100
    scores = np.zeros((n, 2))
    scores[:40, 0] = 0.9  # confident and right
    scores[40:, 0] = 0.3
    scores[:, 1] = 0.5
    corr = np.zeros((n, 2), bool)
    corr[:40, 0] = True
    full = np.zeros(n, bool)
    full[20:70] = True  # full depth right on 20..69
    cum = np.array([0.5, 0.75])
    res = sweep(scores, corr, full, cum)
    i = res.choose(budget=1.0)
    taus = res.thresholds(i)
    # best: exit the first 40 at layer 1 (tau1 in (0.3, 0.9]), never exit at layer 2 (tau2 > 0.5)
    assert 0.3 < taus[0] <= 0.9 and taus[1] > 0.5
    assert res.accuracy[i] == (40 + 30) / n
    assert res.compute[i] == pytest.approx((40 * 0.5 + 60 * 1.0) / n)
    # a budget below that forces more exits, at lower accuracy
    j = res.choose(budget=0.6)
    assert res.compute[j] <= 0.6 and res.accuracy[j] < res.accuracy[i]
    assert res.choose(budget=0.1) == -1
    front = res.pareto()
    assert np.all(np.diff(res.compute[front]) > 0) and np.all(np.diff(res.accuracy[front]) > 0)
    # routing the chosen thresholds reproduces the sweep's numbers and the quadrant identity
    pos = route(scores, taus)
    r = apply_route(pos, [4, 8], 12, np.where(corr, 1, 0), np.where(full, 1, 0), np.ones(n, int))
    assert r.accuracy == res.accuracy[i]
    q = A.quadrants(r.correct, full)
    assert (q["both"], q["rescue"], q["loss"], q["neither"]) == (50, 20, 0, 30)
    assert q["net"] == r.correct.sum() - full.sum() == 20


def test_quadrants_net_equals_top1_difference():
    rng = np.random.default_rng(1)
    e, f = rng.random(1000) < 0.7, rng.random(1000) < 0.6
    q = A.quadrants(e, f)
    assert q["both"] + q["rescue"] + q["loss"] + q["neither"] == 1000
    assert q["net"] == e.sum() - f.sum()
    assert q["net_pp"] == pytest.approx(100 * (e.mean() - f.mean()))


def test_selectivity_and_distribution():
    pos = np.array([0, 0, 1, 2, 2])
    correct = np.array([1, 1, 0, 0, 1], bool)
    s = A.selectivity(pos, correct, 2)
    assert s["exited_fraction"] == 0.6 and s["exited_accuracy"] == pytest.approx(2 / 3)
    assert s["full_depth_accuracy"] == 0.5
    d = A.exit_distribution(np.array([8, 8, 10, 12, 12]), [8, 10], 12)
    assert d == {"8": 0.4, "10": 0.2, "12": 0.4}


def test_gate_fit_is_the_bce_minimum():
    rng = np.random.default_rng(0)
    n = 2000
    conf = rng.random(n)
    margin = conf * rng.random(n)
    sav = rng.normal(100, 20, n)
    f = stack_features(conf, margin, sav)
    y = rng.random(n) < 1 / (1 + np.exp(-(6 * conf - 3)))
    g = fit_gate(f, y, l2=0.0)
    assert g.w[0] > 0  # confidence predicts correctness
    base = bce(g, f, y)
    for k in range(3):
        for d in (-1e-2, 1e-2):
            w = g.w.copy()
            w[k] += d
            assert bce(type(g)(w, g.b, g.mu, g.sigma), f, y) > base
    # score >= tau  <=>  logit >= logit(tau)
    tau = 0.6
    assert np.array_equal(g.score(f) >= tau, g.logit(f) >= logit(tau))


def test_gate_features_refuse_nan():
    with pytest.raises(ValueError, match="sav: NaN"):
        stack_features(np.ones(3), np.ones(3), np.array([1.0, np.nan, 2.0]))


def test_pabee():
    pred = np.array([[1, 1, 1], [1, 2, 2], [1, 2, 3], [3, 3, 4]])
    assert pabee_route(pred, 1).tolist() == [1, 2, 3, 1]
    assert pabee_route(pred, 2).tolist() == [2, 3, 3, 3]


def test_candidate_selection_prunes_low_inr():
    acc = {L: 0.3 + 0.05 * L for L in range(1, 12)}
    inr = {L: 10.0 for L in range(1, 12)}
    inr[9] = 2.0  # pathological
    sel = select_candidates(acc, 0.8, inr, 12, kappa=0.5, viability=0.85, max_candidates=3)
    assert sel["pool"] == [8, 9, 10, 11]
    assert 9 in sel["pool"] and sel["pruned_by_inr"] == [9]
    assert sel["candidate_layers"] == [8, 10, 11]


def test_parse_exit_layers():
    assert parse_exit_layers("10,8", 12) == [8, 10]
    for bad in ("12", "0", "8,8", "x"):
        with pytest.raises(ValueError, match="allowed"):
            parse_exit_layers(bad, 12)


def test_compute_fractions_from_the_geometry():
    g = shipped_geometry("ViT-B-32")
    cum = cumulative_fraction(g)
    assert cum[-1] == 1.0 and np.all(np.diff(cum) > 0)
    assert flops_saving(g, np.full(10, 12)) == 0.0
    # exits at block 6 save about half; each head costs well under 1% of the tower
    assert flops_saving(g, np.full(10, 6)) == pytest.approx(1 - cum[5])
    assert 0.45 < 1 - cum[5] < 0.55
    assert 0 < head_fraction(g, 1000) < 0.01
    e = np.array([8, 10, 11, 12])
    with_heads = flops_saving(g, e, 1000, np.array([1, 2, 3, 3]))
    assert with_heads == pytest.approx(flops_saving(g, e) - 9 / 4 * head_fraction(g, 1000))
