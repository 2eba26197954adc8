"""``lraee train-exits``: exit heads (every block) and gates (candidate layers) over seeds -> a policy folder."""
from __future__ import annotations

from pathlib import Path

from analysis.cli.common import add_data_args, add_model_args, add_precision_arg, add_runtime_args, check_out_dir
from analysis.settings import DataCfg, ExitsCfg, default
from exitlogic.head_config import HEAD_DTYPE_NAMES

EXITS_FLAGS = {"seeds": "--seeds", "epochs": "--epochs", "lr": "--lr", "head_batch_size": "--head-batch-size",
               "distill_weight": "--distill-weight", "head_dtype": "--head-dtype", "gate_l2": "--gate-l2",
               "gating_fraction": "--gating-fraction", "exit_layers": "--exit-layers", "kappa": "--kappa",
               "viability": "--viability", "max_candidates": "--max-candidates"}


def register(sub) -> None:
    p = sub.add_parser("train-exits", help="train LRA-EE exit heads and gates on cached INT8 features (policy folder)",
                       description="Trains, per seed, SSA heads (FP32-distilled = LRA-EE, and hard-label) and [CLS] "
                                   "heads for every block on the train split's cached features of the quantized "
                                   "backbone, picks the candidate exit layers (INR pruning over the QIRC profile, "
                                   "or --exit-layers) and fits the 3-feature gates on the gating split. Writes "
                                   "DIR/policy.json, DIR/policy.safetensors and DIR/gating.safetensors.")
    add_model_args(p)
    add_precision_arg(p, default="w8a8")
    add_data_args(p)
    add_runtime_args(p)
    g = p.add_argument_group("splits")
    g.add_argument("--train-data", default=None, help="head training images (default: --data, procedural split train)")
    g.add_argument("--train-n", type=int, default=default(DataCfg, "train_n"), help="head training images (default %(default)s)")
    g.add_argument("--gating-data", default=None, help="gate/threshold images (default: --data, procedural split gating)")
    g.add_argument("--gating-n", type=int, default=None, help="gating images (default: the whole split)")
    g.add_argument("--gating-fraction", type=float, default=default(ExitsCfg, "gating_fraction"),
                   help="per-seed random subsample of the gating split used for gates and thresholds (default %(default)s)")
    h = p.add_argument_group("heads and gates")
    h.add_argument("--seeds", type=int, default=default(ExitsCfg, "seeds"), help="independent runs, seeds 0..S-1 (default %(default)s)")
    h.add_argument("--epochs", type=int, default=default(ExitsCfg, "epochs"), help="head epochs (default %(default)s; paper: 3 on 128k images)")
    h.add_argument("--lr", type=float, default=default(ExitsCfg, "lr"), help="Adam learning rate (default %(default)s; paper: 5e-4)")
    h.add_argument("--head-batch-size", type=int, default=default(ExitsCfg, "head_batch_size"), help="head minibatch (default %(default)s; paper: 64)")
    h.add_argument("--distill-weight", type=float, default=default(ExitsCfg, "distill_weight"),
                   help="weight of the cosine-embedding loss to the FP32 embedding (default %(default)s)")
    h.add_argument("--head-dtype", choices=HEAD_DTYPE_NAMES, default=default(ExitsCfg, "head_dtype"),
                   help="compute dtype of the head matmuls (default %(default)s); bfloat16 = mixed precision with "
                        "float32 master weights, fast on GPUs and CPUs with AMX or AVX512-BF16")
    h.add_argument("--gate-l2", type=float, default=default(ExitsCfg, "gate_l2"), help="L2 penalty of the logistic gates (default %(default)s)")
    c = p.add_argument_group("candidate layers")
    c.add_argument("--exit-layers", default=None, help="comma-separated blocks, e.g. 8,10,11 (overrides the rule)")
    c.add_argument("--profile", type=Path, default=None, metavar="profile.json",
                   help="QIRC profile (`lraee profile`) for INR pruning; default: computed on the calibration split "
                        "and written to DIR/profile.json")
    c.add_argument("--kappa", type=float, default=default(ExitsCfg, "kappa"), help="INR pruning factor (paper Eq. 6, default 0.5)")
    c.add_argument("--viability", type=float, default=default(ExitsCfg, "viability"),
                   help="pool: heads with gating top-1 >= VIABILITY x the INT8 model's (default %(default)s)")
    c.add_argument("--max-candidates", type=int, default=default(ExitsCfg, "max_candidates"), help="deepest survivors kept (default %(default)s)")
    p.add_argument("--tap-calib-n", type=int, default=default(DataCfg, "profile_n"), metavar="N",
                   help="calibration images of the exit-tap scales and of the QIRC profile when --profile is not "
                        "given (default %(default)s)")
    p.add_argument("--no-exit-tap", action="store_true",
                   help="train and decide on the float block outputs instead of the int8 exit-tap tokens the "
                        "fixed-point exit unit reads (default: exit-tap tokens, scales calibrated per block)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="policy folder")
    p.set_defaults(func=run)


def run(args) -> int:
    from analysis.cli.common import data_settings, model_settings, precision_settings, session_from_args
    from analysis.settings import ExitsCfg, from_args
    from analysis.workflows import train_exits

    out = Path(args.out)
    check_out_dir(out)
    precision = precision_settings(args)
    exits = from_args(ExitsCfg, args, EXITS_FLAGS)
    train_exits(session_from_args(args), model_settings(args), precision, data_settings(args), exits, out,
                calibration=args.calibration, profile_json=args.profile, use_exit_tap=not args.no_exit_tap)
    return 0
