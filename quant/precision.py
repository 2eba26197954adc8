"""Precision recipes shared by every command's ``--precision`` flag.

``fp32`` runs the encoder as loaded. (The INT8 recipes, ``int8-dynamic``, ``w8a8`` and
``wXaY``, arrive with the quantization work.)
"""
from __future__ import annotations

from analysis.errors import InputError

PRECISIONS: tuple[str, ...] = ("fp32",)


def recipe_descriptor(precision: str) -> dict:
    """JSON-able identity of a recipe (hashed into feature-cache keys)."""
    if precision not in PRECISIONS:
        raise InputError(f"--precision {precision!r}: unknown recipe; allowed: {', '.join(PRECISIONS)}")
    return {"precision": precision, "dtype": "float32"}
