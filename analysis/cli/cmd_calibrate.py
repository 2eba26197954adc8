"""``lraee calibrate``: calibrate a static INT8 recipe and save its state (safetensors + JSON)."""
from __future__ import annotations

from pathlib import Path

from analysis.cli.common import (DEVICES, add_calibration_args, add_model_args, check_calib_n, check_out_file,
                                 device_arg, positive_int_arg)


def register(sub) -> None:
    from quant.recipes import static_allowed_text

    p = sub.add_parser("calibrate", help="calibrate a w8a8 / wXaY recipe and save the state",
                       description="Runs the calibration split through the Brevitas model (quantization off, "
                                   "activation statistics on) and writes FILE.safetensors (the activation "
                                   "quantizer tensors) and FILE.json (model, weights SHA-256, recipe, method, n, "
                                   "data, state SHA-256). Give the file to eval/features/profile with --calibration.")
    add_model_args(p)
    p.add_argument("--precision", default="w8a8", metavar="P",
                   help=f"static recipe: {static_allowed_text()}")
    add_calibration_args(p)
    p.add_argument("--data", default="procedural",
                   help="procedural[:SEED] (its calibration split, default), folder:PATH or imagenet:PATH")
    p.add_argument("--batch-size", type=positive_int_arg, default=64, help="images per batch (default 64)")
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
    from analysis.cli.common import data_settings, model_settings, precision_settings, session_from_args
    from analysis.workflows import calibrate

    out = check_out_file(args.out, ".safetensors")
    precision = precision_settings(args)
    check_calib_n(precision.calib_n)
    session = session_from_args(args)
    cal = calibrate(session, model_settings(args), precision, data_settings(args), out, check_exact=args.check_exact)
    if cal.exactness is not None and precision.scales == "po2" and not cal.exactness["all_exact"]:
        return 1
    return 0
