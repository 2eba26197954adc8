"""Bit-true ``ap_fixed`` / ``ap_ufixed`` arithmetic on int64 codes (numpy only).

A value of format ``ap_fixed<W, I, Q, O>`` is held as its integer *code* ``c`` (int64) with
``F = W - I`` fractional bits: value ``= c * 2**-F``.  ``I`` counts the integer bits including
the sign bit (as ``ap_fixed``); it may be negative or larger than ``W`` (then ``F`` is
negative), as Vitis HLS allows.  Signed codes lie in ``[-2**(W-1), 2**(W-1) - 1]``, unsigned
codes in ``[0, 2**W - 1]``.

Every requantisation point in the exit unit is a C++ assignment ``dst_t y = x;`` from an
exact wide value ``x`` to ``dst_t``: first the quantisation mode acts on the dropped
fractional bits, then the overflow mode on the integer part.  Supported modes:

* ``TRN``      (``AP_TRN``): round toward minus infinity (drop the bits; floor).
* ``RND``      (``AP_RND``): round to nearest, ties toward plus infinity (``floor(x + lsb/2)``).
* ``RND_CONV`` (``AP_RND_CONV``): round to nearest, ties to even.
* ``WRAP``     (``AP_WRAP``, N = 0): keep the low W bits (two's complement for signed).
* ``SAT``      (``AP_SAT``): clip to the format's minimum / maximum.

Every cast also returns a boolean mask of the elements whose rounded value lay outside the
format's range (an overflow event: wrapped under ``WRAP``, saturated under ``SAT``).

Codes are int64.  Any exact intermediate that is cast must satisfy ``|code| < 2**61``
(:data:`MAX_BITS`); the stages check their worst-case widths against this before computing.
Formats are limited to ``W <= 60``.  Everything here is exact integer arithmetic; float64
appears only when quantising a float input (exactly: scaling by a power of two and splitting
into integer and fractional part are exact in float64) and when decoding codes to values
(exact while ``|code| < 2**53``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from common.errors import InputError

ROUNDINGS = ("TRN", "RND", "RND_CONV")
OVERFLOWS = ("WRAP", "SAT")
MAX_W = 60
MAX_BITS = 61  # |code| < 2**MAX_BITS for any exact intermediate fed to a cast


class FormatError(InputError):
    """A format that cannot exist (bad W, mode name)."""


@dataclass(frozen=True)
class Fmt:
    """``ap_fixed<W, I, Q, O>`` (``signed=True``) or ``ap_ufixed<W, I, Q, O>``."""

    W: int
    I: int  # noqa: E741 - the ap_fixed name
    signed: bool = True
    rounding: str = "RND_CONV"
    overflow: str = "SAT"

    def __post_init__(self):
        if not isinstance(self.W, (int, np.integer)) or not 1 <= int(self.W) <= MAX_W:
            raise FormatError(f"word length W={self.W} must be an integer in [1, {MAX_W}]")
        if not isinstance(self.I, (int, np.integer)):
            raise FormatError(f"integer bits I={self.I} must be an integer")
        if self.signed and self.W < 1:
            raise FormatError("a signed format needs W >= 1")
        if self.rounding not in ROUNDINGS:
            raise FormatError(f"rounding {self.rounding!r} is not one of {', '.join(ROUNDINGS)}")
        if self.overflow not in OVERFLOWS:
            raise FormatError(f"overflow {self.overflow!r} is not one of {', '.join(OVERFLOWS)}")
        object.__setattr__(self, "W", int(self.W))
        object.__setattr__(self, "I", int(self.I))

    # ---- geometry ---------------------------------------------------------------------
    @property
    def F(self) -> int:
        """Fractional bits ``W - I`` (negative when I > W)."""
        return self.W - self.I

    @property
    def min_code(self) -> int:
        return -(1 << (self.W - 1)) if self.signed else 0

    @property
    def max_code(self) -> int:
        return (1 << (self.W - 1)) - 1 if self.signed else (1 << self.W) - 1

    @property
    def lsb(self) -> float:
        return math.ldexp(1.0, -self.F)

    @property
    def min_value(self) -> float:
        return math.ldexp(float(self.min_code), -self.F)

    @property
    def max_value(self) -> float:
        return math.ldexp(float(self.max_code), -self.F)

    def holds(self, lo: float, hi: float) -> bool:
        """True when every value in ``[lo, hi]`` lies inside the representable range."""
        return self.min_value <= lo and hi <= self.max_value

    # ---- naming -----------------------------------------------------------------------
    def ap_type(self) -> str:
        """The C++ type, e.g. ``ap_fixed<18,6,AP_RND_CONV,AP_SAT>``."""
        base = "ap_fixed" if self.signed else "ap_ufixed"
        return f"{base}<{self.W},{self.I},AP_{self.rounding},AP_{self.overflow}>"

    def __str__(self) -> str:
        return self.ap_type()

    def to_json(self) -> dict:
        return {"W": self.W, "I": self.I, "signed": self.signed, "rounding": self.rounding,
                "overflow": self.overflow}

    @classmethod
    def from_json(cls, obj: dict) -> "Fmt":
        extra = set(obj) - {"W", "I", "signed", "rounding", "overflow"}
        if extra:
            raise FormatError(f"unknown format field(s) {sorted(extra)}")
        return cls(W=obj["W"], I=obj["I"], signed=bool(obj.get("signed", True)),
                   rounding=obj.get("rounding", "RND_CONV"), overflow=obj.get("overflow", "SAT"))

    def replace(self, **kw) -> "Fmt":
        d = self.to_json()
        d.update(kw)
        return Fmt(**d)

    def kif(self) -> tuple[int, int, int]:
        """(keep_negative, integer bits without sign, fractional bits): the ``quantizers`` triple."""
        return (1, self.I - 1, self.F) if self.signed else (0, self.I, self.F)


class Cast(NamedTuple):
    """Result of a cast: int64 codes and the mask of overflow events."""

    codes: np.ndarray
    overflow: np.ndarray


def _apply_overflow(r: np.ndarray, hi_mask: np.ndarray, lo_mask: np.ndarray, fmt: Fmt) -> np.ndarray:
    """Apply WRAP / SAT to rounded codes ``r`` (low bits of r exact even if r itself wrapped in int64)."""
    if fmt.overflow == "SAT":
        return np.where(hi_mask, np.int64(fmt.max_code), np.where(lo_mask, np.int64(fmt.min_code), r))
    mask = np.int64((1 << fmt.W) - 1)
    if fmt.signed:
        half = np.int64(1 << (fmt.W - 1))
        return ((r + half) & mask) - half
    return r & mask


def quantize(x, fmt: Fmt) -> Cast:
    """Quantise float values to ``fmt`` exactly as ``fmt y = (double)x;`` does in C++.

    ``x * 2**F`` is exact in float64 (a power-of-two scaling), its split into
    ``floor`` and a remainder in ``[0, 1)`` is exact, so the rounding decision is exact.
    """
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise FormatError("cannot quantise a non-finite value")
    v = np.ldexp(x, fmt.F)
    fl = np.floor(v)
    rem = v - fl  # exact
    if fmt.rounding == "TRN":
        r = fl
    elif fmt.rounding == "RND":
        r = fl + (rem >= 0.5)
    else:  # RND_CONV
        odd = np.mod(fl, 2.0) == 1.0
        r = fl + ((rem > 0.5) | ((rem == 0.5) & odd))
    hi_mask = r >= math.ldexp(1.0, fmt.W - 1 if fmt.signed else fmt.W)
    lo_mask = r < float(fmt.min_code)
    lim = math.ldexp(1.0, 61)
    if fmt.overflow == "WRAP" and np.any(np.abs(r) >= lim):
        r = np.mod(r, math.ldexp(1.0, fmt.W))  # huge values: exact float remainder first
    rc = np.clip(r, -lim, lim).astype(np.int64)
    codes = _apply_overflow(rc, hi_mask, lo_mask, fmt)
    return Cast(codes.astype(np.int64), hi_mask | lo_mask)


def _round_shift(c: np.ndarray, s: np.ndarray, rounding: str) -> np.ndarray:
    """``c * 2**-s`` rounded to an integer, ``s >= 0`` (elementwise), exact for |c| < 2**61."""
    s = np.minimum(s, 62).astype(np.int64)
    fl = c >> s
    if rounding == "TRN":
        return fl
    one = np.int64(1)
    half = np.where(s > 0, one << np.maximum(s - 1, 0), 0)
    if rounding == "RND":
        return (c + half) >> s
    rem = c & ((one << s) - 1)
    up = (rem > half) | ((rem == half) & (s > 0) & ((fl & 1) == 1))
    return fl + up


def requant(codes, src_frac, fmt: Fmt) -> Cast:
    """Cast exact values ``codes * 2**-src_frac`` to ``fmt`` (quantisation, then overflow).

    ``src_frac`` is an int or an int array broadcastable to ``codes`` (a per-element binary
    point, as after a variable shift).  ``|codes| < 2**61`` is required and checked.
    """
    c = np.asarray(codes, dtype=np.int64)
    if c.size and (int(c.max()) >= (1 << MAX_BITS) or int(c.min()) <= -(1 << MAX_BITS)) \
            and int(np.max(np.abs(c))) >= (1 << MAX_BITS):  # (the first test, without a temporary, is almost always False)
        raise OverflowError(f"intermediate wider than {MAX_BITS} bits before a cast to {fmt}")
    if np.ndim(src_frac) == 0:
        return _requant_scalar(c, int(src_frac) - fmt.F, fmt)
    return _requant_general(c, src_frac, fmt)


def _requant_scalar(c: np.ndarray, shift: int, fmt: Fmt) -> Cast:
    """:func:`requant` with one shift for every element: the same integers as :func:`_requant_general`
    (tested ``==``) with scalar shift arithmetic instead of per-element shift arrays."""
    maxc, minc = np.int64(fmt.max_code), np.int64(fmt.min_code)
    if shift >= 0:
        s = min(shift, 62)
        if s == 0:
            r = c
        elif fmt.rounding == "TRN":
            r = c >> np.int64(s)
        elif fmt.rounding == "RND":
            r = (c + np.int64(1 << (s - 1))) >> np.int64(s)
        else:  # RND_CONV: floor((c + half - 1 + (floor(c / 2**s) & 1)) / 2**s) rounds half to even
            odd = (c >> np.int64(s)) & np.int64(1)
            r = c + np.int64((1 << (s - 1)) - 1)
            r += odd
            r >>= np.int64(s)
        if fmt.overflow == "SAT":  # r is exact here, so saturation is a clip; overflow where it changed r
            out = np.clip(r, minc, maxc)
            return Cast(out, out != r)
        hi_mask = r > maxc
        lo_mask = r < minc
    else:  # exact left shift; the range check without forming the shifted value
        ls = min(-shift, 62)
        if ls >= 62:
            hi_mask, lo_mask = c > 0, c < 0
            r = np.zeros_like(c)
        else:
            hi_mask = c > (maxc >> np.int64(ls))
            lo_mask = c < -((-minc) >> np.int64(ls))
            r = c << np.int64(ls)
        return Cast(_apply_overflow(r, hi_mask, lo_mask, fmt), hi_mask | lo_mask)
    return Cast(_apply_overflow(r, hi_mask, lo_mask, fmt), hi_mask | lo_mask)


def _requant_general(c: np.ndarray, src_frac, fmt: Fmt) -> Cast:
    """:func:`requant` with a per-element binary point (``src_frac`` an array)."""
    shift = np.asarray(src_frac, dtype=np.int64) - fmt.F
    if shift.shape != c.shape and np.broadcast_shapes(shift.shape, c.shape) != c.shape:
        shift = np.broadcast_to(shift, c.shape)  # (raises as before when it cannot)
    # a per-row shift [n, 1] stays that shape: the elementwise operations below broadcast it
    if not np.any(shift < 0):
        r = _round_shift(c, shift, fmt.rounding)
        hi_mask = r > fmt.max_code
        lo_mask = r < fmt.min_code
        return Cast(_apply_overflow(r, hi_mask, lo_mask, fmt), hi_mask | lo_mask)
    # Left shifts (exact, maybe out of range) where shift < 0, rounding right shifts elsewhere.
    rs = np.maximum(shift, 0)
    ls = np.minimum(np.maximum(-shift, 0), 62)
    r_right = _round_shift(c, rs, fmt.rounding)
    r_left = c << ls  # low bits exact even when the int64 wraps
    left = shift < 0
    r = np.where(left, r_left, r_right)
    # range check for left shifts without forming the shifted value
    maxc, minc = np.int64(fmt.max_code), np.int64(fmt.min_code)
    hi_left = c > (maxc >> ls)
    lo_left = c < -((-minc) >> ls)
    big = left & (ls >= 62)
    hi_left = np.where(big, c > 0, hi_left)
    lo_left = np.where(big, c < 0, lo_left)
    r = np.where(big, 0, r)  # low 62 bits of c << (>=62) are zero
    hi_mask = np.where(left, hi_left, r_right > maxc)
    lo_mask = np.where(left, lo_left, r_right < minc)
    return Cast(_apply_overflow(r, hi_mask, lo_mask, fmt), hi_mask | lo_mask)


def to_float(codes, frac) -> np.ndarray:
    """Decode codes with ``frac`` fractional bits to float64 exactly (refuses |code| >= 2**53)."""
    c = np.asarray(codes, dtype=np.int64)
    if c.size and int(np.max(np.abs(c))) >= (1 << 53):
        raise OverflowError("a code of 53 bits or more does not decode exactly to float64")
    return np.ldexp(c.astype(np.float64), -np.asarray(frac, dtype=np.int64))


def value(c: Cast | np.ndarray, fmt: Fmt) -> np.ndarray:
    """Decode a cast (or codes) of ``fmt`` to float64."""
    codes = c.codes if isinstance(c, Cast) else c
    return to_float(codes, fmt.F)


def align(a: np.ndarray, fa: int, b: np.ndarray, fb: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Bring two code arrays to the common binary point ``max(fa, fb)`` (exact left shifts)."""
    f = max(fa, fb)
    return a << np.int64(f - fa), b << np.int64(f - fb), f


def bits_of(max_abs: int | float) -> int:
    """Number of magnitude bits of an integer bound (``|x| < 2**bits``)."""
    m = int(math.ceil(max_abs))
    return m.bit_length()


def check_bits(stage: str, bits: int, what: str) -> None:
    """Raise :class:`WidthError` when a worst-case intermediate needs more than MAX_BITS bits."""
    if bits > MAX_BITS:
        raise WidthError(f"fixed-point stage '{stage}': {what} needs {bits} bits, more than the "
                         f"{MAX_BITS} the bit-true model (int64) supports; narrow the formats of "
                         f"this stage")


class WidthError(InputError):
    """A stage's configured width cannot hold what it must hold (the message names the stage)."""


def _l1_bound(abs_x: np.ndarray, max_x: int, max_other: int, axis: int) -> int:
    """``max over rows (axis 1) or columns (axis 0) of sum |x|`` times ``max_other``: a bound on every partial
    sum of the products ``x * other`` of a dot product (exact Python integers; huge when int64 cannot sum)."""
    if max_x.bit_length() + int(abs_x.shape[axis]).bit_length() >= 63:
        return 1 << 200
    return int(abs_x.sum(axis=axis).max()) * max_other


def int_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact ``a @ b`` of int64 matrices ([n, k] @ [k, m]), through float64 BLAS when that is faster.

    numpy has no BLAS for integers (an int64 [1000, 768] @ [768, 768] takes ~0.5 s). A float64 GEMM is
    exact while every partial sum stays below 2**53, so each operand is split into limbs
    (``a = sum_i a_i 2**(s_a i)``: low limbs in [0, 2**s_a), the top limb signed, all of magnitude
    below 2**s_a; the same for ``b`` with s_b) with ``s_a + s_b + ceil(log2 k) <= 52``: every limb
    GEMM is exact, and the limb products are recombined in int64. When the largest row L1 norm of ``a``
    times the largest ``|b|`` (or the largest column L1 norm of ``b`` times the largest ``|a|``) stays below
    2**53, every partial sum does, and one GEMM of the whole operands is exact. The split minimises the number of
    limb GEMMs; small products (or ones needing more than 4 GEMMs) use numpy's integer matmul. The
    caller guarantees that the true result fits int64 (``check_bits``).
    """
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    if a.ndim != 2 or b.ndim != 2 or a.size * b.shape[1] < 4_000_000 or not a.size or not b.size:
        return a @ b
    abs_a, abs_b = np.abs(a), np.abs(b)
    ma, mb = int(abs_a.max()), int(abs_b.max())
    if max(ma, mb) < (1 << 53) and min(_l1_bound(abs_a, ma, mb, 1), _l1_bound(abs_b, mb, ma, 0)) < (1 << 53):
        # every partial sum of every dot product is an integer of magnitude <= its row's L1 bound < 2**53:
        # one float64 GEMM is exact (in any summation order)
        return (a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)
    budget = 52 - max(1, int(a.shape[1] - 1).bit_length())
    ba = ma.bit_length() + 1
    bb = mb.bit_length() + 1
    best = None
    for mb in range(1, 5):
        sb = -(-bb // mb)
        sa = budget - sb
        if sa < 4:
            continue
        ma = -(-ba // sa)
        if best is None or ma * mb < best[0]:
            best = (ma * mb, ma, sa, mb, sb)
    if best is None or best[0] > 4:
        return a @ b
    _, ma, sa, mb, sb = best

    def limbs(x: np.ndarray, m: int, s: int) -> list[np.ndarray]:
        out, r = [], x
        mask = np.int64((1 << s) - 1)
        for _ in range(m - 1):
            out.append((r & mask).astype(np.float64))
            r = r >> np.int64(s)
        out.append(r.astype(np.float64))  # the signed top limb
        return out

    acc = np.zeros((a.shape[0], b.shape[1]), np.int64)
    for i, x in enumerate(limbs(a, ma, sa)):
        for j, y in enumerate(limbs(b, mb, sb)):
            acc += (x @ y).astype(np.int64) << np.int64(sa * i + sb * j)
    return acc
