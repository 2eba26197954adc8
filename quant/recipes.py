"""Precision recipes: one protocol, a registry, and the ``--precision`` grammar.

Torch-free at import (the methods that build models import torch lazily).

Every recipe is a :class:`Recipe` subclass registered in :data:`RECIPES` (family -> class);
every recipe modifier a :class:`Modifier` subclass registered in :data:`MODIFIERS`. A recipe
says, in one place: its grammar (:meth:`Recipe.parse`), its weight / activation widths, whether
it needs calibration, its JSON identity (:meth:`Recipe.descriptor`, hashed into feature-store
and calibration keys), its file-name tag (:meth:`Recipe.tag`), what it quantizes and leaves
float, how it builds a tower from a float one (:meth:`Recipe.build`) and how it prepares a
runnable encoder (:meth:`Recipe.prepare`). :data:`PRECISIONS` and :data:`ALLOWED_TEXT` (the
allowed values of every ``--precision`` error message) are derived from the registries.

``--precision`` grammar: ``BASE`` or ``BASE+MOD[+MOD...]`` (case-insensitive):

- ``fp32``: the encoder as loaded.
- ``int8-dynamic``: the paper's recipe, ``torch.ao.quantization.quantize_dynamic`` (qint8
  weights, activations quantized on the fly per batch) on the image tower's ``nn.Linear``
  modules. On open_clip 3.3 that is only the MLP ``c_fc``/``c_proj`` of every block (see
  :data:`DYNAMIC_FLOAT_PARTS`).
- ``w8a8`` (= ``wXaY`` with X = Y = 8): the hardware recipe, Brevitas static quantization,
  signed per-output-channel weights of X bits, per-tensor activations of Y bits.
- ``wXaY`` with X, Y in 2..16 (``w4a8``, ``w6a6``, ...).
- modifier ``+sq`` / ``+sqALPHA`` (static recipes only): SmoothQuant with migration strength
  ALPHA, a decimal number in [0, 1] (default 0.5): ``w8a8+sq``, ``w4a8+sq0.75``
  (:class:`SmoothQuant`, :mod:`quant.smoothquant`). ``w8a8+sq0.5`` is the same recipe as
  ``w8a8+sq`` (canonical name ``w8a8+sq``).

``--scales po2`` (default) restricts every scale to a power of two (integer hardware shifts by
it); ``--scales float`` keeps float scales.
"""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, ClassVar, Iterable

from common.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from quant.prepare import PrepareOptions, PreparedRecipe

SCALES: tuple[str, ...] = ("po2", "float")
CALIB_METHODS: tuple[str, ...] = ("percentile", "minmax", "mse")
BIT_RANGE = (2, 16)

#: What stays float under the Brevitas static recipes (``w8a8``, ``wXaY``).
STATIC_FLOAT_PARTS: tuple[str, ...] = (
    "class embedding concat and positional-embedding add (_embeds)",
    "ln_pre, ln_1, ln_2, ln_post (LayerNorm)",
    "q / sqrt(head_dim) scaling before the q operand quantizer",
    "softmax arithmetic (its output is quantized to unsigned Y bits)",
    "GELU / QuickGELU (mlp.gelu)",
    "residual adds (x + attn, x + mlp) and ls_1/ls_2 when present",
    "Linear / conv outputs before the next quantizer (accumulator * scale + int32 bias, dequantized)",
    "token mean / [CLS] pooling (_pool)",
    "the text tower (class embeddings)",
)

#: Quantized operands under the Brevitas static recipes.
STATIC_QUANTIZED_PARTS: tuple[str, ...] = (
    "conv1 (patch embedding): input Y-bit per tensor, weight X-bit per output channel",
    "attn.in_proj (q/k/v projection): input Y-bit, weight X-bit per channel, bias int32",
    "attention q_scaled and k^T operands: Y-bit per tensor (matmul q k^T)",
    "attention softmax output: unsigned Y-bit; v operand Y-bit (matmul P v)",
    "attn.out_proj: input Y-bit, weight X-bit per channel, bias int32",
    "mlp.c_fc and mlp.c_proj: input Y-bit, weight X-bit per channel, bias int32",
    "proj (final projection): input Y-bit, weight X-bit per channel",
)

#: What torch.ao dynamic quantization quantizes on open_clip 3.3 (checked by a test).
DYNAMIC_QUANTIZED_PARTS: tuple[str, ...] = (
    "mlp.c_fc and mlp.c_proj of every block: qint8 per-tensor weights, activations quantized per batch "
    "at run time (uint8, reduce_range), float output",
)
DYNAMIC_FLOAT_PARTS: tuple[str, ...] = (
    "conv1 (patch embedding)",
    "attn.in_proj_weight (a raw Parameter of nn.MultiheadAttention, not a Linear)",
    "attn.out_proj (NonDynamicallyQuantizableLinear, skipped by quantize_dynamic)",
    "attention matmuls and softmax",
    "LayerNorms, GELU, residual adds, pooling",
    "proj (final projection, a raw Parameter)",
    "the text tower",
)

#: Key prefix of a modifier's fitted tensors in a calibration state (``modifier.<key>.<name>``).
MODIFIER_STATE_PREFIX = "modifier."


# --------------------------------------------------------------------------- modifiers


class Modifier(ABC):
    """A recipe modifier (``+KEY...`` after a static recipe): a float-model transform fitted on the
    calibration images and applied to the float tower before Brevitas quantization.

    Its fitted tensors are saved with the calibration state (keys ``modifier.<key>.<name>``) so a
    saved calibration rebuilds the identical model without refitting.
    """

    key: ClassVar[str]  #: grammar prefix, e.g. ``sq``
    grammar: ClassVar[str]  #: allowed-values text of the modifier
    summary: ClassVar[str]  #: one line for ``lraee info --precision``

    @classmethod
    @abstractmethod
    def parse(cls, token: str, flag: str, text: str) -> "Modifier | None":
        """The modifier for ``token`` (the text after ``+``), None if ``token`` is not this modifier;
        InputError (one line, naming ``flag`` and ``text``) if it is but its argument is bad."""

    @property
    @abstractmethod
    def suffix(self) -> str:
        """Canonical ``+...`` text appended to the recipe name."""

    @abstractmethod
    def descriptor(self) -> dict:
        """JSON-able identity (part of the recipe descriptor)."""

    @abstractmethod
    def float_parts(self) -> tuple[str, ...]:
        """Lines added to the recipe's float-parts listing."""

    @abstractmethod
    def fit(self, visual, batches: Iterable) -> dict:
        """Fit on the FP32 tower ``visual`` over calibration ``batches`` ([B, 3, H, W]); returns
        name -> float32 CPU tensor (unprefixed names)."""

    @abstractmethod
    def apply(self, visual, state: dict) -> None:
        """Fold a fitted ``state`` (unprefixed names) into the float tower ``visual`` in place;
        ValueError if the state does not fit the tower."""


MODIFIERS: dict[str, type[Modifier]] = {}


def register_modifier(cls: type[Modifier]) -> type[Modifier]:
    MODIFIERS[cls.key] = cls
    return cls


def _decimal_text(x: float) -> str:
    """Shortest positional decimal text of ``x`` (0.7 -> '0.7', 1.0 -> '1', 1e-05 -> '0.00001')."""
    t = format(Decimal(repr(float(x))), "f")
    return t.rstrip("0").rstrip(".") if "." in t else t


@register_modifier
@dataclass(frozen=True)
class SmoothQuant(Modifier):
    """SmoothQuant (Xiao et al. 2023): per-channel factors s_j = max|X_j|^alpha / max|W_j|^(1-alpha)
    from the calibration images, for the activations entering ``attn.in_proj`` (after ``ln_1``) and
    ``mlp.c_fc`` (after ``ln_2``), folded into the LayerNorm affine (weight, bias / s) and that
    Linear's input columns (* s). Same FP32 function; activation outliers move into the weights.
    """

    alpha: float = 0.5

    key: ClassVar[str] = "sq"
    DEFAULT_ALPHA: ClassVar[float] = 0.5
    grammar: ClassVar[str] = "+sq or +sqALPHA (SmoothQuant, ALPHA a decimal in [0, 1], default 0.5; e.g. +sq0.75)"
    summary: ClassVar[str] = ("SmoothQuant: s_j = max|X_j|^alpha / max|W_j|^(1-alpha) over the calibration images "
                              "for the inputs of attn.in_proj (after ln_1) and mlp.c_fc (after ln_2), folded into "
                              "the LayerNorm affine (/ s) and the Linear's input columns (* s) before quantization")
    _NUMBER: ClassVar[re.Pattern] = re.compile(r"^(\d+(\.\d*)?|\.\d+)$")

    @classmethod
    def parse(cls, token: str, flag: str, text: str) -> "SmoothQuant | None":
        if not token.startswith(cls.key):
            return None
        arg = token[len(cls.key):]
        if arg == "":
            return cls(cls.DEFAULT_ALPHA)
        if not cls._NUMBER.match(arg):
            raise InputError(f"{flag} {text!r}: SmoothQuant alpha {arg!r} is not a decimal number; "
                             f"allowed modifiers: {cls.grammar}")
        a = float(arg)
        if not 0.0 <= a <= 1.0:
            raise InputError(f"{flag} {text!r}: SmoothQuant alpha {arg} outside [0, 1]; allowed modifiers: {cls.grammar}")
        return cls(a)

    @property
    def suffix(self) -> str:
        return "+sq" if self.alpha == self.DEFAULT_ALPHA else f"+sq{_decimal_text(self.alpha)}"

    def descriptor(self) -> dict:
        return {"modifier": "smoothquant", "alpha": self.alpha,
                "targets": "ln_1 -> attn.in_proj, ln_2 -> mlp.c_fc (every block)",
                "statistic": "per-channel abs max of the FP32 LayerNorm output over the calibration tokens",
                "folding": "LayerNorm weight and bias / s, Linear input columns * s (float32, before quantization)"}

    def float_parts(self) -> tuple[str, ...]:
        return (f"SmoothQuant (alpha {_decimal_text(self.alpha)}): per-channel s folded into ln_1/ln_2 "
                "(weight, bias / s) and attn.in_proj / mlp.c_fc input columns (* s) before quantization; "
                "no extra operation at run time",)

    def fit(self, visual, batches: Iterable) -> dict:
        from quant.smoothquant import activation_absmax, smoothing_factors

        return smoothing_factors(visual, activation_absmax(visual, batches), self.alpha)

    def apply(self, visual, state: dict) -> None:
        from quant.smoothquant import fold_smoothing

        fold_smoothing(visual, state)


def modifiers_text() -> str:
    """Allowed-values text of the registered modifiers."""
    return "; ".join(m.grammar for m in MODIFIERS.values())


# --------------------------------------------------------------------------- recipes


class Recipe(ABC):
    """The recipe protocol (a parsed ``--precision``).

    Class attributes (the registry entry): ``family`` (registry key), ``names`` (its entries in
    :data:`PRECISIONS`), ``grammar`` (allowed-values text), ``kind`` (``fp32``, ``dynamic`` or
    ``static``), ``summary``. Instance: ``name`` (canonical, e.g. ``w4a8+sq``), ``w_bits`` /
    ``a_bits`` (integer widths; None for float), ``scales`` (``po2``/``float`` for static recipes,
    else None), ``modifiers``.
    """

    family: ClassVar[str]
    names: ClassVar[tuple[str, ...]]
    grammar: ClassVar[str]
    kind: ClassVar[str]
    summary: ClassVar[str]
    needs_calibration: ClassVar[bool] = False
    bits_text: ClassVar[str]
    scales: str | None = None
    modifiers: tuple[Modifier, ...] = ()

    @classmethod
    @abstractmethod
    def parse(cls, base: str, scales: str, flag: str, text: str) -> "Recipe | None":
        """The recipe for the lower-case ``base`` text (before any ``+``), None if it is not this
        family's; InputError (one line) if it is but out of range."""

    @property
    @abstractmethod
    def name(self) -> str: ...

    @property
    def w_bits(self) -> int | None:
        return None

    @property
    def a_bits(self) -> int | None:
        return None

    @property
    def is_static(self) -> bool:
        return self.kind == "static"

    @abstractmethod
    def descriptor(self) -> dict:
        """JSON-able identity (hashed into feature-cache and calibration keys)."""

    def tag(self, method: str | None = None) -> str:
        """File-name tag (feature stores, calibration files). ``method``: the calibration method
        (static recipes add ``-<method>`` unless it is None or ``percentile``)."""
        return self.name

    @abstractmethod
    def float_parts(self) -> tuple[str, ...]:
        """What runs in float under this recipe (printed by ``lraee info --precision``)."""

    @abstractmethod
    def quantized_parts(self) -> tuple[str, ...]:
        """What this recipe quantizes."""

    def with_modifier(self, mod: Modifier, flag: str, text: str) -> "Recipe":
        raise InputError(f"{flag} {text!r}: modifier {mod.suffix} applies to the static recipes only; "
                         f"allowed: {static_allowed_text()}")

    def fit(self, visual, batches_fn) -> dict:
        """Fit the modifiers on the FP32 tower; ``batches_fn()`` yields the calibration batches
        afresh. Returns the prefixed modifier state (empty without modifiers)."""
        state = {}
        for m in self.modifiers:
            for k, v in m.fit(visual, batches_fn()).items():
                state[f"{MODIFIER_STATE_PREFIX}{m.key}.{k}"] = v
        return state

    @abstractmethod
    def build(self, visual, method: str = "percentile", state: dict | None = None):
        """The tower this recipe runs, built from the FP32 ``visual`` (``visual`` is not changed,
        except that ``fp32`` returns it as is). ``state``: fitted modifier state (static recipes)."""

    @abstractmethod
    def prepare(self, enc, opts: "PrepareOptions") -> "PreparedRecipe":
        """A runnable :class:`quant.prepare.PreparedRecipe` (calibrating or loading as ``opts`` says)."""


RECIPES: dict[str, type[Recipe]] = {}


def register_recipe(cls: type[Recipe]) -> type[Recipe]:
    RECIPES[cls.family] = cls
    return cls


@register_recipe
@dataclass(frozen=True)
class Fp32Recipe(Recipe):
    family: ClassVar[str] = "fp32"
    names: ClassVar[tuple[str, ...]] = ("fp32",)
    grammar: ClassVar[str] = "fp32"
    kind: ClassVar[str] = "fp32"
    summary: ClassVar[str] = "the encoder as loaded"
    bits_text: ClassVar[str] = "float32 weights and activations"

    @classmethod
    def parse(cls, base, scales, flag, text):
        return cls() if base == "fp32" else None

    @property
    def name(self) -> str:
        return "fp32"

    def descriptor(self) -> dict:
        return {"precision": "fp32", "dtype": "float32"}

    def float_parts(self):
        return ("everything",)

    def quantized_parts(self):
        return ()

    def build(self, visual, method="percentile", state=None):
        return visual

    def prepare(self, enc, opts):
        from quant.prepare import PreparedRecipe

        return PreparedRecipe(self, self.build(enc.model.visual), engine="fp32")


@register_recipe
@dataclass(frozen=True)
class DynamicRecipe(Recipe):
    family: ClassVar[str] = "int8-dynamic"
    names: ClassVar[tuple[str, ...]] = ("int8-dynamic",)
    grammar: ClassVar[str] = "int8-dynamic"
    kind: ClassVar[str] = "dynamic"
    summary: ClassVar[str] = ("the paper's recipe: torch.ao quantize_dynamic on the image tower's nn.Linear "
                              "(on open_clip 3.3: the MLP c_fc/c_proj only); CPU only")
    bits_text: ClassVar[str] = "qint8 weights per tensor, activations 8-bit per batch at run time"

    @classmethod
    def parse(cls, base, scales, flag, text):
        return cls() if base == "int8-dynamic" else None

    @property
    def name(self) -> str:
        return "int8-dynamic"

    @property
    def w_bits(self) -> int:
        return 8

    @property
    def a_bits(self) -> int:
        return 8

    def descriptor(self) -> dict:
        return {"precision": "int8-dynamic", "engine": "torch.ao.quantize_dynamic", "dtype": "qint8",
                "modules": "nn.Linear of the image tower"}

    def float_parts(self):
        return DYNAMIC_FLOAT_PARTS

    def quantized_parts(self):
        return DYNAMIC_QUANTIZED_PARTS

    def build(self, visual, method="percentile", state=None):
        from quant.dynamic import dynamic_visual

        return dynamic_visual(visual)

    def prepare(self, enc, opts):
        from quant.prepare import PreparedRecipe

        if str(opts.device).startswith("cuda"):
            raise InputError(f"--device {opts.device}: int8-dynamic (torch.ao dynamic quantization) runs on the CPU "
                             "only; allowed: cpu")
        return PreparedRecipe(self, self.build(enc.model.visual), engine="torch.ao")


@register_recipe
@dataclass(frozen=True)
class StaticRecipe(Recipe):
    """Brevitas static ``wXaY`` (``w8a8``), optionally with modifiers (``+sq``)."""

    w: int = 8
    a: int = 8
    scales: str = "po2"
    modifiers: tuple[Modifier, ...] = ()

    family: ClassVar[str] = "wXaY"
    names: ClassVar[tuple[str, ...]] = ("w8a8", "wXaY")
    grammar: ClassVar[str] = "w8a8, or wXaY with X, Y in 2..16 (e.g. w4a8, w6a6)"
    kind: ClassVar[str] = "static"
    summary: ClassVar[str] = ("Brevitas static: X-bit signed narrow weights per output channel, Y-bit activations "
                              "per tensor, int32 biases; calibrated; bit-exact integer reference")
    needs_calibration: ClassVar[bool] = True
    bits_text: ClassVar[str] = "X-bit weights per output channel, Y-bit activations per tensor"
    _WXAY: ClassVar[re.Pattern] = re.compile(r"^w(\d+)a(\d+)$")

    @classmethod
    def parse(cls, base, scales, flag, text):
        m = cls._WXAY.match(base)
        if not m:
            return None
        w, a = int(m.group(1)), int(m.group(2))
        lo, hi = BIT_RANGE
        if not (lo <= w <= hi and lo <= a <= hi):
            raise InputError(f"{flag} {text!r}: widths w={w}, a={a} outside {lo}..{hi}; allowed: {ALLOWED_TEXT}")
        return cls(w, a, scales)

    @property
    def name(self) -> str:
        return f"w{self.w}a{self.a}" + "".join(m.suffix for m in self.modifiers)

    @property
    def w_bits(self) -> int:
        return self.w

    @property
    def a_bits(self) -> int:
        return self.a

    def descriptor(self) -> dict:
        d = {"precision": self.name, "backend": "brevitas", "w_bits": self.w, "a_bits": self.a,
             "weights": "signed narrow, per output channel", "activations": "per tensor",
             "softmax_output": "unsigned", "bias": "int32", "scales": self.scales, "rounding": "half-to-even"}
        if self.modifiers:  # absent without modifiers: the plain recipes' descriptors (and hashes) are unchanged
            d["modifiers"] = [m.descriptor() for m in self.modifiers]
        return d

    def tag(self, method: str | None = None) -> str:
        t = self.name + ("-float" if self.scales == "float" else "")
        return t + (f"-{method}" if method is not None and method != "percentile" else "")

    def _widths(self, items: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(i.replace("X-bit", f"{self.w}-bit").replace("Y-bit", f"{self.a}-bit")
                     .replace("Y bits", f"{self.a} bits") for i in items)

    def float_parts(self):
        return self._widths(STATIC_FLOAT_PARTS) + tuple(p for m in self.modifiers for p in m.float_parts())

    def quantized_parts(self):
        return self._widths(STATIC_QUANTIZED_PARTS)

    def with_modifier(self, mod, flag, text):
        if any(m.key == mod.key for m in self.modifiers):
            raise InputError(f"{flag} {text!r}: modifier +{mod.key} given twice; allowed: each modifier once "
                             f"({modifiers_text()})")
        return StaticRecipe(self.w, self.a, self.scales, self.modifiers + (mod,))

    def apply_modifiers(self, visual, state: dict | None) -> dict:
        """Fold the fitted modifier ``state`` (prefixed keys) into the float tower ``visual`` in place.
        Returns the state used; ValueError if it is missing or does not belong to these modifiers."""
        state = dict(state or {})
        for m in self.modifiers:
            p = f"{MODIFIER_STATE_PREFIX}{m.key}."
            sub = {k[len(p):]: v for k, v in state.items() if k.startswith(p)}
            if not sub:
                raise ValueError(f"{self.name}: no fitted state for modifier +{m.key} (calibrate the recipe, or load "
                                 "its calibration file)")
            m.apply(visual, sub)
        extra = [k for k in state if not any(k.startswith(f"{MODIFIER_STATE_PREFIX}{m.key}.") for m in self.modifiers)]
        if extra:
            raise ValueError(f"{self.name}: modifier state {extra[0]!r} belongs to no modifier of this recipe")
        return state

    def build(self, visual, method="percentile", state=None):
        from quant.brevitas_model import build_quant_visual

        return build_quant_visual(visual, self, method, state)

    def prepare(self, enc, opts):
        from quant.prepare import prepare_static

        return prepare_static(enc, self, opts)


def _join_grammars(families: list[type[Recipe]]) -> str:
    """'fp32, int8-dynamic, w8a8, or wXaY ...': the families' grammars, comma-separated."""
    return ", ".join(c.grammar for c in families)


#: Every ``--precision`` base name (``wXaY`` stands for the family).
PRECISIONS: tuple[str, ...] = tuple(n for c in RECIPES.values() for n in c.names)
#: Allowed values of the recipe bases (the text of every ``--precision`` error before ``;``).
RECIPES_TEXT = _join_grammars(list(RECIPES.values()))


def static_allowed_text() -> str:
    """Allowed values for a command that needs a calibrated (static) recipe."""
    return f"{_join_grammars([c for c in RECIPES.values() if c.needs_calibration])}; modifiers: {modifiers_text()}"


def quantized_allowed_text() -> str:
    """Allowed values for a command that needs a quantized recipe (anything but ``fp32``)."""
    return f"{_join_grammars([c for c in RECIPES.values() if c.kind != 'fp32'])}; modifiers of w8a8/wXaY: " \
           f"{modifiers_text()}"


#: Allowed ``--precision`` values, derived from the registries.
ALLOWED_TEXT = f"{RECIPES_TEXT}; modifiers of w8a8/wXaY: {modifiers_text()}"


def parse_precision(text: str, scales: str = "po2", flag: str = "--precision") -> Recipe:
    """Parse a ``--precision`` string; raise InputError (one line) on anything else."""
    if not isinstance(text, str):
        raise InputError(f"{flag} {text!r}: not a string; allowed: {ALLOWED_TEXT}")
    if scales not in SCALES:
        raise InputError(f"--scales {scales!r}: unknown; allowed: {', '.join(SCALES)}")
    base, *mods = text.strip().lower().split("+")
    recipe = None
    for cls in RECIPES.values():
        recipe = cls.parse(base, scales, flag, text)
        if recipe is not None:
            break
    if recipe is None:
        raise InputError(f"{flag} {text!r}: unknown recipe; allowed: {ALLOWED_TEXT}")
    for tok in mods:
        mod = None
        for mcls in MODIFIERS.values():
            mod = mcls.parse(tok, flag, text)
            if mod is not None:
                break
        if mod is None:
            raise InputError(f"{flag} {text!r}: unknown modifier '+{tok}'; allowed modifiers: {modifiers_text()}")
        recipe = recipe.with_modifier(mod, flag, text)
    return recipe


def registry_listing() -> dict:
    """The recipes and modifiers as ``lraee info --precision`` lists them (JSON-able)."""
    return {"recipes": [{"recipe": c.family, "grammar": c.grammar, "bits": c.bits_text,
                         "calibration": c.needs_calibration, "summary": c.summary} for c in RECIPES.values()],
            "modifiers": [{"modifier": f"+{m.key}", "grammar": m.grammar,
                           "applies_to": _join_grammars([c for c in RECIPES.values() if c.needs_calibration]),
                           "summary": m.summary} for m in MODIFIERS.values()],
            "scales": list(SCALES), "calib_methods": list(CALIB_METHODS)}


def check_calib_method(method: str) -> str:
    if method not in CALIB_METHODS:
        raise InputError(f"--calib-method {method!r}: unknown; allowed: {', '.join(CALIB_METHODS)}")
    return method

