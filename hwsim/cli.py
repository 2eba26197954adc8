"""``lraee sim`` and ``lraee dse`` (hwsim commands). Each entry of REGISTRARS adds one command.

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


def _geometry(args, trace=None):
    from quant.geometry import EncoderGeometry
    if getattr(args, "geometry", None):
        try:
            return EncoderGeometry.from_json(args.geometry)
        except (ValueError, TypeError) as e:
            raise InputError(f"{args.geometry}: geometry: {e}; allowed: the JSON of lraee info --json") from None
    if trace is not None and trace.geometry is not None:
        return trace.geometry
    raise InputError("--geometry: missing (the trace meta has no geometry); allowed: a geometry JSON "
                     "(lraee info --model NAME --json > geometry.json)")


# ---- sim ----------------------------------------------------------------------------------
def register_sim(sub) -> None:
    p = sub.add_parser(
        "sim", help="replay an exit trace on an accelerator (SimPy), or write a SCALE-Sim COMPUTE_REPORT.csv",
        description="Three uses: (1) --trace T --out DIR [--arch A]: replay a per-sample exit trace, and the "
                    "same trace at full depth, writing DIR/summary.json and DIR/samples.csv; (2) --scalesim-cfg "
                    "C --topology T --out DIR: write DIR/COMPUTE_REPORT.csv with SCALE-Sim v2's columns; "
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
    p.set_defaults(func=cmd_sim)


def cmd_sim(args) -> int:
    modes = [bool(args.trace), bool(args.scalesim_cfg or args.topology), bool(args.write_topology)]
    if sum(modes) != 1:
        raise InputError("sim: arguments: give exactly one of --trace, --scalesim-cfg with --topology, "
                         "--write-topology; allowed: one mode per call")
    if args.write_topology:
        from .scalesim_io import geometry_topology_rows, write_gemm_topology
        write_gemm_topology(args.write_topology, geometry_topology_rows(_geometry(args)))
        print(f"wrote {args.write_topology}")
        return 0
    if not args.out:
        raise InputError("--out: missing; allowed: an output folder")
    out = Path(args.out)
    if args.scalesim_cfg or args.topology:
        if not (args.scalesim_cfg and args.topology):
            raise InputError("--scalesim-cfg/--topology: both are needed; allowed: --scalesim-cfg FILE.cfg --topology FILE.csv")
        from .scalesim_io import compute_report_rows, read_cfg, read_topology, stall_estimate, write_compute_report
        cfg = read_cfg(args.scalesim_cfg)
        layers = read_topology(args.topology, args.topology_format)
        stalls = stall_estimate(layers, cfg) if cfg.bandwidth_mode == "USER" else None
        rows = compute_report_rows(layers, cfg, stalls)
        write_compute_report(out / "COMPUTE_REPORT.csv", rows)
        print(f"wrote {out / 'COMPUTE_REPORT.csv'} ({len(rows)} layers, {cfg.dataflow}, {cfg.rows}x{cfg.cols})")
        return 0
    return _sim_trace(args, out)


def _sim_trace(args, out: Path) -> int:
    import numpy as np
    from common.atomic import atomic_path, write_json
    from .config import load_arch
    from .costs import build_costs
    from .energy import table_for
    from .replay import replay
    from .trace import read_trace
    from .workload import flops_saving, head_macs, vision_macs

    arch = load_arch(args.arch)
    trace = read_trace(args.trace, args.trace_meta)
    geom = _geometry(args, trace)
    if geom.depth != trace.depth:
        raise InputError(f"{args.trace}: depth: trace depth {trace.depth} != geometry depth {geom.depth}; allowed: {geom.depth}")
    table = table_for(arch.energy)
    costs = build_costs(arch, geom, trace.num_classes, arch.effective_batch, table)
    ee = replay(arch, costs, trace)
    full = replay(arch, costs, trace.full_depth())
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
        return {k: v for k, v in s.items() if not k.startswith("_") and k not in ("finish_cycles", "arrival_cycles")}

    summary = {
        "arch": arch.model_dump(), "energy_table": table.citation,
        "workload": {"model": geom.model, "depth": geom.depth, "tokens": geom.tokens, "width": geom.width,
                     "vision_macs": vision_macs(geom), "head_macs": head_macs(geom, trace.num_classes),
                     "candidate_layers": list(trace.candidate_layers), "num_classes": trace.num_classes},
        "trace": {"path": str(args.trace), "samples": len(trace), "accuracy": trace.accuracy,
                  "mean_exit_layer": float(trace.exit_layer.mean())},
        "early_exit": clean(ee), "full_depth": clean(full), "savings": savings,
    }
    f = arch.clock_mhz
    lat = ee["_latency_us"]
    with atomic_path(out / "samples.csv") as tmp:
        with tmp.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["sample_id", "exit_layer", "arrival_us", "finish_us", "latency_us", "latency_full_depth_us"])
            for i in range(len(trace)):
                w.writerow([trace.sample_ids[i], int(trace.exit_layer[i]), ee["arrival_cycles"][i] / f,
                            ee["finish_cycles"][i] / f, float(lat[i]), float(full["_latency_us"][i])])
    write_json(out / "summary.json", summary)
    e, fd = ee, full
    print(f"{len(trace)} samples on {arch.array.rows}x{arch.array.cols} {arch.array.dataflow} @ {arch.clock_mhz:g} MHz, "
          f"{arch.batch.policy} batch {arch.effective_batch}, {arch.arrivals.mode} arrivals")
    print(f"{'':22s}{'early exit':>14s}{'full depth':>14s}{'saving':>10s}")
    rows = [("cycles", e["makespan_cycles"], fd["makespan_cycles"], savings["cycles_saving"]),
            ("throughput img/s", e["throughput_img_s"], fd["throughput_img_s"], savings["throughput_gain"]),
            ("latency p50 us", e["latency_us"]["p50"], fd["latency_us"]["p50"], None),
            ("latency p95 us", e["latency_us"]["p95"], fd["latency_us"]["p95"], savings["latency_p95_saving"]),
            ("latency p99 us", e["latency_us"]["p99"], fd["latency_us"]["p99"], None),
            ("energy/img uJ", e["energy_per_image_uj"]["total"], fd["energy_per_image_uj"]["total"], savings["energy_saving"]),
            ("MACs/img", e["macs_per_image"], fd["macs_per_image"], savings["macs_saving_incl_heads"])]
    for name, a, b, s in rows:
        print(f"{name:22s}{a:14.6g}{b:14.6g}{'' if s is None else f'{s:10.1%}':>10s}")
    print(f"FLOPs saving (backbone, paper's definition): {fs:.1%}")
    print(f"wrote {out / 'summary.json'}, {out / 'samples.csv'}")
    del np
    return 0


# ---- dse ----------------------------------------------------------------------------------
def register_dse(sub) -> None:
    p = sub.add_parser("dse", help="design-space exploration over accelerator configs, exit traces and exit policies",
                       description="Sweep a space YAML (grid or random) against one or more exit traces; with "
                                   "--policies, every trace is re-thresholded with every threshold set of the "
                                   "policy's Pareto file (configs x traces x policies evaluations). Writes "
                                   "DIR/results.csv (streamed), DIR/pareto.csv, DIR/pareto.png, DIR/dse.json.")
    p.add_argument("--space", required=True, help="space YAML (see hwsim/configs/space.yaml)")
    p.add_argument("--trace", action="append", default=[], help="exit trace CSV (repeatable; adds to the space's traces)")
    p.add_argument("--policies", metavar="PARETO.json", default=None,
                   help="the exit policy's Pareto file of threshold sets: sweep every config x every point "
                        "(the traces must carry the gate_L/pred_L, full_pred and label columns)")
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
    from .dse import Space, run_dse
    from .trace import read_policies, read_trace
    if args.max_configs is not None and args.max_configs < 1:
        raise InputError(f"--max-configs: {args.max_configs}; allowed: an integer >= 1")
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers: {args.workers}; allowed: an integer >= 1")
    space = Space(args.space, args.max_configs)
    paths = list(space.trace_paths) + [Path(t) for t in args.trace]
    if not paths:
        raise InputError("--trace: missing (the space lists no traces); allowed: one or more trace CSVs")
    policies = read_policies(args.policies) if args.policies else None
    # before reading traces: fail fast, write nothing
    space.check_size(len(paths), len(policies.points) if policies else None)
    traces = [read_trace(p) for p in paths]
    if space.geometry_path and not args.geometry:
        args.geometry = str(space.geometry_path)
    geom = _geometry(args, traces[0])
    for p, t in zip(paths, traces):
        if t.depth != geom.depth:
            raise InputError(f"{p}: depth: {t.depth} != geometry depth {geom.depth}; allowed: {geom.depth}")
    s = run_dse(space, traces, geom, args.out, workers=args.workers, scheduler=args.scheduler,
                progress=not args.no_progress and sys.stderr.isatty(), policies=policies)
    print(json.dumps({k: s[k] for k in ("evaluations", "pareto_points", "seconds", "scheduler")}))
    print(f"wrote {Path(args.out) / 'results.csv'}, pareto.csv, pareto.png, dse.json")
    return 0


REGISTRARS: list = [register_sim, register_dse]
