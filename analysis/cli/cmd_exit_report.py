"""``lraee exit-report``: evaluate a policy on the eval split: trace, results.json, plots."""
from __future__ import annotations

from pathlib import Path

from analysis.cli.common import add_backbone_overrides, check_out_dir


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
    add_backbone_overrides(p)
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    p.set_defaults(func=run)


def run(args) -> int:
    from analysis.cli.common import policy_backbone, session_from_args
    from analysis.workflows import thresholded_policy, exit_report

    out = Path(args.out)
    check_out_dir(out)
    policy = thresholded_policy(args.policy)
    model, precision, data = policy_backbone(args, policy)
    res = exit_report(session_from_args(args), policy.path, out, model, precision, data, args.calibration, args.split)
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
