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
trains as it would alone with the same minibatches. Training runs on the CPU (or ``device``),
minibatch by minibatch from the feature store (memory independent of n), head-major ([H, b, d]: one
batched matmul per layer over all heads), in float32 or with bfloat16 matmuls (``HeadTrainConfig.dtype``).
Inference (:meth:`StackedHeads.forward`, :func:`head_outputs`) is float32.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from exitlogic.head_config import HEAD_DTYPE_NAMES, HeadTrainConfig  # noqa: F401  (the training defaults, torch-free)
from quant.geometry import ExitHeadGeometry

SUPERVISIONS = ("hard", "distill")
HEAD_DTYPES = {name: getattr(torch, name) for name in HEAD_DTYPE_NAMES}  # HeadTrainConfig.dtype -> torch dtype
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
        return self.embed(_layer_norm(x).transpose(0, 1)).transpose(0, 1)

    def embed(self, x_norm: torch.Tensor, fc=None) -> torch.Tensor:
        """Head-major form of :meth:`forward`: x_norm [D, n, d], the features already LayerNorm'd without
        affine (:func:`_layer_norm`) -> u [D, n, e] in float32. ``fc(h, i)`` computes fc layer i (0: fc1,
        1: fc2); default: float32 with this module's parameters (training passes its own)."""
        fc = fc or self._fc
        h = x_norm * self.ln_weight[:, None] + self.ln_bias[:, None]
        return fc(F.gelu(fc(h, 0)), 1).float()

    def _fc(self, h: torch.Tensor, i: int) -> torch.Tensor:
        """fc layer i (0: fc1, 1: fc2) in float32 with this module's parameters."""
        w, b = (self.fc1_weight, self.fc1_bias) if i == 0 else (self.fc2_weight, self.fc2_bias)
        return _linear(h, b, w)

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


def _linear(x: torch.Tensor, bias: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x [H, n, i] @ w [H, o, i]^T + bias [H, o] -> [H, n, o] (one batched matmul over the heads)."""
    return torch.baddbmm(bias.unsqueeze(1), x, w.transpose(1, 2))


def _layer_norm(x: torch.Tensor) -> torch.Tensor:
    """LayerNorm without affine over the last axis (biased variance, eps 1e-5), like nn.LayerNorm."""
    return F.layer_norm(x, (x.shape[-1],), eps=LN_EPS)


def _rows(array, rows: np.ndarray, device: str) -> torch.Tensor:
    """Rows ``rows`` of ``array`` (an in-memory array or a store's :class:`common.store.StoredArray`,
    read by row so the split never sits in memory) as float32 on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(array[rows], dtype=np.float32)).to(device)


class _StackedLinear(torch.autograd.Function):
    """The training step's batched linear layer y [H, b, o] = x [H, b, i] @ w [H, o, i]^T + bias [H, o] (all in
    the compute dtype). Its weight gradient is not returned to autograd: backward writes it into ``wgrad``, a
    buffer of ``w``'s shape kept across steps, and from there into ``master_grad`` (the float32 parameter's
    ``.grad``; the same tensor when computing in float32). A fresh weight gradient every step would be a
    new allocation of tens of MB, which the allocator maps afresh and the kernel faults in page by page."""

    @staticmethod
    def forward(ctx, x, bias, w, wgrad, master_grad):
        ctx.save_for_backward(x, w)
        ctx.wgrad, ctx.master_grad = wgrad, master_grad
        return _linear(x, bias, w)

    @staticmethod
    def backward(ctx, gy):
        x, w = ctx.saved_tensors
        gx = torch.bmm(gy, w) if ctx.needs_input_grad[0] else None
        torch.bmm(gy.transpose(1, 2), x, out=ctx.wgrad)  # [H, o, b] @ [H, b, i]: the parameter's own layout
        if ctx.wgrad is not ctx.master_grad:
            ctx.master_grad.copy_(ctx.wgrad)
        return gx, gy.sum(1), None, None, None


class _TrainingLayers:
    """The fc layers of a :class:`StackedHeads` as the training step computes them, in ``dtype``.

    float32: the parameters themselves. bfloat16 (mixed precision): the float32 parameters stay the
    master copy that Adam updates; before each step they are copied into bfloat16 buffers, the layers'
    matmuls run in bfloat16 (the bias, LayerNorm, GELU input and the loss as torch's autocast keeps them)
    and the weight gradients are rounded back into float32 ``.grad`` buffers."""

    def __init__(self, heads: StackedHeads, dtype: torch.dtype):
        self.dtype = dtype
        self.layers = []
        for name in ("fc1", "fc2"):
            w, b = getattr(heads, f"{name}_weight"), getattr(heads, f"{name}_bias")
            w.grad = torch.zeros_like(w)
            if dtype == torch.float32:
                compute, wgrad = w.detach(), w.grad
            else:
                compute, wgrad = torch.empty_like(w, dtype=dtype), torch.empty_like(w, dtype=dtype)
            self.layers.append((w, b, compute, wgrad))

    def refresh(self) -> None:
        """Copy the master weights into the compute buffers (after each optimiser step)."""
        if self.dtype != torch.float32:
            with torch.no_grad():
                for w, _, compute, _ in self.layers:
                    compute.copy_(w)

    def __call__(self, h: torch.Tensor, i: int) -> torch.Tensor:
        w, b, compute, wgrad = self.layers[i]
        return _StackedLinear.apply(h.to(self.dtype), b.to(self.dtype), compute, wgrad, w.grad)


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
    optimiser is ``torch.optim.Adam`` (fused: one pass over each parameter per step). ``cfg.dtype``
    ``bfloat16`` runs the fc matmuls in bfloat16 with float32 master weights (:class:`_TrainingLayers`).
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
    dtype = HEAD_DTYPES.get(cfg.dtype)
    if dtype is None:
        raise ValueError(f"head dtype {cfg.dtype!r}; allowed: {', '.join(HEAD_DTYPES)}")
    torch.manual_seed(seed)
    heads = StackedHeads(list(range(G * D)), head, seed=seed).to(device)
    fc = _TrainingLayers(heads, dtype)
    opt = torch.optim.Adam(heads.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    Y = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
    T = F.normalize(torch.from_numpy(np.asarray(text_embeddings, np.float32)).to(device), dim=-1)
    T = (logit_scale * T).to(dtype)  # logits = u @ (logit_scale * T)^T: the scale folded into the class embeddings
    distill = torch.tensor([sup == "distill" for _, sup in groups for _ in range(D)], dtype=torch.float32,
                           device=device)[:, None]
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
            normed = {k: _layer_norm(_rows(sources[k], rows, device).transpose(0, 1)) for k in dict.fromkeys(keys)}
            x = torch.cat([normed[k] for k in keys])  # [G*D, b, d]: each key's rows read and normalised once
            fc.refresh()
            u = F.normalize(heads.embed(x, fc), dim=-1)  # [G*D, b, e]
            logits = (u.to(dtype).reshape(-1, u.shape[-1]) @ T.t()).float()  # [G*D*b, K]
            loss = F.cross_entropy(logits, Y[idx].repeat(G * D), reduction="sum") / len(idx)
            if use_teacher:
                cos = torch.einsum("lne,ne->ln", u, F.normalize(_rows(teacher, rows, device), dim=-1))
                loss = loss + cfg.distill_weight * ((1.0 - cos) * distill).sum(0).mean()
            for p in (heads.ln_weight, heads.ln_bias, heads.fc1_bias, heads.fc2_bias):
                p.grad = None  # the fc weights' .grad are overwritten by _StackedLinear
            loss.backward()
            opt.step()
            bar.update(1)
    bar.close()
    heads.eval()
    for p in heads.parameters():
        p.grad = None
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
