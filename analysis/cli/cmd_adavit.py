"""``lraee adavit``: the AdaViT baseline at matched FLOPs on a policy's backbone."""
from __future__ import annotations

from pathlib import Path

from analysis.cli.common import add_runtime_args, check_out_dir
from analysis.settings import AdaViTCfg, default

ADAVIT_FLAGS = {"seeds": "--seeds", "train_n": "--train-n", "epochs": "--epochs", "lr": "--lr",
                "batch_size": "--adavit-batch-size", "temperature": "--temperature",
                "usage_weight": "--usage-weight", "distill_weight": "--distill-weight"}


def register(sub) -> None:
    p = sub.add_parser("adavit", help="AdaViT baseline: decision networks (patch, head, block keep) trained with "
                                      "Gumbel-softmax toward LRA-EE's FLOPs saving, INT8 backbone frozen",
                       description="Trains AdaViT's per-block decision networks on the policy's frozen INT8 backbone "
                                   "(fast path, the policy's model, recipe and calibration) toward a FLOPs-saving "
                                   "target, per seed, and evaluates them on the eval split: DIR/adavit.json (per "
                                   "seed and mean ± std of FLOPs saving and top-1; the paper's row) and "
                                   "DIR/adavit.timings.json.")
    p.add_argument("--policy", type=Path, required=True, metavar="DIR", help="policy folder (after `lraee thresholds`)")
    t = p.add_mutually_exclusive_group(required=True)
    t.add_argument("--target", type=float, default=None, help="FLOPs-saving fraction in [0, 1), e.g. 0.1338")
    t.add_argument("--results", type=Path, default=None, metavar="results.json",
                   help="take the target from LRA-EE's mean FLOPs saving there (`lraee exit-report`)")
    a = p.add_argument_group("AdaViT")
    a.add_argument("--seeds", type=int, default=None, help="seeds 0..S-1 (default: the policy's count)")
    a.add_argument("--train-n", type=int, default=default(AdaViTCfg, "train_n"),
                   help="train-split images (default %(default)s)")
    a.add_argument("--epochs", type=int, default=default(AdaViTCfg, "epochs"), help="default %(default)s")
    a.add_argument("--lr", type=float, default=default(AdaViTCfg, "lr"), help="Adam lr (default %(default)s)")
    a.add_argument("--adavit-batch-size", type=int, default=default(AdaViTCfg, "batch_size"),
                   help="training minibatch (default %(default)s)")
    a.add_argument("--temperature", type=float, default=default(AdaViTCfg, "temperature"),
                   help="Gumbel-sigmoid temperature (default %(default)s)")
    a.add_argument("--usage-weight", type=float, default=default(AdaViTCfg, "usage_weight"),
                   help="weight of the squared FLOPs-fraction error (default %(default)s)")
    a.add_argument("--distill-weight", type=float, default=default(AdaViTCfg, "distill_weight"),
                   help="cosine distillation to the FP32 embedding (default %(default)s: off)")
    add_runtime_args(p)
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    p.set_defaults(func=run)


def run(args) -> int:
    from analysis.cli.common import session_from_args
    from analysis.settings import from_args
    from analysis.workflows import adavit

    check_out_dir(args.out)
    if args.target is not None:
        from exitlogic.adavit import check_target

        check_target(args.target, "--target")  # before the policy, the backbone or any training
    res = adavit(session_from_args(args), args.policy, args.out, from_args(AdaViTCfg, args, ADAVIT_FLAGS),
                 target_saving=args.target, results_json=args.results)
    print(f"AdaViT: FLOPs saving {100 * res['flops_saving']['mean']:.2f} ± {100 * res['flops_saving']['std']:.2f} %, "
          f"top-1 {100 * res['top1']['mean']:.2f} ± {100 * res['top1']['std']:.2f} % (target "
          f"{100 * res['target_saving']:.2f} %); wrote {Path(args.out) / 'adavit.json'}")
    return 0
