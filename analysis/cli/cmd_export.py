"""``lraee export``: QONNX export of a calibrated static INT8 image tower, checked by executing it."""
from __future__ import annotations

from pathlib import Path

from analysis.cli.common import add_model_args, add_precision_arg, check_out_file


def register(sub) -> None:
    p = sub.add_parser("export", help="export the w8a8 / wXaY image tower to QONNX and check it runs",
                       description="Exports the calibrated Brevitas tower (images -> embedding) with "
                                   "brevitas.export.export_qonnx, executes the file with qonnx on sample images "
                                   "and compares it with the Brevitas model, per Quant node (integer codes equal, "
                                   "max difference in LSBs; free-running and with each node's inputs re-fed from "
                                   "Brevitas) and on the embedding (cosine, max |diff|, zero-shot top-1 agreement). "
                                   "Writes FILE.onnx and FILE.json.")
    add_model_args(p)
    add_precision_arg(p, default="w8a8")
    p.add_argument("--data", default="procedural", help="data for calibration and the check (default procedural)")
    p.add_argument("--check-n", type=int, default=4, help="sample images for the check (default 4)")
    p.add_argument("--templates", default="paper", help="prompt templates for the top-1 agreement (default paper)")
    p.add_argument("--float64", action="store_true",
                   help="also export and execute a float64 copy (onnx reference ops): shows that code "
                        "differences come from float32 rounding, not from the graph")
    p.add_argument("--crosscheck", action="store_true",
                   help="also run the first image through qonnx.core.onnx_exec.execute_onnx itself (seconds)")
    p.add_argument("--out", type=Path, required=True, metavar="FILE.onnx", help="exported model")
    p.set_defaults(func=run)


def run(args) -> int:
    from common import atomic
    from analysis.cli.common import (data_settings, model_settings, precision_settings, recipe_from_args,
                                     session_from_args)
    from analysis.data.sources import open_source
    from common.errors import InputError
    from analysis.data.loader import image_batches
    from analysis.templates import resolve_templates
    from analysis.zeroshot import class_embeddings
    from quant.qonnx_export import check_packages, roundtrip, summary

    out = check_out_file(args.out, ".onnx")
    recipe = recipe_from_args(args)
    if not recipe.is_static:
        from quant.recipes import static_allowed_text

        raise InputError(f"--precision {args.precision}: QONNX export is for the Brevitas recipes; "
                         f"allowed: {static_allowed_text()}")
    if args.check_n <= 0:
        raise InputError(f"--check-n {args.check_n}: allowed: a positive integer")
    check_packages()
    templates_name, templates = resolve_templates(args.templates)
    session = session_from_args(args)
    enc = session.encoder(model_settings(args))
    args.engine = "brevitas"
    prepared = session.recipe(enc, precision_settings(args), args.calibration, data_settings(args))
    src = open_source(args.data, "eval", args.check_n)
    _, images = next(image_batches(enc, src, args.check_n))
    text = class_embeddings(enc.model, enc.tokenizer, src.classes, templates)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.export-tmp.onnx")
    try:
        rec = roundtrip(prepared.brevitas, images, tmp, text_features=text, crosscheck=args.crosscheck,
                        float64=args.float64)  # nothing under the final name unless it ran
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    rec["path"] = str(out)
    rec.update({"model": enc.name, "precision": recipe.name, "recipe": prepared.descriptor(),
                "calibration_file": prepared.calibration_path, "data": src.name, "templates": templates_name})
    atomic.write_json(out.with_suffix(".json"), rec)
    print(f"wrote {out}: {rec['quant_nodes']} Quant nodes")
    print(summary(rec))
    return 0
