"""``lraee eval``: zero-shot top-1/top-5 and mean per-class recall, as a table and JSON."""
from __future__ import annotations

from pathlib import Path

from analysis.cli.common import (add_data_args, add_model_args, add_precision_arg, add_runtime_args,
                                 check_out_file, data_settings, model_settings, precision_settings, recipe_from_args,
                                 session_from_args)


def register(sub) -> None:
    p = sub.add_parser("eval", help="zero-shot evaluation (top-1, top-5, mean per-class recall)",
                       description="Zero-shot classification with prompt-ensemble class embeddings. Writes "
                                   "{model, pretrained, dataset, precision, templates, n, top1, top5, "
                                   "mean_per_class_recall} (fractions in [0, 1]); INT8 recipes add the FP32 "
                                   "figures of the same images (fp32_top1, fp32_top5, delta_top1) and the "
                                   "recipe and calibration used.")
    add_model_args(p)
    add_precision_arg(p)
    add_data_args(p)
    add_runtime_args(p)
    p.add_argument("--out", type=Path, required=True, metavar="FILE.json", help="result file (written atomically)")
    p.set_defaults(func=run)


def run(args) -> int:
    from common import atomic
    from analysis.data.sources import open_source
    from analysis.features import get_features
    from analysis.templates import resolve_templates
    from analysis.zeroshot import metrics

    out = check_out_file(args.out, ".json")
    recipe = recipe_from_args(args)
    source = open_source(args.data, args.split, args.n, args.classnames)
    tname, templates = resolve_templates(args.templates)
    session = session_from_args(args)
    enc = session.encoder(model_settings(args))
    prepared = session.recipe(enc, precision_settings(args), args.calibration, data_settings(args))
    kw = session.store_kwargs()
    fs = get_features(enc, source, prepared, tname, templates, fields="embedding", **kw)
    m = metrics(fs["top5"], fs["labels"], len(source.classes))
    result = {"model": enc.name, "pretrained": enc.pretrained, "dataset": source.name,
              "precision": recipe.name, "templates": tname, **m}
    rows = [("model", enc.name), ("pretrained", enc.pretrained or "-"), ("dataset", source.name),
            ("precision", recipe.name), ("templates", f"{tname} ({len(templates)})"), ("n", m["n"]),
            ("top1", f"{100 * m['top1']:.2f} %"), ("top5", f"{100 * m['top5']:.2f} %"),
            ("mean per-class recall", f"{100 * m['mean_per_class_recall']:.2f} %")]
    if recipe.kind != "fp32":
        f32 = get_features(enc, source, "fp32", tname, templates, fields="embedding", **kw)
        mf = metrics(f32["top5"], f32["labels"], len(source.classes))
        agree = float((fs["top5"][:, 0] == f32["top5"][:, 0]).mean()) if m["n"] else 0.0
        result.update({"fp32_top1": mf["top1"], "fp32_top5": mf["top5"], "delta_top1": m["top1"] - mf["top1"],
                       "top1_agreement_with_fp32": agree, "recipe": prepared.descriptor(),
                       "engine": prepared.engine, "calibration_file": prepared.calibration_path})
        rows += [("fp32 top1", f"{100 * mf['top1']:.2f} %"), ("fp32 top5", f"{100 * mf['top5']:.2f} %"),
                 ("delta top1", f"{100 * (m['top1'] - mf['top1']):+.2f} %p"),
                 ("top1 agreement with fp32", f"{100 * agree:.2f} %")]
        if recipe.is_static:
            rows += [("scales / calibration", f"{recipe.scales} / {prepared.calibration.get('method')}, "
                                              f"n={prepared.calibration.get('n')}")]
    w = max(len(r[0]) for r in rows)
    for k, v in rows:
        print(f"{k:<{w}}  {v}")
    atomic.write_json(out, result)
    print(f"wrote {out}")
    return 0
