"""Closed-form (vectorised) evaluation of a trace: no contention, one group at a time.

Groups are formed in sample order (``static``: B samples; ``stream``: 1). A static group
keeps its size while any member is still running: exited samples leave *holes* that still
occupy array, DRAM and vector-unit time (the padded rows are computed) and DRAM traffic,
but their MACs, SRAM and vector energy are not spent (clock-gated); the exit unit only evaluates the
samples whose head runs. Each group runs its layers in order; per layer: the array stage
(block GEMMs, + patch embedding at layer 1, + projection/classifier at the last layer, +
exit-head GEMMs at a candidate layer where some member evaluates its head), then the
vector stage, then the exit unit. A sample's result is ready at the end of its exit layer.

This is exactly what :mod:`hwsim.replay` simulates with closed arrivals and
``max_in_flight = 1`` (tested); sweeps use it because it is a few numpy operations.
Units: cycles; energy pJ; times converted with the clock (MHz) to microseconds.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .costs import StageCosts
from .trace import ExitTrace

ENERGY_KEYS = ("mac", "sram", "dram", "vector", "exit", "leakage")


@dataclass
class GroupPlan:
    """Per-group, per-layer stage durations and energies for a fixed grouping.

    Arrays have shape (G, depth) (layer L at column L-1). Cycles int64, energy float pJ.
    """

    gid: np.ndarray          # (n,) group of each sample
    size: np.ndarray         # (G,)
    arr: np.ndarray
    dram: np.ndarray
    comp: np.ndarray | None  # array compute cycles only (arr = comp + stalls); with_compute=True
    vec: np.ndarray
    exit: np.ndarray
    energy: dict             # component -> (G, depth) pJ
    macs: np.ndarray         # (G, depth)


def plan_groups(costs: StageCosts, trace: ExitTrace, group_size: int, starts=None,
                with_compute: bool = False) -> GroupPlan:
    """Stage durations of groups of consecutive samples (static holes).

    Groups start every ``group_size`` samples, or at the sample indices ``starts`` (sorted,
    starting with 0) when given. ``with_compute``: also fill ``comp`` (array compute cycles
    without stalls; else it is None).
    """
    n, D = len(trace), trace.depth
    if starts is None:
        starts = np.arange(0, n, group_size)
    starts = np.asarray(starts, np.int64)
    G = len(starts)
    gid = np.repeat(np.arange(G), np.diff(np.append(starts, n)))
    size = np.bincount(gid, minlength=G)
    hist = np.zeros((G, D + 1), np.int64)
    np.add.at(hist, (gid, trace.exit_layer), 1)
    live = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1][:, 1:]   # (G, D): members with exit >= L
    active = live > 0
    cand_idx = np.asarray(trace.candidate_layers, np.int64) - 1
    if len(cand_idx):
        heads = np.add.reduceat(trace.evaluated.astype(np.int64), starts, axis=0)  # (G, c)
    else:
        heads = np.zeros((G, 0), np.int64)
    hmat = np.zeros((G, D), np.int64)
    hmat[:, cand_idx] = heads
    has_head = hmat > 0

    c = costs
    sz = size[:, None]
    L1 = np.zeros((1, D), bool); L1[0, 0] = True
    LD = np.zeros((1, D), bool); LD[0, -1] = True

    def pad_cost(tab):
        return np.broadcast_to(tab[size][:, None], (G, D))

    arr = active * pad_cost(c.array_cycles["block"]) + L1 * pad_cost(c.array_cycles["patch"]) \
        + (active & LD) * pad_cost(c.array_cycles["final"]) + has_head * pad_cost(c.array_cycles["head"])
    dram = active * pad_cost(c.dram_cycles["block"]) + L1 * pad_cost(c.dram_cycles["patch"]) \
        + (active & LD) * pad_cost(c.dram_cycles["final"]) + has_head * pad_cost(c.dram_cycles["head"])
    vec = active * pad_cost(c.vector_cycles["block"]) + L1 * pad_cost(c.vector_cycles["patch"]) \
        + (active & LD) * pad_cost(c.vector_cycles["final"]) + has_head * pad_cost(c.vector_cycles["head"])
    comp_c = None
    if with_compute:
        comp_c = (active * pad_cost(c.compute_cycles["block"]) + L1 * pad_cost(c.compute_cycles["patch"])
                  + (active & LD) * pad_cost(c.compute_cycles["final"])
                  + has_head * pad_cost(c.compute_cycles["head"])).astype(np.int64)
    ex = c.exit_cycles[hmat]
    energy = {}
    for comp in ("mac", "sram", "vector"):   # clock-gated holes: live samples only
        e = c.energy["block"][comp][live] + L1 * c.energy["patch"][comp][sz] \
            + LD * c.energy["final"][comp][live] + c.energy["head"][comp][hmat]
        energy[comp] = e
    # DRAM traffic follows the padded tiles (holes are still transferred)
    energy["dram"] = active * pad_cost(c.energy["block"]["dram"]) + L1 * pad_cost(c.energy["patch"]["dram"]) \
        + (active & LD) * pad_cost(c.energy["final"]["dram"]) + has_head * pad_cost(c.energy["head"]["dram"])
    energy["exit"] = c.energy["exit"][hmat]
    macs = c.macs["block"][live] + L1 * c.macs["patch"][sz] + LD * c.macs["final"][live] + c.macs["head"][hmat]
    del sz
    return GroupPlan(gid=gid, size=size, arr=arr.astype(np.int64), dram=dram.astype(np.int64),
                     comp=comp_c,
                     vec=vec.astype(np.int64), exit=ex.astype(np.int64), energy=energy, macs=macs)


def evaluate(costs: StageCosts, trace: ExitTrace, policy: str, batch_size: int) -> dict:
    """Closed-batch evaluation (all samples at t=0, one group in flight).

    ``policy``: ``static`` or ``stream`` (``regroup`` needs :mod:`hwsim.replay`).
    Returns a dict with per-sample ``latency_cycles`` (n,), ``finish_cycles`` (n,) and the
    summary of :func:`summarize`.
    """
    if policy not in ("static", "stream"):
        raise ValueError(f"closed form supports static and stream, not {policy!r}")
    B = 1 if policy == "stream" else batch_size
    p = plan_groups(costs, trace, B)
    per_layer = p.arr + p.vec + p.exit                       # (G, D)
    cum = np.cumsum(per_layer, axis=1)
    dur = cum[:, -1]
    start = np.concatenate([[0], np.cumsum(dur)[:-1]])
    finish = start[p.gid] + cum[p.gid, trace.exit_layer - 1]
    makespan = int(dur.sum())
    busy = {"array": int(p.arr.sum()), "dram": int(p.dram.sum()), "vector": int(p.vec.sum()),
            "exit_unit": int(p.exit.sum())}
    energy = {k: float(v.sum()) for k, v in p.energy.items()}
    out = summarize(costs, trace, finish.astype(np.int64), np.zeros(len(trace), np.int64), makespan, busy,
                    energy, int(p.macs.sum()), service_start=start[p.gid])
    return out


def _stats(x) -> dict:
    p50, p95, p99 = np.percentile(x, [50, 95, 99])
    return {"mean": float(x.mean()), "p50": float(p50), "p95": float(p95), "p99": float(p99)}


def summarize(costs: StageCosts, trace: ExitTrace, finish, arrival, makespan: int, busy: dict,
              energy: dict, macs: int, service_start=None) -> dict:
    """Totals from per-sample finish/arrival cycles; adds leakage over the makespan.

    ``latency_us`` is the sojourn latency (arrival to result: includes the wait for service,
    which under closed arrivals is queueing behind the other samples); ``service_latency_us``
    runs from the start of the sample's service (its group entering the accelerator) to its
    result (``service_start``: cycles per sample; default: the arrival).

    Keys: n, makespan_cycles, makespan_us, throughput_img_s, latency_us {mean,p50,p95,p99},
    service_latency_us {mean,p50,p95,p99},
    utilisation {array, dram, vector, exit_unit, pe}, energy_pj {component..., total},
    energy_per_image_uj {component..., total}, macs, macs_per_image, accuracy.
    """
    n = len(trace)
    f = costs.clock_mhz  # cycles per microsecond
    lat = (np.asarray(finish) - np.asarray(arrival)) / f
    svc = (np.asarray(finish) - np.asarray(arrival if service_start is None else service_start)) / f
    makespan_us = makespan / f
    e = dict(energy)
    e["leakage"] = costs.static_mw * makespan_us * 1e3  # mW * us = nJ -> *1e3 pJ
    e = {k: float(e.get(k, 0.0)) for k in ENERGY_KEYS}
    total = sum(e.values())
    e["total"] = total
    util = {k: (v / makespan if makespan else 0.0) for k, v in busy.items()}
    util["pe"] = macs / (costs.pes * makespan) if makespan else 0.0
    return {
        "n": n,
        "makespan_cycles": int(makespan),
        "makespan_us": makespan_us,
        "throughput_img_s": n / (makespan_us * 1e-6) if makespan else 0.0,
        "latency_us": _stats(lat),
        "service_latency_us": _stats(svc),
        "utilisation": util,
        "busy_cycles": busy,
        "energy_pj": e,
        "energy_per_image_uj": {k: v / n * 1e-6 for k, v in e.items()},
        "macs": int(macs),
        "macs_per_image": macs / n,
        "accuracy": trace.accuracy,
        "_latency_us": lat,
        "_service_latency_us": svc,
    }
