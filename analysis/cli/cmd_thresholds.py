"""``lraee thresholds``: Layer-adaptive Confidence Thresholding on a policy's gating sample."""
from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    from analysis.settings import ThresholdsCfg, default

    p = sub.add_parser("thresholds", help="choose per-layer exit thresholds (LCT) under a FLOPs budget; Pareto set",
                       description="Searches every combination of per-layer thresholds on the grid over the "
                                   "policy's cached gating-split predictions (no backbone pass), for every seed "
                                   "and policy (LRA-EE, hard-label heads, CLS-EE, confidence-only heuristic); "
                                   "writes the chosen thresholds into DIR/policy.json and the LRA-EE Pareto set "
                                   "(seed 0) to DIR/pareto.json (what `lraee dse --policies` sweeps).")
    p.add_argument("--policy", type=Path, required=True, metavar="DIR", help="folder written by `lraee train-exits`")
    p.add_argument("--budget", type=float, default=default(ThresholdsCfg, "budget"),
                   help="largest mean compute, as a fraction of full depth (default 0.9: at least 10%% saving)")
    p.add_argument("--grid", default=default(ThresholdsCfg, "grid"), metavar="LOW:HIGH:POINTS",
                   help="threshold grid (default 0.20:0.92:25, the paper's)")
    p.add_argument("--with-heads", action="store_true",
                   help="count the exit heads' own compute in the budget (default: backbone only, the paper's)")
    p.set_defaults(func=run)


def run(args) -> int:
    from analysis.settings import ThresholdsCfg, from_args
    from analysis.workflows import thresholds

    cfg = from_args(ThresholdsCfg, args, {"budget": "--budget", "grid": "--grid", "with_heads": "--with-heads"})
    thresholds(args.policy, cfg)
    print(f"wrote {Path(args.policy) / 'policy.json'} and {Path(args.policy) / 'pareto.json'}")
    return 0
