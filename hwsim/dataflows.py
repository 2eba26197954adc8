"""Dataflow registry: one class per systolic dataflow, the one place that says how a GEMM
maps onto the array and what that means for cycles and memory traffic.

A GEMM multiplies ifmap ``M x K`` by filter ``K x N`` into ofmap ``M x N``. A dataflow
assigns the three GEMM dimensions to the array's rows (``Sr``), its columns (``Sc``) and
time (``T``) as SCALE-Sim v2 does (Samajdar et al., ISPASS 2020):

======  =====================  ============  ============  ============
name    stationary operand     Sr (rows)     Sc (cols)     T (time)
======  =====================  ============  ============  ============
os      ofmap (outputs)        M             N             K
ws      filter (weights)       K             N             M
is      ifmap (inputs)         K             M             N
======  =====================  ============  ============  ============

Everything else follows from the mapping (:class:`Dataflow`):

* the **stationary** operand is the one whose two dimensions are both spatial; the others
  are **streamed** through the array along ``T``;
* an operand spread over ``Sr`` (and ``T``) is read again for every column fold, one spread
  over ``Sc`` (and ``T``) for every row fold (SCALE-Sim's loop order: column folds outer,
  row folds inner); the stationary operand is read once;
* when ``K`` is mapped to the rows (ws, is), every row fold produces **partial sums** of
  the whole output that must be accumulated (read + write at accumulator width);
* cycles per fold (SCALE-Sim v2's code): ``R + C + T - 2`` for os (variant ``scalesim``)
  or ``2R + C + T - 2`` (variant ``paper`` for os, and always for ws and is).

To add a dataflow, subclass :class:`Dataflow` with its ``name``, ``title``, ``mapping`` and
fold-cycle formulas, and add it to :data:`REGISTRY`; the accelerator config's allowed values
(``array.dataflow``), the SCALE-Sim ``.cfg`` reader and every model pick it up from there.
Units: cycles, elements (words), bytes where stated. Methods broadcast over numpy arrays.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

OS_VARIANTS = ("scalesim", "paper")
DEFAULT_OS_VARIANT = "scalesim"
OPERAND_DIMS = {"ifmap": ("m", "k"), "filter": ("k", "n"), "ofmap": ("m", "n")}


@dataclass(frozen=True)
class AnalyticalTraffic:
    """Per-GEMM read patterns of the analytical memory model (:mod:`hwsim.memory`).

    Attributes (arrays, one per GEMM):
        ifmap_refetch, filter_refetch: DRAM passes over the operand when it cannot stay on chip.
        ifmap_keep_bytes, filter_keep_bytes: bytes that must fit half the buffer to avoid the
            refetch (the whole operand, or the tile the inner fold loop reuses).
        sram_ifmap_bytes, sram_filter_bytes, sram_ofmap_bytes: SRAM traffic of one GEMM, bytes.
        psum_tile_bytes: partial sums of one column fold (0 where the reduction is temporal).
        spill_bytes: DRAM bytes of psum spills if the tile does not fit half the ofmap buffer.
    """

    ifmap_refetch: np.ndarray
    filter_refetch: np.ndarray
    ifmap_keep_bytes: np.ndarray
    filter_keep_bytes: np.ndarray
    sram_ifmap_bytes: np.ndarray
    sram_filter_bytes: np.ndarray
    sram_ofmap_bytes: np.ndarray
    psum_tile_bytes: np.ndarray
    spill_bytes: np.ndarray


class Dataflow:
    """One dataflow. Subclasses set ``name``, ``title``, ``mapping`` (the GEMM dimensions, of
    ``m``, ``k``, ``n``, on Sr, Sc, T) and may override the fold-cycle formulas."""

    name: ClassVar[str]
    title: ClassVar[str]
    mapping: ClassVar[tuple[str, str, str]]

    # ---- mapping ---------------------------------------------------------------------------
    def spatio_temporal(self, m, k, n):
        """(Sr, Sc, T) int64 arrays of GEMM(s) M x K x N (broadcast)."""
        dims = dict(zip("mkn", (np.asarray(x, dtype=np.int64) for x in (m, k, n))))
        return tuple(dims[d] for d in self.mapping)

    def axis_of(self, dim: str) -> str:
        """``"row"``, ``"col"`` or ``"time"``: where GEMM dimension ``dim`` (m, k, n) goes."""
        return ("row", "col", "time")[self.mapping.index(dim)]

    @property
    def stationary(self) -> str:
        """The operand held in the PEs (both of its dimensions are spatial)."""
        return next(op for op, dims in OPERAND_DIMS.items() if "time" not in map(self.axis_of, dims))

    @property
    def streamed(self) -> tuple[str, ...]:
        """The operands that flow through the array along T."""
        return tuple(op for op in OPERAND_DIMS if op != self.stationary)

    @property
    def spatial_reduction(self) -> bool:
        """K on the array rows: each row fold yields partial sums of the outputs (ws, is)."""
        return self.axis_of("k") == "row"

    def rereads(self, operand: str, row_folds, col_folds):
        """How many times ``operand`` (ifmap, filter) is read in one GEMM: once if stationary,
        per column fold if it lies on the rows, per row fold if it lies on the columns."""
        axes = {self.axis_of(d) for d in OPERAND_DIMS[operand]}
        if "time" not in axes:
            return np.ones_like(np.asarray(row_folds))
        return col_folds if "row" in axes else row_folds

    def outer_sweeps(self, operand: str, col_folds):
        """Sweeps of ``operand`` by the outer (column-fold) loop: ``cf`` if it lies on the rows
        and streams, else 1 (read once, or re-read within one sweep by the inner loop)."""
        axes = {self.axis_of(d) for d in OPERAND_DIMS[operand]}
        return col_folds if axes == {"row", "time"} else np.ones_like(np.asarray(col_folds))

    # ---- compute cycles ----------------------------------------------------------------------
    def fold_cycles(self, rows, cols, t, os_variant: str = DEFAULT_OS_VARIANT):
        """Cycles of one fold (SCALE-Sim v2): ``2R + C + T - 2``."""
        return 2 * rows + cols + t - 2

    def util_fold_cycles(self, rows, cols, t, os_variant: str = DEFAULT_OS_VARIANT):
        """The fold length of SCALE-Sim v2's compute-utilisation column: ``2R + 2C + T - 3``
        (the drain rows it counts for ws and is)."""
        return 2 * rows + 2 * cols + t - 3

    # ---- analytical memory model (hwsim.memory) ---------------------------------------------------
    def analytical_traffic(self, m, k, n, sr, sc, t, row_folds, col_folds, rows: int, cols: int,
                           ifmap_bytes, filter_bytes, ofmap_bytes, acc_bytes: float) -> AnalyticalTraffic:
        """Read patterns of :mod:`hwsim.memory` for GEMMs mapped by this dataflow.

        A streamed operand read per column fold (outer loop) must fit whole to be kept on
        chip; one read per row fold (inner loop) only needs its current column-fold tile
        (``other dim x min(C, Sc)``). Partial sums (spatial reduction) of one column fold are
        ``min(C, Sc) x T`` accumulator words; each row fold but the first reads and writes
        them (SRAM ``(2 rf - 1) M N`` words, DRAM spill ``2 M N (rf - 1)`` when they do not fit).
        Widths: bytes per ifmap, filter, ofmap element (arrays broadcast) and per partial sum.
        """
        ab = acc_bytes
        mk = (m * k).astype(np.float64)
        kn = (k * n).astype(np.float64)
        mn = (m * n).astype(np.float64)
        rf, cf = row_folds.astype(np.float64), col_folds.astype(np.float64)
        out: dict = {}
        for op, size, dims, eb in (("ifmap", mk, ("m", "k"), ifmap_bytes), ("filter", kn, ("k", "n"), filter_bytes)):
            reads = self.rereads(op, rf, cf)
            out[f"sram_{op}_bytes"] = size * reads * eb
            axes = [self.axis_of(d) for d in dims]
            if op == self.stationary:
                refetch, keep = np.ones_like(size), size * eb
            elif "col" in axes:                     # read per row fold (inner loop): its column tile
                other = dims[1 - axes.index("col")]
                keep = {"m": m, "k": k, "n": n}[other] * np.minimum(cols, sc) * eb
                refetch = rf
            else:                                   # read per column fold (outer loop): the whole operand
                keep, refetch = size * eb, cf
            out[f"{op}_refetch"], out[f"{op}_keep_bytes"] = refetch, keep
        if self.spatial_reduction:
            psum = np.minimum(cols, sc) * t * acc_bytes
            spill = 2.0 * mn * ab * (rf - 1)
            sram_o = mn * ab * (2 * rf - 1)
        else:
            psum = np.zeros_like(mn)
            spill = np.zeros_like(mn)
            sram_o = mn * ofmap_bytes
        return AnalyticalTraffic(out["ifmap_refetch"], out["filter_refetch"], out["ifmap_keep_bytes"],
                                 out["filter_keep_bytes"], out["sram_ifmap_bytes"], out["sram_filter_bytes"],
                                 sram_o, psum, spill)

    # ---- SCALE-Sim v2's memory system (hwsim.scalesim_memory) -----------------------------------
    def scalesim_prefetch_words(self, sr, sc, t, row_folds, col_folds, rows: int, cols: int):
        """(ifmap, filter) words of SCALE-Sim's prefetch matrices: each operand in the order the
        folds consume it, padded to whole array rows (an operand on Sr and T: ``rf x R x T``)
        or columns (an operand on Sc: ``cf x C x other``)."""
        ext = {"row": sr, "col": sc, "time": t}
        out = []
        for op in ("ifmap", "filter"):
            axes = [self.axis_of(d) for d in OPERAND_DIMS[op]]
            if "col" in axes:
                other = axes[1 - axes.index("col")]
                out.append(col_folds * ext[other] * cols)
            else:
                out.append(row_folds * t * rows)
        return tuple(out)

    def scalesim_sram_reads(self, m, k, n, row_folds, col_folds, rows: int, cols: int):
        """SCALE-Sim's SRAM (ifmap reads, filter reads, ofmap writes), words, of one GEMM: the
        streamed operands per fold of the other axis; with a spatial reduction every row fold
        writes the outputs; os writes each output once (plus its skew slots)."""
        s_i = m * k * self.rereads("ifmap", row_folds, col_folds)
        s_f = k * n * self.rereads("filter", row_folds, col_folds)
        s_o = m * n * row_folds if self.spatial_reduction else m * n + row_folds * col_folds * (rows + cols)
        return s_i, s_f, s_o

    def scalesim_ofmap_writes(self, m, n, row_folds):
        """Words SCALE-Sim writes to DRAM: every row fold's partial sums under a spatial
        reduction (no on-chip accumulation across folds), else the output once."""
        return m * n * row_folds if self.spatial_reduction else m * n

    def scalesim_sram_windows(self, t, rows: int, last, rows_last, cols_last, rows_first) -> dict:
        """First and last SRAM access cycles per operand (DETAILED_ACCESS_REPORT.csv): fold f
        starts at ``f x fold_cycles`` (``last`` = start of the last fold + stalls); the
        stationary operand's R rows load at cycles 1..R in reverse order (a first fold with
        fewer than R rows starts at ``R - rows_first + 1``), the streamed one from R + 1 with
        the array skew, outputs leave after the ``2R - 1`` fill."""
        R = rows
        stat = (R - rows_first + 1 + 0 * t, last + R)
        strm = (np.full_like(t, R + 1), last + R + t + rows_last - 1)
        ofm = (np.full_like(t, 2 * R - 1), last + R + t - 1 + R - 1 + cols_last - 1)
        return {"ifmap": strm, "filter": stat, "ofmap": ofm} if self.stationary == "filter" else \
            {"ifmap": stat, "filter": strm, "ofmap": ofm}


class OutputStationary(Dataflow):
    name = "os"
    title = "output stationary"
    mapping = ("m", "n", "k")

    def fold_cycles(self, rows, cols, t, os_variant: str = DEFAULT_OS_VARIANT):
        """``R + C + T - 2`` (SCALE-Sim v2's code, variant ``scalesim``) or ``2R + C + T - 2``
        (its paper, variant ``paper``)."""
        if os_variant == "scalesim":
            return rows + cols + t - 2
        return 2 * rows + cols + t - 2

    def util_fold_cycles(self, rows, cols, t, os_variant: str = DEFAULT_OS_VARIANT):
        """The os fold length of the compute-utilisation column (the paper variant uses its own)."""
        return self.fold_cycles(rows, cols, t, os_variant)

    def scalesim_sram_windows(self, t, rows: int, last, rows_last, cols_last, rows_first) -> dict:
        """os: both operands stream from cycle 1 with the skew; outputs leave after T and the
        row fill."""
        R = rows
        return {"ifmap": (np.ones_like(t), last + t + rows_last - 1),
                "filter": (np.ones_like(t), last + t + cols_last - 1),
                "ofmap": (t - 1 + R - rows_first, last + t - 1 + R - 1 + cols_last - 1)}


class WeightStationary(Dataflow):
    name = "ws"
    title = "weight stationary"
    mapping = ("k", "n", "m")


class InputStationary(Dataflow):
    name = "is"
    title = "input stationary"
    mapping = ("k", "m", "n")


REGISTRY: dict[str, Dataflow] = {cls.name: cls() for cls in (OutputStationary, WeightStationary, InputStationary)}
NAMES: tuple[str, ...] = tuple(REGISTRY)


def get(name: str) -> Dataflow:
    """The registered dataflow ``name``; ValueError naming the allowed values otherwise."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"dataflow: {name!r}; allowed: {', '.join(NAMES)}") from None
