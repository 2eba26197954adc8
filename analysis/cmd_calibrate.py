"""``lraee calibrate``: calibrate a static INT8 recipe and save its state (safetensors + JSON)."""
from __future__ import annotations

from pathlib import Path

from analysis.cli_common import (DEVICES, add_calibration_args, device_arg, add_model_args, check_calib_n, check_out_file,
                                 load_encoder_from_args)


def register(sub) -> None:
    from quant.recipes import ALLOWED_TEXT

    p = sub.add_parser("calibrate", help="calibrate a w8a8 / wXaY recipe and save the state",
                       description="Runs the calibration split through the Brevitas model (quantization off, "
                                   "activation statistics on) and writes FILE.safetensors (the activation "
                                   "quantizer tensors) and FILE.json (model, weights SHA-256, recipe, method, n, "
                                   "data, state SHA-256). Give the file to eval/features/profile with --calibration.")
    add_model_args(p)
    p.add_argument("--precision", default="w8a8", metavar="P",
                   help=f"static recipe: w8a8 or wXaY (X, Y in 2..16); allowed overall: {ALLOWED_TEXT}")
    add_calibration_args(p)
    p.add_argument("--data", default="procedural",
                   help="procedural[:SEED] (its calibration split, default), folder:PATH or imagenet:PATH")
    p.add_argument("--batch-size", type=int, default=64, help="images per batch (default 64)")
    p.add_argument("--device", type=device_arg, default="cpu", help=f"{DEVICES} (default cpu)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--check-exact", action="store_true",
                   help="also prove bit accuracy on one calibration image (numpy integer reference, float64) and "
                        "write FILE.exactness.json: per quantized layer the checks, ULPs, the largest accumulator "
                        "and its bits; exit status 1 if a power-of-two-scale layer is not exact")
    p.add_argument("--out", type=Path, required=True, metavar="FILE.safetensors",
                   help="calibration file (a FILE.json sidecar is written beside it; both atomically)")
    p.set_defaults(func=run)


def run(args) -> int:
    from common.errors import InputError
    from analysis.data.loader import calibration_images
    from quant.prepare import run_calibration
    from quant.recipes import parse_precision

    out = check_out_file(args.out, ".safetensors")
    recipe = parse_precision(args.precision, args.scales)
    if not recipe.needs_calibration:
        raise InputError(f"--precision {args.precision}: {recipe.name} needs no calibration; allowed: w8a8 or wXaY")
    check_calib_n(args.calib_n)
    enc = load_encoder_from_args(args)
    qv, meta = run_calibration(enc, recipe, args.calib_method, calibration_images(enc, args.data, args.calib_n),
                               args.batch_size, args.device, progress=not args.no_progress, out=out)
    print(f"calibrated {enc.name} {recipe.name} ({recipe.scales} scales, {args.calib_method}) on {meta['n']} "
          f"images of {meta['data']}; state {meta['state_sha256'][:12]} -> {out} (+ .json)")
    if args.check_exact:
        from common import atomic
        from analysis.data.sources import open_source
        from analysis.data.loader import image_batches
        from quant.exactness import check_exactness, summary

        _, x = next(image_batches(enc, open_source(args.data, "calibration", 1), 1))
        s = summary(check_exactness(qv, x))
        s.update({"model": enc.name, "recipe": recipe.descriptor(), "calibration_file": str(out), "images": 1})
        path = out.with_name(out.name[: -len(".safetensors")] + ".exactness.json")
        atomic.write_json(path, s)
        print(f"bit accuracy: {s['layers']} quantized layers/matmuls, all exact: {s['all_exact']}, worst ULP "
              f"{s['ulp_max']:.3g}, widest accumulator {s['acc_bits_max']} bits -> {path}")
        if recipe.scales == "po2" and not s["all_exact"]:
            return 1
    return 0
