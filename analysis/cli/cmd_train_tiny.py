"""``lraee train-tiny``: (re)train the embedded tiny CLIP on the procedural train split.

With no training flags it runs the shipped checkpoint's recipe (``SHIPPED_RECIPE``: two
stages, the second continuing from the first). Any training flag runs one stage with the
defaults of :class:`analysis.train_tiny.TrainConfig` overridden by the flags given.
"""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from common.errors import InputError


def register(sub) -> None:
    from analysis.train_tiny import TrainConfig
    from quant.encoder import TINY_WEIGHTS

    p = sub.add_parser("train-tiny", help="train the embedded tiny CLIP (no flags: the shipped checkpoint's recipe)",
                       description="Contrastive training over class prompts on the procedural train split; writes "
                                   "fp16 safetensors plus a JSON sidecar. Without training flags this runs the "
                                   "shipped two-stage recipe (about 1.5 h on 2 CPU cores); with any flag, one stage.")
    p.add_argument("--out", type=Path, default=TINY_WEIGHTS,
                   help="checkpoint path (.safetensors; default: the shipped one)")
    for f in fields(TrainConfig):
        p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=None,
                       help=f"one-stage run; default {f.default!r}")
    p.set_defaults(func=run)


def run(args) -> int:
    from analysis.train_tiny import SHIPPED_RECIPE, TrainConfig, train_recipe

    from common.atomic import check_out_file

    check_out_file(args.out, "--out", ".safetensors")
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name) is not None}
    for name, value in given.items():
        if name in ("n_train", "steps", "batch_size", "threads", "monitor_every", "monitor_n") and value <= 0:
            raise InputError(f"--{name.replace('_', '-')} {value}: must be positive")
    if "init" in given and not Path(given["init"]).is_file():
        raise InputError(f"--init {given['init']}: checkpoint file not found")
    stages = (TrainConfig(**given),) if given else SHIPPED_RECIPE
    meta = train_recipe(stages, args.out)
    print(f"wrote {args.out} (monitor top-1 {meta['history'][-1]['monitor_top1']:.3f} on the gating split)")
    return 0
