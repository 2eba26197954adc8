"""Argument groups shared by several ``lraee`` commands."""
from __future__ import annotations

import argparse
from pathlib import Path

from analysis.errors import InputError


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default="tiny",
                   help="open_clip ViT config name (ViT-B-32, ViT-B-32-quickgelu, ...) or 'tiny' (embedded default)")
    g.add_argument("--pretrained", default=None, metavar="PATH",
                   help="local checkpoint (.pt/.pth/.bin/.safetensors); tiny defaults to the shipped weights")
    g.add_argument("--force-quick-gelu", action="store_true",
                   help="build with QuickGELU (OpenAI weights under a plain ViT-* name)")


def add_precision_arg(p: argparse.ArgumentParser) -> None:
    from quant.precision import PRECISIONS

    p.add_argument("--precision", default="fp32", choices=PRECISIONS, help="precision recipe (default fp32)")


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


def load_encoder_from_args(args):
    from quant.encoder import load_encoder

    return load_encoder(args.model, args.pretrained, device=getattr(args, "device", "cpu"),
                        force_quick_gelu=args.force_quick_gelu)
