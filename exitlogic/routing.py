"""The routing rule of LRA-EE, stated once (numpy only; torch-free, so hwsim may import it).

A sample exits at the first candidate layer whose gate passes its threshold, else it runs to full
depth. Positions are candidate indices 0..C-1, and C means "no exit" (full depth). The float policy
(:mod:`exitlogic.policy`), the fixed-point unit's validation (:mod:`exitlogic.fixedpoint.validate`)
and hwsim's re-thresholding of a trace (:func:`hwsim.trace.apply_thresholds`) all call these.
"""
from __future__ import annotations

import numpy as np


def first_exit(passed: np.ndarray) -> np.ndarray:
    """int64 [n]: index of the first True per row of ``passed`` bool [n, C], C where a row has none."""
    passed = np.asarray(passed, bool)
    C = passed.shape[1]
    return np.where(passed.any(1), passed.argmax(1), C).astype(np.int64)


def passes(scores: np.ndarray, thresholds) -> np.ndarray:
    """bool [n, C]: ``scores[:, j] >= thresholds[j]`` (float64 comparison, as the hardware comparator's
    reference)."""
    return np.asarray(scores, np.float64) >= np.asarray(thresholds, np.float64)[None, :]


def route(scores: np.ndarray, thresholds) -> np.ndarray:
    """Exit position per sample: index j of the first candidate with scores[:, j] >= tau_j, C if none."""
    return first_exit(passes(scores, thresholds))
