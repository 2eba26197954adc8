"""Argument groups shared by several ``lraee`` commands."""
from __future__ import annotations

import argparse
from pathlib import Path

from common.errors import InputError


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default="tiny",
                   help="open_clip ViT config name (ViT-B-32, ViT-B-32-quickgelu, ...) or 'tiny' (embedded default)")
    g.add_argument("--pretrained", default=None, metavar="PATH",
                   help="local checkpoint (.pt/.pth/.bin/.safetensors); tiny defaults to the shipped weights")
    g.add_argument("--force-quick-gelu", action="store_true",
                   help="build with QuickGELU (OpenAI weights under a plain ViT-* name)")


def add_calibration_args(g) -> None:
    """``--scales``, ``--calib-method`` and ``--calib-n``: how a static INT8 recipe is calibrated."""
    from quant.recipes import CALIB_METHODS, SCALES

    g.add_argument("--scales", default="po2", choices=SCALES,
                   help="static INT8 recipes: power-of-two scales (default, what integer hardware shifts by) or float")
    g.add_argument("--calib-method", default="percentile", choices=CALIB_METHODS,
                   help="activation calibration statistic (default percentile = abs 99.999th percentile)")
    g.add_argument("--calib-n", type=int, default=512, help="calibration images (default 512)")


def check_calib_n(n: int | None) -> None:
    """One-line error unless ``--calib-n`` is a positive number of images."""
    if n is None or n <= 0:
        raise InputError(f"--calib-n {n}: calibration needs at least one image; allowed: a positive integer")


def add_precision_arg(p: argparse.ArgumentParser, default: str = "fp32") -> None:
    """``--precision`` (validated by :func:`recipe_from_args`, one-line error) and the INT8 recipe flags."""
    from quant.recipes import ALLOWED_TEXT

    g = p.add_argument_group("precision")
    g.add_argument("--precision", default=default, metavar="P",
                   help=f"precision recipe: {ALLOWED_TEXT} (default {default})")
    add_calibration_args(g)
    g.add_argument("--calibration", default=None, metavar="FILE.safetensors",
                   help="saved calibration (`lraee calibrate`); default: the cached one for this model and recipe, "
                        "created on first use")
    g.add_argument("--calib-data", default=None,
                   help="calibration data source (default: --data, its calibration split for procedural)")
    g.add_argument("--engine", default="fast", choices=("fast", "brevitas"),
                   help="static INT8 recipes: bit-identical fast path (default) or the Brevitas model itself")


def recipe_from_args(args):
    """Validate ``--precision``/``--scales``/``--calib-n`` before any work; returns a :class:`quant.recipes.Recipe`."""
    from quant.recipes import parse_precision

    recipe = parse_precision(args.precision, getattr(args, "scales", "po2"))
    if recipe.needs_calibration and getattr(args, "calibration", None) is None:
        check_calib_n(getattr(args, "calib_n", 512))
    return recipe


def prepare_from_args(args, enc, recipe=None):
    """Build the recipe's image tower (:func:`quant.prepare.prepare_recipe`) from the precision flags."""
    from quant.prepare import prepare_recipe

    recipe = recipe or recipe_from_args(args)
    return prepare_recipe(enc, recipe, calibration=getattr(args, "calibration", None),
                          calib_method=getattr(args, "calib_method", "percentile"),
                          calib_n=getattr(args, "calib_n", 512),
                          calib_data=getattr(args, "calib_data", None) or getattr(args, "data", "procedural"),
                          engine=getattr(args, "engine", "fast"), batch_size=getattr(args, "batch_size", 64),
                          device=getattr(args, "device", "cpu"), progress=not getattr(args, "no_progress", False))


def add_data_args(p: argparse.ArgumentParser, default_split: str = "eval") -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", default="procedural",
                   help="procedural[:SEED] (default), folder:PATH (ImageFolder) or imagenet:PATH (val, folder layout)")
    g.add_argument("--split", default=default_split,
                   help="procedural split: train, calibration, gating, eval (default %(default)s)")
    g.add_argument("--n", type=int, default=None, help="number of images (default: the split's size / all files)")
    g.add_argument("--classnames", default=None, metavar="FILE.json",
                   help="folder sources: JSON folder->name map or list of names")
    g.add_argument("--templates", default="paper",
                   help="prompt templates: paper (5), simple (7), openai (80) or a text file (default paper)")


def add_runtime_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("runtime")
    g.add_argument("--batch-size", type=int, default=64, help="images per backbone batch (default 64)")
    g.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    g.add_argument("--cache-dir", type=Path, default=None,
                   help="feature cache folder (default .lraee-cache/features)")
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")


def check_out_file(path: Path, suffix: str, flag: str = "--out") -> Path:
    """Validate an output file path before any work is done."""
    if path.suffix.lower() != suffix:
        raise InputError(f"{flag} {path}: expected a {suffix} file")
    if path.exists() and path.is_dir():
        raise InputError(f"{flag} {path}: is a directory")
    return path


def check_out_dir(path: Path, flag: str = "--out") -> Path:
    """Validate an output folder path before any work is done (it may not exist yet)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{flag} {path}: exists and is not a folder")
    return path


def load_encoder_from_args(args):
    from quant.encoder import load_encoder

    return load_encoder(args.model, args.pretrained, device=getattr(args, "device", "cpu"),
                        force_quick_gelu=args.force_quick_gelu)
