"""Early-exit baselines evaluated on cached per-sample predictions (numpy only).

- **PABEE** (Zhou et al., NeurIPS 2020), patience p over the candidate layers c_1 < ... < c_C:
  a counter starts at 0 and, at each candidate after the first, increases by one when the
  head's prediction equals the previous candidate's and resets to 0 otherwise; the sample
  exits at the first candidate where the counter reaches p (prediction of that head), else
  runs full depth.
- **Static truncation** at block L: every sample stops after block L and takes the exit head's
  prediction there (full depth: the model's own prediction).
- The confidence-only heuristic and CLS-EE reuse the LCT machinery (:mod:`exitlogic.policy`)
  with score = conf, resp. [CLS]-token heads with their own learned gates.
"""
from __future__ import annotations

import numpy as np


def pabee_route(cand_pred: np.ndarray, patience: int) -> np.ndarray:
    """Exit position per sample (0..C-1, C = full depth) under PABEE with ``patience`` >= 1."""
    if patience < 1:
        raise ValueError(f"patience {patience}: allowed: an integer >= 1")
    n, C = cand_pred.shape
    pos = np.full(n, C, np.int64)
    count = np.zeros(n, np.int64)
    for j in range(1, C):
        same = cand_pred[:, j] == cand_pred[:, j - 1]
        count = np.where(same, count + 1, 0)
        hit = (count >= patience) & (pos == C)
        pos[hit] = j
    return pos
