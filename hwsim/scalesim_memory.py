"""SCALE-Sim v2's memory system (USER bandwidth mode): our own model of it, a closed form where
it is steady and a replay of its demand trace elsewhere.

Reference: A. Samajdar et al., "A Systematic Methodology for Characterizing Scalability of DNN
Accelerators using SCALE-Sim", ISPASS 2020, and the behaviour of the ``scalesim`` 2.0.2
package (its double-buffered scratchpad: read buffers with an active and a prefetch half,
word size 1 byte, DRAM bandwidth ``Bandwidth`` words per cycle, read latency 1 cycle, a write
buffer that drains its half to DRAM). This module does not run or copy that code; its numbers
are tested against the package's reports (``tests/hwsim/test_scalesim_memory.py``).

For a GEMM mapped by its dataflow (:mod:`hwsim.dataflows`: Sr, Sc, T; ``rf`` row folds,
``cf`` column folds), SCALE-Sim prefetches each operand in the order the folds consume it,
padded to full array rows/columns:

======  ==========================  ==========================  ===============
flow    ifmap prefetch (words)      filter prefetch (words)     ofmap writes
======  ==========================  ==========================  ===============
os      rf * T * R                  cf * T * C                  M * N
ws      rf * T * R                  cf * Sr * C                 M * N * rf
is      cf * Sr * C                 rf * T * R                  M * N * rf
======  ==========================  ==========================  ===============

(ws/is write every row fold's partial sums to DRAM: SCALE-Sim has no on-chip accumulation
across folds.) **Steady regime** (:func:`steady_regime`): each operand lies within the hash
sets of its buffer's initial active half and the outputs fit the write buffer's drain half.
Then the initial fill (``min(ceil(active / bw), ceil(P / bw))`` lines, cycles ``-lines ..
-1``) is the only DRAM read, there are **no stall cycles**, and the output drains after the
last compute cycle (``total .. total + ceil(W / bw) - 1``): a closed form. **Elsewhere**
SCALE-Sim refetches through the prefetch half and drains during compute; its counts come
from its trace-driven window replacement, which :mod:`hwsim.scalesim_trace` replays exactly
(``replayed``) for GEMMs with distinct operand addresses within a work ``budget``. Layers it
cannot replay (conv layers with overlapping windows; more than ``budget`` words) are
**estimated** (``exact`` False): reads = one pass for the operand swept once, one pass per
outer fold for the operand swept per column fold, stalls = the DRAM time that exceeds
compute.

SRAM columns of ``DETAILED_ACCESS_REPORT.csv`` (reads, first/last access cycles) follow the
fold schedule: fold f starts at ``f * fold_cycles``; the stationary operand's R rows are
served at cycles 1..R of a fold (ws/is), the streamed operand from R+1 with the array skew;
a replayed layer reports the cycles the replay serves them at.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import dataflows
from .cycles import gemm_cycles


def _ceil_div(a, b):
    return -(-np.asarray(a, np.int64) // np.asarray(b, np.int64))


REPLAY_BUDGET = 20_000_000       # words a trace replay may walk per GEMM (demands + lines); above: estimate
ARCH_REPLAY_BUDGET = 2_000_000    # the same in the accelerator model (cost tables over every group size)


@dataclass(frozen=True)
class ScaleSimMemory:
    """Per-GEMM arrays in SCALE-Sim's units (words of 1 byte, cycles)."""

    compute_cycles: np.ndarray       # SCALE-Sim's Total Cycles without stalls
    stall_cycles: np.ndarray
    total_cycles: np.ndarray         # SCALE-Sim's Total Cycles (the last output's cycle)
    ifmap_dram_reads: np.ndarray     # words
    filter_dram_reads: np.ndarray
    ofmap_dram_writes: np.ndarray
    ifmap_sram_reads: np.ndarray
    filter_sram_reads: np.ndarray
    ofmap_sram_writes: np.ndarray
    exact: np.ndarray                # bool: SCALE-Sim's numbers (closed form or trace replay), else estimated
    replayed: np.ndarray             # bool: from the trace replay (hwsim.scalesim_trace)
    detail: dict                     # start/stop cycles of the DETAILED_ACCESS_REPORT


def _words(kb) -> int:
    return int(kb * 1024)


def steady_regime(m, k, n, dataflow: str, ifmap_kb: float, filter_kb: float, ofmap_kb: float, rows: int,
                  cols: int) -> np.ndarray:
    """True where SCALE-Sim never refetches and never drains before the end: each operand's
    words fall in the hash sets of its buffer's initial active window and the outputs fit the
    write buffer's drain half (no stall cycles; the closed form is exact)."""
    from .scalesim_trace import ReadBuffer
    m, k, n = (np.asarray(x, np.int64) for x in (m, k, n))
    g = gemm_cycles(m, k, n, rows, cols, dataflow, "scalesim")
    ok = dataflows.get(dataflow).scalesim_ofmap_writes(m, n, g.row_folds) <= _words(ofmap_kb) - _ceil_div(
        _words(ofmap_kb), 2)
    for words, kb in ((m * k, ifmap_kb), (k * n, filter_kb)):
        b = ReadBuffer(_words(kb), 1)
        ok = ok & (_ceil_div(words, b.set_words) <= _ceil_div(b.active, b.set_words))
    return ok


def scalesim_memory(m, k, n, rows: int, cols: int, dataflow: str, ifmap_kb: float, filter_kb: float,
                    ofmap_kb: float, bw_words: float, distinct=True, budget: int = REPLAY_BUDGET) -> ScaleSimMemory:
    """SCALE-Sim v2 (USER bandwidth) memory results of GEMMs M x K x N (arrays broadcast).

    In the steady regime (:func:`steady_regime`) a closed form; elsewhere the trace replay of
    :mod:`hwsim.scalesim_trace`, for GEMMs whose operand addresses are ``distinct`` (GEMM
    layers; conv layers whose windows do not overlap) and whose replay walks at most
    ``budget`` words; the rest are estimated (``exact`` False, see the module docstring).

    Args:
        rows, cols: array R x C; ``dataflow``: a registered dataflow (os, ws, is).
        ifmap_kb, filter_kb, ofmap_kb: buffer sizes (KiB; 1-byte words, half active).
        bw_words: DRAM bandwidth, words per cycle (SCALE-Sim's ``Bandwidth``).
        distinct: bool (broadcast): every operand address distinct (no im2col reuse).
    """
    from .scalesim_trace import replay_gemm
    m, k, n = np.broadcast_arrays(*(np.asarray(x, np.int64) for x in (m, k, n)))
    shape = m.shape
    distinct = np.broadcast_to(np.asarray(distinct, bool), shape)
    R, C = int(rows), int(cols)
    g = gemm_cycles(m, k, n, R, C, dataflow, "scalesim")
    sr, sc, t, rf, cf = g.sr, g.sc, g.t, g.row_folds, g.col_folds
    bw = max(int(bw_words), 1)
    flow = dataflows.get(dataflow)
    p_i, p_f = flow.scalesim_prefetch_words(sr, sc, t, rf, cf, R, C)
    w_o = flow.scalesim_ofmap_writes(m, n, rf)
    s_i, s_f, s_o = flow.scalesim_sram_reads(m, k, n, rf, cf, R, C)
    lines = lambda p: _ceil_div(p, bw)  # noqa: E731
    act_i, act_f = _ceil_div(_words(ifmap_kb), 2), _ceil_div(_words(filter_kb), 2)
    total_o = _words(ofmap_kb)
    steady = steady_regime(m, k, n, dataflow, ifmap_kb, filter_kb, ofmap_kb, R, C)
    # the closed form (exact in the steady regime): one initial fill, no stalls, drain at the end
    init_i, init_f = np.minimum(lines(act_i), lines(p_i)), np.minimum(lines(act_f), lines(p_f))
    # the estimate (outside it, when no replay): one pass per outer sweep, stalls = unhidden DRAM time
    passes_i, passes_f = (flow.outer_sweeps(op, cf) for op in ("ifmap", "filter"))
    fit_i, fit_f = p_i <= act_i, p_f <= act_f
    r_i = np.where(steady | fit_i, init_i * bw, lines(p_i * passes_i) * bw)
    r_f = np.where(steady | fit_f, init_f * bw, lines(p_f * passes_f) * bw)
    compute = g.cycles
    over = np.maximum(0, lines(np.where(fit_i, 0, r_i)) + lines(np.where(fit_f, 0, r_f))
                      + lines(np.maximum(0, w_o - total_o)) - compute)
    stall = np.where(steady, 0, over)
    total = compute + stall
    FL = g.fold_cycles
    rows_last = sr - (rf - 1) * R
    cols_last = sc - (cf - 1) * C
    rows_first = np.minimum(sr, R)
    sram = flow.scalesim_sram_windows(t, R, (g.folds - 1) * FL + stall, rows_last, cols_last, rows_first)
    # lines of the first and last demand of each operand (the stall-free schedule)
    sram_lines = flow.scalesim_sram_windows(t, R, (g.folds - 1) * FL, rows_last, cols_last, rows_first)
    sram_lines = {op: (lo - (op != "ofmap"), hi - (op != "ofmap")) for op, (lo, hi) in sram_lines.items()}
    dram = {"ifmap": [-init_i, np.full_like(t, -1)], "filter": [-init_f, np.full_like(t, -1)],
            "ofmap": [total, total + lines(w_o) - 1]}
    arrays = [np.array(np.broadcast_to(x, shape), dtype=np.int64).reshape(-1)
              for x in (stall, total, r_i, r_f, w_o)]
    sram = {op: [np.array(np.broadcast_to(x, shape), np.int64).reshape(-1) for x in v] for op, v in sram.items()}
    dram = {op: [np.array(np.broadcast_to(x, shape), np.int64).reshape(-1) for x in v] for op, v in dram.items()}
    exact = np.array(steady, bool).reshape(-1)
    replayed = np.zeros_like(exact)
    work = (g.folds * FL + np.where(p_i <= act_i, 0, s_i + p_i) + np.where(p_f <= act_f, 0, s_f + p_f)).reshape(-1)
    flat = [np.broadcast_to(x, shape).reshape(-1) for x in (m, k, n, distinct)]
    ln = {op: [np.broadcast_to(x, shape).reshape(-1) for x in v] for op, v in sram_lines.items()}
    for i in np.flatnonzero(~exact):
        if not flat[3][i] or work[i] > budget:
            continue
        tr = replay_gemm(flat[0][i], flat[1][i], flat[2][i], R, C, dataflow, ifmap_kb, filter_kb, ofmap_kb, bw,
                         {op: (int(v[0][i]), int(v[1][i])) for op, v in ln.items()})
        for arr, v in zip(arrays, (tr.stall_cycles, tr.total_cycles, tr.dram_reads["ifmap"],
                                   tr.dram_reads["filter"], tr.dram_writes)):
            arr[i] = v
        for op in ("ifmap", "filter", "ofmap"):
            sram[op][0][i], sram[op][1][i] = tr.sram_window[op]
            dram[op][0][i], dram[op][1][i] = tr.dram_window[op]
        exact[i] = replayed[i] = True
    shaped = [a.reshape(shape) for a in arrays]
    return ScaleSimMemory(compute_cycles=compute, stall_cycles=shaped[0], total_cycles=shaped[1],
                          ifmap_dram_reads=shaped[2], filter_dram_reads=shaped[3], ofmap_dram_writes=shaped[4],
                          ifmap_sram_reads=s_i, filter_sram_reads=s_f, ofmap_sram_writes=s_o,
                          exact=exact.reshape(shape), replayed=replayed.reshape(shape),
                          detail={"sram": {op: tuple(x.reshape(shape) for x in v) for op, v in sram.items()},
                                  "dram": {op: tuple(x.reshape(shape) for x in v) for op, v in dram.items()}})


def scalesim_gemm_memory(m, k, n, count, arch, weights=True):
    """:func:`hwsim.memory.gemm_memory`'s result with SCALE-Sim's traffic and stalls
    (``memory: scalesim``): buffers are the arch's, 1-byte words, DRAM bandwidth in words per
    cycle = ``arch.dram_bytes_per_cycle``; SCALE-Sim's word counts (hence its stalls) are
    those of its 1-byte words, the bytes (DRAM traffic, SRAM and DRAM energy) scale them by
    each operand's width: activations ``precision.activations`` bits, the filter of a
    ``weights`` GEMM ``precision.weights`` bits. Every GEMM is a separate
    SCALE-Sim layer (operands fetched from DRAM, outputs written back; no reuse across layers).
    Partial sums are written per row fold at the word size, as SCALE-Sim does. GEMMs outside
    the steady regime are replayed up to :data:`ARCH_REPLAY_BUDGET` words each, estimated
    beyond it."""
    from .memory import GemmMemory
    a, s = arch.array, arch.sram
    m, k, n, count = (np.asarray(x, np.int64) for x in (m, k, n, count))
    bw = arch.dram_bytes_per_cycle
    r = scalesim_memory(m, k, n, a.rows, a.cols, a.dataflow, s.ifmap_kb, s.filter_kb, s.ofmap_kb, max(1, int(bw)),
                        budget=ARCH_REPLAY_BUDGET)
    ei = eo = arch.precision.activations / 8.0
    ef = np.where(np.asarray(weights, bool), arch.precision.weights / 8.0, ei)
    dram = (r.ifmap_dram_reads * ei + r.filter_dram_reads * ef + r.ofmap_dram_writes * eo) * count
    psum = (np.where(dataflows.get(a.dataflow).spatial_reduction, (r.ofmap_dram_writes - m * n) * eo, 0.0)
            * count)
    return GemmMemory(
        compute_cycles=(r.compute_cycles * count).astype(np.int64),
        stall_cycles=(r.stall_cycles * count).astype(np.int64),
        dram_bytes=dram,
        dram_cycles=np.ceil(dram / bw).astype(np.int64),
        sram_ifmap_bits=(r.ifmap_sram_reads * ei * 8.0 * count).astype(np.float64),
        sram_filter_bits=(r.filter_sram_reads * ef * 8.0 * count).astype(np.float64),
        sram_ofmap_bits=(r.ofmap_sram_writes * eo * 8.0 * count).astype(np.float64),
        sram_fill_bits=dram * 8.0,
        spill_bytes=psum,
    )
