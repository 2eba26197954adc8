"""SimPy replay of a per-sample exit trace on the accelerator.

Resources (SimPy, capacity 1 each): the systolic ``array``, the ``dram`` channel, the
``vector`` unit and the ``exit_unit``; plus a pipeline of ``max_in_flight`` group slots.
The unit of work is a *group* of samples executing one layer: the array stage (the array is
held for compute + stall cycles while the DRAM channel is held, in parallel, for the
transfer cycles; a stage ends when both are done), then the vector stage, then, at a
candidate layer, the exit unit. Events are per group and layer, never per cycle.

Arrivals: ``closed`` (all samples at t=0) or ``poisson`` (rate in images/s, seeded).
Batch policies:

* ``static``: groups of ``batch.size`` in arrival order (under poisson a group also closes
  ``batch.timeout_us`` after its first member arrived); a group keeps its size until its
  last member exits: exited samples leave holes (see :mod:`hwsim.closed_form`).
* ``regroup``: after every layer the survivors return to a per-layer pool; the dispatcher
  starts the deepest layer that has a full batch, and flushes a partial batch (deepest
  first) only when nothing is running and no full batch can form (under poisson, also when
  the oldest waiting sample has waited ``timeout_us``). Groups are costed at their size.
* ``stream``: every sample is its own group (``max_in_flight`` samples overlap).

With closed arrivals and ``max_in_flight = 1`` the replay equals
:func:`hwsim.closed_form.evaluate` exactly (static, stream).
"""
from __future__ import annotations

from collections import deque

import numpy as np
import simpy

from .closed_form import ENERGY_KEYS, plan_groups, summarize
from .config import ArchConfig
from .costs import StageCosts
from .trace import ExitTrace


def arrival_cycles(arch: ArchConfig, n: int) -> np.ndarray:
    """Arrival time of each sample in cycles (int64): zeros (closed) or a Poisson process."""
    if arch.arrivals.mode == "closed":
        return np.zeros(n, np.int64)
    rng = np.random.default_rng(arch.arrivals.seed)
    mean_gap = arch.clock_mhz * 1e6 / arch.arrivals.rate_per_s
    return np.floor(np.cumsum(rng.exponential(mean_gap, n))).astype(np.int64)


def static_groups(arrival: np.ndarray, size: int, timeout: int) -> tuple[np.ndarray, np.ndarray]:
    """(starts, release cycle) of static groups: close at ``size`` members or ``timeout``
    cycles after the first member arrived (whichever first); closed arrivals: chunks."""
    n = len(arrival)
    if not arrival.any():
        starts = np.arange(0, n, size)
        return starts, np.zeros(len(starts), np.int64)
    starts, release = [], []
    i = 0
    while i < n:
        deadline = arrival[i] + timeout
        j = min(i + size, int(np.searchsorted(arrival, deadline, side="right")))
        j = max(j, i + 1)
        starts.append(i)
        release.append(arrival[j - 1] if j - i == size else max(arrival[j - 1], deadline) if j < n else arrival[j - 1])
        i = j
    return np.asarray(starts, np.int64), np.asarray(release, np.int64)


class _Sim:
    def __init__(self, arch: ArchConfig, costs: StageCosts, trace: ExitTrace):
        self.arch, self.c, self.t = arch, costs, trace
        self.env = simpy.Environment()
        self.array = simpy.Resource(self.env, 1)
        self.dram = simpy.Resource(self.env, 1)
        self.vector = simpy.Resource(self.env, 1)
        self.exit_unit = simpy.Resource(self.env, 1)
        self.slots = simpy.Resource(self.env, arch.batch.max_in_flight)
        self.finish = np.zeros(len(trace), np.int64)
        self.busy = {"array": 0, "dram": 0, "vector": 0, "exit_unit": 0}

    # A request granted at once is already triggered: skipping the ``yield`` on it saves a
    # scheduler round trip per stage without changing any time (requests are FIFO).
    def _dram_hold(self, d):
        r = self.dram.request()
        if not r.triggered:
            yield r
        yield self.env.timeout(d)
        self.dram.release(r)
        self.busy["dram"] += d

    def _stage(self, res, key, d):
        r = res.request()
        if not r.triggered:
            yield r
        yield self.env.timeout(d)
        res.release(r)
        self.busy[key] += d

    def _array_stage(self, a, d):
        r = self.array.request()
        if not r.triggered:
            yield r
        if d > 0 and (self.dram.count or self.dram.queue):
            # DRAM busy elsewhere: transfer as its own process; the stage waits for both
            yield self.env.all_of([self.env.timeout(a), self.env.process(self._dram_hold(d))])
        elif d > 0:
            # DRAM free: claim it now, release it after d cycles by a callback (no extra process)
            rd = self.dram.request()
            t = self.env.timeout(d)
            t.callbacks.append(lambda _e, rd=rd: self.dram.release(rd))
            self.busy["dram"] += d
            yield self.env.timeout(a)
        else:
            yield self.env.timeout(a)
        self.array.release(r)
        self.busy["array"] += a

    def run_layer(self, a, d, v, x):
        """Array (+DRAM), vector, exit unit for one group at one layer (durations in cycles)."""
        if a:
            yield from self._array_stage(a, d)
        if v:
            yield from self._stage(self.vector, "vector", v)
        if x:
            yield from self._stage(self.exit_unit, "exit_unit", x)


def replay(arch: ArchConfig, costs: StageCosts, trace: ExitTrace) -> dict:
    """Replay ``trace`` on ``arch``; returns :func:`hwsim.closed_form.summarize`'s dict plus
    ``finish_cycles`` and ``arrival_cycles`` (n,) arrays."""
    policy = arch.batch.policy
    arrival = arrival_cycles(arch, len(trace))
    sim = _Sim(arch, costs, trace)
    if policy == "regroup":
        energy, macs = _run_regroup(sim, arrival)
    else:
        energy, macs = _run_static(sim, arrival, 1 if policy == "stream" else arch.batch.size)
    makespan = int(sim.env.now)
    out = summarize(costs, trace, sim.finish, arrival, makespan, sim.busy, energy, macs)
    out["finish_cycles"] = sim.finish
    out["arrival_cycles"] = arrival
    return out


def _run_static(sim: _Sim, arrival: np.ndarray, size: int):
    timeout = int(round(sim.arch.batch.timeout_us * sim.arch.clock_mhz))
    starts, release = static_groups(arrival, size, timeout)
    p = plan_groups(sim.c, sim.t, size, starts)
    ends = np.append(starts, len(sim.t))
    exit_layer = sim.t.exit_layer
    env = sim.env
    arr, dram, vec, ex = p.arr.tolist(), p.dram.tolist(), p.vec.tolist(), p.exit.tolist()
    finish = sim.finish

    def group(g, slot):
        lo, hi = int(ends[g]), int(ends[g + 1])
        members = exit_layer[lo:hi].tolist()
        exits = set(members)
        ag, dg, vg, xg = arr[g], dram[g], vec[g], ex[g]
        for L in range(max(members)):
            yield from sim.run_layer(ag[L], dg[L], vg[L], xg[L])
            if L + 1 in exits:
                now = int(env.now)
                for j, e in enumerate(members):
                    if e == L + 1:
                        finish[lo + j] = now
        sim.slots.release(slot)

    def feeder():
        # admit groups in order as slots free up (a queue of all groups would cost O(n^2))
        for g in range(len(starts)):
            if release[g] > env.now:
                yield env.timeout(int(release[g]) - env.now)
            slot = sim.slots.request()
            if not slot.triggered:
                yield slot
            env.process(group(g, slot))

    env.process(feeder())
    env.run()
    energy = {k: float(v.sum()) for k, v in p.energy.items()}
    return energy, int(p.macs.sum())


def _run_regroup(sim: _Sim, arrival: np.ndarray):
    c, t, env = sim.c, sim.t, sim.env
    D, B = t.depth, sim.arch.batch.size
    timeout = int(round(sim.arch.batch.timeout_us * sim.arch.clock_mhz))
    cand_pos = {L: j for j, L in enumerate(t.candidate_layers)}
    pools = [deque() for _ in range(D + 2)]  # pools[L]: samples waiting to run layer L
    state = {"running": 0, "arrived": 0, "wake": env.event()}
    energy = {k: 0.0 for k in ENERGY_KEYS if k != "leakage"}
    macs = [0]
    n = len(t)

    def poke():
        if not state["wake"].triggered:
            state["wake"].succeed()

    def arrivals():
        for i in range(n):
            if arrival[i] > env.now:
                yield env.timeout(int(arrival[i]) - env.now)
            pools[1].append(i)
            state["arrived"] += 1
            poke()

    def cost(L, members):
        b = len(members)
        h = int(t.evaluated[members, cand_pos[L]].sum()) if L in cand_pos else 0
        a = int(c.array_cycles["block"][b] + (L == 1) * c.array_cycles["patch"][b]
                + (L == D) * c.array_cycles["final"][b] + (h > 0) * c.array_cycles["head"][h])
        d = int(c.dram_cycles["block"][b] + (L == 1) * c.dram_cycles["patch"][b]
                + (L == D) * c.dram_cycles["final"][b] + (h > 0) * c.dram_cycles["head"][h])
        v = int(c.vector_cycles["block"][b] + (L == 1) * c.vector_cycles["patch"][b]
                + (L == D) * c.vector_cycles["final"][b] + (h > 0) * c.vector_cycles["head"][h])
        x = int(c.exit_cycles[h])
        for k in ("mac", "sram", "dram", "vector"):
            energy[k] += float(c.energy["block"][k][b] + (L == 1) * c.energy["patch"][k][b]
                               + (L == D) * c.energy["final"][k][b] + c.energy["head"][k][h])
        energy["exit"] += float(c.energy["exit"][h])
        macs[0] += int(c.macs["block"][b] + (L == 1) * c.macs["patch"][b] + (L == D) * c.macs["final"][b]
                       + c.macs["head"][h])
        return a, d, v, x

    def group(L, members):
        with sim.slots.request() as slot:
            yield slot
            a, d, v, x = cost(L, members)
            yield from sim.run_layer(a, d, v, x)
        m = np.asarray(members)
        done = t.exit_layer[m] == L
        sim.finish[m[done]] = int(env.now)
        if L < D:
            pools[L + 1].extend(m[~done].tolist())
        state["running"] -= 1
        poke()

    def dispatcher():
        finished = 0
        while True:
            started = False
            if state["running"] < sim.arch.batch.max_in_flight:
                pick = next((L for L in range(D, 0, -1) if len(pools[L]) >= B), None)
                if pick is None and state["running"] == 0:
                    all_in = state["arrived"] == n
                    oldest_wait = (env.now - arrival[pools[1][0]]) if pools[1] else -1
                    if all_in or oldest_wait >= timeout or any(pools[L] for L in range(2, D + 1)):
                        pick = next((L for L in range(D, 0, -1) if pools[L]), None)
                if pick is not None:
                    members = [pools[pick].popleft() for _ in range(min(B, len(pools[pick])))]
                    state["running"] += 1
                    env.process(group(pick, members))
                    started = True
            if not started:
                if state["arrived"] == n and state["running"] == 0 and not any(pools):
                    return
                state["wake"] = env.event()
                waits = [state["wake"]]
                if pools[1] and state["arrived"] < n and state["running"] == 0:
                    left = int(arrival[pools[1][0]] + timeout - env.now)
                    waits.append(env.timeout(max(left, 1)))
                yield env.any_of(waits)
            else:
                yield env.timeout(0)
        del finished

    env.process(arrivals())
    env.process(dispatcher())
    env.run()
    return energy, macs[0]
