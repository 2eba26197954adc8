"""``lraee validate-exits``: the bit-true fixed-point exit unit vs the float policy; minimal bit widths."""
from __future__ import annotations

from pathlib import Path

from analysis.cli_common import (store_kwargs, add_data_args, add_model_args, add_precision_arg, add_runtime_args, check_out_dir,
                                 load_encoder_from_args, prepare_from_args, recipe_from_args)
from analysis.validate_exits import SEARCH_SAFETY


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
    add_model_args(p)
    add_precision_arg(p, default="w8a8")
    add_data_args(p)
    add_runtime_args(p)
    f = p.add_argument_group("fixed point")
    f.add_argument("--spec", type=Path, default=None, metavar="FILE",
                   help="fixed-point spec to validate (must carry this policy's sha256); default: search one")
    f.add_argument("--search", action="store_true",
                   help="search the minimal widths on the gating split (the default when no --spec is given; "
                        "with --spec the search starts from it) and write DIR/fixedpoint_spec.json")
    f.add_argument("--target", type=float, default=0.999,
                   help="agreement target of the search: every layer's and the routed exit-decision agreement and "
                        "the routed-outcome agreement (default 0.999)")
    f.add_argument("--search-safety", type=float, default=SEARCH_SAFETY,
                   help="the search also keeps SAFETY x the estimated disagreement rate (each sample's flip "
                        "probability under the observed gate-logit error distribution) within 1 - target, so the "
                        "widths hold beyond the search split (default %(default)s; 1 = no margin)")
    f.add_argument("--gating-data", default=None, help="search images (default: --data, procedural split gating)")
    f.add_argument("--gating-n", type=int, default=None, help="search images (default: the whole gating split)")
    t = p.add_argument_group("exit-tap quantizer (block output -> int8)")
    t.add_argument("--tap-percentile", type=float, default=99.99,
                   help="the scale covers this percentile of |z_L| (default 99.99)")
    t.add_argument("--tap-calib-n", type=int, default=512,
                   help="calibration-split images for the tap scales (default 512; --calib-data, else --data)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    from analysis.data.sources import open_source
    from common.errors import InputError
    from analysis.features import calibrate_token_tap, get_features, split_request
    from quant.tap import TokenTap
    from analysis.templates import resolve_templates
    from analysis.validate_exits import (make_unit, policy_unit_params, run_search, search_rows, summary_lines, tap_tokens,
                                         validate, write_outputs)
    from exitlogic.artifacts import check_key, load_policy
    from exitlogic.fixedpoint import FixedPointSpec

    out = Path(args.out)
    check_out_dir(out)
    if not 0.0 < args.target <= 1.0:
        raise InputError(f"--target {args.target}: allowed: an agreement fraction in (0, 1]")
    if not args.search_safety >= 1.0:
        raise InputError(f"--search-safety {args.search_safety}: allowed: a number >= 1")
    if not 0.0 < args.tap_percentile <= 100.0:
        raise InputError(f"--tap-percentile {args.tap_percentile}: allowed: a number in (0, 100]")
    if args.tap_calib_n <= 0:
        raise InputError(f"--tap-calib-n {args.tap_calib_n}: allowed: a positive integer")
    policy = load_policy(args.policy)
    params = policy_unit_params(policy)
    sha = policy.meta["policy_sha256"]
    given = None
    if args.spec is not None:
        given = FixedPointSpec.load(args.spec, policy_sha256=sha, policy_source=str(policy.path))
        if given.policy_sha256 is None:
            raise InputError(f"fixed-point spec {args.spec}: policy_sha256 is null; allowed: a spec sized for this "
                             f"policy (sha256 {sha[:16]}...)")
        make_unit(given, policy, params)  # parameter formats and intermediate widths, before any backbone work
    search = args.search or given is None
    recipe = recipe_from_args(args)
    tname, templates = resolve_templates(args.templates)
    eval_src = open_source(args.data, args.split, args.n, args.classnames)
    gating_src = (open_source(args.gating_data or args.data, "gating", args.gating_n, args.classnames, like=eval_src)
                  if search else None)
    if gating_src is not None and gating_src.digest() == eval_src.digest():
        raise InputError(f"--gating-data {gating_src.name}: the width search would run on the eval images; allowed: "
                         "other images than --data/--split (e.g. the procedural gating split or another folder)")
    calib_src = open_source(args.calib_data or args.data, "calibration", args.tap_calib_n, args.classnames)
    enc = load_encoder_from_args(args)
    prepared = prepare_from_args(args, enc, recipe)
    progress = not args.no_progress
    kw = store_kwargs(args)
    tap_kw = {k: v for k, v in kw.items() if k != "dtype"}
    layers = policy.candidate_layers
    depth = enc.geometry.depth
    if policy.meta.get("exit_tap"):  # the policy decides on the exit-tap tokens: same scales, same stores
        exit_tap = TokenTap.from_descriptor(policy.meta["exit_tap"])
        tap = exit_tap.restricted(layers)
        greq, ereq = split_request("gating", exit_tap, depth), split_request("eval", exit_tap, depth)
    else:
        tap = calibrate_token_tap(enc, prepared, calib_src, layers, args.tap_percentile, **tap_kw)
        greq, ereq = {"tokens": tap}, {"tokens": tap}
    tap_meta = {"quantization_point": tap.QUANTIZATION_POINT, **tap.descriptor(),
                "scales": {str(L): tap.scale(L) for L in layers}}
    print("exit-tap scales: " + ", ".join(f"L{L} 2^{tap.exponents[L]}" for L in layers), file=sys.stderr)
    search_rec, spec = None, given
    if search:
        gfs = get_features(enc, gating_src, prepared, tname, templates, **greq, **kw)
        check_key(policy, gfs.meta["key"], str(gfs.path))
        rows = search_rows(len(gfs))
        spec, search_rec = run_search(policy, params, tap_tokens(gfs, layers, rows), gfs["top5"][rows, 0],
                                      args.target, given, safety=args.search_safety, progress=progress,
                                      log=lambda m: print(m, file=sys.stderr))
        search_rec["data"] = gfs.meta["dataset"]
        search_rec["n_split"] = len(gfs)
    efs = get_features(enc, eval_src, prepared, tname, templates, **ereq, **kw)
    check_key(policy, efs.meta["key"], str(efs.path))
    origin = str(out / "fixedpoint_spec.json") if search else str(args.spec)
    result, hist = validate(policy, spec, efs, args.target, tap_meta, search_rec, origin)
    written = write_outputs(out, result, hist, spec if search else None)
    for line in summary_lines(result):
        print(line)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
