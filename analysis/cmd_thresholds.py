"""``lraee thresholds``: Layer-adaptive Confidence Thresholding on a policy's gating sample."""
from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("thresholds", help="choose per-layer exit thresholds (LCT) under a FLOPs budget; Pareto set",
                       description="Searches every combination of per-layer thresholds on the grid over the "
                                   "policy's cached gating-split predictions (no backbone pass), for every seed "
                                   "and policy (LRA-EE, hard-label heads, CLS-EE, confidence-only heuristic); "
                                   "writes the chosen thresholds into DIR/policy.json and the LRA-EE Pareto set "
                                   "(seed 0) to DIR/pareto.json (what `lraee dse --policies` sweeps).")
    p.add_argument("--policy", type=Path, required=True, metavar="DIR", help="folder written by `lraee train-exits`")
    p.add_argument("--budget", type=float, default=0.9,
                   help="largest mean compute, as a fraction of full depth (default 0.9: at least 10%% saving)")
    p.add_argument("--grid", default="0.20:0.92:25", metavar="LOW:HIGH:POINTS",
                   help="threshold grid (default 0.20:0.92:25, the paper's)")
    p.add_argument("--with-heads", action="store_true",
                   help="count the exit heads' own compute in the budget (default: backbone only, the paper's)")
    p.set_defaults(func=run)


MAX_GRID_POINTS = 1000


def parse_grid(text: str):
    """The one rule for ``--grid`` / ``thresholds.grid``: LOW:HIGH:POINTS, 0 <= LOW <= HIGH <= 1,
    1 <= POINTS <= :data:`MAX_GRID_POINTS`; the grid as a float64 array."""
    import numpy as np

    from common.errors import InputError

    try:
        lo, hi, pts = str(text).split(":")
        lo, hi, pts = float(lo), float(hi), int(pts)
    except ValueError:
        raise InputError(f"--grid {text!r}: allowed: LOW:HIGH:POINTS, e.g. 0.20:0.92:25") from None
    if not (0.0 <= lo <= hi <= 1.0) or not 1 <= pts <= MAX_GRID_POINTS:
        raise InputError(f"--grid {text!r}: allowed: 0 <= LOW <= HIGH <= 1 and 1 <= POINTS <= {MAX_GRID_POINTS}")
    return np.linspace(lo, hi, pts)


def check_grid_size(text: str, grid, n_layers: int, policy_path) -> None:
    """LCT searches POINTS^C threshold combinations (C candidate layers); refuse more than it can hold."""
    from common.errors import InputError
    from exitlogic.policy import MAX_COMBINATIONS

    total = len(grid) ** max(n_layers, 1)
    if total > MAX_COMBINATIONS:
        most = int(MAX_COMBINATIONS ** (1.0 / max(n_layers, 1)) + 1e-9)
        raise InputError(f"--grid {text!r}: {len(grid)}^{n_layers} = {total:,} threshold combinations for the "
                         f"{n_layers} candidate layers of {policy_path}; allowed: at most {MAX_COMBINATIONS:,} "
                         f"(POINTS <= {most})")


def run(args) -> int:
    from analysis.exits import choose_thresholds
    from exitlogic.artifacts import load_policy

    grid = parse_grid(args.grid)
    if not (0 < args.budget <= 1):
        from common.errors import InputError
        raise InputError(f"--budget {args.budget}: allowed: a compute fraction in (0, 1]")
    policy = load_policy(args.policy)
    check_grid_size(args.grid, grid, len(policy.candidate_layers), policy.path)
    th = choose_thresholds(policy, args.budget, grid, args.with_heads)
    for s, by in th["by_seed"].items():
        for name, rec in by.items():
            taus = " ".join(f"tau{L}={t:.2f}" for L, t in rec["thresholds"].items())
            print(f"seed {s} {name:<22} {taus}  gating top-1 {100 * rec['accuracy_gating']:.2f}%  "
                  f"saving {100 * rec['flops_saving_gating']:.2f}%  ({len(rec['pareto'])} Pareto points)")
    print(f"wrote {Path(args.policy) / 'policy.json'} and {Path(args.policy) / 'pareto.json'}")
    return 0
