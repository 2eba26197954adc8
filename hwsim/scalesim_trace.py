"""SCALE-Sim v2's memory system (USER bandwidth) replayed on its demand trace: exact stall
cycles and DRAM counts whatever the buffer size. Our own model of the ``scalesim`` 2.0.2
package's behaviour, written from reading it and tested against its reports
(``tests/hwsim/test_scalesim_memory.py``); no code of it is used.

What SCALE-Sim does, in our words (words are 1 byte, ``bw`` words per cycle):

* **Demand.** Every cycle (a *line*) the array asks each read buffer for one word per array
  row or column and writes finished outputs. A GEMM's lines are its folds (column folds
  outer, row folds inner) of ``fold_cycles`` lines each. A *streamed* operand (it flows along
  T) is demanded skewed: its element ``(t, x)`` of fold ``f`` at fold line ``pre + t + c``
  (``c`` its array row or column, ``pre`` = R when a stationary operand loads first); the
  *stationary* operand's R x C tile is demanded in reverse row order in lines ``0 .. R-1``.
* **Read buffer.** The operand's *prefetch order* (folds stacked; a streamed operand rolled
  out by anti-diagonals) is cut into hash sets of ``ceil(size / 100)`` words. The active half
  holds ``A`` consecutive sets (cyclically); a demand outside it triggers prefetches, each
  sliding the window by ``P`` sets (the prefetch half) and costing ``ceil(half / bw)`` DRAM
  lines: prefetch j completes at cycle ``-1 + j (ceil(half / bw) + 1)``, however long ago
  it was needed. The initial fill reads ``min(ceil(active / bw), lines of the operand)``
  lines before cycle 0. A line that prefetched is served at the last completion, so its
  stall is ``completion - cycle - 1`` (negative when the data arrived early).
* **Write buffer.** Outputs fill lines of ``bw`` words; once more than the drain half is
  held and the previous drain has finished, the partial line is closed and up to
  ``ceil(drain / bw)`` lines drain, one per cycle (a closed partial line is counted as full
  when it is not the last line of a drain); a full buffer stalls until the drain ends.
* **Stalls.** Line i runs at cycle ``i + S`` (S: the stalls so far) and adds
  ``max(ifmap stall, filter stall, ofmap stall)`` (the ofmap's is -1 without a wait, so two
  early prefetches in one line can give back cycles). After the last line the write buffer
  drains from the last output cycle.

The replay jumps between *event lines* (prefetches, drains, write stalls), found with numpy
searches, so its cost grows with the operand sizes and the number of events, not with Python
work per word. It covers GEMM layers (every operand address distinct); SCALE-Sim's conv
layers repeat ifmap addresses (im2col), which this model does not represent.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import dataflows
from .dataflows import OPERAND_DIMS

SETS_PER_BUFFER = 100       # SCALE-Sim hashes a read buffer into ~100 sets of words


def _cdiv(a, b):
    return -(-a // b)


@dataclass(frozen=True)
class ReadBuffer:
    """A double-buffered read buffer of ``total`` words: active half, prefetch half, hash-set
    size, and ``bw`` words per DRAM line."""

    total: int
    bw: int

    @property
    def active(self) -> int:
        return _cdiv(self.total, 2)

    @property
    def prefetch(self) -> int:
        return self.total - self.active

    @property
    def set_words(self) -> int:
        return _cdiv(self.total, SETS_PER_BUFFER)

    def windows(self, valid: int) -> tuple[int, int, int]:
        """(sets of the operand, sets in the active window, sets per prefetch) for ``valid``
        words."""
        n_sets = valid // self.set_words + 1
        act = min(n_sets, _cdiv(self.active, self.set_words))
        pf = min(n_sets - act, _cdiv(self.prefetch, self.set_words))
        return n_sets, act, pf

    def initial_lines(self, padded_words: int) -> int:
        """DRAM lines of the initial fill (before cycle 0)."""
        return min(_cdiv(self.active, self.bw), _cdiv(padded_words, self.bw))

    @property
    def prefetch_lines(self) -> int:
        return _cdiv(self.prefetch, self.bw)


@dataclass(frozen=True)
class GemmGeometry:
    """One GEMM on one array under one dataflow: sizes, folds and lines."""

    flow: dataflows.Dataflow
    m: int
    k: int
    n: int
    rows: int
    cols: int

    @property
    def ext(self) -> dict:
        sr, sc, t = (int(x) for x in self.flow.spatio_temporal(self.m, self.k, self.n))
        return {"row": sr, "col": sc, "time": t}

    @property
    def row_folds(self) -> int:
        return _cdiv(self.ext["row"], self.rows)

    @property
    def col_folds(self) -> int:
        return _cdiv(self.ext["col"], self.cols)

    @property
    def fold_lines(self) -> int:
        return int(self.flow.fold_cycles(self.rows, self.cols, self.ext["time"], "scalesim"))

    @property
    def lines(self) -> int:
        return self.row_folds * self.col_folds * self.fold_lines

    def axes(self, operand: str) -> tuple[str, str]:
        return tuple(self.flow.axis_of(d) for d in OPERAND_DIMS[operand])

    def width(self, axis: str) -> int:
        return self.rows if axis == "row" else self.cols

    def folds(self, axis: str) -> int:
        return self.row_folds if axis == "row" else self.col_folds

    def stream_axis(self, operand: str) -> str | None:
        """The spatial axis a streamed operand spreads over (None: stationary)."""
        a = self.axes(operand)
        return None if "time" not in a else next(x for x in a if x != "time")

    @property
    def stream_prefix(self) -> int:
        """Lines a streamed input waits while a stationary input loads (ws, is: R)."""
        return self.rows if self.flow.stationary != "ofmap" else 0

    # ---- prefetch order ---------------------------------------------------------------------
    def prefetch_order(self, operand: str) -> np.ndarray:
        """Element ids (-1: padding) in SCALE-Sim's prefetch order. Ids: streamed ``t * X + x``,
        stationary ``r * Sc + c`` (any labelling consistent with :meth:`demand` works)."""
        ax = self.stream_axis(operand)
        e = self.ext
        if ax is None:              # stationary: column folds of Sr x C tiles, row-major
            C, nf, Sr, Sc = self.cols, self.col_folds, e["row"], e["col"]
            f, r, c = np.meshgrid(np.arange(nf), np.arange(Sr), np.arange(C), indexing="ij")
            x = f * C + c
            return np.where(x < Sc, r * Sc + x, -1).ravel()
        W, nf, T, X = self.width(ax), self.folds(ax), e["time"], e[ax]
        f, t, c = np.meshgrid(np.arange(nf), np.arange(T), np.arange(W), indexing="ij")
        x = f * W + c
        ids = np.where(x < X, t * X + x, -1).ravel()
        row = (f * T + t).ravel()
        col = c.ravel()
        return ids[np.lexsort((-row, row + col))]     # anti-diagonals, lower rows first

    # ---- demand -----------------------------------------------------------------------------
    def _fold_pattern(self, operand: str):
        """(fold line, spatial index along the stream axis or tile row, tile column or t) of one
        full fold's demands, in SCALE-Sim's order (line, then array position)."""
        ax = self.stream_axis(operand)
        R, C, T = self.rows, self.cols, self.ext["time"]
        if ax is None:
            r, c = np.meshgrid(np.arange(R), np.arange(C), indexing="ij")
            line = R - 1 - r
        else:
            W = self.width(ax)
            t, c = np.meshgrid(np.arange(T), np.arange(W), indexing="ij")
            line = self.stream_prefix + t + c
            r = t
        order = np.lexsort((c.ravel(), line.ravel()))
        return line.ravel()[order], r.ravel()[order], c.ravel()[order]

    def demand(self, operand: str):
        """(ids, global line) of every demanded word of ``operand``, in demand order."""
        ax = self.stream_axis(operand)
        line, a, b = self._fold_pattern(operand)
        rf, cf, FL, e = self.row_folds, self.col_folds, self.fold_lines, self.ext
        fc, fr = np.divmod(np.arange(rf * cf), rf)          # column folds outer, row folds inner
        q = np.arange(rf * cf)
        if ax is None:
            row = fr[:, None] * self.rows + a[None, :]
            col = fc[:, None] * self.cols + b[None, :]
            ok = (row < e["row"]) & (col < e["col"])
            ids = row * e["col"] + col
        else:
            f = fr if ax == "row" else fc
            x = f[:, None] * self.width(ax) + b[None, :]
            ok = np.broadcast_to(x < e[ax], x.shape)
            ids = a[None, :] * e[ax] + x
        lines = q[:, None] * FL + line[None, :]
        return ids[ok], np.broadcast_to(lines, ids.shape)[ok]

    def ofmap_counts(self) -> np.ndarray:
        """Output words written at every line (int64, length :attr:`lines`)."""
        R, C, T, FL = self.rows, self.cols, self.ext["time"], self.fold_lines
        e = self.ext
        rf, cf = self.row_folds, self.col_folds
        out = np.zeros((rf * cf, FL), np.int64)
        for q in range(rf * cf):
            fc, fr = divmod(q, rf)
            wc = min(C, e["col"] - fc * C)
            if self.flow.stationary == "ofmap":            # R x C tile, reversed, after T - 1 lines, skewed
                wr = min(R, e["row"] - fr * R)
                r, c = np.meshgrid(np.arange(R - wr, R), np.arange(wc), indexing="ij")
                ln = (T - 1) + r + c
            else:                                          # T x C, after 2R - 1 lines, skewed
                t, c = np.meshgrid(np.arange(T), np.arange(wc), indexing="ij")
                ln = 2 * R - 1 + t + c
            np.add.at(out[q], ln.ravel(), 1)
        return out.ravel()


def prefetch_events(sets: np.ndarray, lines: np.ndarray, n_sets: int, act: int, pf: int) -> dict[int, int]:
    """{line: prefetches} of a read buffer whose window of ``act`` sets (of ``n_sets``) slides
    by ``pf`` sets per prefetch, for demands of hash sets ``sets`` at ``lines``."""
    events: dict[int, int] = {}
    if act >= n_sets:
        return events
    w, pos, E, chunk = 0, 0, len(sets), 4096
    while pos < E:
        end = min(E, pos + chunk)
        d = (sets[pos:end] - w) % n_sets
        miss = np.flatnonzero(d >= act)
        if not len(miss):
            pos, chunk = end, min(chunk * 2, 1 << 22)
            continue
        j = pos + int(miss[0])
        k = _cdiv(int(d[miss[0]]) - act + 1, pf)
        w = (w + k * pf) % n_sets
        ln = int(lines[j])
        events[ln] = events.get(ln, 0) + k
        chunk = max(1024, 2 * (j + 1 - pos))
        pos = j + 1
    return events


class WriteBuffer:
    """SCALE-Sim's ofmap write buffer (``total`` words, drain half, ``bw`` words per line)."""

    def __init__(self, total: int, bw: int, counts: np.ndarray):
        self.total, self.bw = total, bw
        self.active = _cdiv(total, 2)
        self.drain_words = total - self.active
        self.per_drain = _cdiv(self.drain_words, bw)
        self.cum = np.concatenate([[0], np.cumsum(counts)])
        self.free, self.fill, self.closed, self.ptr = total, 0, 0, 0
        self.partial: dict[int, int] = {}
        self.drain_end = 0
        self.writes = 0
        self.first = self.last = None

    def store(self, n: int) -> None:
        self.free -= n
        tot = self.fill + n
        self.closed += tot // self.bw
        self.fill = tot % self.bw

    def _close_partial(self) -> None:
        if self.fill:
            self.partial[self.closed] = self.fill
            self.closed += 1
            self.fill = 0

    def _drain(self, cycle: int) -> int:
        end = min(self.ptr + self.per_drain, self.closed)
        num = end - self.ptr
        if num <= 0:
            raise RuntimeError("write buffer drain with nothing to drain (SCALE-Sim fails here too)")
        data = num * self.bw - (self.bw - self.partial.get(end - 1, self.bw))
        self.writes += data
        self.free += data
        self.ptr = end
        if self.first is None:
            self.first = cycle
        self.last = cycle + num - 1
        return cycle + num - 1

    def line(self, i: int, cycle: int) -> int:
        """Write line ``i``'s outputs at ``cycle``; its service cycle (stall: minus cycle + 1)."""
        cur = cycle
        for _ in range(int(self.cum[i + 1] - self.cum[i])):
            self.store(1)
            if cur < self.drain_end:
                if self.free <= 0:
                    cur = self.drain_end
            elif self.free < self.active:
                self._close_partial()
                self.drain_end = self._drain(cur)
        return cur

    def skip(self, i: int, j: int) -> None:
        """Lines ``i .. j-1`` without events."""
        self.store(int(self.cum[j] - self.cum[i]))

    def next_event(self, i: int, stall: int, n_lines: int) -> int:
        """First line >= i where a drain or a write stall happens (``n_lines`` if none), given the
        stalls ``stall`` so far (constant until that line)."""
        g0, total = int(self.cum[i]), int(self.cum[-1])
        g_thr = g0 + max(1, self.free - self.active + 1) - 1      # first word over the drain half
        g_full = g0 + max(1, self.free) - 1                       # the word that fills the buffer
        best = n_lines
        l_de = max(i, self.drain_end - stall)
        if l_de < n_lines:
            g = max(g_thr, int(self.cum[l_de]))
            if g < total:
                best = int(np.searchsorted(self.cum, g, side="right")) - 1
        if g_full < total:
            ls = int(np.searchsorted(self.cum, g_full, side="right")) - 1
            if ls + stall < self.drain_end:
                best = min(best, ls)
        return best

    def flush(self, cycle: int) -> None:
        """Drain everything left, from ``cycle`` on."""
        self._close_partial()
        while self.ptr < self.closed:
            cycle = self._drain(cycle) + 1


@dataclass(frozen=True)
class GemmTrace:
    """SCALE-Sim's memory results of one GEMM (cycles; words)."""

    total_cycles: int
    stall_cycles: int
    dram_reads: dict        # operand -> words
    dram_writes: int
    dram_window: dict       # operand -> (first, last) DRAM cycle
    sram_window: dict       # operand -> (first, last) SRAM cycle


def replay_gemm(m: int, k: int, n: int, rows: int, cols: int, dataflow: str, ifmap_kb: float, filter_kb: float,
                ofmap_kb: float, bw_words: int, sram_lines: dict | None = None) -> GemmTrace:
    """Replay one GEMM M x K x N through SCALE-Sim's memory system (see the module docstring).

    ``sram_lines``: operand -> (first, last) line with a demand (from
    :meth:`hwsim.dataflows.Dataflow.scalesim_sram_windows`); their service cycles are reported.
    """
    flow = dataflows.get(dataflow)
    geo = GemmGeometry(flow, int(m), int(k), int(n), int(rows), int(cols))
    bw = max(int(bw_words), 1)
    L = geo.lines
    reads, windows, events = {}, {}, {}
    for op, kb in (("ifmap", ifmap_kb), ("filter", filter_kb)):
        buf = ReadBuffer(int(kb * 1024), bw)
        order = geo.prefetch_order(op)
        valid = order >= 0
        n_sets, act, pf = buf.windows(int(valid.sum()))
        ev: dict[int, int] = {}
        if act < n_sets:
            rank = np.empty(int(order.max()) + 1, np.int64)
            rank[order[valid]] = np.arange(int(valid.sum()))
            ids, lines = geo.demand(op)
            ev = prefetch_events(rank[ids] // buf.set_words, lines, n_sets, act, pf)
        total_pf = sum(ev.values())
        init = buf.initial_lines(len(order))
        reads[op] = (init + total_pf * buf.prefetch_lines) * bw
        windows[op] = (-init, -1 + total_pf * (buf.prefetch_lines + 1))
        events[op] = (ev, buf.prefetch_lines)
    wb = WriteBuffer(int(ofmap_kb * 1024), bw, geo.ofmap_counts())
    quiet_ofmap = int(wb.cum[-1]) <= wb.drain_words
    forced = {L - 1}
    for lo, hi in (sram_lines or {}).values():
        forced.update((int(lo), int(hi)))
    marks = sorted(set(events["ifmap"][0]) | set(events["filter"][0]) | {x for x in forced if 0 <= x < L})
    served: dict[tuple[str, int], int] = {}
    S, i, p = 0, 0, 0
    done = {"ifmap": 0, "filter": 0}
    while i < L:
        while p < len(marks) and marks[p] < i:
            p += 1
        nxt = marks[p] if p < len(marks) else L
        if not quiet_ofmap:
            nxt = min(nxt, wb.next_event(i, S, L))
        if nxt > i:
            wb.skip(i, nxt)
            i = nxt
            if i >= L:
                break
        cyc = i + S
        st = []
        for op in ("ifmap", "filter"):
            ev, pl = events[op]
            if i in ev:
                done[op] += ev[i]
                out = -1 + done[op] * (pl + 1)
            else:
                out = cyc + 1
            served[(op, i)] = out
            st.append(out - cyc - 1)
        out_o = wb.line(i, cyc)
        served[("ofmap", i)] = out_o
        st.append(out_o - cyc - 1)
        S += int(max(st))
        i += 1
    total = served[("ofmap", L - 1)]
    wb.flush(total)
    sram = {op: (served[(op, int(lo))], served[(op, int(hi))]) for op, (lo, hi) in (sram_lines or {}).items()}
    return GemmTrace(total_cycles=int(total), stall_cycles=int(S), dram_reads=reads, dram_writes=int(wb.writes),
                     dram_window=windows | {"ofmap": (wb.first, wb.last)}, sram_window=sram)
