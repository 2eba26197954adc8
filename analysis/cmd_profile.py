"""``lraee profile``: the QIRC layer-wise noise profile of a quantization recipe (profile.json, profile.png)."""
from __future__ import annotations

from pathlib import Path

from analysis.cli_common import (add_data_args, add_model_args, add_precision_arg, add_runtime_args, check_out_dir,
                                 load_encoder_from_args, prepare_from_args, recipe_from_args)


def register(sub) -> None:
    p = sub.add_parser("profile", help="QIRC profile: per-block quantization noise vs FP32 (JSON + PNG)",
                       description="Runs the FP32 and the quantized image tower on the same images and writes "
                                   "DIR/profile.json (one record per block: d_nat, d_quant, ratio, "
                                   "cos_int8_fp32_pooled, cos_int8_fp32_token_mean, mse, inr, act_absmax, "
                                   "act_kurtosis; definitions in quant/profile.py) and DIR/profile.png.")
    add_model_args(p)
    add_precision_arg(p, default="w8a8")
    add_data_args(p, default_split="calibration")
    add_runtime_args(p)
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    p.set_defaults(func=run)


def run(args) -> int:
    from tqdm import tqdm

    from common import atomic
    from analysis.data.sources import open_source
    from common.errors import InputError
    from analysis.data.loader import image_batches
    from analysis.features import DEFAULT_CACHE_DIR, save_token_tap
    from quant.profile import plot_profile, qirc_profile
    from quant.tap import TAP_PERCENTILE, TapScaleCounter

    out = Path(args.out)
    check_out_dir(out)
    if args.batch_size <= 0:
        raise InputError(f"--batch-size {args.batch_size}: must be a positive integer")
    recipe = recipe_from_args(args)
    if recipe.kind == "fp32":
        raise InputError("--precision fp32: the profile compares a quantized recipe with FP32; "
                         "allowed: int8-dynamic, w8a8, wXaY")
    source = open_source(args.data, args.split, args.n, args.classnames)
    if len(source) == 0:
        raise InputError(f"--n {args.n}: no images to profile; allowed: a positive number")
    enc = load_encoder_from_args(args)
    prepared = prepare_from_args(args, enc, recipe)
    bar = tqdm(total=len(source), desc=f"profile {prepared.tag}", unit="img", disable=args.no_progress)
    # the same INT8 pass counts the exit-tap scales of every block (quant.tap), recorded in the tap cache
    counter = TapScaleCounter(range(1, enc.geometry.depth + 1), TAP_PERCENTILE)
    prof = qirc_profile(enc.model.visual, prepared,
                        (x.to(args.device) for _, x in image_batches(enc, source, args.batch_size,
                                                                      workers=args.workers, device=args.device)),
                        enc.geometry.depth, bar, observe=counter.update_taps)
    bar.close()
    save_token_tap(enc, prepared, source, counter, args.cache_dir or DEFAULT_CACHE_DIR)
    record = {"model": enc.name, "pretrained": enc.pretrained, "precision": recipe.name,
              "recipe": prepared.descriptor(), "engine": prepared.engine,
              "calibration_file": prepared.calibration_path, "dataset": source.name, "split": args.split,
              "n": prof["n"], "depth": enc.geometry.depth, "cos_embedding": prof["cos_embedding"],
              "definitions": "see quant/profile.py (Eq. 1 and 5 of the paper)", "blocks": prof["blocks"]}
    out.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(out / "profile.png") as tmp:
        plot_profile(prof, tmp, f"QIRC profile: {enc.name} {prepared.tag} vs FP32, {source.name} (n={prof['n']})")
    atomic.write_json(out / "profile.json", record)
    w = 8
    print(f"{'block':>5} {'d_nat':>{w}} {'d_quant':>{w}} {'ratio%':>{w}} {'cos_pool':>{w}} {'mse':>{w}} "
          f"{'inr':>{w}} {'absmax':>{w}} {'kurt':>{w}}")
    for r in prof["blocks"]:
        print(f"{r['block']:>5} {r['d_nat']:>{w}.4g} {r['d_quant']:>{w}.4g} {100 * r['ratio']:>{w}.2f} "
              f"{r['cos_int8_fp32_pooled']:>{w}.4f} {r['mse']:>{w}.3g} {r['inr']:>{w}.4g} "
              f"{r['act_absmax']:>{w}.4g} {r['act_kurtosis']:>{w}.3g}")
    print(f"cos(final embedding) {prof['cos_embedding']:.4f}; wrote {out / 'profile.json'} and {out / 'profile.png'}")
    return 0
