"""Bit-accuracy proof: every quantized layer of a Brevitas image tower vs :mod:`quant.intref`.

One forward pass (normally float64, TF32 off) with hooks captures, for every quantized
Linear / conv (``conv1``, ``attn.in_proj``, ``attn.out_proj``, ``mlp.c_fc``, ``mlp.c_proj``,
``proj_q``) its float input, the integer input from its quantizer, the integer weight, the
bias and its float output; for every attention the integer q_scaled and k^T operands, the
q k^T logits, the integer softmax output and v operand, and the P v result. The numpy
reference then recomputes, in integers:

- the input quantizer (requantisation with round-half-to-even) and the weight quantizer,
- the int32 bias, the accumulator ``x_int @ w_int^T + b_int`` and its dequantised output,
- both attention matmuls, and the requantisation of P v into ``out_proj``'s input quantizer.

With power-of-two scales every comparison is ``==``. With float scales the integer parts are
still compared with ``==`` and the dequantised outputs' deviation is reported in ULPs.
Per layer it records the largest accumulator magnitude and the signed accumulator bits it needs.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from quant import intref
from quant.brevitas_model import quant_tapped_forward


def _np(t) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def _qt(qt) -> dict:
    return {"int": qt.int().detach().cpu().numpy().astype(np.int64), "scale": _np(qt.scale),
            "bits": int(qt.bit_width), "signed": bool(qt.signed)}


@dataclass
class LayerCheck:
    """Result for one quantized layer or attention matmul."""

    name: str
    kind: str  # linear | conv | qk_matmul | pv_matmul
    exact: bool
    checks: dict = field(default_factory=dict)  # check name -> bool (integer/float64 equality)
    ulp_max: float = 0.0  # dequantised output vs reference, in ULPs (0 for po2 scales)
    acc_max_abs: int = 0
    acc_bits: int = 0
    float32_exact: bool = True  # |acc| < 2^24: float32 arithmetic is exact too


def _capture(qvisual: nn.Module, images: torch.Tensor) -> tuple[dict, dict]:
    import brevitas.nn as qnn

    layers: dict[str, dict] = {}
    attns: dict[str, dict] = {}
    hooks = []

    def put(store, name, key, fn):
        def hook(mod, inp, out):
            store.setdefault(name, {})[key] = fn(inp, out)
        return hook

    for name, m in qvisual.named_modules():
        if isinstance(m, (qnn.QuantLinear, qnn.QuantConv2d)):
            hooks += [
                m.register_forward_hook(put(layers, name, "io", lambda i, o: (_np(i[0]), _np(o)))),
                m.input_quant.register_forward_hook(put(layers, name, "x", lambda i, o: _qt(o))),
                m.weight_quant.register_forward_hook(put(layers, name, "w", lambda i, o: _qt(o))),
            ]
            if m.bias is not None:
                hooks.append(m.bias_quant.register_forward_hook(put(layers, name, "b", lambda i, o: _qt(o))))
            layers.setdefault(name, {})["module"] = m
        elif isinstance(m, qnn.QuantMultiheadAttention):
            for key, sub in (("q", m.q_scaled_quant), ("k", m.k_transposed_quant),
                             ("p", m.attn_output_weights_quant), ("v", m.v_quant)):
                hooks.append(sub.act_quant.register_forward_hook(
                    put(attns, name, key, lambda i, o: (_np(i[0]), _qt(o)))))
            hooks.append(m.softmax_input_quant.register_forward_hook(
                put(attns, name, "logits", lambda i, o: _np(i[0]))))
            attns.setdefault(name, {})["module"] = m
    try:
        with torch.no_grad():
            quant_tapped_forward(qvisual, images)
    finally:
        for h in hooks:
            h.remove()
    return layers, attns


def _float_weight(m) -> np.ndarray:
    return _np(m.weight)


def _check_layer(name: str, rec: dict, po2: bool) -> LayerCheck:
    m = rec["module"]
    x_float, y = rec["io"]
    xq, wq = rec["x"], rec["w"]
    kind = "conv" if x_float.ndim == 4 else "linear"
    checks = {}
    checks["input_requant"] = np.array_equal(
        intref.quantize(x_float, xq["scale"], xq["bits"], xq["signed"]), xq["int"])
    w_scale = wq["scale"]
    checks["weight_quant"] = np.array_equal(
        intref.quantize(_float_weight(m), w_scale, wq["bits"], True, narrow=True), wq["int"])
    s_w = w_scale.reshape(-1)  # per output channel
    s_x = xq["scale"].reshape(())
    b_int = None
    if "b" in rec:
        b_int = intref.int_bias(_np(m.bias), s_x, s_w)
        checks["bias_int32"] = np.array_equal(b_int, rec["b"]["int"].reshape(-1))
    if kind == "conv":
        acc = intref.patch_conv_acc(xq["int"], wq["int"], b_int)
        ref = intref.dequant(acc, (s_x * s_w).reshape(1, -1, 1, 1))
    else:
        acc = intref.linear_acc(xq["int"], wq["int"], b_int)
        ref = intref.dequant(acc, s_x * s_w)
    checks["output"] = np.array_equal(y, ref)
    return _finish(name, kind, checks, y, ref, acc, po2)


def _check_attention(name: str, rec: dict, out_proj_rec: dict, po2: bool) -> list[LayerCheck]:
    out = []
    (q_f, q), (k_f, k), (p_f, p), (v_f, v) = rec["q"], rec["k"], rec["p"], rec["v"]
    checks = {"q_requant": np.array_equal(intref.quantize(q_f, q["scale"], q["bits"], q["signed"]), q["int"]),
              "k_requant": np.array_equal(intref.quantize(k_f, k["scale"], k["bits"], k["signed"]), k["int"])}
    acc = intref.int_matmul(q["int"], k["int"])
    s_qk = q["scale"].reshape(()) * k["scale"].reshape(())
    ref = intref.dequant(acc, s_qk)
    checks["output"] = np.array_equal(rec["logits"], ref)
    out.append(_finish(f"{name}.qk_matmul", "qk_matmul", checks, rec["logits"], ref, acc, po2))

    checks = {"softmax_requant": np.array_equal(intref.quantize(p_f, p["scale"], p["bits"], p["signed"]), p["int"]),
              "v_requant": np.array_equal(intref.quantize(v_f, v["scale"], v["bits"], v["signed"]), v["int"])}
    acc = intref.int_matmul(p["int"], v["int"])  # [B*h, L, hd]
    s_pv = p["scale"].reshape(()) * v["scale"].reshape(())
    bh, L, hd = acc.shape
    x_f = out_proj_rec["io"][0]  # out_proj input [L, B, E]
    nb = x_f.shape[1]
    acc_l = acc.transpose(1, 0, 2).reshape(L, nb, bh // nb * hd)
    ref = intref.dequant(acc_l, s_pv)
    checks["output"] = np.array_equal(x_f, ref)
    xo = out_proj_rec["x"]
    if po2:  # the P v accumulator requantised into out_proj's input quantizer by a pure shift
        checks["out_proj_input_shift_requant"] = np.array_equal(
            intref.requant(acc_l, s_pv, xo["scale"], xo["bits"], xo["signed"]), xo["int"])
    out.append(_finish(f"{name}.pv_matmul", "pv_matmul", checks, x_f, ref, acc_l, po2))
    return out


def _finish(name, kind, checks, got, ref, acc, po2) -> LayerCheck:
    amax = int(np.abs(acc).max(initial=0))
    ulp = intref.ulp_deviation(got, ref)
    if not po2:  # float scales: the dequantised outputs are compared in ULPs, not ==
        checks.pop("output", None)
    checks = {k: bool(v) for k, v in checks.items()}
    return LayerCheck(name=name, kind=kind, exact=all(checks.values()), checks=checks, ulp_max=ulp,
                      acc_max_abs=amax, acc_bits=intref.acc_bits(amax), float32_exact=amax < 2**24)


def check_exactness(qvisual: nn.Module, images: torch.Tensor, float64: bool = True) -> list[LayerCheck]:
    """Run one forward of ``images`` and compare every quantized layer with the numpy reference.

    The model is run in float64 (a copy; ``qvisual`` is unchanged) with TF32 off unless
    ``float64=False``. Returns one :class:`LayerCheck` per quantized Linear/conv and two per
    attention (``qk_matmul``, ``pv_matmul``), in forward order.
    """
    import copy

    if not getattr(qvisual, "lraee_calibrated", False):
        raise ValueError("uncalibrated model: calibrate or load a calibration first")
    prev = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        model = copy.deepcopy(qvisual)
        if float64:
            model = model.double()
            images = images.double()
        layers, attns = _capture(model, images.to(next(model.parameters()).device))
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev
    po2 = all(intref.is_power_of_two(r["x"]["scale"]) and intref.is_power_of_two(r["w"]["scale"])
              for r in layers.values())
    results: list[LayerCheck] = []
    for name, rec in layers.items():
        if name.endswith(".out_proj"):
            att = name[: -len(".out_proj")]
            if att in attns:
                results += _check_attention(att, attns[att], rec, po2)
        results.append(_check_layer(name, rec, po2))
    return results


def summary(results: list[LayerCheck]) -> dict:
    """JSON-able summary: all exact?, counts, worst ULP, largest accumulator, per-layer records."""
    return {"all_exact": all(r.exact for r in results), "layers": len(results),
            "ulp_max": max((r.ulp_max for r in results), default=0.0),
            "acc_bits_max": max((r.acc_bits for r in results), default=0),
            "records": [asdict(r) for r in results]}
