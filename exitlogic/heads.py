"""Exit heads of the float LRA-EE policy (paper Eq. 3), trained on cached features.

One head per block L maps a token summary x_L [d] to an image embedding in the CLIP space:

    u_L = fc2(GELU(fc1(LayerNorm(x_L))))      LayerNorm(d, eps=1e-5); fc1: d -> d; fc2: d -> embed_dim
    s_{L,k} = logit_scale * cos(u_L, t_k)      t [K, embed_dim]: L2-normalised class text embeddings

- **SSA head**: x_L = mean of the N patch tokens of block L (``ssa_mean`` in the feature cache).
- **CLS head**: x_L = the [CLS] token of block L (``cls``).

GELU is the exact (erf) GELU. Supervision:

- ``hard``: cross-entropy of s_L against the true class;
- ``distill``: ``hard`` + ``distill_weight`` * (1 - cos(u_L, e_fp32)), e_fp32 the FP32 model's
  final image embedding of the same image (cosine-embedding loss, paper Sec. 5.1).

The heads of all blocks (and of several variants: SSA/CLS, hard/distill) are trained at once
as one stacked module (parameters [H, ...]); heads share the minibatch order but no parameters,
the loss is the sum of the per-head losses, and Adam's update is per element, so each head
trains as it would alone with the same minibatches. Training runs on the CPU (or ``device``) in float32,
minibatch by minibatch from the feature store (memory independent of n).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from exitlogic.head_config import HeadTrainConfig  # noqa: F401  (the training defaults, torch-free)
from quant.geometry import ExitHeadGeometry

SUPERVISIONS = ("hard", "distill")
HEAD_KINDS = ("ssa", "cls")
LN_EPS = 1e-5


class StackedHeads(nn.Module):
    """``D`` independent exit heads (one per block), evaluated together, each of the shape ``head``
    (:class:`quant.geometry.ExitHeadGeometry`: d -> hidden -> e).

    Input x [n, D, d] -> embeddings u [n, D, e] (not normalised).
    """

    def __init__(self, layers: list[int], head: ExitHeadGeometry, seed: int = 0, init: bool = True):
        super().__init__()
        self.layers = list(layers)
        self.head = head
        D, shapes = len(layers), head.param_shapes()
        g = torch.Generator().manual_seed(seed)

        def uniform(name, fan_in):  # nn.Linear's default init, seeded (init=False: uninitialised, to be copied into)
            shape = (D, *shapes[name])
            if not init:
                return torch.empty(shape)
            bound = 1.0 / math.sqrt(fan_in)
            return torch.rand(shape, generator=g).mul_(2).sub_(1).mul_(bound)  # (rand * 2 - 1) * bound, in place

        self.ln_weight = nn.Parameter(torch.ones(D, *shapes["ln.weight"]))
        self.ln_bias = nn.Parameter(torch.zeros(D, *shapes["ln.bias"]))
        self.fc1_weight = nn.Parameter(uniform("fc1.weight", head.width))
        self.fc1_bias = nn.Parameter(uniform("fc1.bias", head.width))
        self.fc2_weight = nn.Parameter(uniform("fc2.weight", head.hidden))
        self.fc2_bias = nn.Parameter(uniform("fc2.bias", head.hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = _layer_norm(x) * self.ln_weight + self.ln_bias
        h = torch.einsum("nld,lod->nlo", h, self.fc1_weight) + self.fc1_bias
        h = F.gelu(h)
        return torch.einsum("nld,lod->nlo", h, self.fc2_weight) + self.fc2_bias

    def layer_params(self, layer: int) -> dict[str, np.ndarray]:
        """float32 numpy parameters of the head at block ``layer`` (torch layout: weights [out, in])."""
        i = self.layers.index(layer)
        return {
            "ln.weight": self.ln_weight[i].detach().cpu().numpy().copy(),
            "ln.bias": self.ln_bias[i].detach().cpu().numpy().copy(),
            "fc1.weight": self.fc1_weight[i].detach().cpu().numpy().copy(),
            "fc1.bias": self.fc1_bias[i].detach().cpu().numpy().copy(),
            "fc2.weight": self.fc2_weight[i].detach().cpu().numpy().copy(),
            "fc2.bias": self.fc2_bias[i].detach().cpu().numpy().copy(),
        }

    def tensors(self, prefix: str) -> dict[str, np.ndarray]:
        """All parameters as ``{prefix}.{name}`` -> float32 [D, ...] arrays (for safetensors)."""
        return {f"{prefix}.{k}": v.detach().cpu().numpy().copy() for k, v in self.named_parameters()}

    def select(self, rows: list[int], layers: list[int]) -> "StackedHeads":
        """A new module with the heads at ``rows`` of this one, labelled as blocks ``layers``."""
        m = StackedHeads(layers, self.head, init=False)
        rows = list(rows)
        run = len(rows) > 0 and rows == list(range(rows[0], rows[0] + len(rows)))
        with torch.no_grad():
            for (k, p), (_, q) in zip(m.named_parameters(), self.named_parameters()):
                p.copy_(q[rows[0]:rows[0] + len(rows)] if run else q[rows])  # a run of rows: a view, no gather
        return m

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray], prefix: str, layers: list[int]) -> "StackedHeads":
        w1 = np.asarray(tensors[f"{prefix}.fc1_weight"])
        if w1.ndim != 3 or f"{prefix}.fc2_weight" not in tensors:
            raise ValueError(f"{prefix}.fc1_weight: shape {list(w1.shape)}, expected [heads, hidden, d] beside fc2_weight")
        head = ExitHeadGeometry(width=int(w1.shape[2]), hidden=int(w1.shape[1]),
                                embed_dim=int(np.asarray(tensors[f"{prefix}.fc2_weight"]).shape[1]))
        m = cls(layers, head, init=False)
        with torch.no_grad():
            for k, p in m.named_parameters():
                src = torch.from_numpy(np.ascontiguousarray(tensors[f"{prefix}.{k}"]))
                if tuple(src.shape) != tuple(p.shape):
                    raise ValueError(f"{prefix}.{k}: shape {tuple(src.shape)}, expected {tuple(p.shape)}")
                p.copy_(src)
        return m


def _layer_norm(x: torch.Tensor) -> torch.Tensor:
    """LayerNorm without affine over the last axis (biased variance, eps 1e-5), like nn.LayerNorm."""
    return F.layer_norm(x, (x.shape[-1],), eps=LN_EPS)


def _rows(array, rows: np.ndarray, device: str) -> torch.Tensor:
    """Rows ``rows`` of ``array`` (an in-memory array or a store's :class:`common.store.StoredArray`,
    read by row so the split never sits in memory) as float32 on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(array[rows], dtype=np.float32)).to(device)


class _Adam:
    """``torch.optim.Adam(params, lr, weight_decay=...)`` (betas 0.9, 0.999, eps 1e-8, the single-tensor
    path the CPU takes) step for step, the same operations on the same values, so bit for bit the same
    parameters (tested ``==``); the denominator is computed in a buffer kept between steps instead of two
    fresh tensors the size of the parameters per step (no allocation, no page faults)."""

    def __init__(self, params, lr: float, weight_decay: float = 0.0, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = list(params)
        self.lr, self.weight_decay, self.eps = float(lr), float(weight_decay), float(eps)
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.denom = [torch.empty_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.steps = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        step = float(self.steps)  # torch keeps a float32 step tensor and reads it with .item()
        bias_correction1 = 1 - self.beta1 ** step
        bias_correction2 = 1 - self.beta2 ** step
        step_size = self.lr / bias_correction1
        bias_correction2_sqrt = bias_correction2 ** 0.5
        for p, exp_avg, exp_avg_sq, denom in zip(self.params, self.exp_avg, self.exp_avg_sq, self.denom):
            grad = p.grad
            if grad is None:
                continue
            if self.weight_decay != 0:
                grad = grad.add(p, alpha=self.weight_decay)
            exp_avg.lerp_(grad, 1 - self.beta1)
            exp_avg_sq.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
            torch.sqrt(exp_avg_sq, out=denom)  # torch: (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
            denom.div_(bias_correction2_sqrt).add_(self.eps)
            p.addcdiv_(exp_avg, denom, value=-step_size)


def _weights_in_input_major_layout(heads: StackedHeads) -> None:
    """Store the fc weights [H, out, in] with ``in`` as the middle memory axis (the same values, a transposed
    memory layout): the weight gradients of the batched matmuls come out in that layout, so autograd takes
    them as they are instead of copying them into the parameter's layout every step."""
    with torch.no_grad():
        for name in ("fc1_weight", "fc2_weight"):
            w = getattr(heads, name)
            t = torch.empty(w.shape[0], w.shape[2], w.shape[1], dtype=w.dtype, device=w.device).transpose(1, 2)
            t.copy_(w)
            setattr(heads, name, nn.Parameter(t))


def train_heads(sources: dict[str, np.ndarray], groups: list[tuple[str, str]], labels: np.ndarray,
                text_embeddings: np.ndarray, logit_scale: float, layers: list[int], cfg: HeadTrainConfig, seed: int,
                teacher: np.ndarray | None = None, device: str = "cpu", progress: bool = True,
                desc: str = "heads", head: ExitHeadGeometry | None = None) -> list[StackedHeads]:
    """Train one head per block for each group (source key, supervision) in one stacked module.

    ``sources`` maps a key (``ssa_mean``, ``cls``) to features [n, D, d] (block ``layers[i]`` at
    index i; an array or a feature store's row-readable array: each minibatch reads its rows only); ``groups`` lists (source key, supervision) pairs, e.g. [("ssa_mean", "distill"),
    ("cls", "distill")]; ``labels`` int [n]; ``text_embeddings`` [K, e] L2-normalised;
    ``teacher`` [n, e] the FP32 final embeddings (needed by ``distill`` groups); ``head`` the heads' shape
    (``ExitHeadGeometry.of(encoder geometry)``; default: the LRA-EE head on d and e of the inputs, checked
    against them either way). ``seed`` sets the
    initialisation and the minibatch order (shared by the groups). Returns one
    :class:`StackedHeads` per group.

    Each minibatch's rows are read once per source key (groups on the same key share them); the
    optimiser is Adam (:class:`_Adam`, bit for bit ``torch.optim.Adam``).
    """
    for key, sup in groups:
        if sup not in SUPERVISIONS:
            raise ValueError(f"supervision {sup!r}; allowed: {', '.join(SUPERVISIONS)}")
        if sup == "distill" and teacher is None:
            raise ValueError("distill supervision needs the FP32 teacher embeddings")
    n, D, d = sources[groups[0][0]].shape
    head = head or ExitHeadGeometry.lraee(d, text_embeddings.shape[1])
    if (d, text_embeddings.shape[1]) != (head.width, head.embed_dim):
        raise ValueError(f"features of width {d} and text embeddings of width {text_embeddings.shape[1]} do not "
                         f"fit the exit head d = {head.width}, e = {head.embed_dim}")
    G = len(groups)
    torch.manual_seed(seed)
    heads = StackedHeads(list(range(G * D)), head, seed=seed).to(device)
    _weights_in_input_major_layout(heads)
    opt = _Adam(heads.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    Y = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
    T = F.normalize(torch.from_numpy(np.asarray(text_embeddings, np.float32)).to(device), dim=-1)
    distill = torch.tensor([sup == "distill" for _, sup in groups for _ in range(D)], dtype=torch.float32,
                           device=device)
    use_teacher = teacher is not None and bool(distill.any())
    keys = [k for k, _ in groups]
    g = torch.Generator().manual_seed(seed + 1)
    steps = cfg.epochs * math.ceil(n / cfg.batch_size)
    bar = tqdm(total=steps, desc=desc, unit="step", disable=not progress, leave=False)
    heads.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=g)
        for start in range(0, n, cfg.batch_size):
            rows = order[start:start + cfg.batch_size].numpy()
            idx = torch.from_numpy(rows).to(device)
            read = {k: _rows(sources[k], rows, device) for k in dict.fromkeys(keys)}  # each key's rows once
            xb = torch.cat([read[k] for k in keys], dim=1)  # [b, G*D, d]
            u = F.normalize(heads(xb), dim=-1)  # [b, G*D, e]
            logits = logit_scale * torch.einsum("nle,ke->nlk", u, T)
            loss = F.cross_entropy(logits.reshape(-1, T.shape[0]), Y[idx].repeat_interleave(G * D),
                                   reduction="sum") / len(idx)
            if use_teacher:
                cos = torch.einsum("nle,ne->nl", u, F.normalize(_rows(teacher, rows, device), dim=-1))
                loss = loss + cfg.distill_weight * ((1.0 - cos) * distill).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            bar.update(1)
    bar.close()
    heads.eval()
    heads = heads.cpu()
    return [heads.select(list(range(i * D, (i + 1) * D)), layers) for i in range(G)]


@dataclass
class HeadOutputs:
    """Per-sample outputs of the heads of every block, all [n, D] (block ``layers[i]`` at i).

    ``pred`` int64 class index; ``conf`` = max softmax(s) and ``margin`` = top-1 minus top-2
    softmax probability (s = logit_scale * cosine); ``correct`` bool (pred == label).
    """

    layers: list[int]
    pred: np.ndarray
    conf: np.ndarray
    margin: np.ndarray
    correct: np.ndarray

    def at(self, layer: int) -> int:
        return self.layers.index(layer)


@torch.no_grad()
def head_outputs(heads: StackedHeads, x: np.ndarray, labels: np.ndarray, text_embeddings: np.ndarray,
                 logit_scale: float, batch_size: int = 1024) -> HeadOutputs:
    """Evaluate ``heads`` on ``x`` [n, D, d]; predictions, confidence and margin per block."""
    T = F.normalize(torch.from_numpy(np.asarray(text_embeddings, np.float32)), dim=-1)
    preds, confs, margins = [], [], []
    for start in range(0, x.shape[0], batch_size):
        u = F.normalize(heads(torch.from_numpy(np.ascontiguousarray(x[start:start + batch_size], np.float32))), dim=-1)
        p = torch.softmax(logit_scale * torch.einsum("nle,ke->nlk", u, T), dim=-1)
        top = p.topk(2, dim=-1)
        preds.append(top.indices[..., 0].numpy())
        confs.append(top.values[..., 0].numpy())
        margins.append((top.values[..., 0] - top.values[..., 1]).numpy())
    pred = np.concatenate(preds).astype(np.int64)
    return HeadOutputs(list(heads.layers), pred, np.concatenate(confs).astype(np.float64),
                       np.concatenate(margins).astype(np.float64), pred == np.asarray(labels)[:, None])
