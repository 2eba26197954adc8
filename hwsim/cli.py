"""``lraee sim``, ``lraee dse`` and ``lraee pipeline-sweep`` (hwsim commands). Each entry of REGISTRARS adds one command.

Imports here stay torch-free; heavy modules are imported inside the command functions.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from common.errors import InputError

CONFIG_DIR = Path(__file__).parent / "configs"
DEFAULT_ARCH = CONFIG_DIR / "arch.yaml"


def _geometry(path, trace=None):
    """The encoder geometry: the JSON at ``path`` (``--geometry``), else the trace meta's."""
    from quant.geometry import EncoderGeometry
    path = getattr(path, "geometry", path)  # an argparse namespace or the path itself
    if path:
        try:
            return EncoderGeometry.from_json(path)
        except (ValueError, TypeError) as e:
            raise InputError(f"{path}: geometry: {e}; allowed: the JSON of lraee info --json") from None
    if trace is not None and trace.geometry is not None:
        return trace.geometry
    raise InputError("--geometry: missing (the trace meta has no geometry); allowed: a geometry JSON "
                     "(lraee info --model NAME --json > geometry.json)")


# ---- sim ----------------------------------------------------------------------------------
def register_sim(sub) -> None:
    p = sub.add_parser(
        "sim", help="replay an exit trace on an accelerator (SimPy), or write a SCALE-Sim COMPUTE_REPORT.csv",
        description="Three uses: (1) --trace T --out DIR [--arch A]: replay a per-sample exit trace, and the "
                    "same trace at full depth, writing DIR/summary.json and DIR/samples.csv (service and sojourn "
                    "latency, latency under Poisson load, what bounds the config; monolithic, overlapped or "
                    "pipelined architectures); (2) --scalesim-cfg C --topology T --out DIR: write "
                    "DIR/COMPUTE_REPORT.csv with SCALE-Sim v2's columns (USER bandwidth: also BANDWIDTH_REPORT.csv "
                    "and DETAILED_ACCESS_REPORT.csv); "
                    "(3) --geometry G --write-topology FILE: write the encoder's GEMMs as a SCALE-Sim topology.")
    p.add_argument("--arch", default=str(DEFAULT_ARCH), help="accelerator YAML (default: %(default)s)")
    p.add_argument("--trace", help="per-sample exit trace CSV (meta JSON beside it)")
    p.add_argument("--trace-meta", help="trace meta JSON (default: TRACE with .csv -> .meta.json)")
    p.add_argument("--geometry", help="encoder geometry JSON (default: the trace meta's geometry)")
    p.add_argument("--out", help="output folder")
    p.add_argument("--scalesim-cfg", help="SCALE-Sim .cfg file (with --topology)")
    p.add_argument("--topology", help="SCALE-Sim topology CSV (conv or GEMM format)")
    p.add_argument("--topology-format", default="auto", choices=["auto", "conv", "gemm"])
    p.add_argument("--write-topology", metavar="FILE", help="write the geometry's GEMMs as a SCALE-Sim GEMM topology")
    p.add_argument("--load", type=float, default=0.5,
                   help="stated load for the latency-under-load result: Poisson arrivals at LOAD x the full-depth "
                        "throughput (default: %(default)s)")
    p.add_argument("--load-sweep", default="0.1,0.3,0.5,0.7,0.8,0.9,0.95",
                   help="comma-separated loads of the load sweep (default: %(default)s; 'none' skips it)")
    p.add_argument("--slo-us", type=float, default=None,
                   help="latency SLO in us for SLO attainment (default: 2 x the full-depth service latency p99)")
    p.add_argument("--size-stages", type=int, default=None, metavar="PES",
                   help="pipelined arch: allocate the stages' arrays for the trace's exit profile within PES "
                        "processing elements (minimum bottleneck stage) before simulating")
    p.add_argument("--memory", default="scalesim", choices=["scalesim", "analytical"],
                   help="with --scalesim-cfg and USER bandwidth: stall cycles from SCALE-Sim's memory system "
                        "(scalesim, default; also writes BANDWIDTH_REPORT.csv and DETAILED_ACCESS_REPORT.csv) or "
                        "from our analytical model")
    p.set_defaults(func=cmd_sim)


def cmd_sim(args) -> int:
    modes = [bool(args.trace), bool(args.scalesim_cfg or args.topology), bool(args.write_topology)]
    if sum(modes) != 1:
        raise InputError("sim: arguments: give exactly one of --trace, --scalesim-cfg with --topology, "
                         "--write-topology; allowed: one mode per call")
    from common.atomic import check_out_dir, check_out_file
    if args.write_topology:
        from .scalesim_io import geometry_topology_rows, write_gemm_topology
        check_out_file(args.write_topology, "--write-topology")
        write_gemm_topology(args.write_topology, geometry_topology_rows(_geometry(args)))
        print(f"wrote {args.write_topology}")
        return 0
    if not args.out:
        raise InputError("--out: missing; allowed: an output folder")
    out = check_out_dir(args.out)
    if args.scalesim_cfg or args.topology:
        if not (args.scalesim_cfg and args.topology):
            raise InputError("--scalesim-cfg/--topology: both are needed; allowed: --scalesim-cfg FILE.cfg --topology FILE.csv")
        from . import scalesim_io as sio
        cfg = sio.read_cfg(args.scalesim_cfg)
        layers = sio.read_topology(args.topology, args.topology_format)
        stalls, mem = None, None
        if cfg.bandwidth_mode == "USER":
            if args.memory == "scalesim":
                mem = sio.scalesim_memory_for(layers, cfg)
                stalls = mem.stall_cycles
            else:
                stalls = sio.stall_estimate(layers, cfg)
        rows = sio.compute_report_rows(layers, cfg, stalls, None if mem is None else mem.total_cycles)
        sio.write_compute_report(out / "COMPUTE_REPORT.csv", rows)
        written = ["COMPUTE_REPORT.csv"]
        if mem is not None:
            bw_rows, det_rows = sio.access_report_rows(mem)
            sio.write_report(out / "BANDWIDTH_REPORT.csv", sio.BANDWIDTH_REPORT_HEADER, bw_rows)
            sio.write_report(out / "DETAILED_ACCESS_REPORT.csv", sio.DETAILED_REPORT_HEADER, det_rows)
            written += ["BANDWIDTH_REPORT.csv", "DETAILED_ACCESS_REPORT.csv"]
            inexact = int((~mem.exact).sum())
            if inexact:
                from .scalesim_memory import REPLAY_BUDGET
                print(f"note: {inexact} layer(s) estimated, not replayed (conv windows that overlap, or more than "
                      f"{REPLAY_BUDGET:,} words to replay); their stalls and DRAM counts are estimates")
        print(f"wrote {', '.join(str(out / w) for w in written)} ({len(rows)} layers, {cfg.dataflow}, "
              f"{cfg.rows}x{cfg.cols})")
        return 0
    from common.atomic import removed_on_error
    with removed_on_error(out):
        simulate_trace(args.arch, args.trace, out, trace_meta=args.trace_meta, geometry=args.geometry,
                       load=args.load, loads=_loads(args.load_sweep), slo_us=args.slo_us,
                       size_stages=args.size_stages)
    return 0


DEFAULT_LOADS = (0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95)


def simulate_trace(arch_path, trace_path, out: Path, *, trace_meta=None, geometry=None, load: float = 0.5,
                   loads=DEFAULT_LOADS, slo_us: float | None = None, size_stages: int | None = None,
                   log=print) -> dict:
    """Replay the exit trace at ``trace_path`` (meta beside it, or ``trace_meta``) on the accelerator YAML
    ``arch_path``, and the same trace at full depth: writes ``out/summary.json`` and ``out/samples.csv`` and
    returns the summary. ``load``: the stated load (fraction of the full-depth throughput, Poisson
    arrivals), ``loads``: the load sweep, ``slo_us``: the latency SLO in us (default 2 x the full-depth
    service p99), ``size_stages``: pipelined archs, allocate this many PEs over the stages for the trace's
    exit profile. ``log`` receives the printed table."""
    import numpy as np
    from common.atomic import atomic_path, write_json
    from .config import load_arch, with_trace_precision
    from .costs import build_costs
    from .energy import table_for
    from .trace import read_trace
    from .workload import flops_saving, head_macs, vision_macs

    from .costs import bound_of
    from .load import load_sweep, simulate

    loads = list(loads)
    if not 0 < load <= 2:
        raise InputError(f"--load: {load}; allowed: a number in (0, 2] (fraction of the full-depth throughput)")
    if slo_us is not None and slo_us <= 0:
        raise InputError(f"--slo-us: {slo_us}; allowed: a number > 0 (microseconds)")
    arch = load_arch(arch_path)
    trace = read_trace(trace_path, trace_meta)
    arch, precision = with_trace_precision(arch, trace.meta)     # widths: the YAML's, else the trace's recipe
    geom = _geometry(geometry, trace)
    if geom.depth != trace.depth:
        raise InputError(f"{trace_path}: depth: trace depth {trace.depth} != geometry depth {geom.depth}; allowed: {geom.depth}")
    sizing = None
    if arch.architecture == "pipelined":
        from .pipelined import allocate_pes, check_stages
        check_stages(arch, geom.depth, arch_path)
        if size_stages is not None:
            arch, sizing = allocate_pes(arch, geom, trace, size_stages)
    elif size_stages is not None:
        raise InputError(f"--size-stages: {arch_path} is monolithic; allowed: an arch with architecture: pipelined")
    table = table_for(arch.energy)
    ee = simulate(arch, geom, trace, table)
    full = simulate(arch, geom, trace.full_depth(), table)
    sweep = load_sweep(arch, geom, trace, sorted(set(loads) | {load}), slo_us)
    stated = next(r for r in sweep["rows"] if r["load"] == load)
    if arch.architecture == "pipelined":
        from .pipelined import stage_arch
        bn = ee["pipeline"]["bottleneck_stage"] - 1
        sa = stage_arch(arch, bn)
        bound = bound_of(build_costs(sa, geom, trace.num_classes, 1, table), 1)
        bound["stage"] = bn + 1
    else:
        bound = bound_of(build_costs(arch, geom, trace.num_classes, arch.effective_batch, table), arch.effective_batch)
    fs = flops_saving(geom, trace.exit_layer)

    def saving(a, b):
        return 1.0 - a / b if b else 0.0

    savings = {
        "flops_saving": fs,
        "macs_saving_incl_heads": saving(ee["macs_per_image"], full["macs_per_image"]),
        "cycles_saving": saving(ee["makespan_cycles"], full["makespan_cycles"]),
        "energy_saving": saving(ee["energy_pj"]["total"], full["energy_pj"]["total"]),
        "latency_mean_saving": saving(ee["latency_us"]["mean"], full["latency_us"]["mean"]),
        "latency_p95_saving": saving(ee["latency_us"]["p95"], full["latency_us"]["p95"]),
        "throughput_gain": ee["throughput_img_s"] / full["throughput_img_s"] - 1.0,
    }

    def clean(s):
        return {k: v for k, v in s.items() if not k.startswith("_")
                and k not in ("finish_cycles", "arrival_cycles", "start_cycles")}

    summary = {
        "arch": arch.model_dump(), "energy_table": table.citation, "precision": precision,
        "mac_energy_scaling": table.mac_scaling,
        "workload": {"model": geom.model, "depth": geom.depth, "tokens": geom.tokens, "width": geom.width,
                     "vision_macs": vision_macs(geom), "head_macs": head_macs(geom, trace.num_classes),
                     "candidate_layers": list(trace.candidate_layers), "num_classes": trace.num_classes},
        "trace": {"path": str(trace_path), "samples": len(trace), "accuracy": trace.accuracy,
                  "mean_exit_layer": float(trace.exit_layer.mean())},
        "early_exit": clean(ee), "full_depth": clean(full), "savings": savings,
        "bound": bound, "stage_sizing": sizing,
        "at_load": stated,
        "load_sweep": {k: v for k, v in sweep.items() if k != "rows"} | {"rows": [r for r in sweep["rows"]
                                                                           if r["load"] in loads]},
    }
    f = arch.clock_mhz
    lat = ee["_latency_us"]
    with atomic_path(out / "samples.csv") as tmp:
        with tmp.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["sample_id", "exit_layer", "arrival_us", "service_start_us", "finish_us", "latency_us",
                        "service_latency_us", "latency_full_depth_us"])
            svc = ee["_service_latency_us"]
            for i in range(len(trace)):
                w.writerow([trace.sample_ids[i], int(trace.exit_layer[i]), ee["arrival_cycles"][i] / f,
                            ee["start_cycles"][i] / f, ee["finish_cycles"][i] / f, float(lat[i]), float(svc[i]),
                            float(full["_latency_us"][i])])
    write_json(out / "summary.json", summary)
    e, fd = ee, full
    if arch.architecture == "pipelined":
        hw = "pipelined " + " | ".join(f"{p['blocks'][0]}-{p['blocks'][1]}: {p['array']}" for p in ee["pipeline"]["stages"])
    else:
        hw = f"{arch.array.rows}x{arch.array.cols} {arch.array.dataflow}" + (" overlapped" if arch.overlap else "")
    batching = ("one sample per stage" if arch.architecture == "pipelined"
                else f"{arch.batch.policy} batch {arch.effective_batch}")
    log(f"{len(trace)} samples on {hw} @ {arch.clock_mhz:g} MHz, {batching}, {arch.arrivals.mode} arrivals "
          f"({ee['evaluator']})")
    log(f"{'':22s}{'early exit':>14s}{'full depth':>14s}{'saving':>10s}")
    rows = [("cycles", e["makespan_cycles"], fd["makespan_cycles"], savings["cycles_saving"]),
            ("throughput img/s", e["throughput_img_s"], fd["throughput_img_s"], savings["throughput_gain"]),
            ("service lat. p50 us", e["service_latency_us"]["p50"], fd["service_latency_us"]["p50"], None),
            ("service lat. p99 us", e["service_latency_us"]["p99"], fd["service_latency_us"]["p99"], None),
            (f"{arch.arrivals.mode} sojourn p50 us", e["latency_us"]["p50"], fd["latency_us"]["p50"], None),
            (f"{arch.arrivals.mode} sojourn p95 us", e["latency_us"]["p95"], fd["latency_us"]["p95"],
             savings["latency_p95_saving"]),
            ("energy/img uJ", e["energy_per_image_uj"]["total"], fd["energy_per_image_uj"]["total"], savings["energy_saving"]),
            ("MACs/img", e["macs_per_image"], fd["macs_per_image"], savings["macs_saving_incl_heads"])]
    for name, a, b, s in rows:
        log(f"{name:22s}{a:14.6g}{b:14.6g}{'' if s is None else f'{s:10.1%}':>10s}")
    log(f"FLOPs saving (backbone, paper's definition): {fs:.1%}")
    st = stated
    log(f"at load {st['load']:g} ({st['rate_img_s']:.4g} img/s Poisson, seed {arch.arrivals.seed}): sojourn p50 "
          f"{st['sojourn_p50_us']:.4g} us, p99 {st['sojourn_p99_us']:.4g} us; service p50 {st['service_p50_us']:.4g} us; "
          f"SLO {st['slo_us']:.4g} us met by {st['slo_attainment']:.1%}")
    log(f"bound: {bound['bound']}" + (f" (stage {bound['stage']})" if "stage" in bound else ""))
    log(f"wrote {out / 'summary.json'}, {out / 'samples.csv'}")
    del np
    return summary


def _loads(text: str) -> list[float]:
    if text.strip().lower() == "none":
        return []
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        vals = [-1.0]
    if not vals or any(not 0 < v <= 2 for v in vals):
        raise InputError(f"--load-sweep: {text!r}; allowed: comma-separated numbers in (0, 2], or none")
    return vals


# ---- dse ----------------------------------------------------------------------------------
def register_dse(sub) -> None:
    p = sub.add_parser("dse", help="design-space exploration over accelerator configs, exit traces and exit policies",
                       description="Sweep a space YAML (grid or random) against one or more exit traces; with "
                                   "--policies, every trace is re-thresholded with every threshold set of the "
                                   "policy's Pareto file (configs x traces x policies evaluations), or, with one "
                                   "--policies per trace, with its own file's. One Pareto front spans every "
                                   "trace's recipe (precision), policy point and config. Writes "
                                   "DIR/results.csv (streamed), DIR/pareto.csv, DIR/pareto.png, DIR/dse.json.")
    p.add_argument("--space", required=True, help="space YAML (see hwsim/configs/space.yaml)")
    p.add_argument("--trace", action="append", default=[], help="exit trace CSV (repeatable; adds to the space's traces)")
    p.add_argument("--policies", metavar="PARETO.json", action="append", default=None,
                   help="the exit policy's Pareto file of threshold sets: sweep every config x every point "
                        "(the traces must carry the gate_L/pred_L, full_pred and label columns). Once: every "
                        "trace; repeated: one per trace, paired in order (the space file's traces, then the "
                        "--trace flags), 'none' = that trace as written")
    p.add_argument("--policy-points", type=int, default=None, metavar="N",
                   help="at most N threshold sets per Pareto file, evenly spaced along its FLOPs saving "
                        "(default: all)")
    p.add_argument("--geometry", help="encoder geometry JSON (default: the first trace meta's geometry)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--max-configs", type=int, default=None,
                   help="refuse sweeps with more evaluations, configs x traces x policies (default: space's "
                        "max_configs or 100000)")
    p.add_argument("--workers", type=int, default=None, help="local processes (default: CPU count)")
    p.add_argument("--scheduler", default=None, help="Dask distributed scheduler address, e.g. tcp://host:8786")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_dse)


def cmd_dse(args) -> int:
    policies = [None if p.strip().lower() == "none" else p for p in args.policies or []]
    dse_sweep(args.space, args.out, traces=args.trace, policies=policies or None, geometry=args.geometry,
              max_configs=args.max_configs, workers=args.workers, scheduler=args.scheduler,
              progress=not args.no_progress and sys.stderr.isatty(), policy_points=args.policy_points)
    return 0


def dse_sweep(space_path, out, *, traces=(), policies=None, geometry=None, max_configs: int | None = None,
              workers: int | None = None, scheduler: str | None = None, progress: bool = False, log=print,
              policy_points: int | None = None) -> dict:
    """Sweep the DSE space YAML ``space_path`` over its traces plus ``traces`` (CSV paths) and, with
    ``policies`` (a Pareto JSON of threshold sets), every policy point: writes ``out/results.csv``,
    ``pareto.csv``, ``pareto.png`` and ``dse.json``; returns the sweep summary. Nothing is left at ``out``
    when it fails.

    ``policies``: one path (or a list of one) applies to every trace; a list of one path or None
    per trace (the space file's traces first, then ``traces``) re-thresholds each trace with its
    own file (None: that trace as written), for traces of several recipes with their own policies
    and candidate layers. Any other count is an InputError. One front spans all traces.
    ``policy_points``: at most this many threshold sets per Pareto file, evenly spaced along its FLOPs
    saving (:meth:`hwsim.trace.PolicySet.thinned`; None: all)."""
    from .dse import Space, run_dse
    from .trace import read_policies, read_trace
    if max_configs is not None and max_configs < 1:
        raise InputError(f"--max-configs: {max_configs}; allowed: an integer >= 1")
    if workers is not None and workers < 1:
        raise InputError(f"--workers: {workers}; allowed: an integer >= 1")
    if policy_points is not None and policy_points < 1:
        raise InputError(f"--policy-points: {policy_points}; allowed: an integer >= 1")
    from common.atomic import check_out_dir, removed_on_error
    check_out_dir(out)
    space = Space(space_path, max_configs)
    paths = list(space.trace_paths) + [Path(t) for t in traces]
    if not paths:
        raise InputError("--trace: missing (the space lists no traces); allowed: one or more trace CSVs")
    plist = list(policies) if isinstance(policies, (list, tuple)) else [policies]
    if len(plist) > 1 and len(plist) != len(paths):
        n = len(paths)
        raise InputError(f"--policies: {len(plist)} Pareto files for {n} trace{'s' if n > 1 else ''}; allowed: 1 "
                         f"(every trace) or {n} (one per trace, paired in order: the space file's traces, then "
                         "--trace)")
    if len(plist) > 1:   # one per trace
        pol = [read_policies(p).thinned(policy_points) if p else None for p in plist]
        pol = None if all(p is None for p in pol) else pol
    else:
        pol = read_policies(plist[0]).thinned(policy_points) if plist and plist[0] else None
    # before reading traces: fail fast, write nothing
    if isinstance(pol, list):
        space.check_size(len(paths), n_units=sum(len(p.points) if p else 1 for p in pol))
    else:
        space.check_size(len(paths), len(pol.points) if pol else None)
    read = [read_trace(p) for p in paths]
    geom = _geometry(geometry or (str(space.geometry_path) if space.geometry_path else None), read[0])
    for p, t in zip(paths, read):
        if t.depth != geom.depth:
            raise InputError(f"{p}: depth: {t.depth} != geometry depth {geom.depth}; allowed: {geom.depth}")
    with removed_on_error(out):  # an unreachable scheduler or a failed sweep leaves no --out behind
        s = run_dse(space, read, geom, out, workers=workers, scheduler=scheduler, progress=progress, policies=pol)
    log(json.dumps({k: s[k] for k in ("evaluations", "pareto_points", "seconds", "scheduler")}))
    log(f"wrote {Path(out) / 'results.csv'}, pareto.csv, pareto.png, dse.json")
    return s


# ---- pipeline-sweep ---------------------------------------------------------------------
def register_pipeline_sweep(sub) -> None:
    p = sub.add_parser("pipeline-sweep", help="layer-pipelined accelerator: throughput and resources vs exit probability",
                       description="For every exit probability, size the PEs of each stage of a pipelined arch "
                                   "(architecture: pipelined) for that exit profile and compare with the arch file's "
                                   "arrays and with the no-exit pipeline at equal PEs. Writes DIR/sweep.csv, "
                                   "DIR/sweep.json, DIR/sweep.png.")
    p.add_argument("--arch", required=True, help="pipelined accelerator YAML (architecture: pipelined, stages: ...)")
    p.add_argument("--geometry", required=True, help="encoder geometry JSON (lraee info --json)")
    p.add_argument("--exit-layer", type=int, default=None, help="block after which samples exit (default: the end "
                                                                 "of the first stage)")
    p.add_argument("--probs", default="0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9",
                   help="comma-separated exit probabilities in [0, 1) (default: %(default)s)")
    p.add_argument("--pe-budget", type=int, default=None, help="total PEs (default: the arch file's total)")
    p.add_argument("--n", type=int, default=2000, help="samples per synthetic trace (default: %(default)s)")
    p.add_argument("--num-classes", type=int, default=25, help="classes K of the exit head (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_pipeline_sweep)


def cmd_pipeline_sweep(args) -> int:
    from .config import load_arch
    from .pipeline_sweep import sweep
    arch = load_arch(args.arch)
    if arch.architecture != "pipelined":
        raise InputError(f"{args.arch}: architecture: {arch.architecture!r}; allowed: pipelined (with stages)")
    geom = _geometry(args)
    from .pipelined import check_stages
    check_stages(arch, geom.depth, args.arch)
    layer = args.exit_layer if args.exit_layer is not None else arch.stages[0].blocks[1]
    if not 1 <= layer < geom.depth:
        raise InputError(f"--exit-layer: {layer}; allowed: 1..{geom.depth - 1}")
    try:
        probs = [float(x) for x in args.probs.split(",") if x.strip()]
    except ValueError:
        probs = [-1.0]
    if not probs or any(not 0 <= x < 1 for x in probs):
        raise InputError(f"--probs: {args.probs!r}; allowed: comma-separated numbers in [0, 1)")
    if args.n < 1 or args.num_classes < 1:
        raise InputError(f"--n/--num-classes: {args.n}/{args.num_classes}; allowed: integers >= 1")
    budget = args.pe_budget or sum(st.array.rows * st.array.cols for st in arch.stages)
    s = sweep(arch, geom, args.out, layer, probs, budget, args.n, args.num_classes, args.seed)
    print(f"{'p':>5s} {'sized img/s':>12s} {'fixed img/s':>12s} {'no-exit img/s':>14s}  sized arrays (buffer depth)")
    rows = s["rows"]
    for i in range(0, len(rows), 3):
        a, b, c = rows[i:i + 3]
        print(f"{a['exit_probability']:5.2f} {a['throughput_img_s']:12.5g} {b['throughput_img_s']:12.5g} "
              f"{c['throughput_img_s']:14.5g}  {a['stage_arrays']} ({a['conditional_buffer_depth']})")
    print(f"wrote {args.out}/sweep.csv, sweep.json, sweep.png")
    return 0


REGISTRARS: list = [register_sim, register_dse, register_pipeline_sweep]
