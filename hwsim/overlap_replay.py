"""SimPy replay of overlapped execution (``overlap: true``): the DRAM channel, the array, the
vector unit and the exit unit as concurrent SimPy resources, double-buffered across two
groups in flight. It runs every batch policy; ``regroup`` needs it (its groups form as
samples exit, so no issue order is known in advance), static and stream have the exact
closed form of :mod:`hwsim.overlap`, which this replay equals (tested).

A *task* is a group running one layer: its DRAM transfer (``dram`` cycles), the array's
compute cycles (the stalls of the serial model are replaced by the DRAM resource), the vector
unit, and the exit unit at a candidate layer where some member evaluates its head. Each task
reserves its place at every resource when it is issued, and every resource serves tasks in
issue order (:class:`InOrderResource`); a buffer-half resource of capacity 2 is taken when a
task's DRAM transfer starts and given back when its array stage ends (SCALE-Sim's
double-buffered scratchpad, Samajdar et al., ISPASS 2020: one half computes while the other
fills). So task i's DRAM starts when the channel has finished task i-1, the array has finished
task i-2 and its group is released; its array stage after its DRAM, the array's previous task
and its group's previous layer; then the vector and the exit unit in the same way.

Issue order:

* ``static`` / ``stream``: two slots take the groups in arrival order and issue their layers
  round-robin (the order of :func:`hwsim.overlap.evaluate_overlap`);
* ``regroup``: after each layer the survivors go back to a per-layer pool (as in
  :mod:`hwsim.replay`); whenever one of the two slots is free the dispatcher issues the
  deepest full batch; otherwise the deepest partial batch that no task in flight can still
  grow (no task running the layer before it; the layer-1 pool once every sample has arrived
  or its oldest sample has waited ``batch.timeout_us``). With nothing in flight this is the
  non-overlapped regroup rule. Groups are costed at their size.

A sample's service starts when its first group's DRAM transfer starts and ends with its exit
layer's last stage. Units: cycles of the accelerator clock, energy pJ.
"""
from __future__ import annotations

from collections import deque

import numpy as np
import simpy
from simpy.events import Event

from .closed_form import ENERGY_KEYS, plan_groups, summarize
from .config import ArchConfig
from .costs import StageCosts
from .replay import arrival_cycles, arrival_process, layer_cost, static_groups, wake
from .trace import ExitTrace


class InOrderResource:
    """``capacity`` units handed out in reservation order: the j-th reservation may use a unit
    once the (j - capacity)-th has released it. Reserving is done at issue time, so every
    resource serves the tasks in issue order whatever the order their inputs become ready."""

    def __init__(self, env: simpy.Environment, capacity: int = 1):
        self.env, self.capacity = env, capacity
        self._held: deque = deque()   # release events of the last ``capacity`` reservations

    def reserve(self) -> tuple[Event | None, Event]:
        """(grant, release): wait for ``grant`` (None: free at once), then succeed ``release``."""
        release = Event(self.env)
        grant = self._held[0] if len(self._held) == self.capacity else None
        self._held.append(release)
        if len(self._held) > self.capacity:
            self._held.popleft()
        return grant, release


class _Engine:
    """The four resources, the buffer halves and the task process."""

    def __init__(self, env: simpy.Environment):
        self.env = env
        self.dram = InOrderResource(env)
        self.array = InOrderResource(env)
        self.vector = InOrderResource(env)
        self.exit_unit = InOrderResource(env)
        self.halves = InOrderResource(env, 2)

    def issue(self, d: int, a: int, v: int, x: int, release_at: int, after: Event | None, on_dram_start,
              done: Event) -> Event:
        """Issue a task (cycles ``d, a, v, x``; DRAM not before ``release_at``; array not before
        ``after``); ``on_dram_start(now)`` runs when its transfer starts; ``done`` succeeds when
        its last stage ends. Returns the event of its DRAM start."""
        env = self.env
        dram_g, dram_r = self.dram.reserve()
        half_g, half_r = self.halves.reserve()
        arr_g, arr_r = self.array.reserve()
        vec_g, vec_r = self.vector.reserve()
        ex_g, ex_r = self.exit_unit.reserve() if x else (None, None)
        started = Event(env)

        def run():
            waits = [e for e in (dram_g, half_g) if e is not None]
            if release_at > env.now:
                waits.append(env.timeout(release_at - env.now))
            if waits:
                yield env.all_of(waits)
            on_dram_start(env.now)
            started.succeed()
            if d:
                yield env.timeout(d)
            dram_r.succeed()
            waits = [e for e in (arr_g, after) if e is not None]
            if waits:
                yield env.all_of(waits)
            if a:
                yield env.timeout(a)
            arr_r.succeed()
            half_r.succeed()
            if vec_g is not None:
                yield vec_g
            if v:
                yield env.timeout(v)
            vec_r.succeed()
            if x:
                if ex_g is not None:
                    yield ex_g
                yield env.timeout(x)
                ex_r.succeed()
            done.succeed()

        env.process(run())
        return started


def replay_overlap(arch: ArchConfig, costs: StageCosts, trace: ExitTrace, arrival: np.ndarray | None = None) -> dict:
    """SimPy replay of the overlapped schedule: :func:`hwsim.closed_form.summarize`'s keys plus
    ``finish_cycles``, ``start_cycles``, ``arrival_cycles`` (n,) and ``serial_sum_cycles`` (the
    sum of every task's stage cycles, the makespan's upper bound with closed arrivals)."""
    n = len(trace)
    if arrival is None:
        arrival = arrival_cycles(arch, n)
    arrival = np.asarray(arrival, np.int64)
    env = simpy.Environment()
    eng = _Engine(env)
    finish = np.zeros(n, np.int64)
    start = np.zeros(n, np.int64)
    if arch.batch.policy == "regroup":
        busy, energy, macs = _regroup(arch, costs, trace, arrival, env, eng, finish, start)
    else:
        busy, energy, macs = _static(arch, costs, trace, arrival, env, eng, finish, start)
    makespan = int(env.now)
    out = summarize(costs, trace, finish, arrival, makespan, busy, energy, macs, service_start=start)
    out["finish_cycles"] = finish
    out["start_cycles"] = start
    out["arrival_cycles"] = arrival
    out["serial_sum_cycles"] = int(sum(busy.values()))
    return out


def _static(arch, costs, trace, arrival, env, eng, finish, start):
    """Fixed groups (static or stream), two slots issuing their layers round-robin."""
    size = 1 if arch.batch.policy == "stream" else arch.batch.size
    timeout = int(round(arch.batch.timeout_us * arch.clock_mhz))
    starts, release = static_groups(arrival, size, timeout)
    p = plan_groups(costs, trace, size, starts, with_compute=True)
    G = len(starts)
    bounds = np.append(starts, len(trace)).tolist()
    exit_layer = trace.exit_layer.tolist()
    depth = [max(exit_layer[bounds[g]:bounds[g + 1]]) for g in range(G)]
    rows = [list(zip(*r)) for r in zip(p.dram.tolist(), p.comp.tolist(), p.vec.tolist(), p.exit.tolist())]
    rel = release.tolist()

    def order():
        """(group, layer) in issue order: the slot loop of :func:`hwsim.overlap.evaluate_overlap`."""
        slots = [0, 1] if G > 1 else [0]
        layer = [0] * len(slots)
        nxt, active = len(slots), len(slots)
        while active:
            for k, g in enumerate(slots):
                if g < 0:
                    continue
                yield g, layer[k]
                layer[k] += 1
                if layer[k] == depth[g]:
                    if nxt < G:
                        slots[k], layer[k] = nxt, 0
                        nxt += 1
                    else:
                        slots[k] = -1
                        active -= 1

    def controller():
        prev_done: dict[int, Event] = {}
        for g, L in order():
            lo, hi = bounds[g], bounds[g + 1]
            done = Event(env)
            if L == 0:
                def mark(now, lo=lo, hi=hi):
                    start[lo:hi] = now
            else:
                mark = _noop
            members = [i for i in range(lo, hi) if exit_layer[i] == L + 1]
            if members:
                done.callbacks.append(lambda ev, m=members: finish.__setitem__(m, env.now))
            d, a, v, x = rows[g][L]
            started = eng.issue(d, a, v, x, rel[g], prev_done.get(g), mark, done)
            prev_done[g] = done
            yield started       # the next task cannot use any resource before this one starts

    if G:
        env.process(controller())
        env.run()
    busy = {"array": int(p.comp.sum()), "dram": int(p.dram.sum()), "vector": int(p.vec.sum()),
            "exit_unit": int(p.exit.sum())}
    energy = {k: float(v.sum()) for k, v in p.energy.items()}
    return busy, energy, int(p.macs.sum())


def _noop(_now):
    return None


def _regroup(arch, costs, trace, arrival, env, eng, finish, start):
    """Groups formed as samples exit; two slots; see the module docstring for the rule."""
    D, B, n = trace.depth, arch.batch.size, len(trace)
    timeout = int(round(arch.batch.timeout_us * arch.clock_mhz))
    cand_pos = {L: j for j, L in enumerate(trace.candidate_layers)}
    pools = [deque() for _ in range(D + 2)]
    running: list[int] = []           # layers of the tasks in flight
    state = {"arrived": 0, "wake": env.event()}
    energy = {k: 0.0 for k in ENERGY_KEYS if k != "leakage"}
    busy = {"array": 0, "dram": 0, "vector": 0, "exit_unit": 0}
    macs = [0]
    tables: dict = {}
    exit_layer = trace.exit_layer

    def poke():
        wake(state)

    def issue(L: int):
        members = [pools[L].popleft() for _ in range(min(B, len(pools[L])))]
        h = int(trace.evaluated[members, cand_pos[L]].sum()) if L in cand_pos else 0
        key = (L == 1, L == D, len(members), h)
        c = tables.get(key)
        if c is None:
            c = tables[key] = layer_cost(costs, *key)
        for k, ek in zip(("mac", "sram", "dram", "vector", "exit"), c.energy):
            energy[k] += ek
        macs[0] += c.macs
        busy["array"] += c.compute
        busy["dram"] += c.dram
        busy["vector"] += c.vector
        busy["exit_unit"] += c.exit
        running.append(L)
        m = np.asarray(members)
        done = Event(env)

        def mark(now):
            if L == 1:
                start[m] = now

        def finished(_ev):
            ends = exit_layer[m] == L
            finish[m[ends]] = int(env.now)
            if L < D:
                pools[L + 1].extend(m[~ends].tolist())
            running.remove(L)
            poke()

        done.callbacks.append(finished)
        eng.issue(c.dram, c.compute, c.vector, c.exit, 0, None, mark, done)

    def pick():
        full = next((L for L in range(D, 0, -1) if len(pools[L]) >= B), None)
        if full is not None:
            return full
        fed = {L + 1 for L in running}
        first_ready = state["arrived"] == n or (pools[1] and env.now - arrival[pools[1][0]] >= timeout)
        return next((L for L in range(D, 0, -1) if pools[L] and L not in fed and (L > 1 or first_ready)), None)

    def dispatcher():
        while True:
            while len(running) < 2:
                L = pick()
                if L is None:
                    break
                issue(L)
            if state["arrived"] == n and not running and not any(pools):
                return
            state["wake"] = env.event()
            waits = [state["wake"]]
            if pools[1] and state["arrived"] < n and len(running) < 2:
                left = int(arrival[pools[1][0]] + timeout - env.now)
                waits.append(env.timeout(max(left, 1)))
            yield env.any_of(waits)

    env.process(arrival_process(env, arrival[:n], pools[1], state))
    env.process(dispatcher())
    env.run()
    return busy, energy, macs[0]
