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
    from analysis.data.loader import calibration_images
    from quant.prepare import prepare_recipe

    recipe = recipe or recipe_from_args(args)
    calib = None
    if recipe.needs_calibration and getattr(args, "calibration", None) is None:
        calib = calibration_images(enc, getattr(args, "calib_data", None) or getattr(args, "data", "procedural"),
                                   getattr(args, "calib_n", 512), getattr(args, "workers", None))
    return prepare_recipe(enc, recipe, calibration=getattr(args, "calibration", None),
                          calib_method=getattr(args, "calib_method", "percentile"), calib_images=calib,
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


DEVICES = "cpu, cuda or cuda:N"


def parse_device(text: str, flag: str = "--device", check_available: bool = False) -> str:
    """The one rule for a device string (``--device``, ``runtime.device``): ``cpu``, ``cuda`` or
    ``cuda:N``; with ``check_available``, CUDA must be present. InputError (one line) otherwise."""
    import re

    d = str(text).strip()
    at = f"{flag} " if flag else ""
    if not re.fullmatch(r"cpu|cuda(:\d+)?", d):
        raise InputError(f"{at}{text!r}: unknown device; allowed: {DEVICES}")
    if check_available and d.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise InputError(f"{at}{d}: CUDA is not available here; allowed: cpu")
        if ":" in d and int(d.split(":")[1]) >= torch.cuda.device_count():
            raise InputError(f"{at}{d}: no such CUDA device; allowed: cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return d


def device_arg(text: str) -> str:
    """argparse ``type`` of ``--device`` (:func:`parse_device`)."""
    try:
        return parse_device(text)
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--device ")) from None


def positive_int_arg(text: str) -> int:
    """argparse ``type`` of counts that must be >= 1 (``--batch-size``)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer; allowed: a positive integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v}; allowed: a positive integer")
    return v


def add_runtime_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("runtime")
    g.add_argument("--batch-size", type=positive_int_arg, default=64, help="images per backbone batch (default 64)")
    g.add_argument("--device", type=device_arg, default="cpu", help=f"{DEVICES} (default cpu)")
    g.add_argument("--cache-dir", type=Path, default=None,
                   help="feature cache folder (default .lraee-cache/features)")
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")
    g.add_argument("--workers", type=int, default=None, metavar="W",
                   help="image-decoding worker processes (default: CPU count - 1, at most 8; 0: in the main process)")
    g.add_argument("--store-dtype", choices=("float32", "float16"), default="float32",
                   help="dtype of the stored block features (float16 halves the feature store; default float32)")


def store_kwargs(args) -> dict:
    """The feature-store keywords of the runtime flags (for :func:`analysis.features.get_features`)."""
    from analysis.features import DEFAULT_CACHE_DIR
    from common.errors import InputError

    if args.workers is not None and args.workers < 0:
        raise InputError(f"--workers {args.workers}: allowed: an integer >= 0")
    return dict(cache_dir=args.cache_dir or DEFAULT_CACHE_DIR, batch_size=args.batch_size, device=args.device,
                progress=not args.no_progress, workers=args.workers, dtype=args.store_dtype)


def check_out_file(path: Path, suffix: str, flag: str = "--out") -> Path:
    """Validate an output file path before any work is done (:func:`common.atomic.check_out_file`)."""
    from common.atomic import check_out_file as check

    return check(path, flag, suffix)


def check_out_dir(path: Path, flag: str = "--out") -> Path:
    """Validate an output folder path before any work is done, it may not exist yet
    (:func:`common.atomic.check_out_dir`: not empty, not a file, not under a file, writable)."""
    from common.atomic import check_out_dir as check

    return check(path, flag)


def load_encoder_from_args(args):
    from quant.encoder import load_encoder

    return load_encoder(args.model, args.pretrained, device=getattr(args, "device", "cpu"),
                        force_quick_gelu=args.force_quick_gelu)
