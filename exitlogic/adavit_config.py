"""AdaViT training settings and their defaults, stated once (torch-free: the settings schema reads the
defaults without importing torch; :mod:`exitlogic.adavit` trains with them)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from common.errors import InputError


@dataclass(frozen=True)
class AdaViTConfig:
    """AdaViT training settings. Defaults sized for the embedded tiny model (w8a8) on 2 CPU cores (train_n
    512 keeps the default ``lraee run`` under 10 minutes; the measurement below is with 768):
    :func:`analysis.adavit.run_adavit` with 3 seeds, 768 training images and the 2,000-image eval split
    took 68 s (about 15 s training and 6 s eval per seed) and reached saving 0.0993 +- 0.0006 and
    top-1 0.704 +- 0.007 at a 0.10 target (full-depth w8a8: 0.728). Temperature and anneal checked on
    1,000 gating-split images at that target (2 seeds; full-depth w8a8 0.679 there): tau 1 with the
    noise anneal 0.654 / 0.661, AdaViT's tau 5 without it 0.603 / 0.627 (and one seed missed the
    target: 0.085), tau 5 with the anneal 0.658 / 0.625. (AdaViT itself trains 150 epochs; with a
    schedule this short the noise of the stochastic policy is what hurts.)

    epochs: passes over the training images. lr: Adam learning rate of the decision networks.
    batch_size: images per step. train_n: training images (the first train_n of the train split).
    temperature: Gumbel-sigmoid temperature (AdaViT: 5). straight_through: hard forward masks with
    the relaxed gradient (AdaViT) or relaxed masks throughout. noise_anneal: scale the Gumbel noise
    linearly from 1 to 0 over the run (off: full noise throughout, as AdaViT). usage_weight: weight of
    the squared FLOPs-fraction error. distill_weight: weight of the cosine distillation to the FP32
    embedding (0: off; needs a teacher). init_keep_logit: initial bias of every decision (keep
    probability = its sigmoid). init_scale: scale of the uniform init of the decision weights
    (+-init_scale/sqrt(d)). match_flops, match_n, match_steps: fit the inference logit offset to the
    target on the first match_n training images with match_steps extra passes. eval_batch_size:
    images per inference batch.
    """

    epochs: int = 2
    lr: float = 1e-2
    batch_size: int = 32
    train_n: int = 512
    temperature: float = 1.0
    straight_through: bool = True
    noise_anneal: bool = True
    usage_weight: float = 20.0
    distill_weight: float = 0.0
    init_keep_logit: float = 3.0
    init_scale: float = 0.1
    match_flops: bool = True
    match_n: int = 256
    match_steps: int = 6
    eval_batch_size: int = 250

    def __post_init__(self) -> None:
        ints = {"epochs": 1, "batch_size": 1, "train_n": 1, "match_n": 1, "match_steps": 0, "eval_batch_size": 1}
        for name, lo in ints.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise InputError(f"adavit.{name} {v!r}: allowed: an integer >= {lo}")
        for name in ("lr", "temperature"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise InputError(f"adavit.{name} {v!r}: allowed: a positive number")
        for name in ("usage_weight", "distill_weight", "init_scale"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise InputError(f"adavit.{name} {v!r}: allowed: a number >= 0")
        if not (isinstance(self.init_keep_logit, (int, float)) and math.isfinite(self.init_keep_logit)):
            raise InputError(f"adavit.init_keep_logit {self.init_keep_logit!r}: allowed: a finite number")

    def to_dict(self) -> dict:
        return asdict(self)
