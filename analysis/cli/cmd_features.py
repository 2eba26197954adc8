"""``lraee features``: build (or reuse) the per-block feature cache of one data split."""
from __future__ import annotations

from analysis.cli.common import add_data_args, add_model_args, add_precision_arg, add_runtime_args


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
    from analysis.cli.common import data_settings, model_settings, precision_settings, session_from_args
    from analysis.data.sources import open_source
    from analysis.features import get_features
    from analysis.templates import resolve_templates

    precision = precision_settings(args)
    data = data_settings(args)
    session = session_from_args(args)
    source = open_source(data.source, args.split, args.n, data.classnames)
    tname, templates = resolve_templates(data.templates)
    enc = session.encoder(model_settings(args))
    prepared = session.recipe(enc, precision, args.calibration, data)
    fs = get_features(enc, source, prepared, tname, templates, **session.store_kwargs())
    print(f"{'reused' if fs.hit else 'built'} {fs.path} ({len(fs['labels'])} images, "
          f"{enc.geometry.depth} blocks, width {enc.geometry.width})")
    return 0
