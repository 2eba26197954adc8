"""The LRA-EE routing rule and Layer-adaptive Confidence Thresholding (LCT), numpy only.

Routing: candidate layers c_1 < ... < c_C with gate scores g [n, C] and thresholds tau [C].
A sample exits at the first c_j with g_j >= tau_j and takes the exit head's prediction there;
otherwise it runs full depth and takes the INT8 model's own prediction.

LCT: every combination of per-layer thresholds on a grid (default 25 points, evenly spaced in
[0.20, 0.92]) is evaluated on cached per-sample predictions (no backbone pass): accuracy and
mean compute fraction. The chosen thresholds maximise accuracy under a compute budget
(mean compute fraction <= budget); ties go to less compute, then to the first combination in
grid order. The Pareto set (accuracy up, compute down) over all combinations is kept too.

The search expands the combinations layer by layer with a "still running" mask per prefix and
does the last layer for all grid points at once with one matrix product, so its cost is about
G^(C-1) * n * G multiply-adds (C = 3, G = 25, n = 10,000: well under a second).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from exitlogic.routing import route  # noqa: F401  (re-exported: the policy's routing rule)

GRID_LOW, GRID_HIGH, GRID_POINTS = 0.20, 0.92, 25
MAX_COMBINATIONS = 2_000_000


MAX_GRID_POINTS = 1000


def parse_grid(text: str):
    """The one rule for ``--grid`` / ``thresholds.grid``: LOW:HIGH:POINTS, 0 <= LOW <= HIGH <= 1,
    1 <= POINTS <= :data:`MAX_GRID_POINTS`; the grid as a float64 array."""
    from common.errors import InputError

    try:
        lo, hi, pts = str(text).split(":")
        lo, hi, pts = float(lo), float(hi), int(pts)
    except ValueError:
        raise InputError(f"--grid {text!r}: allowed: LOW:HIGH:POINTS, e.g. 0.20:0.92:25") from None
    if not (0.0 <= lo <= hi <= 1.0) or not 1 <= pts <= MAX_GRID_POINTS:
        raise InputError(f"--grid {text!r}: allowed: 0 <= LOW <= HIGH <= 1 and 1 <= POINTS <= {MAX_GRID_POINTS}")
    return np.linspace(lo, hi, pts)


def check_grid_size(text: str, grid, n_layers: int, policy_path) -> None:
    """LCT searches POINTS^C threshold combinations (C candidate layers); refuse more than it can hold."""
    from common.errors import InputError

    total = len(grid) ** max(n_layers, 1)
    if total > MAX_COMBINATIONS:
        most = int(MAX_COMBINATIONS ** (1.0 / max(n_layers, 1)) + 1e-9)
        raise InputError(f"--grid {text!r}: {len(grid)}^{n_layers} = {total:,} threshold combinations for the "
                         f"{n_layers} candidate layers of {policy_path}; allowed: at most {MAX_COMBINATIONS:,} "
                         f"(POINTS <= {most})")


def default_grid(low: float = GRID_LOW, high: float = GRID_HIGH, points: int = GRID_POINTS) -> np.ndarray:
    """The threshold grid: ``points`` evenly spaced values in [low, high] (float64)."""
    return np.linspace(low, high, points)


@dataclass
class Routed:
    """Outcome of routing n samples: ``pos`` [n] (0..C, C = full depth), ``exit_layer`` [n]
    (block numbers, depth = full), ``pred`` [n], ``correct`` bool [n], ``heads_evaluated`` [n]."""

    pos: np.ndarray
    exit_layer: np.ndarray
    pred: np.ndarray
    correct: np.ndarray
    heads_evaluated: np.ndarray

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())


def apply_route(pos: np.ndarray, candidate_layers, depth: int, cand_pred: np.ndarray, full_pred: np.ndarray,
                labels: np.ndarray) -> Routed:
    """Predictions of a routing ``pos`` [n]: cand_pred [n, C] at the candidates, full_pred [n] at depth."""
    pos = np.asarray(pos, np.int64)
    C = cand_pred.shape[1]
    layers = np.asarray(list(candidate_layers) + [depth], np.int64)
    preds = np.concatenate([cand_pred, np.asarray(full_pred)[:, None]], 1)
    pred = preds[np.arange(len(pos)), pos]
    return Routed(pos, layers[pos], pred, pred == np.asarray(labels), np.minimum(pos + 1, C))


@dataclass
class SweepResult:
    """All threshold combinations: ``combos`` int [M, C] grid indices (first layer most
    significant), ``accuracy`` [M], ``compute`` [M] (mean compute fraction, backbone plus heads
    if they were counted), and the grid."""

    grid: np.ndarray
    combos: np.ndarray
    accuracy: np.ndarray
    compute: np.ndarray

    def thresholds(self, i: int) -> np.ndarray:
        return self.grid[self.combos[i]]

    def choose(self, budget: float) -> int:
        """Index of the best combination with compute <= budget (see module docstring); -1 if none."""
        ok = np.flatnonzero(self.compute <= budget + 1e-12)
        if len(ok) == 0:
            return -1
        acc = self.accuracy[ok]
        best = ok[acc >= acc.max() - 1e-12]
        return int(best[np.argmin(self.compute[best])])  # argmin keeps the first on ties

    def pareto(self) -> np.ndarray:
        """Indices of the Pareto set (no other combination has >= accuracy and <= compute with one
        strictly better), sorted by compute ascending; duplicates of a point keep the first combination."""
        order = np.lexsort((np.arange(len(self.compute)), -self.accuracy, self.compute))
        keep, best = [], -np.inf
        for i in order:
            if self.accuracy[i] > best + 1e-12:
                keep.append(i)
                best = self.accuracy[i]
        return np.asarray(keep, np.int64)


def sweep(scores: np.ndarray, cand_correct: np.ndarray, full_correct: np.ndarray, cum_fraction: np.ndarray,
          grid: np.ndarray | None = None, head_fraction: float = 0.0) -> SweepResult:
    """Accuracy and compute of every threshold combination on the grid.

    scores [n, C] gate scores; cand_correct bool [n, C] (exit head right at candidate j);
    full_correct bool [n]; cum_fraction [C] backbone compute fraction up to each candidate
    (full depth = 1); head_fraction: compute of one head evaluation (0 = backbone only).
    """
    grid = default_grid() if grid is None else np.asarray(grid, np.float64)
    scores = np.asarray(scores, np.float64)
    n, C = scores.shape
    G = len(grid)
    if C == 0:
        raise ValueError("no candidate layers")
    if G ** C > MAX_COMBINATIONS:
        raise ValueError(f"{G}^{C} = {G ** C} threshold combinations; allowed: at most {MAX_COMBINATIONS} "
                         "(fewer candidate layers or grid points)")
    passed = scores[:, :, None] >= grid[None, None, :]  # [n, C, G]
    corr = np.asarray(cand_correct, bool)
    fullc = np.asarray(full_correct, bool)
    # prefixes over layers 0..C-2: remaining mask [P, n], correct count [P], compute sum [P]
    R = np.ones((1, n), bool)
    correct = np.zeros(1)
    compute = np.zeros(1)
    for j in range(C - 1):
        pj = passed[:, j, :].T  # [G, n]
        compute = compute + head_fraction * R.sum(1)
        exits = R[:, None, :] & pj[None, :, :]  # [P, G, n]
        correct = (correct[:, None] + (exits & corr[None, None, :, j]).sum(2)).reshape(-1)
        compute = (compute[:, None] + exits.sum(2) * cum_fraction[j]).reshape(-1)
        R = (R[:, None, :] & ~pj[None, :, :]).reshape(-1, n)
    j = C - 1
    pj = passed[:, j, :].astype(np.float32)  # [n, G]
    Rf = R.astype(np.float32)
    remaining = Rf.sum(1)
    exit_count = Rf @ pj  # [P, G]
    exit_correct = Rf @ (pj * corr[:, j:j + 1])
    full_right = Rf @ fullc.astype(np.float32)
    full_right_after = full_right[:, None] - Rf @ (pj * fullc[:, None])
    stay = remaining[:, None] - exit_count
    correct = (correct + 0)[:, None] + exit_correct + full_right_after
    compute = (compute + head_fraction * remaining)[:, None] + exit_count * cum_fraction[j] + stay * 1.0
    M = correct.size
    combos = np.stack(np.unravel_index(np.arange(M), (G,) * C), 1).astype(np.int64)
    return SweepResult(grid, combos, np.rint(correct.reshape(-1)) / n, compute.reshape(-1) / n)


def pareto_records(res: SweepResult, candidate_layers, idx: np.ndarray | None = None) -> list[dict]:
    """Pareto points as records {id, thresholds {layer: tau}, accuracy, flops_saving} (hwsim's policies file)."""
    idx = res.pareto() if idx is None else idx
    out = []
    for k, i in enumerate(idx):
        taus = res.thresholds(int(i))
        out.append({"id": k, "thresholds": {str(L): round(float(t), 6) for L, t in zip(candidate_layers, taus)},
                    "accuracy": float(res.accuracy[i]), "flops_saving": float(1.0 - res.compute[i])})
    return out
