"""Helpers for the fixed-point exit unit tests: realistic random parameters and int8 tokens.

d = e = 128, K = 25, N = 49 (the tiny default's and ViT-B/32's token count), weights
~ N(0, 1/sqrt(d)), logit_scale = 100; gate bias set so about half the samples exit.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

D = E = 128
K = 25
N = 49
LOGIT_SCALE = 100.0
LAYERS = (6, 8, 10)
SCALES = {6: 2.0 ** -5, 8: 2.0 ** -4, 10: 2.0 ** -3}


def make_params(rng, d=D, e=E):
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    return {
        "ln.weight": f32(1 + 0.1 * rng.standard_normal(d)), "ln.bias": f32(0.1 * rng.standard_normal(d)),
        "fc1.weight": f32(rng.standard_normal((d, d)) / np.sqrt(d)), "fc1.bias": f32(0.1 * rng.standard_normal(d)),
        "fc2.weight": f32(rng.standard_normal((e, d)) / np.sqrt(d)), "fc2.bias": f32(0.1 * rng.standard_normal(e)),
        "gate.w": f32([3.0, 2.0, -0.5]), "gate.b": f32([0.0]),
        "gate.mu": f32([0.3, 0.2, 10.0]), "gate.sigma": f32([0.2, 0.15, 3.0]), "tau": 0.5,
    }


def make_tokens(rng, n, n_tokens=N, d=D):
    """int8 codes with per-sample structure (a shared pattern + noise) so SAV and preds vary."""
    base = rng.standard_normal((n, 1, d)) * rng.uniform(10, 60, (n, 1, 1))
    noise = rng.standard_normal((n, n_tokens + 1, d)) * rng.uniform(5, 40, (n, 1, 1))
    return np.clip(np.round(base + noise), -128, 127).astype(np.int8)


def round_fraction(fr: Fraction, rounding: str) -> int:
    """Exact rational rounding to an integer: TRN (floor), RND (half up), RND_CONV (half to even)."""
    fl = fr.numerator // fr.denominator
    rem = fr - fl
    if rounding == "TRN":
        return fl
    if rounding == "RND":
        return fl + (rem >= Fraction(1, 2))
    return fl + (rem > Fraction(1, 2) or (rem == Fraction(1, 2) and fl % 2 == 1))
