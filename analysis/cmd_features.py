"""``lraee features``: build (or reuse) the per-block feature cache of one data split."""
from __future__ import annotations

from analysis.cli_common import (add_data_args, add_model_args, add_precision_arg, add_runtime_args,
                                 load_encoder_from_args, prepare_from_args, recipe_from_args)


def register(sub) -> None:
    p = sub.add_parser("features", help="cache per-block SSA means, CLS tokens, SAV and final predictions",
                       description="One backbone pass per (weights, precision, data, templates); reused when the "
                                   "content hashes match, rebuilt when not.")
    add_model_args(p)
    add_precision_arg(p)
    add_data_args(p)
    add_runtime_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from analysis.data.sources import open_source
    from analysis.cli_common import store_kwargs
    from analysis.features import get_features
    from analysis.templates import resolve_templates

    recipe = recipe_from_args(args)
    source = open_source(args.data, args.split, args.n, args.classnames)
    tname, templates = resolve_templates(args.templates)
    enc = load_encoder_from_args(args)
    prepared = prepare_from_args(args, enc, recipe)
    fs = get_features(enc, source, prepared, tname, templates, **store_kwargs(args))
    print(f"{'reused' if fs.hit else 'built'} {fs.path} ({len(fs['labels'])} images, "
          f"{enc.geometry.depth} blocks, width {enc.geometry.width})")
    return 0
