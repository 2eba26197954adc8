"""Numpy integer reference of the quantized operations (torch-free).

What integer hardware computes for one quantized layer:

- quantizer: ``q = clip(round_half_even(x / s), lo, hi)`` with lo/hi of a signed, narrow
  signed (weights) or unsigned integer of ``bits`` bits;
- int32 bias: ``b_int = clip(round_half_even(b / (s_x * s_w)), -2^31, 2^31 - 1)``;
- accumulator: ``acc = sum_k x_int[k] * w_int[n, k] + b_int[n]`` in integers;
- dequantisation: ``y = acc * (s_x * s_w)`` (a shift when the scales are powers of two);
- requantisation into the next quantizer: ``clip(round_half_even(acc * (s_x * s_w / s_next)), lo, hi)``.

Integer matmuls are computed with float64 BLAS only when a bound proves every partial sum is
an integer below 2^53 (so float64 is exact), else with int64 numpy; either way the result is
the exact integer accumulator (:func:`int_matmul`).
"""
from __future__ import annotations

import numpy as np

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
_EXACT_F64 = 2.0**53


def int_range(bits: int, signed: bool, narrow: bool = False) -> tuple[int, int]:
    """Integer range of a ``bits``-bit quantizer."""
    if signed:
        hi = 2 ** (bits - 1) - 1
        return (-hi if narrow else -hi - 1), hi
    return 0, 2**bits - 1


def quantize(x: np.ndarray, scale, bits: int, signed: bool, narrow: bool = False) -> np.ndarray:
    """``clip(round_half_even(x / scale), lo, hi)`` as int64 (x, scale float64, broadcastable)."""
    lo, hi = int_range(bits, signed, narrow)
    return np.clip(np.rint(np.asarray(x, np.float64) / np.asarray(scale, np.float64)), lo, hi).astype(np.int64)


def int_bias(b: np.ndarray, s_x, s_w) -> np.ndarray:
    """int32 bias at scale s_x * s_w (Brevitas ``Int32Bias``), as int64."""
    return np.clip(np.rint(np.asarray(b, np.float64) / (np.asarray(s_x, np.float64) * np.asarray(s_w, np.float64))),
                   INT32_MIN, INT32_MAX).astype(np.int64)


def int_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact integer ``a @ b`` (int64 in, int64 out; batched like ``np.matmul``)."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    k = a.shape[-1]
    bound = float(k) * float(np.abs(a).max(initial=0)) * float(np.abs(b).max(initial=0))
    if bound < _EXACT_F64:
        return np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(np.int64)
    return np.matmul(a, b)


def linear_acc(x_int: np.ndarray, w_int: np.ndarray, b_int: np.ndarray | None) -> np.ndarray:
    """Accumulator of a Linear: x_int [..., K] @ w_int[N, K]^T + b_int[N] -> int64 [..., N]."""
    acc = int_matmul(x_int, np.asarray(w_int, np.int64).T)
    return acc if b_int is None else acc + np.asarray(b_int, np.int64)


def patch_conv_acc(x_int: np.ndarray, w_int: np.ndarray, b_int: np.ndarray | None) -> np.ndarray:
    """Accumulator of a stride = kernel patch convolution (ViT conv1).

    x_int [B, C, H, W], w_int [D, C, p, p] -> int64 [B, D, H/p, W/p].
    """
    B, C, H, W = x_int.shape
    D, _, p, _ = w_int.shape
    gh, gw = H // p, W // p
    cols = x_int[:, :, :gh * p, :gw * p].reshape(B, C, gh, p, gw, p).transpose(0, 2, 4, 1, 3, 5)
    acc = linear_acc(cols.reshape(B, gh, gw, C * p * p), w_int.reshape(D, C * p * p), b_int)
    return acc.transpose(0, 3, 1, 2)


def dequant(acc: np.ndarray, scale) -> np.ndarray:
    """``acc * scale`` in float64 (exact for power-of-two scales and |acc| < 2^53)."""
    return np.asarray(acc, np.float64) * np.asarray(scale, np.float64)


def requant(acc: np.ndarray, in_scale, out_scale, bits: int, signed: bool) -> np.ndarray:
    """Requantise an accumulator at scale ``in_scale`` into a ``bits``-bit quantizer at ``out_scale``.

    With power-of-two scales ``in_scale / out_scale = 2^-shift`` and this is an arithmetic
    shift with round-half-to-even.
    """
    return quantize(dequant(acc, in_scale), out_scale, bits, signed)


def acc_bits(max_abs: int) -> int:
    """Signed accumulator width needed to hold values of magnitude ``max_abs``."""
    return int(max_abs).bit_length() + 1


def ulp_deviation(got: np.ndarray, ref: np.ndarray) -> float:
    """Largest |got - ref| in units of the last place of ``ref`` (float64)."""
    got = np.asarray(got, np.float64)
    ref = np.asarray(ref, np.float64)
    if got.size == 0:
        return 0.0
    return float((np.abs(got - ref) / np.spacing(np.abs(ref))).max())


def is_power_of_two(scale) -> bool:
    s = np.asarray(scale, np.float64)
    m, _ = np.frexp(s)
    return bool(np.all(m == 0.5))
