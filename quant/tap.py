"""The exit tap: block output z_L -> int8 codes for the exit unit, and its scale rule.

The fixed-point exit unit reads the block output z_L [B, N+1, d] ([CLS] at token 0) as int8, a
quantization point the hardware adds: per block a power-of-two scale ``s_L = 2**e_L`` fixed
before inference, ``q = clamp(round_half_even(z_L / s_L), -128, 127)`` (saturating).

Scale rule ``po2-percentile``: ``e_L`` is the smallest integer with
``#{|z_L| > 127 * 2**e_L} <= (1 - P/100) * count`` over every element of every token (N+1) of
z_L on the calibration images, i.e. the smallest power of two whose int8 range covers the P-th
percentile of |z_L| (P = 99.99 by default). :class:`TapScaleCounter` counts it exactly, batch by
batch, with no stored activations; it is fed by whatever pass runs over the calibration images
(the QIRC profile's INT8 pass in ``lraee run``).

This module takes tensors, never data sources.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from common.errors import InputError

TAP_RULE = "po2-percentile"
TAP_PERCENTILE = 99.99
TAP_CALIB_N = 512
TAP_EXP_RANGE = (-40, 40)  # exponents searched by the scale rule (2**-40 .. 2**40)
QUANTIZATION_POINT = ("block output z_L -> int8 for the exit unit: per-tensor power-of-two scale s_L fixed "
                      "before inference, q = clamp(round_half_even(z_L / s_L), -128, 127) (saturating)")


@dataclass
class TokenTap:
    """Exit-tap scales: blocks ``layers``, scale ``2**exponents[L]`` per block, and the ``rule``
    that chose the exponents (recorded in cache keys)."""

    layers: tuple[int, ...]
    exponents: dict[int, int]
    rule: dict = field(default_factory=dict)

    QUANTIZATION_POINT = QUANTIZATION_POINT

    def __post_init__(self):
        self.layers = tuple(sorted(int(L) for L in self.layers))
        self.exponents = {int(L): int(e) for L, e in self.exponents.items()}

    def scale(self, layer: int) -> float:
        return math.ldexp(1.0, self.exponents[int(layer)])

    def check(self, depth: int) -> None:
        if not self.layers:
            raise InputError("exit-tap tokens: no layers requested; allowed: blocks in 1..depth")
        bad = [L for L in self.layers if not 1 <= L <= depth]
        if bad:
            raise InputError(f"exit-tap tokens: layers {bad}; allowed: blocks in 1..{depth}")
        missing = [L for L in self.layers if L not in self.exponents]
        if missing:
            raise InputError(f"exit-tap tokens: no scale for layers {missing}")

    def descriptor(self) -> dict:
        return {"layers": list(self.layers), "rule": dict(self.rule),
                "scale_exponents": {str(L): self.exponents[L] for L in self.layers}}

    def restricted(self, layers) -> "TokenTap":
        """The same scales for ``layers`` only."""
        layers = [int(L) for L in layers]
        missing = [L for L in layers if L not in self.exponents]
        if missing:
            raise InputError(f"exit-tap tokens: no scale for layers {missing}; allowed: {list(self.layers)}")
        return TokenTap(layers, {L: self.exponents[L] for L in layers}, dict(self.rule))

    @classmethod
    def from_descriptor(cls, d: dict, layers=None) -> "TokenTap":
        """The tap of a :meth:`descriptor` (e.g. a policy's ``exit_tap``), optionally restricted to ``layers``."""
        exps = {int(k): int(v) for k, v in d["scale_exponents"].items()}
        layers = list(d["layers"]) if layers is None else [int(L) for L in layers]
        return cls(layers, {L: exps[L] for L in layers}, dict(d.get("rule", {})))


def tap_codes(z: torch.Tensor, exponent: int) -> torch.Tensor:
    """The codes of :func:`tap_quantize` as float integers in [-128, 127] (float32; float64 for float64 ``z``;
    -0.0 where a negative value rounds to 0).

    float16 / bfloat16 / float32 ``z`` is scaled in float32: ``z * 2**-exponent`` is exact there too (a
    power-of-two scaling) except past float32's range, where both ways give the same code (an overflow
    saturates to -128 / 127, an underflow is below 1/2 and rounds to 0); float64 ``z`` is scaled in
    float64. So the codes equal the float64 definition's, with a third of its memory traffic (tested)."""
    s = math.ldexp(1.0, -int(exponent))
    v = z * s if z.dtype == torch.float64 else z.float() * s
    return v.round_().clamp_(-128, 127)


def tap_quantize(z: torch.Tensor, exponent: int) -> torch.Tensor:
    """int8 codes ``clamp(round_half_even(z * 2**-exponent), -128, 127)`` (exact: a power-of-two scaling)."""
    return tap_codes(z, exponent).to(torch.int8)


def po2_percentile_exponent(counts_above: np.ndarray, total: int, percentile: float, exps: np.ndarray) -> int:
    """Smallest exponent e (of ``exps``, ascending) with ``#{|z| > 127 * 2**e} <= (1 - P/100) * total``."""
    allowed = (1.0 - percentile / 100.0) * total
    ok = np.flatnonzero(counts_above <= allowed + 1e-9)
    return int(exps[ok[0]]) if len(ok) else int(exps[-1])


def check_percentile(percentile: float) -> float:
    if not 0.0 < float(percentile) <= 100.0:
        raise InputError(f"--tap-percentile {percentile}: allowed: a number in (0, 100]")
    return float(percentile)


class TapScaleCounter:
    """Exact counts for the ``po2-percentile`` rule, accumulated over batches of block outputs.

    ``update(L, z)`` with z [B, N+1, d] (any float dtype); ``tap(rule)`` gives the
    :class:`TokenTap`; ``record()`` the absmax and the fraction above 127 s_L per block.
    Memory: one int64 per candidate exponent and block (independent of the number of images).
    """

    def __init__(self, layers, percentile: float = TAP_PERCENTILE):
        self.layers = sorted(int(L) for L in layers)
        self.percentile = check_percentile(percentile)
        self.exps = np.arange(TAP_EXP_RANGE[0], TAP_EXP_RANGE[1] + 1)
        self._bounds = torch.tensor([127.0 * math.ldexp(1.0, int(e)) for e in self.exps], dtype=torch.float64)
        self.above = {L: np.zeros(len(self.exps), np.int64) for L in self.layers}
        self.total = {L: 0 for L in self.layers}
        self.absmax = {L: 0.0 for L in self.layers}
        self.images = 0

    def update(self, layer: int, z: torch.Tensor) -> None:
        a = z.detach().double().abs().reshape(-1).cpu()
        srt, _ = torch.sort(a)
        idx = torch.searchsorted(srt, self._bounds, right=True)  # elements > bound: numel - idx
        self.above[layer] += (a.numel() - idx).numpy().astype(np.int64)
        self.total[layer] += a.numel()
        self.absmax[layer] = max(self.absmax[layer], float(srt[-1]) if a.numel() else 0.0)

    def update_taps(self, tokens: list, batch: int) -> None:
        """Count every tracked block of one tapped forward (``tokens[L]`` = z_L [B, N+1, d])."""
        for L in self.layers:
            self.update(L, tokens[L])
        self.images += int(batch)

    def exponents(self) -> dict[int, int]:
        if not any(self.total.values()):
            raise InputError("exit-tap calibration: no images seen; allowed: a non-empty calibration source")
        return {L: po2_percentile_exponent(self.above[L], self.total[L], self.percentile, self.exps)
                for L in self.layers}

    def tap(self, rule: dict) -> TokenTap:
        return TokenTap(self.layers, self.exponents(), {"name": TAP_RULE, "percentile": self.percentile, **rule})

    def record(self) -> dict:
        expo = self.exponents()
        return {"exponents": {str(L): expo[L] for L in self.layers},
                "scales": {str(L): math.ldexp(1.0, expo[L]) for L in self.layers},
                "absmax": {str(L): self.absmax[L] for L in self.layers},
                "fraction_above_127s": {str(L): float(self.above[L][list(self.exps).index(expo[L])] / self.total[L])
                                        for L in self.layers}}
