"""The paper's ``int8-dynamic`` recipe: ``torch.ao.quantization.quantize_dynamic``.

``quantize_dynamic(visual, {nn.Linear}, dtype=torch.qint8)`` on a copy of the image tower.
On open_clip 3.3 this replaces exactly the MLP ``c_fc`` and ``c_proj`` of every block with
``torch.ao.nn.quantized.dynamic.Linear`` (qint8 per-tensor weights; activations quantized
per batch at run time; float output). Not quantized: ``conv1``, the attention's
``in_proj_weight`` (a raw Parameter), ``attn.out_proj`` (``NonDynamicallyQuantizableLinear``
is skipped), the attention matmuls and softmax, LayerNorms, GELU, residual adds and the
final ``proj`` (a raw Parameter). :func:`dynamic_quantized_modules` lists what was replaced.
CPU only. torch.ao's eager quantization is deprecated but still runs on torch 2.14.
"""
from __future__ import annotations

import copy
import warnings

import torch
from torch import nn


def dynamic_visual(visual: nn.Module) -> nn.Module:
    """A dynamically quantized (qint8) CPU copy of ``visual``; ``visual`` is unchanged."""
    from torch.ao.quantization import quantize_dynamic

    v = copy.deepcopy(visual).float().cpu().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(v, {nn.Linear}, dtype=torch.qint8)


def dynamic_quantized_modules(qvisual: nn.Module) -> list[str]:
    """Names of the modules that quantize_dynamic replaced by dynamic quantized Linears."""
    from torch.ao.nn.quantized.dynamic import Linear as DynLinear

    return [n for n, m in qvisual.named_modules() if isinstance(m, DynLinear)]
