"""Pareto fronts (all objectives minimised; negate the ones to maximise)."""
from __future__ import annotations

import numpy as np


def pareto_mask(points: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``points`` (n, d), minimisation.

    Points are visited in lexicographic order, each compared with the current front only,
    so the cost is O(n * front size). Duplicates of a front point are kept.
    """
    pts = np.asarray(points, dtype=float)
    n = len(pts)
    if n == 0:
        return np.zeros(0, bool)
    order = np.lexsort(pts.T[::-1])
    front: list[int] = []
    keep = np.zeros(n, bool)
    fp = np.empty((0, pts.shape[1]))
    for i in order:
        p = pts[i]
        if len(front):
            dom = np.all(fp <= p, axis=1) & np.any(fp < p, axis=1)
            if dom.any():
                continue
        front.append(i)
        fp = pts[front]
        keep[i] = True
    return keep
