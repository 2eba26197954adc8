"""Memory model: double-buffered SRAM tiles, DRAM traffic from tile reuse, stall cycles.

Each operand buffer is double-buffered: half is filled from DRAM while the array computes
on the other half, so the usable tile capacity is half the buffer. Per GEMM (M x K times
K x N, mapped as in :mod:`hwsim.cycles`; SCALE-Sim's loop order: column folds outer, row
folds inner):

* **weights** (the filter of ``rows`` GEMMs) always come from DRAM; a tile that must be
  reused across the inner loop but does not fit in half the filter buffer is fetched again
  for every inner iteration.
* **activations** (ifmap; both operands of attention GEMMs) stay on chip when the whole
  operand fits in half its buffer; otherwise they are streamed from DRAM, once per outer
  iteration that needs them again.
* **outputs** stay on chip when they fit in half the ofmap buffer, else they are written to
  DRAM; ws/is partial sums of a column fold spill to DRAM (read + write at accumulator
  width) when they do not fit.

Stalls: the first fold's share of the traffic cannot overlap compute (prologue); the rest
overlaps compute, so ``stall = prologue + max(0, dram_cycles - prologue - compute)`` and the
GEMM takes ``compute + stall >= dram_cycles`` cycles. SRAM accesses (elements) follow
SCALE-Sim's per-fold operand reads; DRAM fills are also counted as SRAM writes.
Widths: activations (ifmap, ofmap, both operands of attention GEMMs) take
``precision.activations`` bits, weights ``precision.weights`` bits, partial sums
``precision.accumulator_bits`` bits. All functions are vectorised over numpy arrays of GEMMs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import dataflows
from .cycles import gemm_cycles


@dataclass(frozen=True)
class GemmMemory:
    """Arrays (one entry per GEMM instance set). Units: bytes, cycles, element accesses."""

    compute_cycles: np.ndarray
    stall_cycles: np.ndarray
    dram_bytes: np.ndarray
    dram_cycles: np.ndarray
    sram_ifmap_bits: np.ndarray
    sram_filter_bits: np.ndarray
    sram_ofmap_bits: np.ndarray
    sram_fill_bits: np.ndarray
    spill_bytes: np.ndarray | float = 0.0   # the psum-spill share of ``dram_bytes`` (ws/is), bytes

    @property
    def cycles(self) -> np.ndarray:
        return self.compute_cycles + self.stall_cycles


def gemm_memory(m, k, n, count, weights, arch) -> GemmMemory:
    """Cycles, stalls, DRAM bytes and SRAM bits of ``count`` sequential GEMMs M x K x N each.

    Args:
        m, k, n, count: int arrays (broadcast).
        weights: bool array, True where the filter operand is a weight matrix (from DRAM).
        arch: :class:`hwsim.config.ArchConfig`. With ``arch.memory == "scalesim"`` the DRAM
            traffic and stalls are SCALE-Sim v2's (:mod:`hwsim.scalesim_memory`).
    """
    if getattr(arch, "memory", "analytical") == "scalesim":
        from .scalesim_memory import scalesim_gemm_memory
        return scalesim_gemm_memory(m, k, n, count, arch, weights)
    a = arch.array
    m, k, n, count = (np.asarray(x, dtype=np.int64) for x in (m, k, n, count))
    weights = np.asarray(weights, dtype=bool)
    g = gemm_cycles(m, k, n, a.rows, a.cols, a.dataflow, a.os_variant)
    ei = eo = arch.precision.activations / 8.0        # inputs and outputs are activations
    ef = np.where(weights, arch.precision.weights / 8.0, ei)   # weights, or the K^T / V activations
    ab = arch.precision.accumulator_bits / 8.0
    half_i = arch.sram.ifmap_kb * 1024 / 2
    half_f = arch.sram.filter_kb * 1024 / 2
    half_o = arch.sram.ofmap_kb * 1024 / 2
    flow = dataflows.get(a.dataflow)
    tr = flow.analytical_traffic(m, k, n, g.sr, g.sc, g.t, g.row_folds, g.col_folds, a.rows, a.cols, ei, ef, eo, ab)
    mk = (m * k).astype(np.float64)
    kn = (k * n).astype(np.float64)
    mn = (m * n).astype(np.float64)
    ifmap_fits = mk * ei <= half_i
    filt_all_fits = kn * ef <= half_f
    out_fits = mn * eo <= half_o
    ifmap_reuse = np.where(tr.ifmap_keep_bytes <= half_i, 1.0, tr.ifmap_refetch)
    filt_reuse = np.where(tr.filter_keep_bytes <= half_f, 1.0, tr.filter_refetch)
    spill = np.where(tr.psum_tile_bytes <= half_o, 0.0, tr.spill_bytes)
    sram_i, sram_f, sram_o = tr.sram_ifmap_bytes, tr.sram_filter_bytes, tr.sram_ofmap_bytes
    ifmap_dram = np.where(ifmap_fits, 0.0, mk * ei * ifmap_reuse)
    # filter: weights always from DRAM; activation filters (K^T, V) only if they do not fit
    filt_dram = np.where(weights, kn * ef * filt_reuse, np.where(filt_all_fits, 0.0, kn * ef * filt_reuse))
    out_dram = np.where(out_fits, 0.0, mn * eo)
    dram = (ifmap_dram + filt_dram + out_dram + spill) * count
    bw = arch.dram_bytes_per_cycle
    dram_cycles = np.ceil(dram / bw)
    compute = (g.cycles * count).astype(np.float64)
    prologue = np.ceil(dram / np.maximum(g.folds * count, 1) / bw)
    stall = prologue + np.maximum(0.0, dram_cycles - prologue - compute)
    fills = dram * 8.0  # DRAM fills written into SRAM (bits)
    return GemmMemory(
        compute_cycles=compute.astype(np.int64),
        stall_cycles=stall.astype(np.int64),
        dram_bytes=dram,
        dram_cycles=dram_cycles.astype(np.int64),
        sram_ifmap_bits=sram_i * 8.0 * count,
        sram_filter_bits=sram_f * 8.0 * count,
        sram_ofmap_bits=sram_o * 8.0 * count,
        sram_fill_bits=fills,
        spill_bytes=spill * count,
    )
