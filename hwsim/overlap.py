"""Overlapped execution (``overlap: true``): array, DRAM, vector unit and exit unit as
concurrent resources, double-buffered across two groups in flight.

The work of a group at one layer is a *task* of four stages: the DRAM transfer of its tiles
(``dram`` cycles), the array's compute (``compute`` cycles only: the stalls of the serial
model are replaced by the DRAM resource), the vector unit, the exit unit (at a candidate
layer some member evaluates). Two groups are in flight (double buffering); the controller
issues their tasks round-robin, layer by layer (a group whose last layer is done hands its
slot to the next group in arrival order, not before the group's release time). Each resource
serves tasks in issue order. Constraints of task i (group g, layer L):

* DRAM starts when the channel is free and a buffer half is free: the array has finished
  task i-2 (two halves per buffer; SCALE-Sim's double-buffered scratchpad, Samajdar et al.,
  ISPASS 2020);
* the array starts after the task's DRAM transfer, after the group's previous layer (its
  exit unit) and when the array is free; then the vector unit, then the exit unit.

For a fixed issue order these max-plus recurrences give the exact schedule (a list schedule
evaluated in closed form, no event queue): static and stream batches. ``regroup`` forms its
groups as samples exit, so its issue order depends on the schedule itself: it runs on the
SimPy replay of the same resources (:mod:`hwsim.overlap_replay`), which equals this closed
form exactly where both apply (tested). :func:`evaluate_overlapped` picks the evaluator.
The makespan is bounded below by every resource's busy time and above by the serial sum of
all stages (tested). Units: cycles.
"""
from __future__ import annotations

import numpy as np

from .closed_form import plan_groups, summarize
from .config import ArchConfig
from .costs import StageCosts
from .trace import ExitTrace


def evaluate_overlap(arch: ArchConfig, costs: StageCosts, trace: ExitTrace, arrival: np.ndarray | None = None) -> dict:
    """Summary (keys of :func:`hwsim.closed_form.summarize`) of the overlapped schedule, plus
    ``finish_cycles``, ``start_cycles``, ``arrival_cycles`` and ``serial_sum_cycles``."""
    from .replay import arrival_cycles, static_groups
    if arch.batch.policy not in ("static", "stream"):
        raise ValueError(f"the overlapped closed form covers static and stream, not {arch.batch.policy!r} "
                         "(use evaluate_overlapped)")
    n = len(trace)
    if arrival is None:
        arrival = arrival_cycles(arch, n)
    size = 1 if arch.batch.policy == "stream" else arch.batch.size
    timeout = int(round(arch.batch.timeout_us * arch.clock_mhz))
    starts, release = static_groups(np.asarray(arrival, np.int64), size, timeout)
    p = plan_groups(costs, trace, size, starts, with_compute=True)
    G, D = p.arr.shape
    depth = np.zeros(G, np.int64)
    np.maximum.at(depth, p.gid, trace.exit_layer)
    d_, a_, v_, x_ = p.dram.tolist(), p.comp.tolist(), p.vec.tolist(), p.exit.tolist()
    rel = release.tolist()
    dep = depth.tolist()
    end = np.zeros((G, D), np.int64)
    gstart = np.zeros(G, np.int64)
    dram_free = arr_free = vec_free = ex_free = 0
    arr_hist = [0, 0]            # array end of the last two tasks (buffer halves)
    slots = [0, 1] if G > 1 else [0]
    nxt = len(slots)
    layer = [0] * len(slots)
    prev_done = [rel[g] for g in slots]
    active = len(slots)
    while active:
        for k in range(len(slots)):
            g = slots[k]
            if g < 0:
                continue
            L = layer[k]
            row_d, row_a, row_v, row_x = d_[g], a_[g], v_[g], x_[g]
            ds = max(dram_free, arr_hist[0], rel[g])
            de = ds + row_d[L]
            dram_free = de
            if L == 0:
                gstart[g] = ds
            ast = max(arr_free, de, prev_done[k])
            ae = ast + row_a[L]
            arr_free = ae
            arr_hist = [arr_hist[1], ae]
            ve = max(vec_free, ae) + row_v[L]
            vec_free = ve
            if row_x[L]:
                xe = max(ex_free, ve) + row_x[L]
                ex_free = xe
            else:
                xe = ve
            end[g, L] = xe
            prev_done[k] = xe
            layer[k] = L + 1
            if L + 1 == dep[g]:
                if nxt < G:
                    slots[k], layer[k] = nxt, 0
                    prev_done[k] = rel[nxt]
                    nxt += 1
                else:
                    slots[k] = -1
                    active -= 1
    finish = end[p.gid, trace.exit_layer - 1]
    makespan = int(end.max()) if G else 0
    busy = {"array": int(p.comp.sum()), "dram": int(p.dram.sum()), "vector": int(p.vec.sum()),
            "exit_unit": int(p.exit.sum())}
    energy = {k: float(v.sum()) for k, v in p.energy.items()}
    out = summarize(costs, trace, finish, np.asarray(arrival, np.int64), makespan, busy, energy, int(p.macs.sum()),
                    service_start=gstart[p.gid])
    out["finish_cycles"] = finish
    out["start_cycles"] = gstart[p.gid]
    out["arrival_cycles"] = np.asarray(arrival, np.int64)
    out["serial_sum_cycles"] = int(p.dram.sum() + p.comp.sum() + p.vec.sum() + p.exit.sum())
    return out


def evaluate_overlapped(arch: ArchConfig, costs: StageCosts, trace: ExitTrace) -> dict:
    """The overlapped schedule of any batch policy: the closed form (``evaluator``
    ``overlap``) where it is exact (static, stream), else the SimPy replay
    (``overlap_replay``, regroup)."""
    if arch.batch.policy in ("static", "stream"):
        s = evaluate_overlap(arch, costs, trace)
        s["evaluator"] = "overlap"
    else:
        from .overlap_replay import replay_overlap
        s = replay_overlap(arch, costs, trace)
        s["evaluator"] = "overlap_replay"
    return s
