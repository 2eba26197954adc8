"""``lraee run``: the whole co-design pipeline, resumable, ending in one HTML report."""
from __future__ import annotations

from pathlib import Path

from analysis.cli.common import check_out_dir


def register(sub) -> None:
    p = sub.add_parser("run", help="the whole pipeline: calibration, profile, features, exit policy, fixed point, "
                                   "HLS, hwsim, report (resumable)",
                       description="Runs the stages model -> calibration -> profile -> features -> exits -> trace -> "
                                   "fixedpoint -> hls -> hwsim -> report into DIR/<stage>/, skipping stages whose "
                                   "inputs and settings are unchanged (content hashes in DIR/.lraee-run/). "
                                   "Per-stage wall times go to DIR/timings.json; the report to DIR/report/report.html.")
    p.add_argument("--config", type=Path, default=None, metavar="run.yaml",
                   help="settings of every stage (defaults: lraee run --print-config)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR", help="output folder")
    p.add_argument("--print-config", action="store_true", help="print the default config as YAML and exit")
    p.add_argument("--from", dest="from_stage", default=None, metavar="STAGE", help="rerun from STAGE on")
    p.add_argument("--until", default=None, metavar="STAGE", help="stop after STAGE")
    p.add_argument("--model", default=None, help="overrides model.name")
    p.add_argument("--pretrained", default=None, metavar="PATH", help="overrides model.pretrained")
    p.add_argument("--data", default=None, help="overrides data.source (eval images)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run, keeps_out_on_error=True)


def run(args) -> int:
    import time

    from common.errors import InputError
    from analysis.pipeline.config import default_yaml, load_config
    from analysis.pipeline.datasets import check_sources
    from analysis.pipeline.runner import absolute_paths, run_pipeline
    from analysis.pipeline.stages import STAGE_LIST

    if args.print_config:
        print(default_yaml(), end="")
        return 0
    if args.out is None:
        raise InputError("--out: required (the output folder); allowed: a folder path")
    check_out_dir(args.out)
    overrides = {k: v for k, v in (("model.name", args.model), ("model.pretrained", args.pretrained),
                                   ("data.source", args.data)) if v is not None}
    cfg = load_config(args.config, overrides)
    check_sources(absolute_paths(cfg))  # every role's images, and no leakage into eval, before any stage runs
    t0 = time.time()
    status = run_pipeline(cfg, args.out, STAGE_LIST, args.from_stage, args.until, progress=not args.no_progress)
    print(f"{'stage':<12} {'status':<8} {'seconds':>8}")
    for name, s in status.items():
        print(f"{name:<12} {s['status']:<8} {s['seconds']:>8.1f}")
    report = args.out / "report" / "report.html"
    print(f"total {time.time() - t0:.1f} s; " + (f"report: {report}; " if "report" in status and report.is_file()
                                                  else "no report (the report stage did not run); ")
          + f"timings: {args.out / 'timings.json'}")
    return 0
