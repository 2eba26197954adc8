"""AdaViT baseline (Meng et al., CVPR 2022) on the frozen INT8 backbone, at a FLOPs target.

Shapes: n images, B a minibatch, D blocks, T = N + 1 tokens, d width, H heads, K classes, E the
embedding width; every size comes from the tower (:class:`quant.masked.MaskedTower`) and the
encoder geometry (:class:`quant.geometry.EncoderGeometry`), none is hard-coded.

**Decision networks** (:class:`DecisionNets`, one per block l, as in the official AdaViT code): from
the block's input tokens x_l [B, T, d], after a LayerNorm of their own (AdaViT's ``norm_policy``),

- patch keep: a per-token linear d -> 1 on the N patch tokens -> logits [B, N] ([CLS] always kept);
- head keep: a linear d -> H on the [CLS] token -> logits [B, H];
- block keep: a linear d -> 1 on the [CLS] token -> logits [B] (AdaViT's code decides the attention and
  MLP sub-layers separately, d -> 2; here one keep per block, as the baseline's brief asks).

A decision keeps with probability sigmoid(logit). Training samples it with AdaViT's Gumbel-sigmoid:
``y = sigmoid((logit + g1 - g2) / temperature)``, g1, g2 ~ Gumbel(0, 1) (their difference is a
standard logistic), straight-through by default (forward ``1[y > 0.5]``, gradient of y) or relaxed
(``straight_through=False``: forward y). Inference is deterministic: keep iff ``logit + offset > 0``
(``offset`` 0 is AdaViT's 0.5 threshold; see ``match_flops``). The masks act on the INT8 fast path
through :class:`quant.masked.MaskedTower` (backbone frozen; straight-through gradients in its
fake-quant ops).

**FLOPs** (:class:`FlopModel`): MACs per image of the tower under the decisions, generalising the
per-block GEMM list of :func:`hwsim.workload.block_gemms` to t kept tokens ([CLS] included) and
h kept heads (hd = d / H, m = MLP width):

    qkv t*d*3*h*hd + q k^T h*t*hd*t + P v h*t*t*hd + out_proj t*h*hd*d + fc1 t*d*m + fc2 t*m*d

(at t = T, h = H exactly hwsim's block MACs; a test checks it), times the block keep, plus the patch
embedding and final projection (always run; from :func:`hwsim.workload.layer_macs`, which the caller
passes in: hwsim imports exitlogic, so exitlogic cannot import hwsim) and the decision networks' own MACs (every block, always: N*d + d*H + d). The FLOPs
fraction is that over the full tower's MACs (``sum(layer_macs)``); the saving is 1 - its mean. The
saving without the decision networks is reported beside it.

**Loss** per minibatch: cross-entropy of the zero-shot logits ``logit_scale * cos(embedding, t_k)``
against the label, plus ``distill_weight * (1 - cos(embedding, teacher))`` when a teacher embedding
(the FP32 model's) is given, plus ``usage_weight * (mean FLOPs fraction - (1 - target_saving))^2``
(the fraction of the sampled masks, differentiable through them).

**Matched FLOPs** (``match_flops``, on by default): Gumbel training fixes the *expected* FLOPs of the
stochastic policy; the deterministic policy can land elsewhere. After training, one global logit
offset is fitted (bracketing then bisection, ``match_steps`` passes) on ``match_n`` of the training
images so that the deterministic policy's saving there is closest to the target; the evaluation
split is never used. ``noise_anneal`` (on by default) scales the Gumbel noise from 1 down to 0 over
training, so the last steps train the deterministic policy itself and the offset stays near 0.

Seeded: the seed sets the decision networks' initialisation, the minibatch order and the Gumbel
noise (a CPU generator, so the same seed gives the same result on the same device and threads).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from common.errors import InputError
from quant.geometry import EncoderGeometry
from exitlogic.adavit_config import AdaViTConfig  # noqa: F401  (the settings, torch-free)
from quant.masked import BlockMasks, MaskedTower

MATCH_STEP = 0.25  # first step of the logit-offset search (logit units)
PAPER_ROW = {"method": "AdaViT", "flops_saving_pct": 13.50, "top1_pct": 59.84,
             "source": "paper Table 2 (ImageNet, CLIP ViT-B/32, INT8 backbone frozen, matched FLOPs)"}


def check_target(target_saving, field: str = "target_saving") -> float:
    """The FLOPs-saving target as a float in [0, 1); one-line InputError naming ``field`` otherwise."""
    if isinstance(target_saving, bool) or not isinstance(target_saving, (int, float)) \
            or not math.isfinite(float(target_saving)) or not 0.0 <= float(target_saving) < 1.0:
        raise InputError(f"{field} {target_saving!r}: allowed: a FLOPs-saving fraction in [0, 1) "
                         "(e.g. 0.1338 for 13.38 %)")
    return float(target_saving)


# ---- the FLOP model ------------------------------------------------------------------------------
@dataclass(frozen=True)
class FlopModel:
    """MACs per image under AdaViT decisions (see the module docstring).

    Args:
        geometry: the encoder's geometry (tokens, width, heads, MLP width, depth).
        layer_macs: the project's per-block backbone MACs (:func:`hwsim.workload.layer_macs`: block
            MACs, the patch embedding added to block 1 and the final projection to the last); its
            middle entries must equal :meth:`block_macs` at full keep (ValueError otherwise).
    """

    geometry: EncoderGeometry
    layer_macs: tuple

    def __post_init__(self) -> None:
        g = self.geometry
        lm = tuple(int(v) for v in self.layer_macs)
        object.__setattr__(self, "layer_macs", lm)
        if len(lm) != g.depth:
            raise ValueError(f"layer_macs: {len(lm)} entries for a {g.depth}-block tower")
        full = int(self.block_macs(g.tokens, g.heads))
        if g.depth > 2 and any(v != full for v in lm[1:-1]):
            raise ValueError(f"layer_macs {lm[1]} per block disagrees with the AdaViT block model {full} "
                             "(hwsim.workload.block_gemms changed?)")

    def block_macs(self, tokens, heads):
        """MACs of one block running ``tokens`` tokens ([CLS] included) with ``heads`` heads (numbers or
        tensors of any matching shape; soft masks give fractional counts)."""
        g = self.geometry
        d, hd, m = g.width, g.head_width, g.mlp_width
        t, h = tokens, heads
        return t * d * 3 * h * hd + 2 * h * t * t * hd + t * h * hd * d + 2 * t * d * m

    @property
    def full_block_macs(self) -> int:
        """One block at full keep (T tokens, H heads)."""
        return int(self.block_macs(self.geometry.tokens, self.geometry.heads))

    @property
    def total_macs(self) -> int:
        """The full tower (:func:`hwsim.workload.layer_macs` summed): the fraction's denominator."""
        return int(sum(self.layer_macs))

    @property
    def fixed_macs(self) -> int:
        """Patch embedding and final projection (run for every image whatever the decisions)."""
        return self.total_macs - self.geometry.depth * self.full_block_macs

    @property
    def decision_macs_per_block(self) -> int:
        """The decision networks of one block: patch N*d, heads d*H, block d (LayerNorm not counted, as
        hwsim counts GEMM MACs only)."""
        g = self.geometry
        return g.patch_tokens * g.width + g.width * g.heads + g.width

    @property
    def decision_macs(self) -> int:
        return self.geometry.depth * self.decision_macs_per_block

    def macs(self, block: torch.Tensor, heads: torch.Tensor, tokens: torch.Tensor,
             with_decisions: bool = True) -> torch.Tensor:
        """MACs per image [B] from block keep [B, D], kept heads [B, D] and kept tokens [B, D] ([CLS]
        included); differentiable in all three."""
        per = block * self.block_macs(tokens, heads)
        out = per.sum(1) + self.fixed_macs
        return out + self.decision_macs if with_decisions else out

    def fraction(self, block, heads, tokens, with_decisions: bool = True) -> torch.Tensor:
        """FLOPs fraction per image [B]: :meth:`macs` / :attr:`total_macs`."""
        return self.macs(block, heads, tokens, with_decisions) / float(self.total_macs)


def mask_counts(masks: list, B: int, geometry: EncoderGeometry, device=None) -> tuple:
    """(block keep, kept heads, kept tokens), each [B, D], from the masks a pass used (None = all kept)."""
    g = geometry
    cols_b, cols_h, cols_t = [], [], []
    for m in masks:
        ones = torch.ones(B, device=device)
        b = ones if m is None or m.block is None else m.block.reshape(B)
        h = ones * g.heads if m is None or m.heads is None else m.heads.sum(1)
        t = ones * g.tokens if m is None or m.patches is None else 1.0 + m.patches.sum(1)
        cols_b.append(b)
        cols_h.append(h)
        cols_t.append(t)
    return torch.stack(cols_b, 1), torch.stack(cols_h, 1), torch.stack(cols_t, 1)


# ---- the decision networks -----------------------------------------------------------------------
class DecisionNets(nn.Module):
    """Per-block AdaViT decision networks (see the module docstring): for D blocks of width d and H
    heads, LayerNorm(d) weights [D, d], patch linear [D, d] + [D], head linear [D, H, d] + [D, H], block
    linear [D, d] + [D]. Seeded init: weights uniform(+-init_scale/sqrt(d)), biases init_keep_logit."""

    def __init__(self, depth: int, width: int, heads: int, seed: int = 0, init_keep_logit: float = 3.0,
                 init_scale: float = 0.1):
        super().__init__()
        g = torch.Generator().manual_seed(int(seed))
        bound = float(init_scale) / math.sqrt(width)

        def u(*shape):
            return nn.Parameter(torch.rand(*shape, generator=g).mul_(2).sub_(1).mul_(bound))

        self.depth, self.width, self.heads = int(depth), int(width), int(heads)
        self.ln_weight = nn.Parameter(torch.ones(depth, width))
        self.ln_bias = nn.Parameter(torch.zeros(depth, width))
        self.patch_weight = u(depth, width)
        self.patch_bias = nn.Parameter(torch.full((depth,), float(init_keep_logit)))
        self.head_weight = u(depth, heads, width)
        self.head_bias = nn.Parameter(torch.full((depth, heads), float(init_keep_logit)))
        self.block_weight = u(depth, width)
        self.block_bias = nn.Parameter(torch.full((depth,), float(init_keep_logit)))

    def logits(self, l: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Block ``l``'s decision logits from its input x [B, T, d]: (block [B], heads [B, H], patches [B, N])."""
        z = F.layer_norm(x, (self.width,), self.ln_weight[l], self.ln_bias[l])
        cls = z[:, 0]
        block = cls @ self.block_weight[l] + self.block_bias[l]
        heads = cls @ self.head_weight[l].T + self.head_bias[l]
        patches = z[:, 1:] @ self.patch_weight[l] + self.patch_bias[l]
        return block, heads, patches


def _gumbel_sigmoid(logits: torch.Tensor, temperature: float, hard: bool, gen: torch.Generator,
                    noise_scale: float = 1.0) -> torch.Tensor:
    """AdaViT's ``_gumbel_sigmoid``: sigmoid((logit + g1 - g2) / tau), hard straight-through at 0.5. The
    logistic noise g1 - g2 = log(u) - log(1 - u), u ~ U(0, 1) from ``gen`` (CPU), moved to the logits' device."""
    u = torch.rand(logits.shape, generator=gen, dtype=torch.float64).clamp_(1e-12, 1 - 1e-12)
    noise = (u.log() - (-u).log1p()).to(logits.dtype).to(logits.device)
    y = torch.sigmoid((logits + noise_scale * noise) / temperature)
    if not hard:
        return y
    y_hard = (y > 0.5).to(y.dtype)
    return y_hard - y.detach() + y


class _Decider:
    """The ``decide`` callable of :meth:`quant.masked.MaskedTower.forward_tokens` for a mode:
    ``train`` (Gumbel-sigmoid samples) or ``hard`` (deterministic, keep iff logit + offset > 0)."""

    def __init__(self, nets: DecisionNets, mode: str, cfg: AdaViTConfig | None = None,
                 gen: torch.Generator | None = None, offset: float = 0.0, noise_scale: float = 1.0):
        self.nets, self.mode, self.cfg, self.gen, self.offset = nets, mode, cfg, gen, float(offset)
        self.noise_scale = float(noise_scale)

    def __call__(self, l: int, x: torch.Tensor) -> BlockMasks:
        b, h, p = self.nets.logits(l, x)
        if self.mode == "hard":
            c = self.offset
            return BlockMasks((b + c > 0).to(x.dtype), (h + c > 0).to(x.dtype), (p + c > 0).to(x.dtype))
        tau, st = self.cfg.temperature, self.cfg.straight_through
        k = self.noise_scale
        return BlockMasks(_gumbel_sigmoid(b, tau, st, self.gen, k), _gumbel_sigmoid(h, tau, st, self.gen, k),
                          _gumbel_sigmoid(p, tau, st, self.gen, k))


def _tokens(tower: MaskedTower, x: torch.Tensor) -> torch.Tensor:
    """z_0 [B, T, d] on the tower's device from images [B, 3, H, W] or tokens [B, T, d]."""
    x = x.to(tower.device)
    return tower.embed(x) if x.dim() == 4 else x


def _logits(emb: torch.Tensor, text: torch.Tensor, logit_scale: float) -> torch.Tensor:
    return float(logit_scale) * F.normalize(emb, dim=-1) @ F.normalize(text, dim=-1).T


# ---- training ------------------------------------------------------------------------------------
@dataclass
class AdaViTModel:
    """Trained decision networks and their record: ``offset`` is the inference logit offset (0 unless
    ``match_flops``); ``record`` holds the seed, target, per-epoch losses, the training saving and time."""

    nets: DecisionNets
    offset: float
    record: dict = field(default_factory=dict)


def train_adavit(tower: MaskedTower, inputs: torch.Tensor, labels, text, logit_scale: float, target_saving: float,
                 flops: FlopModel, config: AdaViTConfig = AdaViTConfig(), seed: int = 0,
                 teacher: torch.Tensor | None = None, progress: bool = True) -> AdaViTModel:
    """Train AdaViT's decision networks on the frozen INT8 tower toward ``target_saving``.

    Args:
        tower: the masked fast-path INT8 tower (frozen).
        inputs: the training images [n, 3, H, W] (normalised) or their block-1 inputs z_0 [n, T, d]
            (:meth:`MaskedTower.embed`; cheaper to keep across seeds). Kept where they are; minibatches
            move to the tower's device.
        labels: int [n] class indices into ``text``.
        text: L2-normalised class embeddings [K, E]. logit_scale: CLIP's (exp'd) logit scale.
        target_saving: FLOPs-saving target in [0, 1) (the FLOPs-fraction target is 1 - it).
        flops: the FLOP model (:class:`FlopModel`). config: :class:`AdaViTConfig`. seed: see module doc.
        teacher: optional FP32 final embeddings [n, E] for the distillation term.
        progress: tqdm bars.
    Returns the :class:`AdaViTModel` (decision networks on the tower's device, offset, record).
    """
    target = check_target(target_saving)
    n = int(inputs.shape[0])
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    if labels.shape != (n,):
        raise InputError(f"labels: shape {tuple(labels.shape)}, expected [{n}] (one per training image)")
    if n < 1:
        raise InputError("train images: none; allowed: at least one training image")
    if teacher is not None and tuple(teacher.shape[:1]) != (n,):
        raise InputError(f"teacher: shape {tuple(teacher.shape)}, expected [{n}, E]")
    if config.distill_weight > 0 and teacher is None:
        raise InputError("adavit.distill_weight > 0 needs the FP32 teacher embeddings; allowed: distill_weight 0 "
                         "or a teacher")
    dev = tower.device
    text = torch.as_tensor(np.asarray(text), dtype=torch.float32).to(dev)
    t0 = time.perf_counter()
    nets = DecisionNets(tower.depth, tower.width, tower.heads, seed, config.init_keep_logit,
                        config.init_scale).to(dev)
    opt = torch.optim.Adam(nets.parameters(), lr=config.lr)
    gen = torch.Generator().manual_seed(int(seed) + 1)
    goal = 1.0 - target
    steps = (n + config.batch_size - 1) // config.batch_size
    bar = tqdm(total=config.epochs * steps, desc=f"adavit seed {seed}", unit="step", disable=not progress)
    epochs = []
    total = config.epochs * steps
    done = 0
    for _ in range(config.epochs):
        perm = torch.randperm(n, generator=gen)
        sums = {"loss": 0.0, "ce": 0.0, "usage": 0.0, "distill": 0.0, "fraction": 0.0, "correct": 0}
        for s in range(steps):
            idx = perm[s * config.batch_size:(s + 1) * config.batch_size]
            z0 = _tokens(tower, inputs[idx])
            y = labels[idx].to(dev)
            k = 1.0 - done / max(1, total - 1) if config.noise_anneal else 1.0
            out = tower.forward_tokens(z0, _Decider(nets, "train", config, gen, noise_scale=k))
            done += 1
            logits = _logits(out.embedding, text, logit_scale)
            ce = F.cross_entropy(logits, y)
            frac = flops.fraction(*mask_counts(out.masks, len(idx), flops.geometry, dev))
            usage = (frac.mean() - goal) ** 2
            loss = ce + config.usage_weight * usage
            dist = torch.zeros((), device=dev)
            if config.distill_weight > 0:
                tt = teacher[idx].to(dev).float()
                dist = (1 - F.cosine_similarity(out.embedding, tt, dim=-1)).mean()
                loss = loss + config.distill_weight * dist
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            b = len(idx)
            sums["loss"] += float(loss.detach()) * b
            sums["ce"] += float(ce.detach()) * b
            sums["usage"] += float(usage.detach()) * b
            sums["distill"] += float(dist.detach()) * b
            sums["fraction"] += float(frac.detach().sum())
            sums["correct"] += int((logits.argmax(1) == y).sum())
            bar.update(1)
            bar.set_postfix(ce=f"{float(ce.detach()):.3f}", saving=f"{1 - float(frac.detach().mean()):.3f}")
        epochs.append({"loss": sums["loss"] / n, "ce": sums["ce"] / n, "usage": sums["usage"] / n,
                       "distill": sums["distill"] / n, "sampled_saving": 1 - sums["fraction"] / n,
                       "sampled_top1": sums["correct"] / n})
    bar.close()
    nets.eval()
    for p in nets.parameters():
        p.requires_grad_(False)
    model = AdaViTModel(nets, 0.0)
    match = None
    if config.match_flops:
        match = _match_offset(tower, model, inputs[:config.match_n], flops, target, config, progress)
        model.offset = match["offset"]
    model.record = {"seed": int(seed), "target_saving": target, "train_n": n, "epochs": epochs,
                    "match": match, "offset": model.offset, "train_seconds": time.perf_counter() - t0}
    return model


@torch.no_grad()
def _hard_pass(tower: MaskedTower, nets: DecisionNets, z0: torch.Tensor, offset: float, flops: FlopModel):
    out = tower.forward_tokens(z0, _Decider(nets, "hard", offset=offset))
    counts = mask_counts(out.masks, z0.shape[0], flops.geometry, z0.device)
    return out.embedding, counts


def _match_offset(tower: MaskedTower, model: AdaViTModel, inputs: torch.Tensor, flops: FlopModel, target: float,
                  config: AdaViTConfig, progress: bool) -> dict:
    """The logit offset c whose deterministic policy (keep iff logit + c > 0) saves ``target`` on ``inputs``
    (training images). The saving falls as c rises (up to the decisions' feedback on later blocks' inputs).
    After the pass at c = 0, ``match_steps`` passes: steps of :data:`MATCH_STEP` away from 0 (doubling)
    until the target is bracketed, then bisection; the c closest to the target is kept (0 on ties)."""
    bs = config.eval_batch_size
    zs = [_tokens(tower, inputs[i:i + bs]) for i in range(0, len(inputs), bs)]

    def saving(c: float) -> float:
        macs = 0.0
        for z0 in zs:
            _, counts = _hard_pass(tower, model.nets, z0, c, flops)
            macs += float(flops.macs(*(v.double() for v in counts)).sum())
        return 1.0 - macs / (len(inputs) * flops.total_macs)

    bar = tqdm(total=config.match_steps + 1, desc="adavit match FLOPs", unit="pass", disable=not progress)
    tried = [(0.0, saving(0.0))]
    bar.update(1)
    sign = -1.0 if tried[0][1] < target else 1.0  # lower c drops more
    inner, outer, step = 0.0, None, MATCH_STEP
    for _ in range(config.match_steps):
        c = sign * step if outer is None else 0.5 * (inner + outer)
        s = saving(c)
        tried.append((c, s))
        bar.update(1)
        if (s < target) == (sign < 0):  # still on the side of c = 0
            inner = c
            step *= 2.0
        else:
            outer = c
        if s == target:
            break
    bar.close()
    best = min(tried, key=lambda cs: (abs(cs[1] - target), abs(cs[0])))
    return {"offset": best[0], "saving": best[1], "n": len(inputs), "tried": [[c, s] for c, s in tried]}


# ---- evaluation ----------------------------------------------------------------------------------
@dataclass
class AdaViTEval:
    """Per-sample results on an evaluation set (n samples).

    pred, labels: int64 [n]; correct: bool [n]; macs: float64 [n] (with the decision networks);
    flops_fraction, flops_fraction_backbone: float64 [n] (over the full tower; without the decision
    networks for ``_backbone``); blocks_run: int64 [n] blocks executed (of D); tokens_kept: float32
    [n, D] tokens per block incl. [CLS] (0 where the block is skipped); heads_kept: float32 [n, D].
    """

    pred: np.ndarray
    labels: np.ndarray
    correct: np.ndarray
    macs: np.ndarray
    flops_fraction: np.ndarray
    flops_fraction_backbone: np.ndarray
    blocks_run: np.ndarray
    tokens_kept: np.ndarray
    heads_kept: np.ndarray

    @property
    def top1(self) -> float:
        return float(self.correct.mean())

    @property
    def flops_saving(self) -> float:
        """1 - mean FLOPs fraction, decision networks included (the trained target)."""
        return float(1.0 - self.flops_fraction.mean())

    @property
    def flops_saving_backbone(self) -> float:
        return float(1.0 - self.flops_fraction_backbone.mean())

    @classmethod
    def concat(cls, parts: Sequence["AdaViTEval"]) -> "AdaViTEval":
        """The results of consecutive batches as one (rows in order)."""
        names = [f for f in cls.__dataclass_fields__]
        return cls(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in names})

    def summary(self) -> dict:
        return {"n": int(len(self.labels)), "top1": self.top1, "flops_saving": self.flops_saving,
                "flops_saving_backbone": self.flops_saving_backbone,
                "blocks_run_mean": float(self.blocks_run.mean()),
                "tokens_kept_mean": [float(v) for v in self.tokens_kept.mean(0)],
                "heads_kept_mean": [float(v) for v in self.heads_kept.mean(0)]}


def evaluate_adavit(tower: MaskedTower, model: AdaViTModel, batches: Iterable, text, logit_scale: float,
                    flops: FlopModel, progress: bool = True, total: int | None = None) -> AdaViTEval:
    """Deterministic AdaViT inference (keep iff logit + ``model.offset`` > 0) on ``batches`` of
    (images [B, 3, H, W] or z_0 [B, T, d], labels [B]); per-sample predictions and FLOPs
    (:class:`AdaViTEval`). ``total``: number of images, for the progress bar."""
    dev = tower.device
    text = torch.as_tensor(np.asarray(text), dtype=torch.float32).to(dev)
    cols = {k: [] for k in ("pred", "labels", "macs", "frac", "frac_bb", "blocks", "tokens", "heads")}
    bar = tqdm(total=total, desc="adavit eval", unit="img", disable=not progress)
    model.nets.eval()
    for x, y in batches:
        z0 = _tokens(tower, x)
        emb, (b, h, t) = _hard_pass(tower, model.nets, z0, model.offset, flops)
        cols["pred"].append(_logits(emb, text, logit_scale).argmax(1).cpu().numpy())
        y = y.cpu().numpy() if isinstance(y, torch.Tensor) else y
        cols["labels"].append(np.asarray(y, np.int64).reshape(-1))
        macs = flops.macs(b.double(), h.double(), t.double())
        cols["macs"].append(macs.cpu().numpy())
        cols["frac"].append((macs / flops.total_macs).cpu().numpy())
        cols["frac_bb"].append(flops.fraction(b.double(), h.double(), t.double(), with_decisions=False).cpu().numpy())
        cols["blocks"].append(b.sum(1).round().long().cpu().numpy())
        cols["tokens"].append((t * b).float().cpu().numpy())
        cols["heads"].append((h * b).float().cpu().numpy())
        bar.update(len(z0))
    bar.close()
    cat = {k: np.concatenate(v) for k, v in cols.items()}
    return AdaViTEval(pred=cat["pred"].astype(np.int64), labels=cat["labels"], correct=cat["pred"] == cat["labels"],
                      macs=cat["macs"].astype(np.float64), flops_fraction=cat["frac"].astype(np.float64),
                      flops_fraction_backbone=cat["frac_bb"].astype(np.float64),
                      blocks_run=cat["blocks"].astype(np.int64), tokens_kept=cat["tokens"], heads_kept=cat["heads"])
