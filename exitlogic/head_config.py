"""Exit-head training settings and their defaults, stated once (torch-free: the CLI and the settings
schema read the defaults without importing torch)."""
from __future__ import annotations

from dataclasses import asdict, dataclass


HEAD_DTYPE_NAMES = ("float32", "bfloat16")  # HeadTrainConfig.dtype's allowed values


@dataclass(frozen=True)
class HeadTrainConfig:
    """Head training settings.

    Paper defaults (ViT-B/32 on 10% of ImageNet train, 128k images): 3 epochs, Adam lr 5e-4,
    batch 64 (6,000 steps). Ours: 10 epochs of batch 256 at lr 1e-3 on the embedded default's
    4,000 training images (160 steps; the heads of every block and variant train together).
    ``dtype``: the compute dtype of the heads' matmuls, ``float32`` or ``bfloat16`` (mixed precision:
    float32 master weights, Adam and loss; worth it where bfloat16 matmuls are native: GPUs, CPUs with
    AMX or AVX512-BF16).
    """

    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 256
    distill_weight: float = 1.0
    weight_decay: float = 0.0
    dtype: str = "float32"

    def to_dict(self) -> dict:
        return asdict(self)
