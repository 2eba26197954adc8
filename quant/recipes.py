"""Precision recipe strings: parsing, validation and the JSON identity of a recipe.

Torch-free. Allowed ``--precision`` values:

- ``fp32``: the encoder as loaded.
- ``int8-dynamic``: the paper's recipe, ``torch.ao.quantization.quantize_dynamic`` (qint8
  weights, activations quantized on the fly per batch) on the image tower's ``nn.Linear``
  modules. On open_clip 3.3 that is only the MLP ``c_fc``/``c_proj`` of every block (see
  :data:`DYNAMIC_FLOAT_PARTS`).
- ``w8a8`` (= ``wXaY`` with X = Y = 8): the hardware recipe, Brevitas static quantization,
  signed per-output-channel weights of X bits, per-tensor activations of Y bits.
- ``wXaY`` with X, Y in 2..16 (``w4a8``, ``w6a6``, ...).

``--scales po2`` (default) restricts every scale to a power of two (integer hardware shifts by
it); ``--scales float`` keeps float scales.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from common.errors import InputError

PRECISIONS: tuple[str, ...] = ("fp32", "int8-dynamic", "w8a8", "wXaY")
SCALES: tuple[str, ...] = ("po2", "float")
CALIB_METHODS: tuple[str, ...] = ("percentile", "minmax", "mse")
BIT_RANGE = (2, 16)
ALLOWED_TEXT = "fp32, int8-dynamic, w8a8, or wXaY with X, Y in 2..16 (e.g. w4a8, w6a6)"

_WXAY = re.compile(r"^w(\d+)a(\d+)$")

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


@dataclass(frozen=True)
class Recipe:
    """A parsed precision recipe.

    kind: ``fp32``, ``dynamic`` (torch.ao) or ``static`` (Brevitas).
    w_bits / a_bits: weight and activation widths of the static recipes (None otherwise).
    scales: ``po2`` or ``float`` (static recipes only; ``None`` otherwise).
    """

    name: str
    kind: str
    w_bits: int | None = None
    a_bits: int | None = None
    scales: str | None = None

    @property
    def is_static(self) -> bool:
        return self.kind == "static"

    @property
    def needs_calibration(self) -> bool:
        return self.kind == "static"

    def descriptor(self) -> dict:
        """JSON-able identity (hashed into feature-cache and calibration keys)."""
        if self.kind == "fp32":
            return {"precision": "fp32", "dtype": "float32"}
        if self.kind == "dynamic":
            return {"precision": "int8-dynamic", "engine": "torch.ao.quantize_dynamic", "dtype": "qint8",
                    "modules": "nn.Linear of the image tower"}
        return {"precision": self.name, "backend": "brevitas", "w_bits": self.w_bits, "a_bits": self.a_bits,
                "weights": "signed narrow, per output channel", "activations": "per tensor",
                "softmax_output": "unsigned", "bias": "int32", "scales": self.scales, "rounding": "half-to-even"}

    def _widths(self, items: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(i.replace("X-bit", f"{self.w_bits}-bit").replace("Y-bit", f"{self.a_bits}-bit")
                     .replace("Y bits", f"{self.a_bits} bits") for i in items)

    def float_parts(self) -> tuple[str, ...]:
        """What runs in float under this recipe (printed by ``lraee info --precision``)."""
        if self.kind == "fp32":
            return ("everything",)
        return DYNAMIC_FLOAT_PARTS if self.kind == "dynamic" else self._widths(STATIC_FLOAT_PARTS)

    def quantized_parts(self) -> tuple[str, ...]:
        """What this recipe quantizes."""
        if self.kind == "fp32":
            return ()
        return DYNAMIC_QUANTIZED_PARTS if self.kind == "dynamic" else self._widths(STATIC_QUANTIZED_PARTS)


def parse_precision(text: str, scales: str = "po2", flag: str = "--precision") -> Recipe:
    """Parse a ``--precision`` string; raise InputError (one line) on anything else."""
    if not isinstance(text, str):
        raise InputError(f"{flag} {text!r}: not a string; allowed: {ALLOWED_TEXT}")
    if scales not in SCALES:
        raise InputError(f"--scales {scales!r}: unknown; allowed: {', '.join(SCALES)}")
    t = text.strip().lower()
    if t == "fp32":
        return Recipe("fp32", "fp32")
    if t == "int8-dynamic":
        return Recipe("int8-dynamic", "dynamic")
    m = _WXAY.match(t)
    if not m:
        raise InputError(f"{flag} {text!r}: unknown recipe; allowed: {ALLOWED_TEXT}")
    w, a = int(m.group(1)), int(m.group(2))
    lo, hi = BIT_RANGE
    if not (lo <= w <= hi and lo <= a <= hi):
        raise InputError(f"{flag} {text!r}: widths w={w}, a={a} outside {lo}..{hi}; allowed: {ALLOWED_TEXT}")
    return Recipe(f"w{w}a{a}", "static", w, a, scales)


def check_calib_method(method: str) -> str:
    if method not in CALIB_METHODS:
        raise InputError(f"--calib-method {method!r}: unknown; allowed: {', '.join(CALIB_METHODS)}")
    return method
