"""Fixed-point exit unit vs a float reference: per-layer and end-to-end (routed) comparison (numpy only).

Routing (as :mod:`exitlogic.policy`): candidate layers c_1 < ... < c_C; a sample exits at the first
c_j whose comparator fires and takes that head's prediction, else it runs full depth and takes
the INT8 model's own prediction (the same on both sides of a comparison).

Every comparison is "fixed" (this unit's outputs) against "ref" (a float model's outputs of the
same quantities: ``pred``, ``conf``, ``margin``, ``sav``, ``gate_logit``, ``exit`` per layer).
"""
from __future__ import annotations

import numpy as np

from exitlogic.routing import first_exit

from .spec import STAGE_OF, STAGE_ORDER
from .unit import COUNTER_NAMES

QUANTITIES = ("conf", "margin", "sav", "gate_logit")


def run_unit(unit, tokens: dict, progress=None) -> dict:
    """``{layer: ExitUnit.run(layer, q, s)}`` for ``tokens`` = {layer: (q_int8, token_scale)}."""
    out = {}
    for layer, (q, s) in tokens.items():
        out[layer] = unit.run(layer, q, s)
        if progress:
            progress(layer)
    return out


def run_reference(unit, tokens: dict) -> dict:
    """The float64 reference on the same int8 tokens (``ExitUnit.float_reference``) per layer."""
    return {layer: unit.float_reference(layer, q, s) for layer, (q, s) in tokens.items()}


def routed(outputs: dict, layers: list, full_pred: np.ndarray) -> dict:
    """Routing of per-layer outputs: ``pos`` [n] (0..C), ``pred`` [n] (head at pos, else ``full_pred``)."""
    exits = np.stack([np.asarray(outputs[L]["exit"], bool) for L in layers], 1)
    preds = np.stack([np.asarray(outputs[L]["pred"], np.int64) for L in layers]
                     + [np.asarray(full_pred, np.int64)], 1)
    pos = first_exit(exits)
    return {"pos": pos, "pred": preds[np.arange(len(pos)), pos]}


def flip_probability(d: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Per sample i, the probability that its exit decision flips when an error drawn from the empirical
    distribution ``e`` (fixed - ref gate logits of all samples) is added to its margin ``d_i = g_ref_i - thr``.

    ``d >= 0`` (exits): flips iff ``e < -d``; ``d < 0`` (stays): flips iff ``e >= -d``.  Assumes the
    error is independent of the margin (rounding noise); its mean over samples estimates the
    disagreement rate far less noisily than counting the few flips of a finite sample.
    """
    d = np.asarray(d, np.float64)
    es = np.sort(np.asarray(e, np.float64).reshape(-1))
    if es.size == 0:
        return np.zeros_like(d)
    below = np.searchsorted(es, -d, side="left") / es.size  # P(e < -d)
    return np.where(d >= 0, below, 1.0 - below)


DENSITY_K = 40  # samples nearest the threshold used for the margin density at the threshold


def flip_rate(d: np.ndarray, e: np.ndarray, n: int, k: int = DENSITY_K) -> float:
    """Estimated number of flips per sample of a population of ``n``, for the samples with margins ``d``
    (``g_ref - thr``) and the gate-logit errors ``e`` (all samples of the layer).

    The larger of two estimates: (i) the mean flip probability :func:`flip_probability` and (ii) the
    first-order rate ``f_d(0) * E|e|`` with the margin density at the threshold
    ``f_d(0) = k / (2 h)`` per population sample, ``h`` the k-th smallest ``|d|`` (smooth in both
    the errors and the margins, so a handful of samples near the threshold cannot make it vanish).
    """
    d = np.asarray(d, np.float64).reshape(-1)
    e = np.asarray(e, np.float64).reshape(-1)
    if d.size == 0 or e.size == 0 or n <= 0:
        return 0.0
    cdf = float(flip_probability(d, e).sum()) / n
    kk = min(int(k), d.size)
    h = float(np.partition(np.abs(d), kk - 1)[kk - 1])
    dens = kk / (2.0 * h) / n if h > 0 else float("inf")
    return max(cdf, dens * float(np.mean(np.abs(e))))


def agreement_stats(fixed: dict, ref: dict, layers: list, full_pred: np.ndarray, thresholds: dict) -> dict:
    """Observed and estimated agreement of a fixed unit with a reference (same samples at every layer).

    ``thresholds`` = {layer: logit(tau)}.  Observed: per-layer exit-decision agreement, routed exit
    position agreement, routed outcome (position and final prediction) agreement.  Estimated
    (:func:`flip_rate`): per-layer disagreement rate over all samples and the routed disagreement
    rate (at each layer over the samples that reach it in the reference routing, summed).
    """
    layers = list(layers)
    C = len(layers)
    fr, rr = routed(fixed, layers, full_pred), routed(ref, layers, full_pred)
    n = len(rr["pos"])
    layer_obs, layer_est, route_est = {}, {}, 0.0
    for j, L in enumerate(layers):
        g_r = np.asarray(ref[L]["gate_logit"], np.float64)
        e = np.asarray(fixed[L]["gate_logit"], np.float64) - g_r
        d = g_r - thresholds[L]
        layer_obs[L] = float(np.mean(np.asarray(fixed[L]["exit"], bool) == np.asarray(ref[L]["exit"], bool)))
        layer_est[L] = flip_rate(d, e, n)
        route_est += flip_rate(d[rr["pos"] >= j], e, n)
    same = (fr["pos"] == rr["pos"]) & (fr["pred"] == rr["pred"])
    return {"layer_exit_agreement": layer_obs, "route_exit_agreement": float(np.mean(fr["pos"] == rr["pos"])),
            "outcome_agreement": float(np.mean(same)), "layer_disagreement_estimate": layer_est,
            "route_disagreement_estimate": min(route_est, 1.0), "n": n, "layers": C}


def _err_stats(d: np.ndarray) -> dict:
    a = np.abs(np.asarray(d, np.float64))
    if a.size == 0:
        return {"max_abs": 0.0, "mean_abs": 0.0}
    return {"max_abs": float(a.max()), "mean_abs": float(a.mean())}


def compare_layer(fixed: dict, ref: dict) -> dict:
    """Agreement and error statistics of one layer (all samples)."""
    ex_f, ex_r = np.asarray(fixed["exit"], bool), np.asarray(ref["exit"], bool)
    n = int(ex_f.size)
    out = {
        "n": n,
        "exit_agreement": float(np.mean(ex_f == ex_r)) if n else 1.0,
        "exit_disagreements": int(np.sum(ex_f != ex_r)),
        "fixed_exits_only": int(np.sum(ex_f & ~ex_r)),
        "ref_exits_only": int(np.sum(ex_r & ~ex_f)),
        "exit_rate_fixed": float(ex_f.mean()) if n else 0.0,
        "exit_rate_ref": float(ex_r.mean()) if n else 0.0,
        "pred_agreement": float(np.mean(np.asarray(fixed["pred"]) == np.asarray(ref["pred"]))) if n else 1.0,
        "pred_agreement_where_both_exit": (float(np.mean(np.asarray(fixed["pred"])[ex_f & ex_r]
                                                         == np.asarray(ref["pred"])[ex_f & ex_r]))
                                           if np.any(ex_f & ex_r) else None),
        "errors": {k: _err_stats(np.asarray(fixed[k], np.float64) - np.asarray(ref[k], np.float64))
                   for k in QUANTITIES},
    }
    return out


def compare_routes(fixed_r: dict, ref_r: dict, labels: np.ndarray, layers: list) -> dict:
    """End-to-end comparison of two routings (``routed`` dicts) on the same samples."""
    labels = np.asarray(labels, np.int64)
    pf, pr = fixed_r["pos"], ref_r["pos"]
    n = int(len(pf))
    top_f = float(np.mean(fixed_r["pred"] == labels)) if n else 0.0
    top_r = float(np.mean(ref_r["pred"] == labels)) if n else 0.0
    names = [str(L) for L in layers] + ["full"]
    return {
        "n": n,
        "exit_agreement": float(np.mean(pf == pr)) if n else 1.0,
        "exit_disagreements": int(np.sum(pf != pr)),
        "outcome_agreement": float(np.mean((pf == pr) & (fixed_r["pred"] == ref_r["pred"]))) if n else 1.0,
        "pred_agreement": float(np.mean(fixed_r["pred"] == ref_r["pred"])) if n else 1.0,
        "top1_fixed": top_f,
        "top1_ref": top_r,
        "top1_delta_pp": 100.0 * (top_f - top_r),
        "exit_distribution_fixed": {nm: int(np.sum(pf == j)) for j, nm in enumerate(names)},
        "exit_distribution_ref": {nm: int(np.sum(pr == j)) for j, nm in enumerate(names)},
    }


def overflow_summary(out: dict) -> dict:
    """Overflow events of one layer's run: per cast point (non-zero only), per stage, samples affected."""
    per_point = {}
    per_stage = {s: 0 for s in STAGE_ORDER}
    for name in COUNTER_NAMES:
        v = int(np.sum(out[f"overflow.{name}"]))
        if v:
            per_point[name] = v
        per_stage[STAGE_OF[name]] += v
    return {"total": int(np.sum(out["overflow.total"])),
            "samples_with_overflow": int(np.sum(np.asarray(out["overflow.total"]) > 0)),
            "per_stage": per_stage, "per_cast_point": per_point}


def errors(fixed: dict, ref: dict, key: str) -> np.ndarray:
    """Signed error ``fixed - ref`` of one quantity (for histograms)."""
    return np.asarray(fixed[key], np.float64) - np.asarray(ref[key], np.float64)
