"""``lraee validate-exits``: the bit-true fixed-point exit unit vs the float policy; minimal bit widths."""
from __future__ import annotations

from pathlib import Path

from analysis.cli.common import add_backbone_overrides, check_out_dir
from analysis.settings import FixedPointCfg, default


def register(sub) -> None:
    p = sub.add_parser(
        "validate-exits",
        help="validate the bit-true fixed-point exit unit against the float policy; minimal bit-width search",
        description="Quantizes the block outputs at the policy's candidate layers to int8 (the exit-tap quantizer: "
                    "per-layer power-of-two scale, the smallest with 127*s >= the --tap-percentile of |z_L| on the "
                    "calibration split, saturating, round half to even), runs the fixed-point exit unit (seed-0 "
                    "ssa-distill heads, learned gates, ssa-distill/learned thresholds) on the eval split and compares "
                    "it per layer and end to end (routed) with (a) the float64 reference on the same int8 tokens "
                    "and (b) the float policy of `lraee exit-report` on float features. Without --spec (or with "
                    "--search) it first searches the minimal widths on the gating split (never on eval) and writes "
                    "DIR/fixedpoint_spec.json (what the HLS stage consumes). Writes DIR/validate.json and "
                    "DIR/errors_arithmetic.png, DIR/errors_float_policy.png.")
    p.add_argument("--policy", type=Path, required=True, metavar="DIR", help="policy folder (after `lraee thresholds`)")
    add_backbone_overrides(p)
    f = p.add_argument_group("fixed point")
    f.add_argument("--spec", type=Path, default=None, metavar="FILE",
                   help="fixed-point spec to validate (must carry this policy's sha256); default: search one")
    f.add_argument("--search", action="store_true",
                   help="search the minimal widths on the gating split (the default when no --spec is given; "
                        "with --spec the search starts from it) and write DIR/fixedpoint_spec.json")
    f.add_argument("--target", type=float, default=default(FixedPointCfg, "target"),
                   help="agreement target of the search: every layer's and the routed exit-decision agreement and "
                        "the routed-outcome agreement (default 0.999)")
    f.add_argument("--search-safety", type=float, default=default(FixedPointCfg, "search_safety"),
                   help="the search also keeps SAFETY x the estimated disagreement rate (each sample's flip "
                        "probability under the observed gate-logit error distribution) within 1 - target, so the "
                        "widths hold beyond the search split (default %(default)s; 1 = no margin)")
    f.add_argument("--gating-data", default=None, help="search images (default: --data, procedural split gating)")
    f.add_argument("--gating-n", type=int, default=None, help="search images (default: the whole gating split)")
    t = p.add_argument_group("exit-tap quantizer (block output -> int8)")
    t.add_argument("--tap-percentile", type=float, default=default(FixedPointCfg, "tap_percentile"),
                   help="the scale covers this percentile of |z_L| (default %(default)s)")
    t.add_argument("--tap-calib-n", type=int, default=None,
                   help="calibration images for the tap scales (default: the policy's data.profile_n; --calib-data, "
                        "else the train source)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    p.set_defaults(func=run)


def run(args) -> int:
    from analysis.cli.common import policy_backbone, session_from_args
    from analysis.settings import FixedPointCfg, from_args
    from analysis.validate_exits import summary_lines
    from analysis.workflows import validate_exits
    from exitlogic.artifacts import load_policy

    out = Path(args.out)
    check_out_dir(out)
    fxp = from_args(FixedPointCfg, args, {"target": "--target", "search_safety": "--search-safety",
                                          "tap_percentile": "--tap-percentile"})
    policy = load_policy(args.policy)
    model, precision, data = policy_backbone(args, policy)
    result, written = validate_exits(session_from_args(args), policy.path, out, fxp, model, precision, data,
                                     args.calibration, args.spec, args.search, args.split)
    for line in summary_lines(result):
        print(line)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
