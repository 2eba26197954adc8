"""FixedPointSpec: every format, LUT and constant of the fixed-point exit unit, as JSON.

One spec describes one exit unit shared by all candidate layers (the per-layer token scale
is a shift; per-layer weights are stored in the spec's parameter formats).

JSON shape (``schema: "lraee/fixedpoint-spec"``, ``version: 1``)::

    {
      "schema": "lraee/fixedpoint-spec", "version": 1,
      "policy_sha256": "<sha256 of the policy the spec was sized for>" | null,
      "geometry": {"n_tokens": 49, "d": 128, "e": 128, "k": 25},
      "ln_eps": 1e-05,
      "formats": {"<cast point>": {"W": 18, "I": 6, "signed": true, "rounding": "RND_CONV",
                                   "overflow": "SAT", "ap": "ap_fixed<18,6,AP_RND_CONV,AP_SAT>"},
                  ...},
      "luts":  {"gelu": {"range": 8.0, "entries": 1024}, "exp": {"range": 16.0, "entries": 1024}},
      "units": {"ln.rsqrt": {"kind": "rsqrt", "lut_bits": 6, "newton_steps": 2},
                "l2.rsqrt": {...}, "conf.recip": {"kind": "recip", ...}},
      "constants": {"ssa.recip": {"value": 0.0204..., "code": 42799,
                                  "ap": "ap_ufixed<...>"}, ...},     # derived, checked on load
      "ranges": {"<cast point>": [lo, hi], ...}                      # calibrated, validated
    }

The cast points (keys of ``formats``) are listed in :data:`FORMATS` with their meaning; the
arithmetic around each is documented in :mod:`.stages`.  ``ap`` and ``constants`` are
written for the HLS engineer and recomputed on load (a hand edit that disagrees is refused).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from common.atomic import write_json
from common.errors import InputError
from quant.geometry import ExitHeadGeometry

from .fixed import Fmt, FormatError, WidthError, quantize

SCHEMA = "lraee/fixedpoint-spec"
VERSION = 1


@dataclass(frozen=True)
class FormatDef:
    signed: bool
    kind: str  # data | param | const | int | struct
    doc: str
    fixed_I: int | None = None  # struct formats: required integer bits (minimum)


def _unit_defs(name: str, what: str) -> dict:
    return {
        f"{name}.mant": FormatDef(False, "struct", f"{what}: normalised mantissa m (TRN bit slice)", 2),
        f"{name}.lut": FormatDef(False, "struct", f"{what}: seed table entries", 1),
        f"{name}.work": FormatDef(True, "struct", f"{what}: Newton intermediates and result y", 3),
    }


FORMATS: dict[str, FormatDef] = {
    "ssa.acc": FormatDef(True, "int", "sum of the N patch int8 codes (integer, exact)"),
    "ssa.recip": FormatDef(False, "const", "constant 1/N"),
    "ssa.out": FormatDef(True, "data", "SSA mean x (dequantised, scale applied)"),
    "sav.acc": FormatDef(False, "int", "N*sum||q||^2, ||sum q||^2 and T (integer, exact)"),
    "sav.recip": FormatDef(False, "const", "constant 1/N^2"),
    "sav.out": FormatDef(False, "data", "SAV"),
    "ln.recip": FormatDef(False, "const", "constant 1/d"),
    "ln.mean": FormatDef(True, "data", "LayerNorm mean"),
    "ln.diff": FormatDef(True, "data", "x - mean"),
    "ln.sumsq": FormatDef(False, "data", "sum of (x - mean)^2"),
    "ln.var": FormatDef(False, "data", "variance (+ eps)"),
    **_unit_defs("ln.rsqrt", "LayerNorm 1/sqrt(var + eps)"),
    "ln.norm": FormatDef(True, "data", "(x - mean) / sqrt(var + eps)"),
    "ln.weight": FormatDef(True, "param", "LayerNorm gamma"),
    "ln.bias": FormatDef(True, "param", "LayerNorm beta"),
    "ln.out": FormatDef(True, "data", "LayerNorm output"),
    "fc1.weight": FormatDef(True, "param", "fc1 weights"),
    "fc1.bias": FormatDef(True, "param", "fc1 bias"),
    "fc1.out": FormatDef(True, "data", "fc1 output (GELU input)"),
    "gelu.phi": FormatDef(False, "struct", "GELU: Phi LUT entries", 1),
    "gelu.out": FormatDef(True, "data", "GELU output"),
    "fc2.weight": FormatDef(True, "param", "fc2 weights"),
    "fc2.bias": FormatDef(True, "param", "fc2 bias"),
    "fc2.out": FormatDef(True, "data", "head output h"),
    "l2.sumsq": FormatDef(False, "data", "||h||^2"),
    **_unit_defs("l2.rsqrt", "L2 norm 1/||h||"),
    "l2.out": FormatDef(True, "data", "u = h / ||h||"),
    "sim.text": FormatDef(True, "param", "logit_scale * text embeddings (folded)"),
    "sim.logit": FormatDef(True, "data", "logits s_k"),
    "exp.out": FormatDef(False, "struct", "exp LUT entries exp(s_k - s_max)", 1),
    **_unit_defs("conf.recip", "conf = 1/Z"),
    "conf.out": FormatDef(False, "struct", "conf", 1),
    "margin.out": FormatDef(False, "struct", "margin", 1),
    "gate.w_conf": FormatDef(True, "param", "gate weight w1/sigma1"),
    "gate.w_margin": FormatDef(True, "param", "gate weight w2/sigma2"),
    "gate.w_sav": FormatDef(True, "param", "gate weight w3/sigma3"),
    "gate.b": FormatDef(True, "param", "gate bias b - sum w mu / sigma"),
    "gate.out": FormatDef(True, "data", "gate logit g and the threshold logit(tau)"),
}

#: pipeline stage of every cast point (the stage that first reads the format)
STAGE_OF: dict[str, str] = {}
for _n in FORMATS:
    _p = _n.split(".")[0]
    STAGE_OF[_n] = {"exp": "softmax", "conf": "softmax", "margin": "softmax"}.get(_p, _p)
STAGE_ORDER = ("ssa", "sav", "ln", "fc1", "gelu", "fc2", "l2", "sim", "softmax", "gate")
UNIT_KINDS = {"ln.rsqrt": "rsqrt", "l2.rsqrt": "rsqrt", "conf.recip": "recip"}
STAGE_OF.update({n: STAGE_OF[f"{n}.lut"] for n in UNIT_KINDS})  # a unit's zero-input counter
LUT_NAMES = ("gelu", "exp")
#: constant name -> (format, function of the spec giving its float64 value)
CONSTANTS = {
    "ssa.recip": ("ssa.recip", lambda s: 1.0 / s.n_tokens),
    "sav.recip": ("sav.recip", lambda s: 1.0 / (s.n_tokens * s.n_tokens)),
    "ln.recip": ("ln.recip", lambda s: 1.0 / s.d),
    "ln.eps": ("ln.var", lambda s: s.ln_eps),
}


class PolicyMismatch(InputError):
    """The spec was sized for another policy."""


@dataclass
class LutParams:
    """A LUT over ``range`` (power of two) with ``entries`` rows (power of two)."""

    range: float
    entries: int


@dataclass
class UnitParams:
    """A normalised reciprocal / rsqrt unit: ``2**lut_bits`` seed rows per parity, Newton steps."""

    kind: str
    lut_bits: int = 6
    newton_steps: int = 2


def _is_pow2(x: float) -> bool:
    return x > 0 and math.frexp(float(x))[0] == 0.5


@dataclass
class FixedPointSpec:
    n_tokens: int
    d: int
    e: int
    k: int
    formats: dict[str, Fmt]
    luts: dict[str, LutParams] = field(default_factory=lambda: {
        "gelu": LutParams(8.0, 1024), "exp": LutParams(16.0, 1024)})
    units: dict[str, UnitParams] = field(default_factory=lambda: {
        n: UnitParams(kd) for n, kd in UNIT_KINDS.items()})
    ln_eps: float = 1e-5
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    policy_sha256: str | None = None
    source: str | None = field(default=None, compare=False)

    @property
    def head(self) -> ExitHeadGeometry:
        """The exit head this unit runs (LRA-EE: d -> d -> e); the unit and the HLS head block check the
        parameters against its shapes."""
        return ExitHeadGeometry.lraee(self.d, self.e)

    # ---- naming -----------------------------------------------------------------------
    @property
    def where(self) -> str:
        return f"fixed-point spec {self.source}" if self.source else "fixed-point spec"

    # ---- constants --------------------------------------------------------------------
    def constants(self) -> dict[str, int]:
        """Codes of the constants (1/N, 1/N^2, 1/d, eps); raises WidthError if one does not fit."""
        out = {}
        for name, (fname, fn) in CONSTANTS.items():
            fmt = self.formats[fname]
            val = fn(self)
            c = quantize(val, fmt)
            if bool(c.overflow):
                raise WidthError(f"{self.where}: stage '{fname}': constant {name} = {val:.6g} does not fit "
                                 f"{fmt} (range [{fmt.min_value:.6g}, {fmt.max_value:.6g}]); "
                                 f"needs I >= {integer_bits(0.0, val, fmt.signed)}")
            if int(c.codes) == 0 and name != "ln.eps":
                raise WidthError(f"{self.where}: stage '{fname}': constant {name} = {val:.6g} quantises "
                                 f"to 0 in {fmt}; lower I or raise W")
            out[name] = int(c.codes)
        return out

    # ---- validation -------------------------------------------------------------------
    def validate(self) -> "FixedPointSpec":
        """Check structure, widths and the calibrated ranges; errors name the stage."""
        w = self.where
        for nm, v in (("n_tokens", self.n_tokens), ("d", self.d), ("e", self.e)):
            if int(v) < 1:
                raise InputError(f"{w}: geometry.{nm} = {v} must be >= 1")
        if int(self.k) < 2:
            raise InputError(f"{w}: geometry.k = {self.k} must be >= 2 (top-2 margin)")
        if not self.ln_eps > 0:
            raise InputError(f"{w}: ln_eps = {self.ln_eps} must be > 0")
        missing = [n for n in FORMATS if n not in self.formats]
        unknown = [n for n in self.formats if n not in FORMATS]
        if missing or unknown:
            raise InputError(f"{w}: formats missing {missing} / unknown {unknown}; "
                             f"allowed: {', '.join(FORMATS)}")
        for n, df in FORMATS.items():
            f = self.formats[n]
            if f.signed != df.signed:
                raise WidthError(f"{w}: stage '{n}' ({df.doc}) must be "
                                 f"{'signed' if df.signed else 'unsigned'}, got {f}")
            if df.fixed_I is not None and f.I < df.fixed_I:
                raise WidthError(f"{w}: stage '{n}' ({df.doc}) needs I >= {df.fixed_I}, got {f}")
            if df.kind == "int" and f.F != 0:
                raise WidthError(f"{w}: stage '{n}' ({df.doc}) is an integer format: I must equal W, got {f}")
        need_ssa = (self.n_tokens * 128).bit_length() + 1
        if self.formats["ssa.acc"].W < need_ssa:
            raise WidthError(f"{w}: stage 'ssa.acc' needs W >= {need_ssa} to hold N*128 = "
                             f"{self.n_tokens * 128} exactly, got {self.formats['ssa.acc']}")
        need_sav = (self.n_tokens * self.n_tokens * self.d * 128 * 128).bit_length()
        if self.formats["sav.acc"].W < need_sav:
            raise WidthError(f"{w}: stage 'sav.acc' needs W >= {need_sav} to hold N^2*d*128^2 exactly, "
                             f"got {self.formats['sav.acc']}")
        for n in ("conf.out", "margin.out", "sav.out", "gate.out"):
            if self.formats[n].W > 53:
                raise WidthError(f"{w}: stage '{n}' is an output decoded to float64: W must be <= 53, "
                                 f"got {self.formats[n]}")
        for n in (k for k in FORMATS if k.endswith(".mant")):
            if self.formats[n].rounding != "TRN":
                raise WidthError(f"{w}: stage '{n}' is a bit slice: rounding must be TRN, got {self.formats[n]}")
        for n, kind in UNIT_KINDS.items():
            u = self.units.get(n)
            if u is None:
                raise InputError(f"{w}: units.{n} missing")
            if u.kind != kind:
                raise InputError(f"{w}: units.{n}.kind must be {kind!r}, got {u.kind!r}")
            if not 1 <= int(u.lut_bits) <= 14:
                raise InputError(f"{w}: units.{n}.lut_bits = {u.lut_bits} must be in [1, 14]")
            if not 0 <= int(u.newton_steps) <= 4:
                raise InputError(f"{w}: units.{n}.newton_steps = {u.newton_steps} must be in [0, 4]")
            if self.formats[f"{n}.mant"].F < int(u.lut_bits):
                raise WidthError(f"{w}: stage '{n}.mant' needs at least lut_bits = {u.lut_bits} "
                                 f"fractional bits, got {self.formats[f'{n}.mant']}")
        for n in LUT_NAMES:
            lut = self.luts.get(n)
            if lut is None:
                raise InputError(f"{w}: luts.{n} missing")
            if not _is_pow2(lut.range) or not _is_pow2(lut.entries) or int(lut.entries) < 2:
                raise InputError(f"{w}: luts.{n}: range ({lut.range}) and entries ({lut.entries}) "
                                 f"must be powers of two, entries >= 2")
        self.constants()
        self.check_ranges()
        return self

    def check_ranges(self, ranges: dict | None = None) -> None:
        """Every calibrated range must lie inside its format: else WidthError naming the stage."""
        for n, (lo, hi) in (ranges if ranges is not None else self.ranges).items():
            if n not in self.formats:
                raise InputError(f"{self.where}: ranges: unknown stage {n!r}")
            f = self.formats[n]
            if not f.holds(lo, hi):
                need = integer_bits(lo, hi, f.signed)
                raise WidthError(
                    f"{self.where}: stage '{n}': {f} holds [{f.min_value:.6g}, {f.max_value:.6g}] but the "
                    f"calibrated range is [{lo:.6g}, {hi:.6g}]; needs I >= {need}")

    def check_policy(self, policy_sha256: str | None, policy_source: str | None = None) -> None:
        """Refuse a spec sized for another policy (one-line InputError naming the spec file)."""
        if policy_sha256 is None or self.policy_sha256 is None:
            return
        if policy_sha256 != self.policy_sha256:
            src = f" ({policy_source})" if policy_source else ""
            raise PolicyMismatch(
                f"{self.where} was sized for policy sha256 {self.policy_sha256[:16]}..., but the policy"
                f"{src} has sha256 {policy_sha256[:16]}...; re-run the width search for this policy")

    # ---- JSON -------------------------------------------------------------------------
    def to_json(self) -> dict:
        consts = self.constants()
        return {
            "schema": SCHEMA,
            "version": VERSION,
            "policy_sha256": self.policy_sha256,
            "geometry": {"n_tokens": int(self.n_tokens), "d": int(self.d), "e": int(self.e), "k": int(self.k)},
            "ln_eps": float(self.ln_eps),
            "formats": {n: {**self.formats[n].to_json(), "ap": self.formats[n].ap_type()} for n in FORMATS},
            "luts": {n: {"range": float(v.range), "entries": int(v.entries)} for n, v in self.luts.items()},
            "units": {n: {"kind": v.kind, "lut_bits": int(v.lut_bits), "newton_steps": int(v.newton_steps)}
                      for n, v in self.units.items()},
            "constants": {n: {"value": CONSTANTS[n][1](self), "code": consts[n],
                              "ap": self.formats[CONSTANTS[n][0]].ap_type()} for n in CONSTANTS},
            "ranges": {n: [float(lo), float(hi)] for n, (lo, hi) in self.ranges.items()},
        }

    @classmethod
    def from_json(cls, obj: dict, source: str | None = None) -> "FixedPointSpec":
        where = f"fixed-point spec {source}" if source else "fixed-point spec"
        if not isinstance(obj, dict) or obj.get("schema") != SCHEMA:
            raise InputError(f"{where}: schema must be {SCHEMA!r}")
        if obj.get("version") != VERSION:
            raise InputError(f"{where}: version {obj.get('version')!r} is not supported (allowed: {VERSION})")
        try:
            g = obj["geometry"]
            fmts = {}
            for n, fj in obj["formats"].items():
                fj = dict(fj)
                ap = fj.pop("ap", None)
                try:
                    fmts[n] = Fmt.from_json(fj)
                except FormatError as exc:
                    raise InputError(f"{where}: formats.{n}: {exc}") from None
                if ap is not None and ap != fmts[n].ap_type():
                    raise InputError(f"{where}: formats.{n}.ap {ap!r} disagrees with its fields "
                                     f"({fmts[n].ap_type()})")
            spec = cls(
                n_tokens=int(g["n_tokens"]), d=int(g["d"]), e=int(g["e"]), k=int(g["k"]),
                formats=fmts,
                luts={n: LutParams(float(v["range"]), int(v["entries"])) for n, v in obj["luts"].items()},
                units={n: UnitParams(str(v["kind"]), int(v["lut_bits"]), int(v["newton_steps"]))
                       for n, v in obj["units"].items()},
                ln_eps=float(obj.get("ln_eps", 1e-5)),
                ranges={n: (float(v[0]), float(v[1])) for n, v in obj.get("ranges", {}).items()},
                policy_sha256=obj.get("policy_sha256"),
                source=source,
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"{where}: malformed ({type(exc).__name__}: {exc})") from None
        spec.validate()
        consts = spec.constants()
        for n, cj in obj.get("constants", {}).items():
            if n not in consts or int(cj.get("code", consts[n])) != consts[n]:
                raise InputError(f"{where}: constants.{n} disagrees with its format "
                                 f"(expected code {consts.get(n)}); remove it or fix the format")
        return spec

    def save(self, path: str | Path) -> None:
        """Write the spec as JSON atomically (validated first)."""
        self.validate()
        write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path, policy_sha256: str | None = None,
             policy_source: str | None = None) -> "FixedPointSpec":
        """Read and validate a spec; refuse it when ``policy_sha256`` differs from its own."""
        from common.readers import read_json

        path = Path(path)
        obj = read_json(path, "fixed-point spec", allowed="fixedpoint_spec.json of `lraee validate-exits`")
        spec = cls.from_json(obj, source=str(path))
        spec.check_policy(policy_sha256, policy_source)
        return spec


def integer_bits(lo: float, hi: float, signed: bool, margin_bits: int = 0) -> int:
    """Smallest ``I`` (incl. sign bit for signed) whose range ``[-2**(I-1), 2**(I-1))`` / ``[0, 2**I)``
    holds ``[lo, hi]`` up to one LSB at the top, plus ``margin_bits``.

    Signed: ``I = max(floor(log2 hi) + 1, ceil(log2 -lo)) + 1``; unsigned:
    ``I = floor(log2 hi) + 1``.  A range of zeros gives ``I = 1`` (signed) / ``0`` (unsigned).
    """
    hi_i = math.floor(math.log2(hi)) + 1 if hi > 0 else -64
    if signed:
        lo_i = math.ceil(math.log2(-lo)) if lo < 0 else -64
        need = max(hi_i, lo_i) + 1
        if need < -60:
            need = 1
    else:
        if lo < 0:
            raise ValueError("an unsigned format cannot hold negative values")
        need = hi_i if hi_i > -64 else 0
    return int(need + margin_bits)


def load_spec(path: str | Path, policy_sha256: str | None = None) -> FixedPointSpec:
    """Shorthand for :meth:`FixedPointSpec.load`."""
    return FixedPointSpec.load(path, policy_sha256=policy_sha256)
