"""Routing comparison, disagreement estimates and the routed / memory-ordered width search (numpy only)."""
from __future__ import annotations

import numpy as np

from exitlogic.fixedpoint import search_widths
from exitlogic.fixedpoint import validate as V
from exitlogic.fixedpoint.search import search_knobs
from exitlogic.routing import first_exit


def test_route_positions_and_routed_prediction():
    exits = np.array([[False, True, True], [False, False, False], [True, False, True]])
    assert first_exit(exits).tolist() == [1, 3, 0]
    outs = {L: {"exit": exits[:, j], "pred": np.array([10 + j, 20 + j, 30 + j])} for j, L in enumerate((4, 6, 8))}
    r = V.routed(outs, [4, 6, 8], np.array([7, 8, 9]))
    assert r["pos"].tolist() == [1, 3, 0] and r["pred"].tolist() == [11, 8, 30]


def test_compare_routes_and_layer():
    layers = [4, 6]
    ref = {4: {"exit": np.array([1, 0, 0, 1], bool), "pred": np.array([1, 2, 3, 4])},
           6: {"exit": np.array([0, 1, 0, 0], bool), "pred": np.array([1, 2, 3, 4])}}
    fix = {4: {"exit": np.array([1, 0, 1, 1], bool), "pred": np.array([1, 2, 3, 0])},
           6: {"exit": np.array([0, 1, 0, 0], bool), "pred": np.array([1, 2, 3, 4])}}
    full = np.array([5, 5, 5, 5])
    labels = np.array([1, 2, 5, 4])
    c = V.compare_routes(V.routed(fix, layers, full), V.routed(ref, layers, full), labels, layers)
    assert c["exit_agreement"] == 0.75 and c["exit_disagreements"] == 1
    assert c["top1_ref"] == 1.0 and c["top1_fixed"] == 0.5 and c["top1_delta_pp"] == -50.0
    assert c["exit_distribution_fixed"] == {"4": 3, "6": 1, "full": 0}
    for d in (fix, ref):
        for L in layers:
            d[L].update(conf=np.zeros(4), margin=np.zeros(4), sav=np.zeros(4), gate_logit=np.zeros(4))
    r = V.compare_layer(fix[4], ref[4])
    assert r["exit_agreement"] == 0.75 and r["fixed_exits_only"] == 1 and r["ref_exits_only"] == 0
    assert r["pred_agreement_where_both_exit"] == 0.5


def test_flip_probability_and_rate():
    d = np.array([0.5, -0.5, 0.05, -0.05])
    e = np.array([-0.1, 0.0, 0.0, 0.1])
    # d = 0.5 never flips; d = 0.05 flips when e < -0.05 (1 of 4); d = -0.05 flips when e >= 0.05 (1 of 4)
    assert V.flip_probability(d, e).tolist() == [0.0, 0.0, 0.25, 0.25]
    assert V.flip_rate(d, np.zeros(4), 4) == 0.0
    rng = np.random.default_rng(0)
    d = rng.standard_normal(200_000)
    e = rng.normal(0, 0.01, 200_000)
    expected = np.mean(np.sign(d) != np.sign(d + e))  # true flip rate ~ f(0) E|e| = 0.399 * 0.00798
    assert abs(V.flip_rate(d, e, d.size) - expected) < 0.2 * expected


def test_agreement_stats_and_overflow(unit, world):
    outs, refs = {}, {}
    for L, (q, s) in world["samples"].items():
        outs[L] = unit.run(L, q, s)
        refs[L] = unit.float_reference(L, q, s)
    layers = sorted(outs)
    thr = {L: unit.layers[L]["logit_tau"] for L in layers}
    full = np.zeros(400, np.int64)
    st = V.agreement_stats(outs, refs, layers, full, thr)
    assert st["route_exit_agreement"] >= 0.99 and st["outcome_agreement"] >= 0.99
    assert 0 <= st["route_disagreement_estimate"] < 0.01
    assert all(0 <= v < 0.01 for v in st["layer_disagreement_estimate"].values())
    ov = V.overflow_summary(outs[6])
    assert ov["total"] == 0 and ov["samples_with_overflow"] == 0 and set(ov["per_stage"]) >= {"ssa", "gate"}


def test_routed_search_in_memory_order(world, generous):
    layers = sorted(world["samples"])
    sub = {L: (world["samples"][L][0][:150], world["samples"][L][1]) for L in layers}
    knobs = ["fc2.out", "fc1.weight", "gate.out", "sim.text"]
    order = search_knobs(generous, knobs, order="memory")
    assert order == ["fc1.weight", "sim.text", "gate.out", "fc2.out"]  # stored bits first, then pipeline order
    seen = []
    res = search_widths(generous, world["params"], world["text"], world["logit_scale"], sub, target=0.99,
                        knobs=knobs, criterion="route", full_pred=np.zeros(150, np.int64), safety=2.0,
                        order="memory", progress=lambda k: seen.append(k))
    assert [s["knob"] for s in res.steps] == order
    assert res.exit_agreement >= 0.99 and res.pred_agreement >= 0.99
    assert any(s["to"] < s["from"] for s in res.steps) and seen == order
