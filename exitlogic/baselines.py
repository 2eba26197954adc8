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

from dataclasses import dataclass
from typing import Callable

import numpy as np

from exitlogic.artifacts import MAIN_VARIANT


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


# ---- the baseline registry: each row of Table 2, its records over seeds and the paper's row ----------
@dataclass(frozen=True)
class TableInputs:
    """What every baseline row is computed from (the eval split of one policy).

    ``per_seed``: per seed, ``policies`` {name: record} (LCT-routed policies such as ``cls-distill/learned``)
    and ``pabee`` [record per patience 1..C-1]; ``int8_top1`` / ``fp32_top1``: full-depth top-1 (fractions;
    fp32 None when no FP32 store was given). A record holds ``top1``, ``flops_saving`` and
    ``flops_saving_with_heads`` (fractions)."""

    per_seed: list
    int8_top1: float
    fp32_top1: float | None
    n_candidates: int


def _agg(method: str, records: list[dict], **extra) -> dict:
    from exitlogic.analyses import mean_std

    keys = ("top1", "flops_saving", "flops_saving_with_heads")
    return {"method": method, **{k: mean_std([r[k] for r in records]) for k in keys}, **extra}


def _full_depth(method: str, top1) -> dict:
    from exitlogic.analyses import mean_std

    return {"method": method, "top1": mean_std([top1]) if top1 is not None else None,
            "flops_saving": mean_std([0.0])}


def _policy_rows(method: str, policy: str):
    return lambda t: [_agg(method, [r["policies"][policy] for r in t.per_seed])]


@dataclass(frozen=True)
class Baseline:
    """One method of the baselines table: ``rows(TableInputs)`` -> its rows (mean ± std over seeds), and the
    paper's Table 2 row ``paper`` = (FLOPs saving %, top-1 %) as printed there (None: not in the paper)."""

    method: str
    rows: Callable[[TableInputs], list[dict]]
    paper: tuple[str, str] | None = None


BASELINES: tuple[Baseline, ...] = (
    Baseline("FP32 full depth", lambda t: [_full_depth("FP32 full depth", t.fp32_top1)],
             ("0.00", "63.33 (80 templates)")),
    Baseline("INT8 full depth", lambda t: [_full_depth("INT8 full depth", t.int8_top1)], ("0.00", "58.72")),
    Baseline("CLS-EE", _policy_rows("CLS-EE", "cls-distill/learned"), ("0.00", "58.72")),
    Baseline("Confidence-only heuristic", _policy_rows("Confidence-only heuristic", "ssa-distill/heuristic"),
             ("4.7", "60.28")),
    Baseline("PABEE", lambda t: [_agg(f"PABEE (patience {p})", [r["pabee"][p - 1] for r in t.per_seed])
                                 for p in range(1, t.n_candidates)], ("3.64", "61.82")),
    Baseline("LRA-EE (ours)", _policy_rows("LRA-EE (ours)", f"{MAIN_VARIANT}/learned"), ("13.38", "61.16")),
    # AdaViT needs backbone passes of its own (exitlogic/adavit.py, stage adavit); its row comes from adavit.json
    Baseline("AdaViT", lambda t: [], ("13.50", "59.84")),
)


def baseline_rows(inputs: TableInputs) -> list[dict]:
    """Every registered baseline's rows, in registry order (the rows of ``results.json`` -> ``baselines``)."""
    return [row for b in BASELINES for row in b.rows(inputs)]


def paper_row(method: str) -> tuple[str, str] | None:
    """The paper's Table 2 row of a result row's ``method`` (``PABEE (patience 2)`` -> PABEE's)."""
    for b in BASELINES:
        if method == b.method or method.startswith(b.method + " ("):
            return b.paper
    return None
