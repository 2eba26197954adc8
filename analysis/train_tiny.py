"""Train the embedded tiny CLIP (``lraee-tiny``) on the procedural train split.

Contrastive image-text training over the class prompts: each step embeds every class
name under one randomly drawn template (text tower) and the batch's images (image
tower), and minimises the cross-entropy of ``logit_scale * cos(image, text_k)`` over the
K class texts (CLIP's image->text loss with all class prompts as the candidates).
Label-preserving augmentation: the 8 rotations/flips of the square (every class is
invariant to them). Deterministic for a fixed seed on a given machine and thread count.

The checkpoint is written as fp16 safetensors (half the size; it is loaded back as fp32)
with a JSON sidecar recording the settings and the measured monitor accuracy.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm import tqdm

from common import atomic
from analysis.data.procedural import ProceduralShapes
from analysis.templates import PAPER_TEMPLATES


@dataclass
class TrainConfig:
    """Settings of ``lraee train-tiny`` (defaults reproduce the shipped checkpoint)."""

    seed: int = 0
    data_seed: int = 0
    n_train: int = 30000
    steps: int = 1500
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: int = 100
    threads: int = 2
    monitor_every: int = 100
    monitor_n: int = 500
    init: str = ""  # start from this checkpoint instead of random weights (a second training stage)


# The recipe of the shipped checkpoint: stage 2 continues from stage 1's fp16 checkpoint.
SHIPPED_RECIPE: tuple[TrainConfig, ...] = (
    TrainConfig(),
    TrainConfig(seed=1, steps=800, lr=5e-4, warmup=50),
)


def _render_chunk(args: tuple[int, str, int, int]) -> tuple[np.ndarray, np.ndarray]:
    seed, split, start, n = args
    return ProceduralShapes(seed).render_split(split, n, start)


def render_parallel(seed: int, split: str, n: int, workers: int = 2, chunk: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Render ``n`` images of a split with a process pool; same bytes as a serial render."""
    jobs = [(seed, split, s, min(chunk, n - s)) for s in range(0, n, chunk)]
    if workers <= 1 or len(jobs) == 1:
        parts = [_render_chunk(j) for j in jobs]
    else:
        with Pool(workers) as pool:
            parts = list(tqdm(pool.imap(_render_chunk, jobs), total=len(jobs), desc=f"render {split}", unit="chunk"))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def to_tensor(images: np.ndarray, mean, std) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> normalised float32 [B, 3, H, W]."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - m) / s


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Apply one of the 8 dihedral transforms per sample. x: [B, 3, H, W]."""
    code = torch.randint(0, 8, (x.shape[0],), generator=g)
    out = x.clone()
    for c in range(8):
        idx = (code == c).nonzero(as_tuple=True)[0]
        if idx.numel() == 0:
            continue
        y = torch.rot90(x[idx], k=c % 4, dims=(2, 3))
        out[idx] = torch.flip(y, dims=(3,)) if c >= 4 else y
    return out


def train_recipe(stages: tuple[TrainConfig, ...], out: Path) -> dict:
    """Run training stages in order; stage k > 1 starts from stage k-1's checkpoint.

    Intermediate checkpoints are kept beside ``out`` as ``<stem>.stage<k>.safetensors``.
    """
    out = Path(out)
    prev = ""
    for k, cfg in enumerate(stages, 1):
        if k > 1:
            cfg = TrainConfig(**{**asdict(cfg), "init": prev})
        path = out if k == len(stages) else out.with_name(f"{out.stem}.stage{k}{out.suffix}")
        meta = train_tiny(cfg, path)
        prev = str(path)
    return meta


def train_tiny(cfg: TrainConfig, out: Path) -> dict:
    """Train from scratch and write ``out`` (.safetensors) plus ``out.with_suffix('.json')``."""
    from quant.encoder import TINY_NAME, load_encoder

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    enc = load_encoder(TINY_NAME, pretrained=cfg.init) if cfg.init else load_encoder(TINY_NAME, random_init=True)
    model, tok = enc.model.train(), enc.tokenizer
    ds = ProceduralShapes(cfg.data_seed)
    names = ds.classes
    t0 = time.time()
    imgs, labels = render_parallel(cfg.data_seed, "train", cfg.n_train, workers=cfg.threads)
    mon_imgs, mon_labels = render_parallel(cfg.data_seed, "gating", cfg.monitor_n, workers=1)
    x_all = to_tensor(imgs, enc.mean, enc.std)
    y_all = torch.from_numpy(labels)
    x_mon, y_mon = to_tensor(mon_imgs, enc.mean, enc.std), torch.from_numpy(mon_labels)
    texts = tok([t.format(n) for t in PAPER_TEMPLATES for n in names])  # [T*K, ctx]
    T, K = len(PAPER_TEMPLATES), len(names)

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        p = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return 0.5 * cfg.lr * (1 + math.cos(math.pi * p))

    def monitor() -> float:
        model.eval()
        with torch.no_grad():
            tf = F.normalize(model.encode_text(texts).view(T, K, -1).mean(0), dim=-1)
            tf = F.normalize(tf, dim=-1)
            correct = 0
            for i in range(0, len(x_mon), 250):
                f = F.normalize(model.encode_image(x_mon[i:i + 250]), dim=-1)
                correct += int(((f @ tf.T).argmax(1) == y_mon[i:i + 250]).sum())
        model.train()
        return correct / len(x_mon)

    g = torch.Generator().manual_seed(cfg.seed)
    history = []
    bar = tqdm(range(cfg.steps), desc="train-tiny", unit="step")
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        idx = torch.randint(0, len(x_all), (cfg.batch_size,), generator=g)
        x = _augment(x_all[idx], g)
        tsel = torch.randint(0, T, (K,), generator=g) * K + torch.arange(K)
        img_f = F.normalize(model.encode_image(x), dim=-1)
        txt_f = F.normalize(model.encode_text(texts[tsel]), dim=-1)
        logits = model.logit_scale.exp() * img_f @ txt_f.T
        loss = F.cross_entropy(logits, y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if (step + 1) % cfg.monitor_every == 0 or step + 1 == cfg.steps:
            acc = monitor()
            history.append({"step": step + 1, "loss": loss.item(), "monitor_top1": acc})
            bar.set_postfix(loss=f"{loss.item():.3f}", mon=f"{acc:.3f}")
    model.eval()
    sd = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    meta = {"model": TINY_NAME, "config": asdict(cfg), "train_seconds": round(time.time() - t0, 1),
            "monitor_split": "gating", "history": history, "dtype": "float16"}
    init_meta = Path(cfg.init).with_suffix(".json") if cfg.init else None
    if init_meta is not None and init_meta.is_file():
        meta["init_meta"] = json.loads(init_meta.read_text())  # the earlier stage's settings and curve
    with atomic.atomic_path(out) as tmp:
        save_file(sd, str(tmp), metadata={"lraee": json.dumps({"model": TINY_NAME, "seed": str(cfg.seed)})})
    atomic.write_json(Path(out).with_suffix(".json"), meta)
    return meta
