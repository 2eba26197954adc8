"""SmoothQuant for open_clip image towers (the ``+sq`` recipe modifier, :class:`quant.recipes.SmoothQuant`).

Idea from Xiao et al., "SmoothQuant" (ICML 2023); this is our own implementation. A Linear
``y = x W^T`` whose input ``x`` comes from a LayerNorm is rewritten, per input channel j, as
``y = (x_j / s_j) (W_{:, j} s_j)^T``: the same function, with activation outliers moved into the
weights, which are quantized per output channel and absorb them better. Here, in every block:

- ``ln_1`` -> ``attn.in_proj`` (the packed q/k/v projection: ``in_proj_weight`` [3d, d]),
- ``ln_2`` -> ``mlp.c_fc`` (weight [mlp_width, d]).

Factors (:func:`smoothing_factors`): ``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)`` with
``max|X_j|`` the abs max of channel j of the FP32 LayerNorm output over every token of the
calibration images (:func:`activation_absmax`) and ``max|W_j|`` the abs max of input column j
over all output rows of the Linear. A channel with ``max|X_j| = 0`` or ``max|W_j| = 0`` (or a
factor that is not a finite positive float32) keeps ``s_j = 1``. Computed in float64, stored
float32 [d] under the LayerNorm's name (``transformer.resblocks.<i>.ln_1`` / ``.ln_2``).

Folding (:func:`fold_smoothing`, float32, in place): LayerNorm weight and bias divided by s, the
Linear's input columns multiplied by s. Nothing is added to the forward pass; the quantized
graph is the plain recipe's. Folding changes float32 rounding only (see the tests' tolerance).
"""
from __future__ import annotations

import copy
from typing import Iterable

import torch
from torch import nn

#: (LayerNorm attribute, the Linear weight it feeds) in each residual block.
PAIRS: tuple[tuple[str, str], ...] = (("ln_1", "attn.in_proj_weight"), ("ln_2", "mlp.c_fc.weight"))


def targets(visual: nn.Module) -> dict[str, tuple[nn.LayerNorm, torch.Tensor]]:
    """LayerNorm name -> (the LayerNorm, the weight [out, d] of the Linear it feeds), in forward order.

    Raises ValueError for a tower without these modules (only open_clip's ``ResidualAttentionBlock``
    with ``nn.MultiheadAttention`` and an affine LayerNorm is supported)."""
    out = {}
    for i, blk in enumerate(visual.transformer.resblocks):
        for ln_name, w_name in PAIRS:
            ln = getattr(blk, ln_name, None)
            try:
                w = blk.get_parameter(w_name)
            except AttributeError:
                w = None
            if not isinstance(ln, nn.LayerNorm) or ln.weight is None or w is None or w.dim() != 2:
                raise ValueError(f"block {i}: SmoothQuant needs an affine {ln_name} feeding {w_name}")
            out[f"transformer.resblocks.{i}.{ln_name}"] = (ln, w)
    return out


@torch.no_grad()
def activation_absmax(visual: nn.Module, batches: Iterable[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-channel abs max of every smoothed LayerNorm's output over ``batches`` (normalised images
    [B, 3, H, W]), through the FP32 tower: name -> float32 CPU [d]. ValueError without images."""
    from quant.taps import tapped_forward

    tg = targets(visual)
    amax: dict[str, torch.Tensor] = {}
    hooks = []

    def hook(name):
        def h(mod, inp, out):
            m = out.detach().abs().float().reshape(-1, out.shape[-1]).amax(dim=0).cpu()
            amax[name] = m if name not in amax else torch.maximum(amax[name], m)
        return h

    for name, (ln, _) in tg.items():
        hooks.append(ln.register_forward_hook(hook(name)))
    was_training = visual.training
    visual.eval()
    seen = 0
    try:
        for x in batches:
            if x.shape[0] == 0:
                continue
            tapped_forward(visual, x)
            seen += int(x.shape[0])
    finally:
        for h in hooks:
            h.remove()
        visual.train(was_training)
    if seen == 0:
        raise ValueError("SmoothQuant statistics need at least one calibration image")
    return amax


@torch.no_grad()
def smoothing_factors(visual: nn.Module, act_absmax: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)`` per smoothed LayerNorm: name -> float32 CPU [d].

    ``act_absmax`` from :func:`activation_absmax`; ``alpha`` in [0, 1]."""
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha {alpha} outside [0, 1]")
    out = {}
    for name, (_, w) in targets(visual).items():
        xmax = act_absmax[name].double()
        wmax = w.detach().abs().double().amax(dim=0).cpu()
        s = xmax.pow(alpha) / wmax.pow(1.0 - alpha)
        ok = (xmax > 0) & (wmax > 0) & torch.isfinite(s) & (s > 0)
        s32 = torch.where(ok, s, torch.ones_like(s)).float()
        s32 = torch.where(torch.isfinite(s32) & (s32 > 0), s32, torch.ones_like(s32))  # float32 over/underflow
        out[name] = s32.contiguous()
    return out


@torch.no_grad()
def fold_smoothing(visual: nn.Module, factors: dict[str, torch.Tensor]) -> None:
    """Fold ``factors`` (name -> [d]) into ``visual`` in place: LayerNorm weight, bias / s; the fed
    Linear's input columns * s. ValueError unless the names, shapes and values (finite, > 0) fit."""
    tg = targets(visual)
    if set(factors) != set(tg):
        missing = sorted(set(tg) - set(factors))
        extra = sorted(set(factors) - set(tg))
        raise ValueError(f"smoothing factors do not fit this tower (missing {missing[:2]}, unexpected {extra[:2]})")
    for name, (ln, w) in tg.items():
        s = factors[name]
        if tuple(s.shape) != (w.shape[1],) or not bool(torch.isfinite(s).all() and (s > 0).all()):
            raise ValueError(f"smoothing factors {name}: expected finite positive [{w.shape[1]}], "
                             f"got shape {tuple(s.shape)}")
        s = s.to(device=w.device, dtype=w.dtype)
        ln.weight.div_(s)
        if ln.bias is not None:
            ln.bias.div_(s)
        w.mul_(s.unsqueeze(0))


def smooth_visual(visual: nn.Module, factors: dict[str, torch.Tensor]) -> nn.Module:
    """A float32 copy of ``visual`` with ``factors`` folded in (``visual`` is not changed)."""
    v = copy.deepcopy(visual).float().eval()
    fold_smoothing(v, factors)
    return v
