"""``lraee train-exits``: exit heads (every block) and gates (candidate layers) over seeds -> a policy folder."""
from __future__ import annotations

import json
from pathlib import Path

from analysis.cli_common import (store_kwargs, add_data_args, add_model_args, add_precision_arg, add_runtime_args, check_out_dir,
                                 load_encoder_from_args, prepare_from_args, recipe_from_args)


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
    g.add_argument("--train-n", type=int, default=10000, help="head training images (default 10000)")
    g.add_argument("--gating-data", default=None, help="gate/threshold images (default: --data, procedural split gating)")
    g.add_argument("--gating-n", type=int, default=None, help="gating images (default: the whole split)")
    g.add_argument("--gating-fraction", type=float, default=0.8,
                   help="per-seed random subsample of the gating split used for gates and thresholds (default 0.8)")
    h = p.add_argument_group("heads and gates")
    h.add_argument("--seeds", type=int, default=3, help="independent runs, seeds 0..S-1 (default 3)")
    h.add_argument("--epochs", type=int, default=10, help="head epochs (default 10; paper: 3 on 128k images)")
    h.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3; paper: 5e-4)")
    h.add_argument("--head-batch-size", type=int, default=256, help="head minibatch (default 256; paper: 64)")
    h.add_argument("--distill-weight", type=float, default=1.0,
                   help="weight of the cosine-embedding loss to the FP32 embedding (default 1)")
    h.add_argument("--gate-l2", type=float, default=1e-3, help="L2 penalty of the logistic gates (default 1e-3)")
    c = p.add_argument_group("candidate layers")
    c.add_argument("--exit-layers", default=None, help="comma-separated blocks, e.g. 8,10,11 (overrides the rule)")
    c.add_argument("--profile", type=Path, default=None, metavar="profile.json",
                   help="QIRC profile (`lraee profile`) for INR pruning; default: computed on the calibration split "
                        "and written to DIR/profile.json")
    c.add_argument("--kappa", type=float, default=0.5, help="INR pruning factor (paper Eq. 6, default 0.5)")
    c.add_argument("--viability", type=float, default=0.9,
                   help="pool: heads with gating top-1 >= VIABILITY x the INT8 model's (default 0.9)")
    c.add_argument("--max-candidates", type=int, default=3, help="deepest survivors kept (default 3)")
    p.add_argument("--tap-calib-n", type=int, default=None, metavar="N",
                   help="calibration images of the exit-tap scales (default 512)")
    p.add_argument("--no-exit-tap", action="store_true",
                   help="train and decide on the float block outputs instead of the int8 exit-tap tokens the "
                        "fixed-point exit unit reads (default: exit-tap tokens, scales calibrated per block)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="policy folder")
    p.set_defaults(func=run)


def _read_inr(path: Path, depth: int) -> dict[int, float]:
    from common.errors import InputError

    try:
        rec = json.loads(Path(path).read_text())
        inr = {int(b["block"]): float(b["inr"]) for b in rec["blocks"]}
    except FileNotFoundError:
        raise InputError(f"{path}: file not found; allowed: profile.json written by `lraee profile`") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise InputError(f"{path}: blocks[].inr: unreadable ({e}); allowed: profile.json of `lraee profile`") from None
    missing = [L for L in range(1, depth) if L not in inr]
    if missing:
        raise InputError(f"{path}: blocks: no INR for blocks {missing}; allowed: a profile of this {depth}-block model")
    return inr


def _validate(args, depth: int):
    from common.errors import InputError
    from exitlogic.pruning import parse_exit_layers

    for flag, v, ok in (("--seeds", args.seeds, args.seeds >= 1), ("--epochs", args.epochs, args.epochs >= 1),
                        ("--lr", args.lr, args.lr > 0), ("--head-batch-size", args.head_batch_size,
                                                         args.head_batch_size >= 1),
                        ("--train-n", args.train_n, args.train_n >= 1),
                        ("--gating-fraction", args.gating_fraction, 0 < args.gating_fraction <= 1),
                        ("--kappa", args.kappa, args.kappa >= 0), ("--max-candidates", args.max_candidates,
                                                                  1 <= args.max_candidates <= 4),
                        ("--distill-weight", args.distill_weight, args.distill_weight >= 0),
                        ("--gate-l2", args.gate_l2, args.gate_l2 >= 0)):
        if not ok:
            allowed = {"--gating-fraction": "a fraction in (0, 1]", "--max-candidates": "1..4 (LCT searches 25^C sets)",
                       "--kappa": "a number >= 0", "--distill-weight": "a number >= 0", "--gate-l2": "a number >= 0",
                       "--lr": "a positive number"}.get(flag, "a positive integer")
            raise InputError(f"{flag} {v}: allowed: {allowed}")
    if args.exit_layers is None:
        return None
    try:
        return parse_exit_layers(args.exit_layers, depth)
    except ValueError as e:
        raise InputError(str(e)) from None


def run(args) -> int:
    import time

    from analysis.data.sources import open_source
    from common.errors import InputError
    from analysis.exits import train_exits
    from analysis.features import calibrate_token_tap, get_features, split_request
    from quant.tap import TAP_CALIB_N
    from analysis.templates import resolve_templates
    from exitlogic.heads import HeadTrainConfig
    from quant.prepare import prepare_recipe

    out = Path(args.out)
    check_out_dir(out)
    recipe = recipe_from_args(args)
    if recipe.kind == "fp32":
        raise InputError("--precision fp32: exit heads are trained on a quantized backbone; "
                         "allowed: int8-dynamic, w8a8, wXaY")
    tname, templates = resolve_templates(args.templates)
    enc = load_encoder_from_args(args)
    exit_layers = _validate(args, enc.geometry.depth)
    ref = open_source(args.data, "eval", None, args.classnames)  # the eval source: class names of folder sources
    train_src = open_source(args.train_data or args.data, "train", args.train_n, args.classnames, like=ref)
    gating_src = open_source(args.gating_data or args.data, "gating", args.gating_n, args.classnames, like=ref)
    if train_src.classes != gating_src.classes:
        raise InputError(f"--gating-data {gating_src.name}: classes differ from the training data's; "
                         "allowed: the same class list")
    t0 = time.time()
    prepared = prepare_from_args(args, enc, recipe)
    kw = store_kwargs(args)
    tap_kw = {k: v for k, v in kw.items() if k != "dtype"}
    exit_tap = None
    if not args.no_exit_tap:  # the exit features are those of the int8 tokens the exit unit reads
        calib = open_source(args.calib_data or args.data, "calibration", args.tap_calib_n or TAP_CALIB_N,
                            args.classnames)
        exit_tap = calibrate_token_tap(enc, prepared, calib, range(1, enc.geometry.depth + 1), **tap_kw)
    depth = enc.geometry.depth
    train_fs = get_features(enc, train_src, prepared, tname, templates, **split_request("train", exit_tap, depth), **kw)
    teacher_fs = get_features(enc, train_src, prepare_recipe(enc, "fp32"), tname, templates,
                              **split_request("teacher", None, depth), **kw)
    gating_fs = get_features(enc, gating_src, prepared, tname, templates, **split_request("gating", exit_tap, depth),
                             **kw)
    print(f"features ready in {time.time() - t0:.1f} s (train {len(train_src)}, gating {len(gating_src)})")
    inr = None
    if exit_layers is None:
        if args.profile is not None:
            inr = _read_inr(args.profile, enc.geometry.depth)
        else:
            inr = _profile_inr(args, enc, prepared, out)
    cfg = HeadTrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.head_batch_size,
                          distill_weight=args.distill_weight)
    provenance = {"model": enc.name, "pretrained": enc.pretrained, "precision": recipe.name,
                  "recipe": prepared.descriptor(), "calibration_file": prepared.calibration_path,
                  "templates": tname, "exit_tap": None if exit_tap is None else {
                      **exit_tap.descriptor(), "quantization_point": exit_tap.QUANTIZATION_POINT}}
    meta = train_exits(train_fs, teacher_fs, gating_fs, enc.geometry, out, list(range(args.seeds)), cfg, inr,
                       exit_layers, args.kappa, args.viability, args.max_candidates, args.gating_fraction,
                       args.gate_l2, provenance, device=args.device, progress=not args.no_progress)
    acc = meta["candidates"]["head_accuracy"]
    print("gating top-1 of the SSA heads (mean over seeds): " +
          " ".join(f"L{k}={100 * v:.1f}%" for k, v in acc.items()))
    print(f"candidate layers {meta['candidates']['candidate_layers']}; wrote {out / 'policy.json'}")
    return 0


def _profile_inr(args, enc, prepared, out: Path) -> dict[int, float]:
    """QIRC profile on the calibration split (what `lraee profile` writes), saved to DIR/profile.json."""
    from common import atomic
    from analysis.data.sources import open_source
    from analysis.data.loader import image_batches
    from quant.profile import qirc_profile

    src = open_source(args.data, "calibration", 512, args.classnames)
    prof = qirc_profile(enc.model.visual, prepared,
                        (x.to(args.device) for _, x in image_batches(enc, src, args.batch_size)), enc.geometry.depth)
    atomic.write_json(out / "profile.json", {"model": enc.name, "precision": prepared.recipe.name,
                                             "dataset": src.name, "split": "calibration", "n": prof["n"],
                                             "blocks": prof["blocks"]})
    print(f"QIRC profile on {src.name} -> {out / 'profile.json'}")
    return {int(b["block"]): float(b["inr"]) for b in prof["blocks"]}
