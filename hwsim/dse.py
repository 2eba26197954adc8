"""Design-space exploration: sweep accelerator configs (x exit traces), stream results.

A space file (YAML, see ``hwsim/configs/space.yaml``)::

    base: arch.yaml            # optional, relative to the space file (default: built-in)
    mode: grid                 # grid | random
    samples: 200               # random: number of configs drawn
    seed: 0
    max_configs: 100000        # refuse larger spaces (the CLI's --max-configs overrides)
    parameters:                # dotted accelerator fields -> candidate values
      array.rows: [16, 32, 64]
      array.dataflow: [os, ws, is]
    traces: [trace.csv]        # optional; each trace is one exit-policy operating point
    area: {pe: 1.0, sram_kb: 1.0}   # area proxy = pe * PEs + sram_kb * SRAM KiB
    scale_sram_with_array: {reference_pes: 1024}   # optional: every buffer x PEs / 1024

Every row says what bounds the config (``bound``: compute, dram_bandwidth, psum_spill,
vector_unit, exit_unit; ``stageK:...`` for a pipeline's bottleneck stage) and carries the
service latency (start of service to result, no queueing) next to the closed-batch sojourn
latency; the Pareto front uses the service latency p95.

Each (config, trace) is evaluated with :func:`hwsim.closed_form.evaluate` when that is
exact (closed arrivals, static or stream batches, one group in flight) and with the SimPy
replay otherwise. Rows are streamed to ``results.csv`` (temp file renamed at the end);
only the objective columns are kept in memory for the Pareto front.

Exit policies: with a Pareto file of threshold sets (``lraee dse --policies PARETO.json``,
:func:`hwsim.trace.read_policies`), every trace (which must carry the gate/pred columns) is
re-thresholded with every point (:func:`hwsim.trace.apply_thresholds`) and every config is
evaluated on every (trace, policy) pair: rows gain ``policy_id`` and ``threshold_L``, the
accuracy is the re-thresholded trace's, and the fronts span configs and policies. With one
Pareto file per trace (``--trace A.csv --policies A.json --trace B.csv --policies B.json``: each
recipe has its own policy and candidate layers) each trace is re-thresholded with its own
file's points; ``threshold_L`` columns are the union of the files' candidate layers (blank where
a trace's policy has no such layer).

Precisions: every row carries its trace's ``recipe`` (:func:`trace_recipe`) and the operand
widths ``weight_bits`` / ``act_bits`` the evaluation used (the trace meta's unless the arch sets
them, :func:`hwsim.config.with_trace_precision`), appended after the existing columns. The front
is computed over all rows together, so one front spans precisions, exit policies and arrays;
``dse.json`` summarises each recipe under ``precisions``.
"""
from __future__ import annotations

import csv
import itertools
import math
import os
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from common.atomic import atomic_path, write_json
from common.errors import InputError
from quant.geometry import EncoderGeometry

from .closed_form import ENERGY_KEYS, evaluate
from .config import ArchConfig, arch_from_dict, format_validation_error, load_arch, load_yaml
from .costs import build_costs
from .pareto import pareto_mask
from .trace import ExitTrace, PolicySet, apply_thresholds
from .workload import flops_saving

SPACE_KEYS = ("base", "mode", "samples", "seed", "max_configs", "parameters", "traces", "area", "geometry",
              "scale_sram_with_array")


class Space:
    """A validated design space: base config, parameter lists, mode."""

    def __init__(self, path: str | Path, max_configs: int | None = None):
        path = Path(path)
        d = load_yaml(path)
        src = str(path)
        if not isinstance(d, dict):
            raise InputError(f"{src}: <root>: expected a mapping; allowed: {', '.join(SPACE_KEYS)}")
        for k in d:
            if k not in SPACE_KEYS:
                raise InputError(f"{src}: {k}: unknown field; allowed: {', '.join(SPACE_KEYS)}")
        self.path = path
        base = d.get("base")
        if base is not None and not isinstance(base, str):
            raise InputError(f"{src}: base: {base!r}; allowed: an arch YAML path (string)")
        self.base = load_arch(path.parent / base) if base else ArchConfig()
        self.mode = d.get("mode", "grid")
        if self.mode not in ("grid", "random"):
            raise InputError(f"{src}: mode: {self.mode!r}; allowed: grid, random")
        self.seed = d.get("seed", 0)
        params = d.get("parameters") or {}
        if not isinstance(params, dict) or not params:
            raise InputError(f"{src}: parameters: missing or empty; allowed: a mapping of dotted fields to lists")
        base_dict = self.base.model_dump()
        self.params: dict[str, list] = {}
        for key, values in params.items():
            if not isinstance(values, list) or not values:
                raise InputError(f"{src}: parameters.{key}: expected a non-empty list; allowed: a list of values")
            if _get(base_dict, key) is _MISSING:
                raise InputError(f"{src}: parameters.{key}: unknown accelerator field; allowed: dotted fields of the "
                                 f"arch schema ({', '.join(ArchConfig.model_fields)})")
            for v in values:   # validate every value alone: errors name the field
                dd = self.base.model_dump()
                _set(dd, key, v)
                try:
                    ArchConfig.model_validate(dd)
                except Exception as err:  # pydantic.ValidationError
                    raise InputError(format_validation_error(f"{src}: parameters", err)) from None
            self.params[key] = values
        grid = math.prod(len(v) for v in self.params.values())
        if self.mode == "random":
            s = d.get("samples")
            if not isinstance(s, int) or s < 1:
                raise InputError(f"{src}: samples: {s!r}; allowed: an integer >= 1 (random mode)")
            self.n_configs = s
        else:
            self.n_configs = grid
        traces = d.get("traces") or []
        if not isinstance(traces, list) or not all(isinstance(t, str) and t.strip() for t in traces):
            raise InputError(f"{src}: traces: {traces!r}; allowed: a list of trace CSV paths (strings, relative to "
                             "the space file)")
        self.trace_paths = [path.parent / t for t in traces]
        area = d.get("area") or {}
        if not isinstance(area, dict) or set(area) - {"pe", "sram_kb"} or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
                for v in area.values()):
            raise InputError(f"{src}: area: {area!r}; allowed: a mapping with pe and sram_kb, numbers >= 0")
        self.area_pe = float(area.get("pe", 1.0))
        self.area_kb = float(area.get("sram_kb", 1.0))
        geometry = d.get("geometry")
        if geometry is not None and not isinstance(geometry, str):
            raise InputError(f"{src}: geometry: {geometry!r}; allowed: a geometry JSON path (string)")
        self.geometry_path = (path.parent / geometry) if geometry else None
        for key in ("seed", "max_configs"):
            v = d.get(key)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < (1 if key == "max_configs" else 0)):
                raise InputError(f"{src}: {key}: {v!r}; allowed: an integer >= {1 if key == 'max_configs' else 0}")
        sc = d.get("scale_sram_with_array")
        self.sram_reference_pes = None
        if sc is not None:
            ref = sc.get("reference_pes") if isinstance(sc, dict) else None
            if not isinstance(sc, dict) or set(sc) != {"reference_pes"} or not isinstance(ref, int) or ref < 1:
                raise InputError(f"{src}: scale_sram_with_array: {sc!r}; allowed: {{reference_pes: N}} with N an "
                                 "integer >= 1 (buffers scale by PEs / N)")
            self.sram_reference_pes = ref
        limit = max_configs if max_configs is not None else d.get("max_configs", 100000)
        self.max_configs = limit

    def check_size(self, n_traces: int, n_policies: int | None = None, n_units: int | None = None) -> int:
        """Evaluations = configs x traces (x policies), or configs x ``n_units`` operating points
        (traces paired with their own Pareto files); InputError above ``max_configs``."""
        if n_units is not None:
            total = self.n_configs * max(n_units, 1)
            what = f"{self.n_configs} configs x {max(n_units, 1)} operating points of {n_traces} traces"
        else:
            total = self.n_configs * max(n_traces, 1) * (n_policies or 1)
            pol = f" x {n_policies} policies" if n_policies else ""
            what = f"{self.n_configs} configs x {max(n_traces, 1)} traces{pol}"
        if total > self.max_configs:
            raise InputError(f"{self.path}: parameters: {total} evaluations ({what}) exceed --max-configs "
                             f"{self.max_configs}; allowed: at most {self.max_configs} (raise --max-configs or "
                             "shrink the space)")
        return total

    def configs(self) -> Iterator[tuple[int, dict]]:
        """Yield (config_id, {dotted key: value}) lazily (memory bounded)."""
        keys = list(self.params)
        if self.mode == "grid":
            for i, combo in enumerate(itertools.product(*(self.params[k] for k in keys))):
                yield i, dict(zip(keys, combo))
        else:
            rng = np.random.default_rng(self.seed)
            for i in range(self.n_configs):
                yield i, {k: self.params[k][int(rng.integers(len(self.params[k])))] for k in keys}


_MISSING = object()


def _get(d, dotted):
    cur = d
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def _set(d, dotted, value):
    parts = dotted.split(".")
    cur = d
    for p in parts[:-1]:
        cur = cur[p]
    cur[parts[-1]] = value


def exact_closed_form(arch: ArchConfig) -> bool:
    return (arch.arrivals.mode == "closed" and arch.batch.policy in ("static", "stream")
            and arch.batch.max_in_flight == 1)


def evaluate_config(arch: ArchConfig, geometry: EncoderGeometry, trace: ExitTrace) -> dict:
    """Summary of one accelerator on one trace (closed form where exact, else SimPy), with
    ``bound`` (what bounds the config, :func:`hwsim.costs.bound_of`) and ``precision`` (the
    operand widths used and their source, :func:`hwsim.config.with_trace_precision`)."""
    from .config import with_trace_precision
    arch, prec = with_trace_precision(arch, trace.meta)
    s = _evaluate_resolved(arch, geometry, trace)
    s["precision"] = prec
    return s


def _evaluate_resolved(arch: ArchConfig, geometry: EncoderGeometry, trace: ExitTrace) -> dict:
    from .costs import bound_of
    if arch.architecture == "pipelined":
        from .pipelined import evaluate_pipelined, stage_arch
        s = evaluate_pipelined(arch, geometry, trace)
        s["evaluator"] = "pipelined"
        bn = s["pipeline"]["bottleneck_stage"] - 1
        s["bound"] = f"stage{bn + 1}:" + bound_of(build_costs(stage_arch(arch, bn), geometry, trace.num_classes, 1),
                                                  1)["bound"]
        return s
    B = arch.effective_batch
    costs = build_costs(arch, geometry, trace.num_classes, B)
    bound = bound_of(costs, B)["bound"]
    if arch.overlap:
        from .overlap import evaluate_overlapped
        s = evaluate_overlapped(arch, costs, trace)
    elif exact_closed_form(arch):
        s = evaluate(costs, trace, arch.batch.policy, B)
        s["evaluator"] = "closed_form"
    else:
        from .replay import replay
        s = replay(arch, costs, trace)
        s["evaluator"] = "replay"
    s["bound"] = bound
    return s


def trace_recipe(trace: ExitTrace) -> str:
    """The recipe label of a trace: its meta's ``precision`` (the recipe name, e.g. ``w4a8``) or
    ``recipe`` (a name, or a descriptor with ``precision``), else ``w{weight_bits}a{act_bits}``
    from its meta, else ``unspecified``."""
    meta = trace.meta or {}
    for key in ("precision", "recipe"):
        v = meta.get(key)
        if isinstance(v, dict):
            v = v.get("precision")
        if isinstance(v, str) and v.strip():
            return v.strip()
    if meta.get("weight_bits") and meta.get("act_bits"):
        return f"w{meta['weight_bits']}a{meta['act_bits']}"
    return "unspecified"


def per_trace_policies(traces: list[ExitTrace], policies) -> list:
    """``policies`` as one entry per trace: a PolicySet (or None) applies to every trace; a list
    must hold one PolicySet or None (the trace as written) per trace."""
    if not isinstance(policies, (list, tuple)):
        return [policies] * len(traces)
    if len(policies) != len(traces):
        n = len(traces)
        raise InputError(f"--policies: {len(policies)} Pareto files for {n} trace{'s' if n > 1 else ''}; allowed: 1 "
                         f"(every trace) or {n} (one per trace, in the order of the traces)")
    return list(policies)


def policy_units(traces: list[ExitTrace], policies) -> list[tuple]:
    """The operating points a sweep evaluates: (trace_id, policy_id, thresholds, trace).

    Without policies: one per trace as written (policy_id and thresholds None). With a Pareto
    file: every trace re-thresholded with every point; the traces must carry the gate/pred
    columns and the file's depth and candidate layers (InputError naming file and field).
    With a list (one PolicySet or None per trace): each trace with its own file's points."""
    if isinstance(policies, (list, tuple)):
        units = []
        for ti, (t, pol) in enumerate(zip(traces, per_trace_policies(traces, policies))):
            units += [(ti, *u[1:]) for u in policy_units([t], pol)]
        return units
    if policies is None:
        return [(ti, None, None, t) for ti, t in enumerate(traces)]
    for t in traces:
        src = t.source or "<trace>"
        miss = t.missing_policy_columns()
        if miss:
            raise InputError(f"{src}: {', '.join(miss)}: missing column (--policies re-thresholds the trace); "
                             "allowed: a trace with gate_L and pred_L for every candidate layer, full_pred and label")
        if t.depth != policies.depth:
            raise InputError(f"{policies.source}: depth: {policies.depth} differs from {src}'s depth {t.depth}; "
                             f"allowed: {t.depth}")
        if tuple(t.candidate_layers) != tuple(policies.candidate_layers):
            raise InputError(f"{policies.source}: candidate_layers: {list(policies.candidate_layers)} differ from "
                             f"{src}'s {list(t.candidate_layers)}; allowed: {list(t.candidate_layers)}")
    return [(ti, pt.id, pt.thresholds, apply_thresholds(t, pt.thresholds))
            for ti, t in enumerate(traces) for pt in policies.points]


# ---- workers -------------------------------------------------------------------------------
_W: dict[str, Any] = {}


def _init_worker(ctx: dict):
    _W.update(ctx)


def _eval_chunk(chunk: list, ctx: dict | None = None) -> list[dict]:
    ctx = ctx or _W
    out = []
    for cid, params in chunk:
        d = _deepcopy(ctx["base"])
        for k, v in params.items():
            _set(d, k, v)
        ref = ctx.get("sram_reference_pes")
        if ref:   # scale the buffers with the array: KiB x PEs / reference PEs
            f = d["array"]["rows"] * d["array"]["cols"] / ref
            for key in ("ifmap_kb", "filter_kb", "ofmap_kb"):
                d["sram"][key] = d["sram"][key] * f
        arch = ArchConfig.model_validate(d)
        for (ti, pid, th, trace), fs in zip(ctx["units"], ctx["flops"]):
            s = evaluate_config(arch, ctx["geometry"], trace)
            out.append(_row(cid, ti, pid, th, fs, params, arch, s, ctx))
    return out


def _eval_chunk_ctx(chunk, ctx):
    return _eval_chunk(chunk, ctx)


def _deepcopy(d):
    return {k: _deepcopy(v) if isinstance(v, dict) else (list(v) if isinstance(v, list) else v) for k, v in d.items()}


def _row(cid, ti, pid, th, fs, params, arch, s, ctx) -> dict:
    if arch.architecture == "pipelined":
        pes, sram_kb = s["pipeline"]["pes_total"], s["pipeline"]["sram_kb_total"]
    else:
        pes = arch.array.rows * arch.array.cols
        sram_kb = arch.sram.ifmap_kb + arch.sram.filter_kb + arch.sram.ofmap_kb
    a_pe, a_kb = ctx["area"]
    row = {"config_id": cid, "trace_id": ti}
    if th is not None:
        row["policy_id"] = pid
        row.update({f"threshold_{L}": tau for L, tau in th.items()})
    row.update({k: v for k, v in params.items()})
    row.update({
        "accuracy": s["accuracy"] if s["accuracy"] is not None else "", "flops_saving": fs,
        "latency_mean_us": s["latency_us"]["mean"], "latency_p50_us": s["latency_us"]["p50"],
        "latency_p95_us": s["latency_us"]["p95"], "latency_p99_us": s["latency_us"]["p99"],
        "service_latency_p50_us": s["service_latency_us"]["p50"],
        "service_latency_p95_us": s["service_latency_us"]["p95"],
        "service_latency_p99_us": s["service_latency_us"]["p99"],
        "throughput_img_s": s["throughput_img_s"], "makespan_cycles": s["makespan_cycles"],
        "energy_per_image_uj": s["energy_per_image_uj"]["total"],
    })
    for k in ENERGY_KEYS:
        row[f"energy_{k}_uj"] = s["energy_per_image_uj"][k]
    row.update({"macs_per_image": s["macs_per_image"], "pe_utilisation": s["utilisation"]["pe"],
                "array_utilisation": s["utilisation"].get("array", s["utilisation"].get("stage1", 0.0)), "pes": pes, "sram_kb": sram_kb,
                "area_proxy": a_pe * pes + a_kb * sram_kb, "bound": s["bound"], "evaluator": s["evaluator"],
                "recipe": ctx["recipes"][ti], "weight_bits": s["precision"]["weight_bits"],
                "act_bits": s["precision"]["act_bits"]})
    return row


# ---- driver --------------------------------------------------------------------------------
def _chunks(it, size):
    buf = []
    for x in it:
        buf.append(x)
        if len(buf) == size:
            yield buf
            buf = []
    if buf:
        yield buf


def run_dse(space: Space, traces: list[ExitTrace], geometry: EncoderGeometry, out_dir: str | Path,
            workers: int | None = None, scheduler: str | None = None, progress: bool = True,
            chunk_size: int | None = None, policies: PolicySet | list | None = None) -> dict:
    """Run the sweep; write results.csv, pareto.csv, pareto.png and dse.json under ``out_dir``.

    ``scheduler``: a Dask distributed scheduler address (``tcp://host:8786``) to run on a
    cluster; else a local process pool of ``workers`` (default: CPU count; 1 = in process).
    ``policies``: a Pareto file's threshold sets; every trace is re-thresholded with each
    (see :func:`policy_units`); or a list with one PolicySet (or None: the trace as written)
    per trace, each trace re-thresholded with its own. Inputs are checked before anything is
    written. The front spans every trace (so every recipe); ``precisions`` in the summary
    counts each recipe's evaluations and front points.
    """
    from tqdm import tqdm
    paired = isinstance(policies, (list, tuple))
    if paired:
        pols = per_trace_policies(traces, policies)
        if all(p is None for p in pols):
            paired, policies = False, None
    if paired:
        total = space.check_size(len(traces), n_units=sum(len(p.points) if p else 1 for p in pols))
        cands = sorted({L for p in pols if p for L in p.candidate_layers})
    else:
        total = space.check_size(len(traces), len(policies.points) if policies else None)
        cands = list(policies.candidate_layers) if policies else []
    with_policy = policies is not None
    units = policy_units(traces, policies)
    out_dir = Path(out_dir)
    workers = workers or os.cpu_count() or 1
    chunk_size = chunk_size or max(1, min(50, space.n_configs // (max(workers, 1) * 8) or 1))
    if space.base.architecture == "pipelined":
        from .pipelined import check_stages
        check_stages(space.base, geometry.depth, str(space.path))
    recipes = [trace_recipe(t) for t in traces]
    ctx = {"base": space.base.model_dump(), "geometry": geometry, "units": units,
           "sram_reference_pes": space.sram_reference_pes, "recipes": recipes,
           "flops": [flops_saving(geometry, u[3].exit_layer) for u in units], "area": (space.area_pe, space.area_kb)}
    keys = list(space.params)
    pcols = (["policy_id"] + [f"threshold_{L}" for L in cands]) if with_policy else []
    cols = (["config_id", "trace_id"] + pcols + keys + ["accuracy", "flops_saving", "latency_mean_us",
            "latency_p50_us", "latency_p95_us", "latency_p99_us", "service_latency_p50_us",
            "service_latency_p95_us", "service_latency_p99_us", "throughput_img_s", "makespan_cycles",
            "energy_per_image_uj"]
            + [f"energy_{k}_uj" for k in ENERGY_KEYS]
            + ["macs_per_image", "pe_utilisation", "array_utilisation", "pes", "sram_kb", "area_proxy", "bound",
               "evaluator"] + PRECISION_COLUMNS)
    objectives = []   # (config_id, trace_id, policy_id, -acc, p95, energy, area, weight_bits, act_bits)
    t0 = time.perf_counter()
    bar = tqdm(total=total, desc="dse", unit="eval", disable=not progress)
    with atomic_path(out_dir / "results.csv") as tmp:
        with tmp.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=cols)
            w.writeheader()

            def consume(rows):
                for r in rows:
                    w.writerow(r)
                    acc = r["accuracy"] if r["accuracy"] != "" else 0.0
                    objectives.append((r["config_id"], r["trace_id"], r.get("policy_id"), -acc,
                                       r["service_latency_p95_us"], r["energy_per_image_uj"], r["area_proxy"],
                                       r["weight_bits"], r["act_bits"]))
                bar.update(len(rows))

            chunks = _chunks(space.configs(), chunk_size)
            if scheduler:
                _run_dask(scheduler, chunks, ctx, consume)
            elif workers == 1:
                for ch in chunks:
                    consume(_eval_chunk(ch, ctx))
            else:
                _run_pool(workers, chunks, ctx, consume)
    bar.close()
    elapsed = time.perf_counter() - t0
    obj = np.array([o[3:7] for o in objectives], dtype=float).reshape(-1, 4)
    ids = [o[:3] + (recipes[o[1]],) + o[7:] for o in objectives]   # + recipe, weight_bits, act_bits
    mask = pareto_mask(obj) if len(obj) else np.zeros(0, bool)
    _write_front(out_dir, obj, ids, mask, with_policy)
    summary = {"space": str(space.path), "mode": space.mode, "evaluations": len(objectives),
               "configs": space.n_configs, "traces": len(traces), "pareto_points": int(mask.sum()),
               "seconds": elapsed, "scheduler": scheduler or f"process pool ({workers})",
               "objectives": ["accuracy (max)", "service_latency_p95_us (min)", "energy_per_image_uj (min)",
                              "area_proxy (min)"],
               "sram_scaled_with_array": space.sram_reference_pes,
               "flops_saving": [flops_saving(geometry, t.exit_layer) for t in traces]}
    if with_policy:
        points = [{"trace_id": ti, "policy_id": pid, "thresholds": {str(L): v for L, v in th.items()},
                   "accuracy": t.accuracy, "flops_saving": fs}
                  for (ti, pid, th, t), fs in zip(units, ctx["flops"]) if th is not None]
        if paired:
            summary["policies"] = {"files": [p.source if p else None for p in pols],
                                   "count": sum(len(p.points) for p in pols if p), "points": points}
        else:
            summary["policies"] = {"file": policies.source, "count": len(policies.points), "points": points}
    summary["precisions"] = _precisions(recipes, ids, mask)
    write_json(out_dir / "dse.json", {k: v for k, v in summary.items() if k != "seconds"})  # results only
    return summary


PRECISION_COLUMNS = ["recipe", "weight_bits", "act_bits"]


def _precisions(recipes: list[str], ids: list[tuple], mask) -> dict:
    """Per recipe (in trace order): its traces, the operand widths its rows used, evaluations and
    front points."""
    out: dict = {}
    for ti, r in enumerate(recipes):
        out.setdefault(r, {"traces": [], "weight_bits": set(), "act_bits": set(), "evaluations": 0,
                           "pareto_points": 0})["traces"].append(ti)
    for (_, _, _, r, wb, ab), on_front in zip(ids, mask):
        e = out[r]
        e["weight_bits"].add(wb)
        e["act_bits"].add(ab)
        e["evaluations"] += 1
        e["pareto_points"] += int(on_front)
    for e in out.values():
        e["weight_bits"], e["act_bits"] = sorted(e["weight_bits"]), sorted(e["act_bits"])
    return out


def _run_pool(workers, chunks, ctx, consume):
    """Evaluate chunks on a process pool; results are consumed in submission order (the CSV is
    the same whatever finishes first) with at most 4 x workers chunks in flight."""
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(ctx,)) as ex:
        pending = deque()
        for ch in chunks:
            pending.append(ex.submit(_eval_chunk, ch))
            if len(pending) >= 4 * workers:   # bounded queue: memory does not grow with the space
                consume(pending.popleft().result())
        while pending:
            consume(pending.popleft().result())


def _run_dask(address, chunks, ctx, consume):
    try:
        from dask.distributed import Client
    except ImportError:
        raise InputError("--scheduler: dask.distributed is not installed; allowed: pip install 'dask[distributed]'") from None
    try:
        client = Client(address, timeout=10)
    except (OSError, TimeoutError) as e:
        raise InputError(f"--scheduler: cannot reach {address!r} ({type(e).__name__}); allowed: a running "
                         "Dask scheduler address such as tcp://host:8786") from None
    try:
        ctx = client.scatter(ctx, broadcast=True)
        window = max(4, 4 * len(client.scheduler_info().get("workers", {})) or 4)
        pending = []  # consumed in submission order, like the local pool
        for ch in chunks:
            pending.append(client.submit(_eval_chunk_ctx, ch, ctx, pure=False))
            if len(pending) >= window:
                consume(pending.pop(0).result())
        for f in pending:
            consume(f.result())
    finally:
        client.close()


def _write_front(out_dir: Path, obj, ids, mask, with_policy: bool):
    """pareto.csv (the 4-D front; ``ids``: (config_id, trace_id, policy_id, recipe, weight_bits,
    act_bits) per row) and pareto.png (points coloured and front points marked by recipe when the
    sweep spans several)."""
    with atomic_path(out_dir / "pareto.csv") as tmp:
        with tmp.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["config_id", "trace_id"] + (["policy_id"] if with_policy else [])
                       + ["accuracy", "service_latency_p95_us", "energy_per_image_uj", "area_proxy"]
                       + PRECISION_COLUMNS)
            for i in np.nonzero(mask)[0]:
                pid = ids[i][2] if ids[i][2] is not None else ""
                w.writerow(list(ids[i][:2]) + ([pid] if with_policy else [])
                           + [-obj[i, 0], obj[i, 1], obj[i, 2], obj[i, 3]] + list(ids[i][3:6]))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    recipes = list(dict.fromkeys(x[3] for x in ids))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    if len(obj):
        for ax, (xi, yi, xl, yl) in zip(axes, [(1, 2, "service latency p95 (us)", "energy / image (uJ)"),
                                             (2, 0, "energy / image (uJ)", "accuracy")]):
            y = -obj[:, yi] if yi == 0 else obj[:, yi]
            m2 = pareto_mask(np.c_[obj[:, xi], -y if yi == 0 else y])
            order = np.argsort(obj[m2, xi])
            if len(recipes) > 1:
                _scatter_by_recipe(ax, obj[:, xi], y, mask, [x[3] for x in ids], recipes)
                ax.plot(obj[m2, xi][order], y[m2][order], ".-", c="0.2", lw=1, ms=4, label="2-D front")
            else:
                ax.scatter(obj[:, xi], y, s=6, c="0.7", label="all")
                ax.plot(obj[m2, xi][order], y[m2][order], "o-", c="C3", ms=4, label="2-D front")
                ax.scatter(obj[mask, xi], y[mask], s=14, facecolors="none", edgecolors="C0", label="4-D front")
            ax.set_xlabel(xl); ax.set_ylabel(yl); ax.set_xscale("log")
            ax.legend(fontsize=7)
    fig.suptitle("hwsim DSE: Pareto fronts (accuracy x service latency x energy x area)")
    fig.tight_layout()
    with atomic_path(out_dir / "pareto.png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


MARKERS = "osD^vP*Xph<>"


def _scatter_by_recipe(ax, x, y, mask, row_recipes, recipes):
    """Every point in its recipe's colour (faint), the 4-D front in its recipe's colour and marker."""
    rr = np.array(row_recipes, dtype=object)
    for k, r in enumerate(recipes):
        c, m = f"C{k % 10}", MARKERS[k % len(MARKERS)]
        sel = rr == r
        ax.scatter(x[sel], y[sel], s=7, c=c, alpha=0.4, marker=m, linewidths=0)
        front = sel & mask
        ax.scatter(x[front], y[front], s=22, c=c, marker=m, edgecolors="k", linewidths=0.4,
                   label=f"{r}: 4-D front ({int(front.sum())} of {int(sel.sum())})")
