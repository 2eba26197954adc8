"""Bit-true fixed-point model of the LRA-EE exit unit (numpy only; never imports torch).

Modules: :mod:`.fixed` (ap_fixed arithmetic on int64 codes), :mod:`.stages` (the arithmetic
contract of every stage), :mod:`.spec` (FixedPointSpec, JSON), :mod:`.unit` (ExitUnit and the
float64 reference), :mod:`.search` (ranges, default spec, minimal-width search, memory), :mod:`.validate` (fixed vs
float: per layer and routed end to end, disagreement estimates, overflow summaries), :mod:`.tapsums` (the two
integer patch-token sums SSA and SAV read, in place of all tokens).
"""
from .fixed import Cast, Fmt, WidthError, quantize, requant, to_float
from .search import (SearchResult, default_spec, integer_bits_required, memory_bits, observed_ranges,
                     search_widths)
from .spec import FORMATS, FixedPointSpec, LutParams, PolicyMismatch, UnitParams, integer_bits, load_spec
from .tapsums import TapSums
from .unit import ExitUnit, float_reference, logit

__all__ = [
    "Cast", "ExitUnit", "FORMATS", "FixedPointSpec", "Fmt", "LutParams", "PolicyMismatch", "SearchResult", "TapSums",
    "UnitParams", "WidthError", "default_spec", "float_reference", "integer_bits", "integer_bits_required",
    "load_spec", "logit", "memory_bits", "observed_ranges", "quantize", "requant", "search_widths", "to_float",
]
