"""``lraee sweep-precision``: the precision x exit co-design sweep on its own (``lraee run`` runs it as stage
``sweep``)."""
from __future__ import annotations

from pathlib import Path

from analysis.cli.common import check_out_dir


def register(sub) -> None:
    p = sub.add_parser("sweep-precision", help="where early exit pays: calibration, profile, exit policy and eval "
                                               "trace per INT8 recipe; sweep.json/csv/png",
                       description="For every recipe (default: the config's precision.sweep) runs calibration, the "
                                   "QIRC profile, the exit policy over the seeds at the config's FLOPs budget and the "
                                   "eval trace into DIR/<recipe>/, sharing the FP32 features and text embeddings "
                                   "(one cached build), and writes DIR/sweep.json, DIR/sweep.csv and DIR/sweep.png: "
                                   "top-1 of FP32, INT8 full depth, SSA-Last, LRA-EE, CLS-EE, confidence-only and "
                                   "PABEE per recipe, rescue/loss counts, the noise ratio at the deepest candidate, "
                                   "and one measured sentence per recipe.")
    p.add_argument("--config", type=Path, default=None, metavar="run.yaml",
                   help="the lraee run settings (model, precision, data, runtime, exits, thresholds sections; "
                        "defaults: lraee run --print-config)")
    p.add_argument("--recipes", default=None, metavar="R1,R2,...",
                   help="static recipes, e.g. w8a8,w8a5,w8a4,w8a4+sq (default: the config's precision.sweep)")
    p.add_argument("--model", default=None, help="overrides model.name")
    p.add_argument("--pretrained", default=None, metavar="PATH", help="overrides model.pretrained")
    p.add_argument("--data", default=None, help="overrides data.source (eval images)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from analysis import workflows as wf
    from analysis.pipeline.config import load_config
    from analysis.pipeline.datasets import check_sources

    check_out_dir(args.out)
    overrides = {k: v for k, v in (("model.name", args.model), ("model.pretrained", args.pretrained),
                                   ("data.source", args.data)) if v is not None}
    cfg = load_config(args.config, overrides)
    recipes = wf.parse_sweep(args.recipes, "--recipes") if args.recipes is not None else cfg.precision.sweep
    if not recipes:
        from common.errors import InputError

        raise InputError("--recipes: empty; allowed: one or more static recipes, e.g. w8a8,w8a5,w8a4")
    check_sources(cfg.data)  # every role's images, and no leakage into eval, before any backbone pass
    session = wf.Session(cfg.runtime, progress=not args.no_progress)
    doc = wf.precision_sweep(session, cfg.model, cfg.precision, cfg.data, cfg.exits, cfg.thresholds, recipes,
                             Path(args.out))
    for line in doc["findings"]:
        print(line)
    print(f"wrote {Path(args.out) / 'sweep.json'}, sweep.csv, sweep.png")
    return 0
