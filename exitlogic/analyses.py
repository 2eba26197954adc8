"""Rescue-effect analyses of a routed policy against full-depth inference (paper Sec. 7), numpy only."""
from __future__ import annotations

import numpy as np


def quadrants(ee_correct: np.ndarray, full_correct: np.ndarray) -> dict:
    """Four-quadrant table (paper Table 4): counts and fractions of both / rescue / loss / neither.

    ``net`` = rescue - loss (samples) equals n * (top-1 of EE - top-1 of full depth) exactly;
    ``net_pp`` is it in percentage points.
    """
    e = np.asarray(ee_correct, bool)
    f = np.asarray(full_correct, bool)
    n = len(e)
    cells = {"both": int((e & f).sum()), "rescue": int((e & ~f).sum()), "loss": int((~e & f).sum()),
             "neither": int((~e & ~f).sum())}
    net = cells["rescue"] - cells["loss"]
    assert net == int(e.sum()) - int(f.sum())  # the algebraic identity behind the Rescue Effect
    return {"n": n, **cells, **{f"{k}_fraction": v / n for k, v in cells.items()}, "net": net,
            "net_pp": 100.0 * net / n, "top1_ee": float(e.mean()), "top1_full": float(f.mean())}


def selectivity(pos: np.ndarray, correct: np.ndarray, num_candidates: int) -> dict:
    """Gate selectivity (paper Sec. 7.2): accuracy of the early-exited vs the full-depth group."""
    exited = np.asarray(pos) < num_candidates
    c = np.asarray(correct, bool)
    return {"exited_fraction": float(exited.mean()),
            "exited_accuracy": float(c[exited].mean()) if exited.any() else None,
            "full_depth_fraction": float((~exited).mean()),
            "full_depth_accuracy": float(c[~exited].mean()) if (~exited).any() else None}


def exit_distribution(exit_layer: np.ndarray, candidate_layers, depth: int) -> dict:
    """Fraction of samples leaving at each candidate layer and at full depth (keys are block numbers)."""
    e = np.asarray(exit_layer)
    return {str(L): float((e == L).mean()) for L in list(candidate_layers) + [depth]}


def mean_std(values) -> dict:
    """{"mean", "std", "values"} over seeds (sample std, ddof=1; 0 for a single value)."""
    v = np.asarray([float(x) for x in values], np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "values": [float(x) for x in v]}
