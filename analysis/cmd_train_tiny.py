"""``lraee train-tiny``: (re)train the embedded tiny CLIP on the procedural train split."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from analysis.errors import InputError


def register(sub) -> None:
    from analysis.train_tiny import TrainConfig

    p = sub.add_parser("train-tiny", help="train the embedded tiny CLIP (defaults reproduce the shipped checkpoint)",
                       description="Contrastive training over class prompts on the procedural train split; writes "
                                   "fp16 safetensors plus a JSON sidecar. About 40 min on 2 CPU cores.")
    from quant.encoder import TINY_WEIGHTS

    p.add_argument("--out", type=Path, default=TINY_WEIGHTS, help="checkpoint path (.safetensors; default: the shipped one)")
    for f in fields(TrainConfig):
        p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default,
                       help=f"default {f.default}")
    p.set_defaults(func=run)


def run(args) -> int:
    from analysis.train_tiny import TrainConfig, train_tiny

    if args.out.suffix != ".safetensors":
        raise InputError(f"--out {args.out}: expected a .safetensors file")
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    for name in ("n_train", "steps", "batch_size", "threads", "monitor_every", "monitor_n"):
        if getattr(cfg, name) <= 0:
            raise InputError(f"--{name.replace('_', '-')} {getattr(cfg, name)}: must be positive")
    meta = train_tiny(cfg, args.out)
    print(f"wrote {args.out} (monitor top-1 {meta['history'][-1]['monitor_top1']:.3f} on the gating split)")
    return 0
