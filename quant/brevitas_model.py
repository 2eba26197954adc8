"""Brevitas static quantization (``w8a8`` / ``wXaY``) of an open_clip image tower.

:func:`build_quant_visual` deep-copies ``model.visual`` and swaps, with
``brevitas.graph.quantize.layerwise_quantize``:

- ``nn.MultiheadAttention`` -> ``QuantMultiheadAttention`` (packed ``in_proj`` QuantLinear, q_scaled,
  k^T, softmax-output and v quantizers, ``out_proj`` QuantLinear),
- ``nn.Linear`` (``mlp.c_fc``, ``mlp.c_proj``) -> ``QuantLinear``,
- ``conv1`` (patch embedding) -> ``QuantConv2d``,

and replaces the raw ``proj`` parameter [d, embed_dim] by a bias-free ``QuantLinear``
``proj_q`` (weight = proj^T), applied by :func:`quant_tapped_forward`. Weights are signed,
narrow-range (+-(2^(X-1)-1)), per output channel, scale from the weight's abs max; activations
per tensor (signed Y bits; the softmax output unsigned Y bits), scale from calibration
statistics; biases int32 at scale s_in * s_w. Rounding is half-to-even. ``scales='po2'``
restricts every scale to a power of two (ceil of log2), ``'float'`` keeps float scales.
Everything not listed stays float (:data:`quant.recipes.STATIC_FLOAT_PARTS`). A recipe's
modifiers (``+sq``: SmoothQuant, :mod:`quant.smoothquant`) are folded into the float copy first.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from quant.recipes import Recipe
from quant.taps import Taps, tapped_forward

CALIB_STEPS = 10**9  # collect statistics over every calibration batch (finalised on exit)


def _quantizers(recipe: Recipe, method: str):
    """(weight, signed act, unsigned act, bias) Brevitas quantizer classes for a recipe."""
    from brevitas.core.stats import StatsOp  # noqa: F401  (enum used through .let)
    from brevitas.inject.enum import StatsOp as SO
    from brevitas.quant import fixed_point as fp
    from brevitas.quant import scaled_int as si

    po2 = recipe.scales == "po2"
    w = fp.Int8WeightPerChannelFixedPoint if po2 else si.Int8WeightPerChannelFloat
    if method == "mse":
        a = fp.Int8ActPerTensorFixedPointMSE if po2 else si.Int8ActPerTensorFloatMSE
        u = fp.Uint8ActPerTensorFixedPointMSE if po2 else si.Uint8ActPerTensorFloatMSE
    else:
        a = fp.Int8ActPerTensorFixedPoint if po2 else si.Int8ActPerTensorFloat
        u = fp.Uint8ActPerTensorFixedPoint if po2 else si.Uint8ActPerTensorFloat
    w = w.let(bit_width=recipe.w_bits)
    extra = {"bit_width": recipe.a_bits, "collect_stats_steps": CALIB_STEPS}
    if method == "minmax":
        extra["scaling_stats_op"] = SO.MAX
    a = a.let(**extra)
    u = u.let(**extra)
    return w, a, u, si.Int32Bias


def layer_map(recipe: Recipe, method: str) -> dict:
    """The ``compute_layer_map`` handed to ``layerwise_quantize``."""
    import brevitas.nn as qnn

    w, a, u, b = _quantizers(recipe, method)
    lin = {"input_quant": a, "weight_quant": w, "bias_quant": b, "return_quant_tensor": False}
    return {
        nn.MultiheadAttention: (qnn.QuantMultiheadAttention, {
            "in_proj_input_quant": a, "in_proj_weight_quant": w, "in_proj_bias_quant": b,
            "attn_output_weights_quant": u, "q_scaled_quant": a, "k_transposed_quant": a, "v_quant": a,
            "out_proj_input_quant": a, "out_proj_weight_quant": w, "out_proj_bias_quant": b,
            "return_quant_tensor": False}),
        nn.Linear: (qnn.QuantLinear, dict(lin)),
        nn.Conv2d: (qnn.QuantConv2d, dict(lin)),
    }


def build_quant_visual(visual: nn.Module, recipe: Recipe, method: str = "percentile",
                       modifier_state: dict | None = None) -> nn.Module:
    """An uncalibrated Brevitas copy of ``visual`` (``visual`` itself is not modified).

    ``modifier_state``: the fitted state of the recipe's modifiers (``+sq``: the smoothing
    factors, keys ``modifier.sq.<LayerNorm name>``, float32 [d]; from
    :meth:`quant.recipes.Recipe.fit` or a saved calibration), folded into the float copy before
    quantization and kept as ``lraee_modifier_state`` (saved with the calibration state).
    Required when the recipe has modifiers (ValueError otherwise)."""
    import brevitas.nn as qnn
    from brevitas.graph.quantize import layerwise_quantize

    if not recipe.is_static:
        raise ValueError(f"{recipe.name} is not a Brevitas static recipe")
    qv = copy.deepcopy(visual).float().eval()
    state = recipe.apply_modifiers(qv, modifier_state)
    proj = qv.proj
    qv.proj = None
    qmap = layer_map(recipe, method)
    qv = layerwise_quantize(qv, compute_layer_map=qmap)
    if proj is not None:
        _, kw = qmap[nn.Linear]
        head = qnn.QuantLinear(proj.shape[0], proj.shape[1], bias=False, **kw)
        with torch.no_grad():
            head.weight.copy_(proj.detach().T)
        qv.proj_q = head
    qv.lraee_recipe = recipe.name
    qv.lraee_modifier_state = {k: v.detach().cpu().float().contiguous() for k, v in state.items()}
    return qv.eval()


def quant_tapped_forward(qvisual: nn.Module, images: torch.Tensor, depth: int | None = None,
                         keep: set[int] | None = None) -> Taps:
    """:func:`quant.taps.tapped_forward` plus the quantized final projection ``proj_q``."""
    taps = tapped_forward(qvisual, images, depth=depth, keep=keep)
    head = getattr(qvisual, "proj_q", None)
    if taps.embedding is not None and head is not None:
        taps.embedding = head(taps.embedding)
    return taps


def quant_modules(qvisual: nn.Module) -> dict[str, nn.Module]:
    """Name -> quantized compute layer (QuantLinear / QuantConv2d), in forward order."""
    import brevitas.nn as qnn

    return {n: m for n, m in qvisual.named_modules() if isinstance(m, (qnn.QuantLinear, qnn.QuantConv2d))}
