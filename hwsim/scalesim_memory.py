"""SCALE-Sim v2's memory system (USER bandwidth mode), as a closed form: our own model of it.

Reference: A. Samajdar et al., "A Systematic Methodology for Characterizing Scalability of DNN
Accelerators using SCALE-Sim", ISPASS 2020, and the behaviour of the ``scalesim`` 2.0.2
package (its double-buffered scratchpad: read buffers with an active and a prefetch half,
word size 1 byte, DRAM bandwidth ``Bandwidth`` words per cycle, read latency 1 cycle, a write
buffer that drains its half to DRAM). This module does not run or copy that code; its numbers
are tested against the package's reports on small GEMMs (``tests/hwsim/test_scalesim_memory.py``).

For a GEMM mapped as in :mod:`hwsim.cycles` (Sr, Sc, T; ``rf`` row folds, ``cf`` column folds),
SCALE-Sim prefetches each operand in the order the folds consume it, padded to full array
rows/columns:

======  ==========================  ==========================  ===============
flow    ifmap prefetch (words)      filter prefetch (words)     ofmap writes
======  ==========================  ==========================  ===============
os      rf * T * R                  cf * T * C                  M * N
ws      rf * T * R                  cf * Sr * C                 M * N * rf
is      cf * Sr * C                 rf * T * R                  M * N * rf
======  ==========================  ==========================  ===============

(ws/is write every row fold's partial sums to DRAM: SCALE-Sim has no on-chip accumulation
across folds.) DRAM reads are whole bandwidth lines: ``ceil(P / bw) * bw``; the first fill
happens before compute (cycles ``-lines .. -1``), so when an operand's prefetch fits the
active half of its buffer and the outputs fit the write buffer's drain half, there are **no
stall cycles** and the whole output drains after the last compute cycle
(``total .. total + ceil(W / bw) - 1``). This is the regime where this model equals
SCALE-Sim exactly (``exact`` is True). Larger operands are re-fetched through the prefetch
half as the folds sweep them; SCALE-Sim's count then depends on its trace-driven window
replacement, which we estimate (``exact`` False): reads = one pass for the operand swept
once, ``passes`` for the operand swept per outer fold (ws/os ifmap: ``cf``; is filter: ``cf``),
stalls = the DRAM time that exceeds compute (outputs count only beyond the whole write
buffer: the rest drains after the last compute cycle, which SCALE-Sim does not count).

SRAM columns of ``DETAILED_ACCESS_REPORT.csv`` (reads, first/last access cycles) follow the
fold schedule: fold f starts at ``f * fold_cycles``; the stationary operand's R rows are
served at cycles 1..R of a fold (ws/is), the streamed operand from R+1 with the array skew.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .cycles import gemm_cycles


def _ceil_div(a, b):
    return -(-np.asarray(a, np.int64) // np.asarray(b, np.int64))


@dataclass(frozen=True)
class ScaleSimMemory:
    """Per-GEMM arrays in SCALE-Sim's units (words of 1 byte, cycles)."""

    compute_cycles: np.ndarray       # SCALE-Sim's Total Cycles without stalls
    stall_cycles: np.ndarray
    ifmap_dram_reads: np.ndarray     # words
    filter_dram_reads: np.ndarray
    ofmap_dram_writes: np.ndarray
    ifmap_sram_reads: np.ndarray
    filter_sram_reads: np.ndarray
    ofmap_sram_writes: np.ndarray
    exact: np.ndarray                # bool: within the regime where we equal SCALE-Sim
    detail: dict                     # start/stop cycles of the DETAILED_ACCESS_REPORT

    @property
    def total_cycles(self) -> np.ndarray:
        return self.compute_cycles + self.stall_cycles


def scalesim_memory(m, k, n, rows: int, cols: int, dataflow: str, ifmap_kb: float, filter_kb: float,
                    ofmap_kb: float, bw_words: float) -> ScaleSimMemory:
    """SCALE-Sim v2 (USER bandwidth) memory results of GEMMs M x K x N (arrays broadcast).

    Args:
        rows, cols: array R x C; ``dataflow``: os, ws, is.
        ifmap_kb, filter_kb, ofmap_kb: buffer sizes (KiB; 1-byte words, half active).
        bw_words: DRAM bandwidth, words per cycle (SCALE-Sim's ``Bandwidth``).
    """
    m, k, n = (np.asarray(x, np.int64) for x in (m, k, n))
    R, C = int(rows), int(cols)
    g = gemm_cycles(m, k, n, R, C, dataflow, "scalesim")
    sr, sc, t, rf, cf = g.sr, g.sc, g.t, g.row_folds, g.col_folds
    bw = max(int(bw_words), 1)
    if dataflow == "os":
        p_i, p_f, w_o = rf * t * R, cf * t * C, m * n
        s_i, s_f = m * k * cf, k * n * rf
        s_o = m * n + g.folds * (R + C)
        passes_i, passes_f = cf, np.ones_like(cf)
    elif dataflow == "ws":
        p_i, p_f, w_o = rf * t * R, cf * sr * C, m * n * rf
        s_i, s_f, s_o = m * k * cf, k * n, m * n * rf
        passes_i, passes_f = cf, np.ones_like(cf)
    else:  # is
        p_i, p_f, w_o = cf * sr * C, rf * t * R, m * n * rf
        s_i, s_f, s_o = m * k, k * n * cf, m * n * rf
        passes_i, passes_f = np.ones_like(cf), cf

    def half(kb):
        total = int(kb * 1024)
        active = -(-total // 2)
        return active, total - active

    act_i, _ = half(ifmap_kb)
    act_f, _ = half(filter_kb)
    _, drain_o = half(ofmap_kb)
    fit_i, fit_f, fit_o = p_i <= act_i, p_f <= act_f, w_o <= drain_o
    exact = fit_i & fit_f & fit_o
    lines = lambda p: _ceil_div(p, bw)  # noqa: E731
    r_i = np.where(fit_i, lines(p_i) * bw, lines(p_i * passes_i) * bw)
    r_f = np.where(fit_f, lines(p_f) * bw, lines(p_f * passes_f) * bw)
    compute = g.cycles
    # outside the exact regime: DRAM time that compute cannot hide
    _, total_o = half(ofmap_kb)
    total_o += _
    over = np.maximum(0, lines(np.where(fit_i, 0, r_i)) + lines(np.where(fit_f, 0, r_f))
                      + lines(np.maximum(0, w_o - total_o)) - compute)
    stall = np.where(exact, 0, over)
    total = compute + stall
    fc = g.fold_cycles
    last = (g.folds - 1) * fc + stall
    rows_last = sr - (rf - 1) * R
    cols_last = sc - (cf - 1) * C
    rows_first = np.minimum(sr, R)
    if dataflow == "os":
        sram = {"ifmap": (np.ones_like(t), last + t + rows_last - 1),
                "filter": (np.ones_like(t), last + t + cols_last - 1),
                "ofmap": (t - 1 + R - rows_first, last + t - 1 + R - 1 + cols_last - 1)}
    else:
        stat = (np.ones_like(t), last + R)
        strm = (np.full_like(t, R + 1), last + R + t + rows_last - 1)
        ofm = (np.full_like(t, 2 * R - 1), last + R + t - 1 + R - 1 + cols_last - 1)
        sram = {"ifmap": strm, "filter": stat, "ofmap": ofm} if dataflow == "ws" else \
            {"ifmap": stat, "filter": strm, "ofmap": ofm}
    dram = {"ifmap": (-lines(np.minimum(p_i, act_i)), np.full_like(t, -1)),
            "filter": (-lines(np.minimum(p_f, act_f)), np.full_like(t, -1)),
            "ofmap": (total, total + lines(w_o) - 1)}
    return ScaleSimMemory(compute_cycles=compute, stall_cycles=stall, ifmap_dram_reads=r_i,
                          filter_dram_reads=r_f, ofmap_dram_writes=w_o, ifmap_sram_reads=s_i,
                          filter_sram_reads=s_f, ofmap_sram_writes=s_o, exact=exact,
                          detail={"sram": sram, "dram": dram})


def scalesim_gemm_memory(m, k, n, count, arch):
    """:func:`hwsim.memory.gemm_memory`'s result with SCALE-Sim's traffic and stalls
    (``memory: scalesim``): buffers are the arch's, 1-byte words (INT8 operands), DRAM
    bandwidth in words per cycle = ``arch.dram_bytes_per_cycle``. Every GEMM is a separate
    SCALE-Sim layer (operands fetched from DRAM, outputs written back; no reuse across layers).
    Partial sums are written per row fold at the word size, as SCALE-Sim does."""
    from .memory import GemmMemory
    a, s = arch.array, arch.sram
    m, k, n, count = (np.asarray(x, np.int64) for x in (m, k, n, count))
    bw = arch.dram_bytes_per_cycle
    r = scalesim_memory(m, k, n, a.rows, a.cols, a.dataflow, s.ifmap_kb, s.filter_kb, s.ofmap_kb, max(1, int(bw)))
    eb = arch.precision.operand_bits / 8.0
    words = (r.ifmap_dram_reads + r.filter_dram_reads + r.ofmap_dram_writes).astype(np.float64)
    dram = words * eb * count
    psum = np.where(a.dataflow == "os", 0.0, (r.ofmap_dram_writes - m * n) * eb) * count
    return GemmMemory(
        compute_cycles=(r.compute_cycles * count).astype(np.int64),
        stall_cycles=(r.stall_cycles * count).astype(np.int64),
        dram_bytes=dram,
        dram_cycles=np.ceil(dram / bw).astype(np.int64),
        sram_ifmap_bits=(r.ifmap_sram_reads * eb * 8.0 * count).astype(np.float64),
        sram_filter_bits=(r.filter_sram_reads * eb * 8.0 * count).astype(np.float64),
        sram_ofmap_bits=(r.ofmap_sram_writes * eb * 8.0 * count).astype(np.float64),
        sram_fill_bits=dram * 8.0,
        spill_bytes=psum,
    )
