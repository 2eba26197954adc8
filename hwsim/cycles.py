"""Compute cycles of a GEMM on an R x C systolic array, exactly as SCALE-Sim v2 counts them.

A GEMM multiplies an M x K operand (ifmap) by a K x N operand (filter) into M x N (ofmap).
The dataflow (:mod:`hwsim.dataflows`, the registry of os, ws, is) maps it onto the array:
Sr rows, Sc columns, T time steps (os: M, N, K; ws: K, N, M; is: K, M, N).

``folds = ceil(Sr / R) * ceil(Sc / C)``; cycles per fold are the dataflow's
(:meth:`hwsim.dataflows.Dataflow.fold_cycles`): ``2R + C + T - 2`` for ws and is, and for os
either ``R + C + T - 2`` (variant ``"scalesim"``, what the SCALE-Sim v2 code computes: the
default here, so our numbers equal the tool's) or ``2R + C + T - 2`` (variant ``"paper"``,
the SCALE-Sim paper's formula). Total compute cycles = ``folds * per_fold - 1`` (SCALE-Sim
v2 reports the index of the last ofmap write cycle).

The report's utilisation columns follow SCALE-Sim v2 too: mapping efficiency is the mean over
folds of used PEs / (R*C); compute utilisation is the mean over folds of
``used PEs * T / (R*C*fold_cycles)`` where ``fold_cycles`` is the dataflow's
:meth:`~hwsim.dataflows.Dataflow.util_fold_cycles` (``R + C + T - 2`` for os,
``2R + 2C + T - 3`` for ws and is: the drain rows SCALE-Sim counts there); overall
utilisation is ``M*N*K / (total_cycles * R*C)``.

Every function takes numpy arrays (or scalars) and broadcasts, so a whole workload and a
whole design space are evaluated in one call.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import dataflows
from .dataflows import DEFAULT_OS_VARIANT, OS_VARIANTS

DATAFLOWS = dataflows.NAMES


def spatio_temporal(m, k, n, dataflow: str):
    """(Sr, Sc, T) of GEMM M x K x N for ``dataflow`` (a registered name); arrays broadcast."""
    return dataflows.get(dataflow).spatio_temporal(m, k, n)


def _ceil_div(a, b):
    return -(-a // b)


@dataclass(frozen=True)
class GemmCycles:
    """Per-GEMM compute results (arrays, one entry per GEMM after broadcasting).

    Attributes:
        cycles: total compute cycles (int64), SCALE-Sim v2's "Total Cycles".
        folds: number of folds (int64).
        fold_cycles: cycles per fold (int64).
        sr, sc, t: the spatial rows, spatial columns and temporal extent.
        row_folds, col_folds: ceil(Sr/R), ceil(Sc/C).
    """

    cycles: np.ndarray
    folds: np.ndarray
    fold_cycles: np.ndarray
    sr: np.ndarray
    sc: np.ndarray
    t: np.ndarray
    row_folds: np.ndarray
    col_folds: np.ndarray


def gemm_cycles(m, k, n, rows, cols, dataflow: str, os_variant: str = DEFAULT_OS_VARIANT) -> GemmCycles:
    """SCALE-Sim v2 compute cycles of GEMM(s) M x K x N on rows x cols array(s).

    Args:
        m, k, n: GEMM sizes (ints or int arrays, broadcast together).
        rows, cols: array height R and width C (ints or arrays).
        dataflow: a name of :data:`hwsim.dataflows.REGISTRY` (``os``, ``ws``, ``is``).
        os_variant: ``scalesim`` (R+C+T-2 per fold, default) or ``paper`` (2R+C+T-2); os only.

    Returns:
        :class:`GemmCycles` (cycles are int64 cycles of the array clock).
    """
    if os_variant not in OS_VARIANTS:
        raise ValueError(f"os_variant: {os_variant!r}; allowed: {', '.join(OS_VARIANTS)}")
    flow = dataflows.get(dataflow)
    sr, sc, t = flow.spatio_temporal(m, k, n)
    r = np.asarray(rows, dtype=np.int64)
    c = np.asarray(cols, dtype=np.int64)
    row_folds = _ceil_div(sr, r)
    col_folds = _ceil_div(sc, c)
    folds = row_folds * col_folds
    per_fold = flow.fold_cycles(r, c, t, os_variant)
    cycles = folds * per_fold - 1
    return GemmCycles(cycles=cycles, folds=folds, fold_cycles=per_fold, sr=sr, sc=sc, t=t,
                      row_folds=row_folds, col_folds=col_folds)


def scalesim_utilisation(m, k, n, rows, cols, dataflow: str, os_variant: str = DEFAULT_OS_VARIANT):
    """SCALE-Sim v2's (overall util %, mapping efficiency %, compute util %) per GEMM.

    Mean over folds is computed in closed form: the used PEs of all folds sum to Sr*Sc.
    """
    g = gemm_cycles(m, k, n, rows, cols, dataflow, os_variant)
    r = np.asarray(rows, dtype=np.int64)
    c = np.asarray(cols, dtype=np.int64)
    pes = (r * c).astype(np.float64)
    used = (g.sr * g.sc).astype(np.float64)
    mapping = used / (g.folds * pes) * 100.0
    util_cycles = dataflows.get(dataflow).util_fold_cycles(r, c, g.t, os_variant)
    compute = used * g.t / (g.folds * pes * util_cycles) * 100.0
    macs = (np.asarray(m, np.float64) * np.asarray(k, np.float64) * np.asarray(n, np.float64))
    overall = macs * 100.0 / (g.cycles * pes)
    return overall, mapping, compute
