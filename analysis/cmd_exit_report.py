"""``lraee exit-report``: evaluate a policy on the eval split: trace, results.json, plots."""
from __future__ import annotations

from pathlib import Path

from analysis.cli_common import (store_kwargs, add_data_args, add_model_args, add_precision_arg, add_runtime_args, check_out_dir,
                                 load_encoder_from_args, prepare_from_args, recipe_from_args)


def register(sub) -> None:
    p = sub.add_parser("exit-report", help="evaluate an LRA-EE policy: per-sample exit trace, baselines, "
                                           "analyses (results.json + PNG)",
                       description="Runs the policy's heads and gates on the cached features of the eval split "
                                   "(same model and recipe as the policy, checked by hash) for every seed and "
                                   "writes DIR/trace.csv (+ trace.meta.json; hwsim replays it), DIR/results.json "
                                   "(baselines, LRA-EE mean +- std, four-quadrant table, selectivity, exit "
                                   "distribution, CLS vs SSA per layer, ablation rows i-v, static truncation) and "
                                   "DIR/pareto.png, DIR/exit_distribution.png, DIR/cls_vs_ssa.png.")
    p.add_argument("--policy", type=Path, required=True, metavar="DIR", help="policy folder (after `lraee thresholds`)")
    add_model_args(p)
    add_precision_arg(p, default="w8a8")
    add_data_args(p)
    add_runtime_args(p)
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    p.set_defaults(func=run)


def run(args) -> int:
    from analysis.data.sources import open_source
    from common.errors import InputError
    from analysis.exits import exit_report
    from analysis.features import get_features, split_request
    from quant.tap import TokenTap
    from analysis.templates import resolve_templates
    from exitlogic.artifacts import check_key, load_policy
    from quant.prepare import prepare_recipe

    out = Path(args.out)
    check_out_dir(out)
    policy = load_policy(args.policy)
    if policy.meta.get("thresholds") is None:
        raise InputError(f"{policy.path / 'policy.json'}: thresholds: missing; run `lraee thresholds --policy "
                         f"{policy.path}` first")
    recipe = recipe_from_args(args)
    tname, templates = resolve_templates(args.templates)
    source = open_source(args.data, args.split, args.n, args.classnames)
    enc = load_encoder_from_args(args)
    prepared = prepare_from_args(args, enc, recipe)
    kw = store_kwargs(args)
    tap = policy.meta.get("exit_tap")
    exit_tap = TokenTap.from_descriptor(tap) if tap else None  # decide on what the exit unit reads
    depth = enc.geometry.depth
    fs = get_features(enc, source, prepared, tname, templates, **split_request("eval", exit_tap, depth), **kw)
    check_key(policy, fs.meta["key"], str(fs.path))
    fp = get_features(enc, source, prepare_recipe(enc, "fp32"), tname, templates,
                      **split_request("teacher", None, depth), **kw)
    res = exit_report(policy, fs, fp, out)
    lr = res["lra_ee"]
    print(f"{'method':<28} {'FLOPs saving %':>16} {'top-1 %':>16}")
    for b in res["baselines"]:
        t = b["top1"]
        f = b["flops_saving"]
        print(f"{b['method']:<28} {100 * f['mean']:>9.2f} ± {100 * f['std']:<4.2f} {100 * t['mean']:>9.2f} ± "
              f"{100 * t['std']:<4.2f}")
    q = res["quadrants"]
    print(f"quadrants (seed {res['seeds'][0]}): both {q['both']}, rescue {q['rescue']}, loss {q['loss']}, neither "
          f"{q['neither']}; net {q['net']:+d} = {q['net_pp']:+.2f} pp")
    print(f"LRA-EE top-1 {100 * lr['top1']['mean']:.2f} ± {100 * lr['top1']['std']:.2f} % vs INT8 "
          f"{100 * res['int8_top1']:.2f} %; wrote {out / 'results.json'}, {out / 'trace.csv'} and plots")
    return 0
