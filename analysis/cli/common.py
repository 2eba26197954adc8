"""Argument groups shared by several ``lraee`` commands."""
from __future__ import annotations

import argparse
from pathlib import Path

from analysis.settings import DEVICES, parse_device  # noqa: F401  (the one device rule)
from common.errors import InputError


# ---- flags -> settings sections (analysis.settings: the one schema argparse fills) ---------------
MODEL_FLAGS = {"name": "--model", "pretrained": "--pretrained", "force_quick_gelu": "--force-quick-gelu"}
PRECISION_FLAGS = {"recipe": "--precision", "scales": "--scales", "calib_method": "--calib-method",
                   "calib_n": "--calib-n", "engine": "--engine"}
DATA_FLAGS = {"source": "--data", "train_source": "--train-data", "gating_source": "--gating-data",
              "calibration_source": "--calib-data", "classnames": "--classnames", "templates": "--templates",
              "train_n": "--train-n", "gating_n": "--gating-n", "eval_n": "--n", "profile_n": "--tap-calib-n"}
RUNTIME_FLAGS = {"batch_size": "--batch-size", "device": "--device", "cache_dir": "--cache-dir",
                 "workers": "--workers", "store_dtype": "--store-dtype"}


def model_settings(args, base=None):
    """:class:`analysis.settings.ModelCfg` from the model flags (unset flags keep ``base``'s values)."""
    from analysis.settings import ModelCfg, from_args

    return from_args(ModelCfg, args, MODEL_FLAGS, base)


def precision_settings(args, base=None):
    """:class:`analysis.settings.PrecisionCfg` from the precision flags (the recipe is parsed: one-line error)."""
    from analysis.settings import PrecisionCfg, from_args

    cfg = from_args(PrecisionCfg, args, PRECISION_FLAGS, base)
    recipe_from_args(argparse.Namespace(**{**vars(args), "precision": cfg.recipe, "scales": cfg.scales,
                                           "calib_n": cfg.calib_n}))
    return cfg


def data_settings(args, base=None):
    """:class:`analysis.settings.DataCfg` from the data and split flags."""
    from analysis.settings import DataCfg, from_args

    return from_args(DataCfg, args, DATA_FLAGS, base)


def session_from_args(args):
    """A :class:`analysis.workflows.Session` with the runtime flags (and ``--no-progress``)."""
    from analysis.settings import RuntimeCfg, from_args
    from analysis.workflows import Session

    return Session(from_args(RuntimeCfg, args, RUNTIME_FLAGS), progress=not getattr(args, "no_progress", False))


def policy_backbone(args, policy):
    """(model, precision, data) for a downstream command: the policy's recorded settings with the flags given
    on the command line as overrides (checked against the policy by :func:`analysis.workflows.backbone_of`)."""
    from analysis.settings import DataCfg, ModelCfg, PrecisionCfg

    rec = policy.meta.get("settings") or {}
    bases = [cls(**rec[k]) if k in rec else None for k, cls in (("model", ModelCfg), ("precision", PrecisionCfg),
                                                                  ("data", DataCfg))]
    return model_settings(args, bases[0]), precision_settings(args, bases[1]), data_settings(args, bases[2])


def add_backbone_overrides(p: argparse.ArgumentParser) -> None:
    """The flags of a command that reads a policy: model, precision and data (each defaulting to the policy's
    recorded settings, :func:`policy_backbone`) and the runtime flags."""
    add_model_args(p, overrides=True)
    add_precision_arg(p, overrides=True)
    add_data_args(p, overrides=True)
    add_runtime_args(p)


def add_model_args(p: argparse.ArgumentParser, overrides: bool = False) -> None:
    """The model flags; with ``overrides`` (commands that read a policy) they default to the policy's."""
    g = p.add_argument_group("model" + (" (default: the policy's)" if overrides else ""))
    g.add_argument("--model", default=None if overrides else "tiny",
                   help="open_clip ViT config name (ViT-B-32, ViT-B-32-quickgelu, ...) or 'tiny' (embedded default)")
    g.add_argument("--pretrained", default=None, metavar="PATH",
                   help="local checkpoint (.pt/.pth/.bin/.safetensors); tiny defaults to the shipped weights")
    g.add_argument("--force-quick-gelu", action="store_true", default=None if overrides else False,
                   help="build with QuickGELU (OpenAI weights under a plain ViT-* name)")


def add_calibration_args(g, overrides: bool = False) -> None:
    """``--scales``, ``--calib-method`` and ``--calib-n``: how a static INT8 recipe is calibrated (defaults from
    :class:`analysis.settings.PrecisionCfg`; None with ``overrides``: the policy's)."""
    from analysis.settings import PrecisionCfg, default
    from quant.recipes import CALIB_METHODS, SCALES

    d = (lambda f: None) if overrides else (lambda f: default(PrecisionCfg, f))
    g.add_argument("--scales", default=d("scales"), choices=SCALES,
                   help="static INT8 recipes: power-of-two scales (default, what integer hardware shifts by) or float")
    g.add_argument("--calib-method", default=d("calib_method"), choices=CALIB_METHODS,
                   help="activation calibration statistic (default percentile = abs 99.999th percentile)")
    g.add_argument("--calib-n", type=int, default=d("calib_n"), help="calibration images (default 512)")


def check_calib_n(n: int | None) -> None:
    """One-line error unless ``--calib-n`` is a positive number of images."""
    if n is None or n <= 0:
        raise InputError(f"--calib-n {n}: calibration needs at least one image; allowed: a positive integer")


def add_precision_arg(p: argparse.ArgumentParser, default: str | None = "fp32", overrides: bool = False) -> None:
    """``--precision`` (validated by :func:`recipe_from_args`, one-line error) and the INT8 recipe flags; with
    ``overrides`` (commands that read a policy) every flag defaults to the policy's."""
    from quant.recipes import ALLOWED_TEXT

    g = p.add_argument_group("precision" + (" (default: the policy's)" if overrides else ""))
    g.add_argument("--precision", default=None if overrides else default, metavar="P",
                   help=f"precision recipe: {ALLOWED_TEXT}" + ("" if overrides else f" (default {default})"))
    add_calibration_args(g, overrides)
    g.add_argument("--calibration", default=None, metavar="FILE.safetensors",
                   help="saved calibration (`lraee calibrate`); default: " + (
                       "the policy's" if overrides else "the cached one for this model and recipe, created on "
                                                        "first use"))
    g.add_argument("--calib-data", default=None,
                   help="calibration data source (default: the train source; --data's calibration split for "
                        "procedural)")
    g.add_argument("--engine", default=None if overrides else "fast", choices=("fast", "brevitas"),
                   help="static INT8 recipes: bit-identical fast path (default) or the Brevitas model itself")


def recipe_from_args(args):
    """Validate ``--precision``/``--scales``/``--calib-n`` before any work; returns a :class:`quant.recipes.Recipe`."""
    from quant.recipes import parse_precision

    recipe = parse_precision(args.precision, getattr(args, "scales", "po2"))
    if recipe.needs_calibration and getattr(args, "calibration", None) is None:
        check_calib_n(getattr(args, "calib_n", 512))
    return recipe


def add_data_args(p: argparse.ArgumentParser, default_split: str = "eval", overrides: bool = False) -> None:
    """The data flags; with ``overrides`` (commands that read a policy) they default to the policy's."""
    g = p.add_argument_group("data" + (" (default: the policy's)" if overrides else ""))
    g.add_argument("--data", default=None if overrides else "procedural",
                   help="procedural[:SEED] (default), folder:PATH (ImageFolder) or imagenet:PATH (val, folder layout)")
    g.add_argument("--split", default=default_split,
                   help="procedural split: train, calibration, gating, eval (default %(default)s)")
    g.add_argument("--n", type=int, default=None, help="number of images (default: the split's size / all files)")
    g.add_argument("--classnames", default=None, metavar="FILE.json",
                   help="folder sources: JSON folder->name map or list of names")
    g.add_argument("--templates", default=None if overrides else "paper",
                   help="prompt templates: paper (5), simple (7), openai (80) or a text file (default paper)")


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
                   help="image-decoding worker processes (default: CPU count - 1, at most 8, and 0 on the CPU with two cores or fewer; 0: in the main process)")
    g.add_argument("--store-dtype", choices=("float32", "float16"), default="float32",
                   help="dtype of the stored block features (float16 halves the feature store; default float32)")


def check_out_file(path: Path, suffix: str, flag: str = "--out") -> Path:
    """Validate an output file path before any work is done (:func:`common.atomic.check_out_file`)."""
    from common.atomic import check_out_file as check

    return check(path, flag, suffix)


def check_out_dir(path: Path, flag: str = "--out") -> Path:
    """Validate an output folder path before any work is done, it may not exist yet
    (:func:`common.atomic.check_out_dir`: not empty, not a file, not under a file, writable)."""
    from common.atomic import check_out_dir as check

    return check(path, flag)
