"""SimPy replay of a per-sample exit trace on the accelerator.

Resources (FIFO, capacity 1 each, granted in :class:`simpy.Resource`'s order; see
:class:`_Res`): the systolic ``array``, the ``dram`` channel, the ``vector`` unit and the
``exit_unit``; plus a pipeline of ``max_in_flight`` group slots.
The unit of work is a *group* of samples executing one layer: the array stage (the array is
held for compute + stall cycles while the DRAM channel is held, in parallel, for the
transfer cycles; a stage ends when both are done), then the vector stage, then, at a
candidate layer, the exit unit. Events are per group and layer, never per cycle.

Arrivals: ``closed`` (all samples at t=0) or ``poisson`` (rate in images/s, seeded).
A sample's service starts when its group enters the accelerator (a pipeline slot; for
``regroup``, its first layer-1 group) and ends with its exit layer (``start_cycles``).
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

With ``max_in_flight = 1`` nothing can be contended (DRAM transfers never outlast their
array stage), so each group's layer is one timeout (array + vector + exit unit) and, for
static and stream, one process runs the groups in turn; results equal the per-stage
simulation's (tested).
"""
from __future__ import annotations

from collections import deque
from typing import NamedTuple

import numpy as np
import simpy
from simpy.events import Event, Timeout

from .closed_form import ENERGY_KEYS, plan_groups, summarize
from .config import ArchConfig
from .costs import StageCosts
from .trace import ExitTrace


def wake(state: dict) -> None:
    """Wake the scheduler process waiting on ``state["wake"]`` (a SimPy event), once."""
    if not state["wake"].triggered:
        state["wake"].succeed()


def arrival_process(env, arrival, pool: deque, state: dict):
    """SimPy process: sample i joins ``pool`` at cycle ``arrival[i]`` (non-decreasing), counted in
    ``state["arrived"]``, and wakes the scheduler (:func:`wake`)."""
    for i in range(len(arrival)):
        if arrival[i] > env.now:
            yield env.timeout(int(arrival[i]) - env.now)
        pool.append(i)
        state["arrived"] += 1
        wake(state)



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


class _Res:
    """A FIFO resource of ``cap`` units with :class:`simpy.Resource`'s grant order, without its
    per-request event objects.

    SimPy grants a free unit when the request is made and hands a released unit to the head
    of the queue when its ``Release`` event is processed (one scheduler step later, at the
    same time); a request made in between, while units are free, first grants the queue's
    head. Only the events that wake a waiting process are kept (an uncontended request or
    release creates none): the order of every remaining event, hence every result, is the
    one of ``simpy.Resource``.
    """

    __slots__ = ("env", "cap", "count", "queue")

    def __init__(self, env: simpy.Environment, cap: int):
        self.env, self.cap, self.count, self.queue = env, cap, 0, deque()

    def request(self):
        """None when a unit is granted at once, else an event that succeeds when granted."""
        if self.count < self.cap:
            self.count += 1
            if not self.queue:
                return None
            self.queue.popleft().succeed()      # the head waiter takes the free unit
        ev = Event(self.env)
        self.queue.append(ev)
        return ev

    def release(self, _event=None):
        self.count -= 1
        if self.queue:                          # SimPy's Release event: grant on processing
            ev = Event(self.env)
            ev.callbacks.append(self._grant)
            ev.succeed()

    def _grant(self, _event):
        if self.queue and self.count < self.cap:
            self.count += 1
            self.queue.popleft().succeed()


class _Sim:
    def __init__(self, arch: ArchConfig, costs: StageCosts, trace: ExitTrace):
        self.arch, self.c, self.t = arch, costs, trace
        self.env = env = simpy.Environment()
        self.array = _Res(env, 1)
        self.dram = _Res(env, 1)
        self.vector = _Res(env, 1)
        self.exit_unit = _Res(env, 1)
        self.slots = _Res(env, arch.batch.max_in_flight)
        self.finish = np.zeros(len(trace), np.int64)
        self.start = np.zeros(len(trace), np.int64)   # service start: the group enters the accelerator
        self.busy = {"array": 0, "dram": 0, "vector": 0, "exit_unit": 0}

    def _dram_hold(self, d):
        r = self.dram.request()
        if r is not None:
            yield r
        yield self.env.timeout(d)
        self.dram.release()

    def layers(self, rows, stop: int, exits=(), on_exit=None):
        """Run layers 1..stop of one group: per layer, the array stage (+DRAM in
        parallel), the vector unit, the exit unit; ``rows[L]`` = (a, d, v, x) cycles of layer
        L+1 (a zero duration skips the stage). After layer L ends, ``on_exit(L, now)`` runs
        when L is in ``exits``. Busy cycles are tallied by the caller: every stage runs
        exactly once whatever the contention."""
        env = self.env
        arr, dram, vec, ex = self.array, self.dram, self.vector, self.exit_unit
        for L in range(stop):
            a, d, v, x = rows[L]
            if a:
                r = arr.request()
                if r is not None:
                    yield r
                if d > 0 and (dram.count or dram.queue):
                    # DRAM busy elsewhere: transfer as its own process; the stage waits for both
                    yield env.all_of([Timeout(env, a), env.process(self._dram_hold(d))])
                elif d > 0:
                    # DRAM free: claim it now, release it after d cycles by a callback
                    dram.count += 1
                    Timeout(env, d).callbacks.append(dram.release)
                    yield Timeout(env, a)
                else:
                    yield Timeout(env, a)
                arr.release()
            if v:
                r = vec.request()
                if r is not None:
                    yield r
                yield Timeout(env, v)
                vec.release()
            if x:
                r = ex.request()
                if r is not None:
                    yield r
                yield Timeout(env, x)
                ex.release()
            if L + 1 in exits:
                on_exit(L + 1, env.now)


def _serial(arch: ArchConfig, costs: StageCosts) -> bool:
    """One group in flight and DRAM transfers never outlast their array stage: no resource
    can be contended, so a layer's stages run back to back (one event per group and layer)."""
    return arch.batch.max_in_flight == 1 and all(
        bool((costs.dram_cycles[s] <= costs.array_cycles[s]).all()) for s in costs.array_cycles)


def replay(arch: ArchConfig, costs: StageCosts, trace: ExitTrace) -> dict:
    """Replay ``trace`` on ``arch``; returns :func:`hwsim.closed_form.summarize`'s dict plus
    ``finish_cycles`` and ``arrival_cycles`` (n,) arrays."""
    policy = arch.batch.policy
    arrival = arrival_cycles(arch, len(trace))
    sim = _Sim(arch, costs, trace)
    serial = _serial(arch, costs)
    if policy == "regroup":
        energy, macs = _run_regroup(sim, arrival, serial)
    else:
        energy, macs = _run_static(sim, arrival, 1 if policy == "stream" else arch.batch.size, serial)
    makespan = int(sim.env.now)
    out = summarize(costs, trace, sim.finish, arrival, makespan, sim.busy, energy, macs, service_start=sim.start)
    out["finish_cycles"] = sim.finish
    out["start_cycles"] = sim.start
    out["arrival_cycles"] = arrival
    return out


def _run_static(sim: _Sim, arrival: np.ndarray, size: int, serial: bool):
    timeout = int(round(sim.arch.batch.timeout_us * sim.arch.clock_mhz))
    starts, release = static_groups(arrival, size, timeout)
    p = plan_groups(sim.c, sim.t, size, starts)
    G = len(starts)
    bounds = np.append(starts, len(sim.t)).tolist()
    release = release.tolist()
    exit_layer = sim.t.exit_layer.tolist()
    env = sim.env
    finish, start = sim.finish, sim.start
    # every stage of the plan runs exactly once (the DRAM transfer with its array stage)
    sim.busy.update(array=int(p.arr.sum()), dram=int((p.dram * (p.arr > 0)).sum()),
                    vector=int(p.vec.sum()), exit_unit=int(p.exit.sum()))

    def finish_members(lo, members, layer, now):
        for j, e in enumerate(members):
            if e == layer:
                finish[lo + j] = now

    if serial:
        dur = (p.arr + p.vec + p.exit).tolist()      # one event per group and layer

        def runner():
            for g in range(G):
                if release[g] > env.now:
                    yield Timeout(env, release[g] - env.now)
                lo, hi = bounds[g], bounds[g + 1]
                members = exit_layer[lo:hi]
                row = dur[g]
                start[lo:hi] = env.now
                if hi - lo == 1:
                    for L in range(members[0]):
                        if row[L]:
                            yield Timeout(env, row[L])
                    finish[lo] = env.now
                    continue
                exits = set(members)
                for L in range(max(members)):
                    if row[L]:
                        yield Timeout(env, row[L])
                    if L + 1 in exits:
                        finish_members(lo, members, L + 1, env.now)

        env.process(runner())
        env.run()
    else:
        stages = [list(zip(*r)) for r in zip(p.arr.tolist(), p.dram.tolist(), p.vec.tolist(), p.exit.tolist())]
        slots, layers = sim.slots, sim.layers

        def group(g):
            lo, hi = bounds[g], bounds[g + 1]
            members = exit_layer[lo:hi]
            start[lo:hi] = env.now
            yield from layers(stages[g], max(members), set(members),
                              lambda layer, now: finish_members(lo, members, layer, now))
            slots.release()

        def feeder():
            # admit groups in order as slots free up (a queue of all groups would cost O(n^2))
            for g in range(G):
                if release[g] > env.now:
                    yield Timeout(env, release[g] - env.now)
                slot = slots.request()
                if slot is not None:
                    yield slot
                env.process(group(g))

        env.process(feeder())
        env.run()
    energy = {k: float(v.sum()) for k, v in p.energy.items()}
    return energy, int(p.macs.sum())


class LayerCost(NamedTuple):
    """One regroup task: a group of ``b`` samples running one layer. Cycles: ``array``
    (compute + stalls), ``dram``, ``vector``, ``exit``, ``compute`` (array compute only);
    ``energy``: pJ of (mac, sram, dram, vector, exit); ``macs``."""

    array: int
    dram: int
    vector: int
    exit: int
    compute: int
    energy: tuple
    macs: int


def layer_cost(c: StageCosts, first: bool, last: bool, b: int, h: int) -> LayerCost:
    """Cost of a group of ``b`` samples running one block (``first``: + patch embedding,
    ``last``: + projection/classifier) with ``h`` exit-head evaluations, from the tables."""
    def cyc(tab):
        return int(tab["block"][b] + first * tab["patch"][b] + last * tab["final"][b] + (h > 0) * tab["head"][h])

    e = tuple(float(c.energy["block"][k][b] + first * c.energy["patch"][k][b]
                    + last * c.energy["final"][k][b] + c.energy["head"][k][h])
              for k in ("mac", "sram", "dram", "vector")) + (float(c.energy["exit"][h]),)
    m = int(c.macs["block"][b] + first * c.macs["patch"][b] + last * c.macs["final"][b] + c.macs["head"][h])
    return LayerCost(cyc(c.array_cycles), cyc(c.dram_cycles), cyc(c.vector_cycles), int(c.exit_cycles[h]),
                     cyc(c.compute_cycles), e, m)


def _run_regroup(sim: _Sim, arrival: np.ndarray, serial: bool):
    c, t, env = sim.c, sim.t, sim.env
    D, B = t.depth, sim.arch.batch.size
    timeout = int(round(sim.arch.batch.timeout_us * sim.arch.clock_mhz))
    cand_pos = {L: j for j, L in enumerate(t.candidate_layers)}
    pools = [deque() for _ in range(D + 2)]  # pools[L]: samples waiting to run layer L
    state = {"running": 0, "arrived": 0, "wake": env.event()}
    energy = {k: 0.0 for k in ENERGY_KEYS if k != "leakage"}
    busy = sim.busy
    macs = [0]
    n = len(t)
    tables: dict = {}   # (layer is 1, layer is D, group size, heads) -> durations, energies, MACs

    def poke():
        wake(state)

    def cost(L, members):
        b = len(members)
        h = int(t.evaluated[members, cand_pos[L]].sum()) if L in cand_pos else 0
        key = (L == 1, L == D, b, h)
        entry = tables.get(key)
        if entry is None:
            entry = tables[key] = layer_cost(c, *key)
        a, d, v, x, _, e, m = entry
        for k, ek in zip(("mac", "sram", "dram", "vector", "exit"), e):
            energy[k] += ek
        macs[0] += m
        busy["array"] += a
        busy["dram"] += d if a else 0
        busy["vector"] += v
        busy["exit_unit"] += x
        return a, d, v, x

    def group(L, members):
        slot = sim.slots.request()
        yield slot if slot is not None else Timeout(env, 0)   # SimPy: a granted request is one step
        a, d, v, x = cost(L, members)
        if L == 1:
            sim.start[members] = int(env.now)
        if serial:
            if a + v + x:
                yield Timeout(env, a + v + x)
        else:
            yield from sim.layers(((a, d, v, x),), 1)
        sim.slots.release()
        m = np.asarray(members)
        done = t.exit_layer[m] == L
        sim.finish[m[done]] = int(env.now)
        if L < D:
            pools[L + 1].extend(m[~done].tolist())
        state["running"] -= 1
        poke()

    def dispatcher():
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

    env.process(arrival_process(env, arrival[:n], pools[1], state))
    env.process(dispatcher())
    env.run()
    return energy, macs[0]
