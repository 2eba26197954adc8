"""Candidate exit layers: viability, then Pathological Layer Pruning (paper Eq. 6), numpy only.

1. **Viable pool**: blocks L in 1..depth-1 whose SSA exit head reaches at least
   ``viability`` x the INT8 model's full-depth top-1 on the gating split (a head far below the
   model cannot exit anyone usefully).
2. **INR pruning** (Eq. 6): drop L from the pool if INR(L) < kappa * mean INR over the pool
   (kappa = 0.5), INR from the QIRC profile (:mod:`quant.profile`).
3. **Cap**: keep the ``max_candidates`` deepest survivors (LCT searches G^C threshold
   combinations; the deepest layers carry the best heads, as in the paper's {8, 10, 11}).

``--exit-layers`` replaces the whole rule with the user's list.
"""
from __future__ import annotations

import numpy as np


def select_candidates(head_accuracy: dict[int, float], full_accuracy: float, inr: dict[int, float], depth: int,
                      kappa: float = 0.5, viability: float = 0.9, max_candidates: int = 3) -> dict:
    """Apply the rule; returns {candidate_layers, pool, pruned, inr_mean_pool, kappa, viability, ...}.

    ``head_accuracy`` and ``inr`` map block number -> value for blocks 1..depth-1.
    """
    layers = list(range(1, depth))
    pool = [L for L in layers if head_accuracy[L] >= viability * full_accuracy]
    if not pool:  # no head reaches the bar: fall back to the best max_candidates heads
        pool = sorted(sorted(layers, key=lambda L: -head_accuracy[L])[:max_candidates])
    mean_inr = float(np.mean([inr[L] for L in pool]))
    kept = [L for L in pool if inr[L] >= kappa * mean_inr]
    pruned = [L for L in pool if L not in kept]
    chosen = kept[-max_candidates:]
    return {"candidate_layers": chosen, "pool": pool, "pruned_by_inr": pruned, "dropped_by_cap": kept[:-max_candidates],
            "inr_mean_pool": mean_inr, "kappa": kappa, "viability": viability, "max_candidates": max_candidates,
            "full_accuracy": full_accuracy, "head_accuracy": {str(L): head_accuracy[L] for L in layers},
            "inr": {str(L): inr[L] for L in layers}}


def parse_exit_layers(text: str, depth: int) -> list[int]:
    """'8,10,11' -> [8, 10, 11]; ValueError naming the allowed range otherwise."""
    try:
        layers = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--exit-layers {text!r}: not a comma-separated list of integers; "
                         f"allowed: distinct blocks in 1..{depth - 1}") from None
    if not layers or any(not 1 <= L < depth for L in layers) or len(set(layers)) != len(layers):
        raise ValueError(f"--exit-layers {text!r}: allowed: distinct blocks in 1..{depth - 1}")
    return sorted(layers)
