"""Layer-pipelined early-exit accelerator (``architecture: pipelined``), after ATHEENA.

Reference: B. Biggs, C.-S. Bouganis, G. A. Constantinides, "ATHEENA: A Toolflow for Hardware
Early-Exit Network Automation", FCCM 2023 (stages sized by the exit profile, a conditional
buffer that holds a sample until its exit decision; 2.0-2.78x throughput for CNNs).

The blocks are partitioned into stages (``stages: [{blocks: [first, last], array: ..., sram:
...}]``); each stage has its own systolic array, buffers, vector unit and exit unit and serves
one sample at a time (batch 1), running the sample's blocks of the stage in order, the exit
head and gate at every candidate layer the sample evaluates, the patch embedding in the
stage holding block 1 and the projection/classifier in the stage holding the last block. A
stage only serves the samples that reach it (exit layer >= its first block): a sample that
exits leaves the pipeline, freeing the later stages' time for others.

Timing is exact for in-order (FIFO) stages with unbounded inter-stage buffers: with ``A``
the times samples become ready for a stage (in order) and ``t`` their service times, the
finish times are ``F[j] = max(A[j], F[j-1]) + t[j] = S[j] + max_{k<=j}(A[k] - S[k-1])``
(``S`` = cumulative sum of ``t``; the Lindley recursion in max-plus form), one numpy
``maximum.accumulate`` per stage. The buffers are then sized from the schedule: the
**conditional buffer** at candidate layer L holds each sample from the end of block L until
its exit decision (if it exits at L) or until block L+1 starts (the next stage takes it, if L
ends a stage); its depth is the peak occupancy (samples) and its size depth x tokens x width
operand bytes. The service latency of a sample is the sum of its own service times over the
stages it reaches (no waiting for a busy stage); the sojourn latency runs from arrival to
result. Throughput = samples / makespan; its bound is the bottleneck stage,
``clock / max_s E[t_s]`` (E over all samples, zero for those that do not reach stage s).

Units: cycles of the accelerator clock, energy pJ, sizes KiB, times converted with the clock.
"""
from __future__ import annotations

import numpy as np

from common.errors import InputError
from quant.geometry import EncoderGeometry

from .closed_form import ENERGY_KEYS, _stats
from .config import ArchConfig
from .costs import StageCosts, build_costs
from .energy import static_power_mw, table_for
from .trace import ExitTrace

DYN = ("mac", "sram", "dram", "vector", "exit")


def stage_arch(arch: ArchConfig, i: int) -> ArchConfig:
    """The monolithic accelerator of stage ``i`` (its array and buffers; everything else shared)."""
    st = arch.stages[i]
    return arch.model_copy(update={"architecture": "monolithic", "stages": [], "array": st.array,
                                   "sram": st.sram or arch.sram,
                                   "batch": arch.batch.model_copy(update={"policy": "stream", "size": 1})})


def check_stages(arch: ArchConfig, depth: int, source: str = "arch") -> None:
    last = arch.stages[-1].blocks[1] if arch.stages else 0
    if last != depth:
        raise InputError(f"{source}: stages[{len(arch.stages) - 1}].blocks: the stages end at block {last}; "
                         f"allowed: stages covering blocks 1..{depth} (the encoder's depth)")


def _per_layer(costs: StageCosts, trace: ExitTrace):
    """(dur (n, D) cycles, energy {comp: (n, D) pJ}, macs (n, D), block_end (n, D)) of each
    sample at each layer on one stage's hardware; zero beyond the sample's exit layer.
    ``block_end`` is the offset within the layer at which the backbone block ends (before the head)."""
    n, D = len(trace), trace.depth
    L = np.arange(1, D + 1)[None, :]
    live = (L <= trace.exit_layer[:, None])
    c = costs

    def t(stage, b=1):
        return int(c.array_cycles[stage][b] + c.vector_cycles[stage][b])

    base = np.full((1, D), t("block"))
    base[0, 0] += t("patch")
    base[0, -1] += t("final")
    head = np.zeros((n, D), bool)
    if len(trace.candidate_layers):
        head[:, np.asarray(trace.candidate_layers) - 1] = trace.evaluated
    head &= live
    h_t = t("head") + int(c.exit_cycles[1])
    block = live * base
    dur = block + head * h_t
    energy = {}
    for k in DYN:
        eb = np.full((1, D), float(c.energy["block"][k][1]) if k != "exit" else 0.0)
        if k != "exit":
            eb[0, 0] += float(c.energy["patch"][k][1])
            eb[0, -1] += float(c.energy["final"][k][1])
            eh = float(c.energy["head"][k][1])
        else:
            eh = float(c.energy["exit"][1])
        energy[k] = live * eb + head * eh
    mb = np.full((1, D), int(c.macs["block"][1]))
    mb[0, 0] += int(c.macs["patch"][1])
    mb[0, -1] += int(c.macs["final"][1])
    macs = live * mb + head * int(c.macs["head"][1])
    return dur, energy, macs, block


def _fifo(ready: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Finish times of an in-order single server: ready times ``ready``, service times ``t``."""
    if not len(t):
        return t.astype(np.int64)
    s = np.cumsum(t)
    return s + np.maximum.accumulate(ready - (s - t))


def _peak(enter: np.ndarray, leave: np.ndarray) -> int:
    """Peak occupancy of intervals [enter, leave) (a leave at time x frees before an entry at x)."""
    if not len(enter):
        return 0
    times = np.concatenate([leave, enter])
    kind = np.concatenate([np.zeros(len(leave), np.int8), np.ones(len(enter), np.int8)])
    order = np.lexsort((kind, times))
    delta = np.where(kind[order] == 1, 1, -1)
    return int(np.cumsum(delta).max())


def evaluate_pipelined(arch: ArchConfig, geometry: EncoderGeometry, trace: ExitTrace,
                       arrival: np.ndarray | None = None, costs: list | None = None) -> dict:
    """Simulate ``trace`` on the pipelined accelerator ``arch``; a summary dict with the keys
    of :func:`hwsim.closed_form.summarize` plus ``pipeline`` (stages, bottleneck, conditional
    buffers, resources) and the per-sample ``finish_cycles``, ``start_cycles``, ``arrival_cycles``.

    ``arrival`` (cycles, non-decreasing): default from ``arch.arrivals`` (closed: all at 0).
    ``costs``: the stages' :class:`StageCosts` (batch 1), to reuse across calls.
    """
    from .replay import arrival_cycles
    check_stages(arch, trace.depth)
    n, D = len(trace), trace.depth
    if arrival is None:
        arrival = arrival_cycles(arch, n)
    arrival = np.asarray(arrival, np.int64)
    S = len(arch.stages)
    archs = [stage_arch(arch, i) for i in range(S)]
    if costs is None:
        table = table_for(arch.energy)
        costs = [build_costs(a, geometry, trace.num_classes, 1, table) for a in archs]
    start = np.zeros((S, n), np.int64)
    finish_s = np.zeros((S, n), np.int64)
    reach = np.zeros((S, n), bool)
    busy, per_stage, energy, macs = [], [], {k: 0.0 for k in DYN}, 0
    offsets = []
    ready = arrival.copy()
    own = np.zeros(n, np.int64)      # the sample's own service cycles over all stages (no queueing)
    block_end_abs = np.zeros((n, D), np.int64)
    layer_end_abs = np.zeros((n, D), np.int64)
    for s, st in enumerate(arch.stages):
        f, last = st.blocks
        dur, en, mc, blk = _per_layer(costs[s], trace)
        cols = slice(f - 1, last)
        t = dur[:, cols].sum(axis=1)
        r = trace.exit_layer >= f
        idx = np.nonzero(r)[0]
        fin = _fifo(ready[idx], t[idx])
        start[s, idx] = fin - t[idx]
        finish_s[s, idx] = fin
        reach[s] = r
        cum = np.cumsum(dur[:, cols], axis=1)
        layer_end_abs[:, cols] = start[s][:, None] + cum
        block_end_abs[:, cols] = start[s][:, None] + cum - dur[:, cols] + blk[:, cols]
        ready = finish_s[s].copy()
        own += t
        busy.append(int(t.sum()))
        for k in DYN:
            energy[k] += float(en[k][:, cols].sum())
        macs += int(mc[:, cols].sum())
        per_stage.append({"blocks": [f, last], "array": f"{st.array.rows}x{st.array.cols} {st.array.dataflow}",
                          "pes": st.array.rows * st.array.cols, "reach_fraction": float(r.mean()),
                          "mean_service_cycles": float(t.mean()), "busy_cycles": int(t.sum())})
        offsets.append(cum)
    # per sample: service starts at stage 1, ends when its exit layer's stage finishes
    stage_of = np.zeros(D + 1, np.int64)
    for s, st in enumerate(arch.stages):
        stage_of[st.blocks[0]:st.blocks[1] + 1] = s
    es = stage_of[trace.exit_layer]
    finish = finish_s[es, np.arange(n)]
    svc_start = start[0]
    makespan = int(finish.max()) if n else 0
    f_mhz = arch.clock_mhz
    # conditional buffers at the candidate layers
    op_bytes = arch.precision.activations / 8.0     # a buffered sample: its activations
    sample_kib = geometry.tokens * geometry.width * op_bytes / 1024.0
    buffers = []
    for L in trace.candidate_layers:
        s = int(stage_of[L])
        m = trace.exit_layer >= L
        enter = block_end_abs[m, L - 1]
        if L == arch.stages[s].blocks[1] and s + 1 < S:
            nxt = np.where(trace.exit_layer[m] > L, start[s + 1][m], layer_end_abs[m, L - 1])
        else:
            nxt = layer_end_abs[m, L - 1]
        depth = _peak(enter, nxt)
        buffers.append({"layer": int(L), "stage": s, "at_stage_boundary": L == arch.stages[s].blocks[1],
                        "depth_samples": depth, "kib": depth * sample_kib,
                        "exit_fraction": float((trace.exit_layer == L).mean())})
    buf_kib = sum(b["kib"] for b in buffers)
    static_mw = sum(static_power_mw(a) for a in archs) + arch.energy.leakage.sram_uw_per_kb * buf_kib * 1e-3
    makespan_us = makespan / f_mhz
    e = {k: energy.get(k, 0.0) for k in DYN}
    e["leakage"] = static_mw * makespan_us * 1e3
    e = {k: float(e[k]) for k in ENERGY_KEYS}
    e["total"] = sum(e.values())
    lat = (finish - arrival) / f_mhz
    svc = own / f_mhz
    pes = sum(p["pes"] for p in per_stage)
    sram_kb = sum((st.sram or arch.sram).ifmap_kb + (st.sram or arch.sram).filter_kb + (st.sram or arch.sram).ofmap_kb
                  for st in arch.stages)
    means = [p["mean_service_cycles"] for p in per_stage]
    bottleneck = int(np.argmax(means))
    for p in per_stage:
        p["utilisation"] = p["busy_cycles"] / makespan if makespan else 0.0
    util = {f"stage{i + 1}": p["utilisation"] for i, p in enumerate(per_stage)}
    util["pe"] = macs / (pes * makespan) if makespan else 0.0
    return {
        "n": n, "makespan_cycles": makespan, "makespan_us": makespan_us,
        "throughput_img_s": n / (makespan_us * 1e-6) if makespan else 0.0,
        "latency_us": _stats(lat), "service_latency_us": _stats(svc),
        "utilisation": util, "busy_cycles": {f"stage{i + 1}": b for i, b in enumerate(busy)},
        "energy_pj": e, "energy_per_image_uj": {k: v / n * 1e-6 for k, v in e.items()},
        "macs": int(macs), "macs_per_image": macs / n, "accuracy": trace.accuracy,
        "pipeline": {"stages": per_stage, "bottleneck_stage": bottleneck + 1,
                     "throughput_bound_img_s": f_mhz * 1e6 / max(means) if max(means) else 0.0,
                     "conditional_buffers": buffers, "conditional_buffer_kib": buf_kib,
                     "pes_total": pes, "sram_kb_total": sram_kb + buf_kib},
        "_latency_us": lat, "_service_latency_us": svc,
        "finish_cycles": finish, "start_cycles": svc_start, "arrival_cycles": arrival,
    }


DEFAULT_SHAPES = tuple((r, c) for r in (8, 16, 24, 32, 48, 64, 96, 128) for c in (8, 16, 24, 32, 48, 64, 96, 128))


def allocate_pes(arch: ArchConfig, geometry: EncoderGeometry, trace: ExitTrace, pe_budget: int,
                 shapes=DEFAULT_SHAPES) -> tuple[ArchConfig, dict]:
    """Choose each stage's array (rows x cols from ``shapes``) for ``trace``'s exit profile:
    minimise the bottleneck ``max_s E[t_s]`` (cycles per sample) with total PEs <= ``pe_budget``;
    ties go to fewer PEs. Exact over ``shapes``: the optimal bottleneck is one of the stages'
    mean times, so the candidates are tried in ascending order, each stage taking its
    fewest-PE shape within the candidate. Returns (the arch with the chosen arrays, {"mean_cycles": per stage,
    "pes": total, "bottleneck_cycles"}). InputError when no combination fits the budget."""
    check_stages(arch, trace.depth)
    table = table_for(arch.energy)
    S = len(arch.stages)
    means = np.zeros((S, len(shapes)))
    pes = np.array([r * c for r, c in shapes])
    # E[t_s] is linear in the fractions of samples alive / evaluating a head at each layer
    D = trace.depth
    live = (np.arange(1, D + 1)[None, :] <= trace.exit_layer[:, None]).mean(axis=0)
    headf = np.zeros(D)
    if len(trace.candidate_layers):
        headf[np.asarray(trace.candidate_layers) - 1] = (
            trace.evaluated & (trace.exit_layer[:, None] >= np.asarray(trace.candidate_layers)[None, :])).mean(axis=0)
    for j, (r, c) in enumerate(shapes):
        for s in range(S):
            a = stage_arch(arch, s)
            a = a.model_copy(update={"array": a.array.model_copy(update={"rows": r, "cols": c})})
            cst = build_costs(a, geometry, trace.num_classes, 1, table)
            t = lambda st: float(cst.array_cycles[st][1] + cst.vector_cycles[st][1])  # noqa: E731
            base = np.full(D, t("block"))
            base[0] += t("patch")
            base[-1] += t("final")
            per = live * base + headf * (t("head") + float(cst.exit_cycles[1]))
            f, last = arch.stages[s].blocks
            means[s, j] = per[f - 1:last].sum()
    # the optimum bottleneck is one of the means: for each candidate T (ascending) take, per
    # stage, the fewest-PE shape with mean <= T; the first T whose total fits is optimal
    best = None
    for T in np.unique(means):
        combo = []
        for s_ in range(S):
            ok = np.nonzero(means[s_] <= T)[0]
            if not len(ok):
                break
            combo.append(int(ok[np.lexsort((means[s_, ok], pes[ok]))[0]]))
        if len(combo) == S and int(pes[combo].sum()) <= pe_budget:
            best = ((float(T), int(pes[combo].sum())), tuple(combo))
            break
    if best is None:
        raise InputError(f"--pe-budget: {pe_budget} PEs cannot hold {S} stages of the smallest array "
                         f"({min(pes)} PEs each); allowed: >= {S * min(pes)}")
    combo = best[1]
    stages = [st.model_copy(update={"array": st.array.model_copy(update={"rows": shapes[j][0], "cols": shapes[j][1]})})
              for st, j in zip(arch.stages, combo)]
    return arch.model_copy(update={"stages": stages}), {
        "mean_cycles": [float(means[s, j]) for s, j in enumerate(combo)], "pes": int(pes[list(combo)].sum()),
        "bottleneck_cycles": float(best[0][0])}
