"""Precision recipes shared by every command's ``--precision`` flag (torch-free).

``fp32``, ``int8-dynamic`` (the paper's torch.ao recipe), ``w8a8`` and ``wXaY`` (Brevitas,
X, Y in 2..16), with the modifier ``+sq`` / ``+sqALPHA`` (SmoothQuant) on the static ones. The
recipe protocol, its registries and the parser live in :mod:`quant.recipes`; building the
quantized encoder in :mod:`quant.prepare`.
"""
from __future__ import annotations

from quant.recipes import ALLOWED_TEXT, MODIFIERS, PRECISIONS, RECIPES, Recipe, parse_precision

__all__ = ["PRECISIONS", "ALLOWED_TEXT", "RECIPES", "MODIFIERS", "Recipe", "parse_precision", "recipe_descriptor"]


def recipe_descriptor(precision: str, scales: str = "po2") -> dict:
    """JSON-able identity of a recipe (hashed into feature-cache keys)."""
    return parse_precision(precision, scales).descriptor()
