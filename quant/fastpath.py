"""Fast bit-accurate evaluation path for the Brevitas static recipes.

Brevitas recomputes weight scales, quantized weights, int32 biases and QuantTensor metadata
on every call. After calibration all of these are constants, so :func:`build_fast_visual`
reads them off one capture pass of the calibrated Brevitas model and builds plain-torch
modules that perform the *same* float operations in the same order:

- activation quantizers -> :class:`FakeQuant` ``clamp(round(x / s), lo, hi) * s``
  (Brevitas' IntQuant: divide, round half-to-even, clamp, multiply);
- ``QuantLinear`` / ``QuantConv2d`` -> ``F.linear`` / ``F.conv2d`` on the fake-quantized
  input with the pre-quantized weight and int32 bias (dequantised values, float32);
- ``QuantMultiheadAttention`` -> :class:`FastMHA`, Brevitas' self-attention forward without
  the QuantTensor machinery.

The result is identical (``==``) to the Brevitas model (tested); everything else (LayerNorm,
GELU, residuals, pooling) is the original open_clip code.

Gradients: when an input requires a gradient (something trained upstream of the frozen tower,
e.g. the AdaViT decision networks of :mod:`quant.masked`), :class:`FakeQuant` passes it straight
through the rounding and stops it where the clamp is active, as Brevitas does; the forward
values are the same bits either way.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn


class FakeQuant(nn.Module):
    """Per-tensor integer fake quantization with a fixed scale: ``clamp(round(x / s), lo, hi) * s``."""

    def __init__(self, scale: torch.Tensor, lo: int, hi: int):
        super().__init__()
        self.register_buffer("scale", scale.detach().clone().reshape(()))
        self.lo, self.hi = float(lo), float(hi)
        self.qmin, self.qmax = int(lo), int(hi)
        m, _ = torch.frexp(self.scale.double())
        # A power-of-two scale makes x * (1/s) == x / s exactly, so torch's fused
        # fake_quantize_per_tensor_affine (round half-to-even, clamp, rescale in one kernel)
        # gives the same bits as Brevitas' divide-round-clamp-multiply.
        self.po2 = bool(m == 0.5)
        self.fscale = float(self.scale)
        # The fused kernel is one op (good when per-op latency dominates) but slower per element
        # than the four in-place ops on this CPU; off by default, kept for the equality test.
        self.fused = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad and torch.is_grad_enabled():
            return _FakeQuantSTE.apply(x, self)  # same values; straight-through gradient
        return self.quantize(x)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """The forward values (no autograd): ``clamp(round(x / s), lo, hi) * s``."""
        if self.fused and self.po2 and x.dtype == torch.float32:
            return torch.fake_quantize_per_tensor_affine(x, self.fscale, 0, self.qmin, self.qmax)
        y = x / self.scale  # Brevitas' op order, in place after the first op (same values, fewer allocations)
        y.round_()
        y.clamp_(self.lo, self.hi)
        return y.mul_(self.scale)


class _FakeQuantSTE(torch.autograd.Function):
    """:meth:`FakeQuant.quantize` with Brevitas' gradient: straight through the rounding (``RoundSte``),
    zero where the clamp is active (``TensorClamp``): ``dy/dx = 1[lo <= round(x / s) <= hi]``.

    Used whenever ``x`` requires a gradient (training something upstream of a frozen INT8 tower, e.g.
    :mod:`quant.masked`); the forward values are :meth:`FakeQuant.quantize`'s, bit for bit."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, fq: "FakeQuant") -> torch.Tensor:
        y = x / fq.scale  # FakeQuant.quantize's ops, in its order
        y.round_()
        ctx.save_for_backward((y >= fq.lo) & (y <= fq.hi))
        if fq.fused and fq.po2 and x.dtype == torch.float32:
            return fq.quantize(x)
        y.clamp_(fq.lo, fq.hi)
        return y.mul_(fq.scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (inside,) = ctx.saved_tensors
        return grad * inside, None


def _range(bits: int, signed: bool) -> tuple[int, int]:
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


def _fq(qt) -> FakeQuant:
    return FakeQuant(qt.scale, *_range(int(qt.bit_width), bool(qt.signed)))


class FastLinear(nn.Module):
    """``F.linear(fq(x), W_q, b_q)`` with constant dequantised weight [out, in] and bias [out]."""

    def __init__(self, fq: FakeQuant, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.fq = fq
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.fq(x), self.weight, self.bias)


class FastConv2d(nn.Module):
    """``F.conv2d(fq(x), W_q, b_q, ...)`` with the geometry of the replaced conv."""

    def __init__(self, fq: FakeQuant, conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.fq = fq
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(self.fq(x), self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class FastMHA(nn.Module):
    """Self-attention as in ``QuantMultiheadAttention`` (eval, no masks, packed in_proj)."""

    def __init__(self, m, in_proj: FastLinear, out_proj: FastLinear, fq_q, fq_k, fq_p, fq_v):
        super().__init__()
        self.embed_dim, self.num_heads, self.batch_first = m.embed_dim, m.num_heads, m.batch_first
        self.in_proj, self.out_proj = in_proj, out_proj
        self.fq_q, self.fq_k, self.fq_p, self.fq_v = fq_q, fq_k, fq_p, fq_v

    def forward(self, query, key=None, value=None, key_padding_mask=None, need_weights=False,
                attn_mask=None, average_attn_weights=True):
        if attn_mask is not None or key_padding_mask is not None:
            raise NotImplementedError("FastMHA: attention masks are not supported (the image tower has none)")
        if (key is not None and key is not query) or (value is not None and value is not query):
            raise NotImplementedError("FastMHA: self-attention only")
        x = query.transpose(1, 0) if self.batch_first else query
        s, v = self.logits(x)
        o = self.attend(s, v, x.shape)
        return (o.transpose(1, 0) if self.batch_first else o), None

    def logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [L, B, E] (sequence first) -> attention logits s = fq(q / sqrt(hd)) fq(k)^T [B*h, L, L] and
        v [B*h, L, hd] (not yet quantized)."""
        L, B, E = x.shape
        h = self.num_heads
        hd = E // h
        q, k, v = self.in_proj(x).chunk(3, dim=-1)
        q = q.contiguous().view(L, B * h, hd).transpose(0, 1)
        k = k.contiguous().view(L, B * h, hd).transpose(0, 1)
        v = v.contiguous().view(L, B * h, hd).transpose(0, 1)
        q_scaled = self.fq_q(q / math.sqrt(hd))
        k_t = self.fq_k(k.transpose(-2, -1))
        return torch.bmm(q_scaled, k_t), v

    def attend(self, s: torch.Tensor, v: torch.Tensor, shape, heads: torch.Tensor | None = None) -> torch.Tensor:
        """softmax(s), P·V on the quantized operands, ``out_proj``: [L, B, E] (``shape``, sequence first).
        ``heads`` [B, h] (optional): each head's P·V scaled by it before ``out_proj`` (AdaViT's head keep)."""
        L, B, E = shape
        a = F.softmax(s, dim=-1)
        o = torch.bmm(self.fq_p(a), self.fq_v(v))  # [B*h, L, hd]
        if heads is not None:
            o = o * heads.reshape(B * self.num_heads, 1, 1).to(o.dtype)
        return self.out_proj(o.transpose(0, 1).contiguous().view(L, B, E))


@torch.no_grad()
def _constants(qvisual: nn.Module, images: torch.Tensor) -> tuple[dict, dict]:
    import brevitas.nn as qnn

    lin: dict[str, dict] = {}
    att: dict[str, dict] = {}
    hooks = []

    def put(store, name, key):
        def hook(mod, inp, out):
            store.setdefault(name, {})[key] = out
        return hook

    for name, m in qvisual.named_modules():
        if isinstance(m, (qnn.QuantLinear, qnn.QuantConv2d)):
            hooks.append(m.input_quant.register_forward_hook(put(lin, name, "x")))
            hooks.append(m.weight_quant.register_forward_hook(put(lin, name, "w")))
            if m.bias is not None:
                hooks.append(m.bias_quant.register_forward_hook(put(lin, name, "b")))
        elif isinstance(m, qnn.QuantMultiheadAttention):
            for key, sub in (("q", m.q_scaled_quant), ("k", m.k_transposed_quant),
                             ("p", m.attn_output_weights_quant), ("v", m.v_quant)):
                hooks.append(sub.act_quant.register_forward_hook(put(att, name, key)))
    from quant.brevitas_model import quant_tapped_forward

    try:
        quant_tapped_forward(qvisual, images)
    finally:
        for h in hooks:
            h.remove()
    return lin, att


def _set(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


def build_fast_visual(qvisual: nn.Module) -> nn.Module:
    """A plain-torch copy of a calibrated Brevitas tower (same interface for ``quant_tapped_forward``)."""
    import brevitas.nn as qnn

    if not getattr(qvisual, "lraee_calibrated", False):
        raise ValueError("uncalibrated model: calibrate or load a calibration first")
    p = next(qvisual.parameters())
    size = qvisual.image_size if isinstance(qvisual.image_size, (tuple, list)) else (qvisual.image_size,) * 2
    lin, att = _constants(qvisual, torch.zeros(1, 3, *size, dtype=p.dtype, device=p.device))

    def fast_layer(name, m):
        c = lin[name]
        b = c["b"].value if "b" in c else None
        if isinstance(m, qnn.QuantConv2d):
            return FastConv2d(_fq(c["x"]), m, c["w"].value, b)
        return FastLinear(_fq(c["x"]), c["w"].value, b)

    fv = copy.deepcopy(qvisual)
    mods = dict(qvisual.named_modules())
    for name, m in mods.items():
        if isinstance(m, qnn.QuantMultiheadAttention):
            a = att[name]
            _set(fv, name, FastMHA(m, fast_layer(f"{name}.in_proj", m.in_proj),
                                   fast_layer(f"{name}.out_proj", m.out_proj),
                                   _fq(a["q"]), _fq(a["k"]), _fq(a["p"]), _fq(a["v"])))
    for name, m in mods.items():
        if isinstance(m, (qnn.QuantLinear, qnn.QuantConv2d)) and ".attn." not in f".{name}.":
            _set(fv, name, fast_layer(name, m))
    fv.lraee_calibrated = True
    fv.lraee_fast = True
    return fv.eval()
