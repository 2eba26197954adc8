"""The stages of the fixed-point exit unit: the arithmetic contract for the HLS engineer.

Conventions (all stages)
------------------------
* A fixed-point array is a pair ``(codes, F)``: int64 codes, value ``codes * 2**-F``.  Axis 0
  is the sample axis; every stage is vectorised over it.
* "exact" means the C++ result type is wide enough that nothing is lost: a product of
  ``ap_fixed<Wa,Ia>`` and ``ap_fixed<Wb,Ib>`` is ``ap_fixed<Wa+Wb, Ia+Ib>``; a sum of ``n``
  terms needs ``ceil(log2 n)`` more integer bits; adding two values first aligns their binary
  points (``max(Fa, Fb)`` fractional bits).  Plain ``ap_fixed`` operators do exactly this
  when the destination type is wide enough.  The worst-case width of every exact intermediate
  is checked (``check_bits``) and must stay within 61 bits.
* ``cast[name](v)`` is the only place where bits are dropped: the assignment of an exact
  value ``v`` to the format ``spec.formats[name]`` (its quantisation mode, then its overflow
  mode; see :mod:`.fixed`).  Each cast counts its overflow events per sample under ``name``.
* Constants (reciprocals, eps, LUT entries, weights) are quantised from float64 with the
  rounding / overflow mode of their own format.
* ``2**e`` multiplications (token scale, the exponent of a normalised reciprocal) move the
  binary point: exact and free (a shift).

Error bounds quoted below are against float64 evaluated on the *same* fixed-point inputs and
the same quantised constants, unless stated; ``ulp(name)`` is the LSB of that format and
``r(name)`` the rounding error of a cast: ``ulp/2`` for RND / RND_CONV, ``ulp`` for TRN.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .fixed import Fmt, WidthError, _round_shift, check_bits, int_matmul, quantize, requant
from .tapsums import TapSums, sums_of

# ---------------------------------------------------------------------------------------
# context: overflow counters and (optionally) kept intermediates
# ---------------------------------------------------------------------------------------


@dataclass
class Ctx:
    """Per-run bookkeeping: ``overflow[name]`` = int64 [n] events per sample at cast ``name``."""

    n: int
    keep: bool = False
    overflow: dict = field(default_factory=dict)
    codes: dict = field(default_factory=dict)

    def count(self, name: str, mask: np.ndarray) -> None:
        m = np.asarray(mask)
        if m.ndim and not m.any():  # the usual case: no event, no per-sample sum over the mask
            per = np.zeros(self.n, np.int64)
        else:
            per = m.reshape(self.n, -1).sum(axis=1).astype(np.int64) if m.ndim else np.full(self.n, int(m))
        self.overflow[name] = self.overflow.get(name, 0) + per

    def cast(self, name: str, codes, frac, fmt: Fmt) -> np.ndarray:
        c = requant(codes, frac, fmt)
        self.count(name, c.overflow)
        if self.keep:
            self.codes[name] = (c.codes, fmt.F)
        return c.codes


def clog2(n: int) -> int:
    """``ceil(log2 n)`` for n >= 1 (extra integer bits of a sum of n terms)."""
    return max(int(n) - 1, 0).bit_length()


def _ib(fmt: Fmt) -> int:
    """Magnitude bits above the binary point: |value| < 2**_ib (I without sign bit for signed)."""
    return fmt.I - (1 if fmt.signed else 0)


def _floor_shift(codes: np.ndarray, s: int) -> np.ndarray:
    """``floor(codes * 2**-s)`` for any integer s (right shift if s > 0, left shift otherwise)."""
    if s >= 0:
        return _round_shift(codes, np.int64(s), "TRN")
    return codes << np.int64(-s)


def log2_exact(x: float, what: str) -> int:
    """The integer e with ``x == 2**e``; raises ValueError otherwise."""
    m, e = math.frexp(float(x))
    if m != 0.5:
        raise ValueError(f"{what} must be a power of two, got {x!r}")
    return e - 1


def leading_one(v: np.ndarray) -> np.ndarray:
    """Bit position of the leading one of positive int64 codes (``floor(log2 v)``), exact."""
    v = np.maximum(v, 1)
    _, ex = np.frexp(v.astype(np.float64))
    p = ex.astype(np.int64) - 1
    p = np.where((np.int64(1) << p) > v, p - 1, p)  # float rounding up to the next power
    p = np.where((np.int64(1) << np.minimum(p + 1, 62)) <= v, p + 1, p)
    return p


# ---------------------------------------------------------------------------------------
# LUT generators (the tables the HLS project embeds; build them from these functions)
# ---------------------------------------------------------------------------------------


def norm_table(kind: str, lut_bits: int, fmt: Fmt) -> np.ndarray:
    """Seed table of a normalised reciprocal / reciprocal-square-root unit (int64 codes of ``fmt``).

    ``recip``: ``2**t`` entries, entry ``i = 1 / m_i`` with ``m_i = 1 + (i + 0.5) / 2**t``
    (the midpoint of mantissa bin ``i`` of ``[1, 2)``).
    ``rsqrt``: ``2 * 2**t`` entries; entry ``par * 2**t + i = 1 / sqrt(2**par * m_i)``
    (``par`` = parity of the exponent, mantissa in ``[1, 4)``).
    Quantised with ``fmt``'s rounding (values lie in ``(0.5, 1]`` for rsqrt, ``(0.5, 1)`` for recip).
    """
    t = int(lut_bits)
    mid = 1.0 + (np.arange(1 << t, dtype=np.float64) + 0.5) / (1 << t)
    if kind == "recip":
        vals = 1.0 / mid
    elif kind == "rsqrt":
        vals = np.concatenate([1.0 / np.sqrt(mid), 1.0 / np.sqrt(2.0 * mid)])
    else:
        raise ValueError(f"unknown normalised unit kind {kind!r}")
    return quantize(vals, fmt).codes


def gelu_phi_table(lut_range: float, entries: int, fmt: Fmt) -> np.ndarray:
    """Breakpoints of the GELU stage's piecewise-linear Phi (int64 codes of ``fmt``).

    ``entries + 1`` rows: row ``i = Phi(-R + i * step)``, ``step = 2R / entries``, ``i = 0..entries``
    (``Phi`` the standard normal CDF ``0.5 * (1 + erf(x / sqrt 2))``; R = ``lut_range``).
    """
    step = 2.0 * lut_range / entries
    c = -lut_range + np.arange(entries + 1, dtype=np.float64) * step
    phi = np.array([0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) for v in c])
    return quantize(phi, fmt).codes


def exp_table(lut_range: float, entries: int, fmt: Fmt) -> np.ndarray:
    """Breakpoints of the piecewise-linear ``exp(-a)``, ``a = s_max - s_k >= 0`` (codes of ``fmt``).

    ``entries + 1`` rows: row ``i = exp(-i * step)``, ``step = range / entries``; row 0 is 1
    exactly (``fmt`` needs ``I >= 1``).
    """
    step = lut_range / entries
    return quantize(np.exp(-np.arange(entries + 1, dtype=np.float64) * step), fmt).codes


def interp_lut(name: str, a: np.ndarray, fa: int, sigma: int, table: np.ndarray, fmt: Fmt, ctx: Ctx):
    """Piecewise-linear table lookup at ``a >= 0`` (codes ``A``, ``fa`` fractional bits), in range.

    With ``step = 2**sigma`` and ``sh = fa + sigma`` (the bits of A below the index):

    * ``idx = A >> sh`` (``A << -sh`` if sh < 0), ``fr = A - (idx << sh)`` (the low sh bits of A;
      0 when sh <= 0);
    * ``y = cast[name]((T[idx] << sh) + (T[idx+1] - T[idx]) * fr)`` at ``F_T + sh`` fractional
      bits, i.e. ``T[idx] + (T[idx+1] - T[idx]) * fr / 2**sh`` exactly, then one cast.
    """
    sh = fa + sigma
    idx = _floor_shift(a, sh)
    shp = max(sh, 0)
    check_bits(name, fmt.W + shp + 2, "the LUT interpolation")
    table = np.asarray(table, np.int64)
    if sh <= 0:  # no bits below the index: the breakpoint itself
        return ctx.cast(name, table[idx], fmt.F, fmt)
    # the same integers with the tables shifted and differenced once (len entries + 1) instead of per element
    base = (table << np.int64(shp))[idx]
    slope = np.diff(table)[idx]  # T[idx + 1] - T[idx] (idx <= entries - 1 for a in range)
    fr = a & np.int64((1 << shp) - 1)  # == a - (idx << sh), the low sh bits of A
    base += slope * fr
    return ctx.cast(name, base, fmt.F + shp, fmt)


# ---------------------------------------------------------------------------------------
# normalised reciprocal / reciprocal square root (shared by LN, L2 and conf)
# ---------------------------------------------------------------------------------------


def norm_unit(name: str, kind: str, v: np.ndarray, fv: int, fmts: dict, lut_bits: int,
              newton_steps: int, table: np.ndarray, ctx: Ctx):
    """``1/sqrt(v)`` (kind ``rsqrt``) or ``1/v`` (kind ``recip``) as ``y * 2**-k``: LUT seed + Newton.

    Method (``V`` = unsigned input code, ``fv`` its fractional bits, ``t = lut_bits``):

    1. ``p`` = position of the leading one of ``V`` (priority encoder); ``e = p - fv`` so
       ``v in [2**e, 2**(e+1))``.
    2. rsqrt: ``par = e mod 2``, ``k = (e - par) / 2``, mantissa ``m = v * 2**(-2k)`` in [1, 4).
       recip: ``par = 0``, ``k = e``, ``m = v * 2**-k`` in [1, 2).
    3. ``M = cast[name.mant](m)`` (a bit slice of V: ``ap_ufixed<Fm+2, 2, AP_TRN>``).
    4. Seed: ``idx = (M >> (Fm + par - t)) - 2**t`` (the t bits after the leading one),
       ``y0 = table[par * 2**t + idx]`` (format ``name.lut``, see :func:`norm_table`).
    5. Newton, ``newton_steps`` times, every product cast to ``name.work``
       (``ap_fixed<Ww, 3>``):

       * rsqrt: ``a = cast(y*y)``, ``b = cast(M*a)``, ``y = cast(y * (3 - b) / 2)``
       * recip: ``b = cast(M*y)``, ``y = cast(y * (2 - b))``

       (``3 - b`` and ``2 - b`` exact; ``/2`` is a binary-point move.)
    6. Result ``r = y * 2**-k`` is returned as ``(Y, fy, k)``: callers multiply by ``Y`` exactly
       and cast with ``fy + k`` fractional bits (a variable shift, no separate rounding of r).
       In C++ the shift must be lossless before the cast: ``ap_fixed``'s ``>>`` keeps its
       type and drops bits, so shift in a type with ``F_prod + k_max`` fractional bits
       (``k_max = floor((I_v - 1) / 2)`` for rsqrt, ``I_v - 1`` for recip, from the input
       format ``ap_ufixed<W_v, I_v>``), or round the integer code by hand.

    ``V == 0`` gives ``Y = 0`` (an event counted under ``name``).  Relative error of r: see
    :func:`norm_unit_rel_error` (seed ``~2**-(t+2)`` for rsqrt, ``~2**-(t+1)`` for recip; each
    Newton step squares it, times 1.5 for rsqrt, plus a few ``r(work)``).
    """
    f_mant, f_lut, f_work = fmts["mant"], fmts["lut"], fmts["work"]
    check_bits(name, f_mant.W + f_work.W + 1, "the Newton product M*a")
    check_bits(name, 2 * max(f_work.W, f_lut.W) + 1, "the Newton product y*y")
    zero = v <= 0
    ctx.count(name, zero)
    p = leading_one(v)
    e = p - fv
    if kind == "rsqrt":
        par = np.mod(e, 2)
        k = (e - par) // 2
        mant_shift = 2 * k
    else:
        par = np.zeros_like(e)
        k = e
        mant_shift = k
    # M = v * 2**-mant_shift with Fm fractional bits: truncating bit slice (exact when shifting left)
    M = ctx.cast(f"{name}.mant", v, fv + mant_shift, f_mant)
    t = int(lut_bits)
    idx = (M >> (f_mant.F + par - t)) - (np.int64(1) << t)
    idx = np.clip(idx, 0, (1 << t) - 1)
    Y = table[par * (1 << t) + idx]
    fy = f_lut.F
    for _ in range(int(newton_steps)):
        fw = f_work.F
        if kind == "rsqrt":
            a = ctx.cast(f"{name}.work", Y * Y, 2 * fy, f_work)
            b = ctx.cast(f"{name}.work", M * a, f_mant.F + fw, f_work)
            c = (np.int64(3) << np.int64(fw)) - b
            Y = ctx.cast(f"{name}.work", Y * c, fy + fw + 1, f_work)
        else:
            b = ctx.cast(f"{name}.work", M * Y, f_mant.F + fy, f_work)
            c = (np.int64(2) << np.int64(fw)) - b
            Y = ctx.cast(f"{name}.work", Y * c, fy + fw, f_work)
        fy = fw
    Y = np.where(zero, 0, Y)
    k = np.where(zero, 0, k)
    return Y, fy, k


def norm_unit_rel_error(kind: str, lut_bits: int, newton_steps: int, fmts: dict) -> float:
    """Bound on the relative error of :func:`norm_unit`'s ``r = y * 2**-k`` (nonzero input).

    Seed: ``eps0 = 1.05 * 2**-(t+2) + 2 r(lut)`` (rsqrt: half a bin of relative width
    ``<= 2**-t`` times the slope 1/2) or ``1.05 * 2**-(t+1) + 2 r(lut)`` (recip).  Each Newton
    step: ``eps -> 1.5 eps**2 (1 + eps) + 8 r(work)`` (rsqrt) or ``eps**2 + 6 r(work)`` (recip)
    (``r(work)`` absolute on ``y >= 1/2``).  Plus the mantissa truncation:
    ``0.5 * 2**-Fm`` (rsqrt) / ``2**-Fm`` (recip).
    """
    def rr(f: Fmt) -> float:
        return f.lsb if f.rounding == "TRN" else f.lsb / 2

    t = int(lut_bits)
    if kind == "rsqrt":
        eps = 1.05 * 2.0 ** -(t + 2) + 2 * rr(fmts["lut"])
        for _ in range(int(newton_steps)):
            eps = 1.5 * eps * eps * (1 + eps) + 8 * rr(fmts["work"])
        return eps + 0.5 * fmts["mant"].lsb
    eps = 1.05 * 2.0 ** -(t + 1) + 2 * rr(fmts["lut"])
    for _ in range(int(newton_steps)):
        eps = eps * eps + 6 * rr(fmts["work"])
    return eps + fmts["mant"].lsb


# ---------------------------------------------------------------------------------------
# stages
# ---------------------------------------------------------------------------------------


def ssa_mean(q, scale_exp: int, spec, consts: dict, ctx: Ctx):
    """SSA: mean of the N patch tokens, ``x = (sum_i q_i) * inv_N * 2**scale_exp``.

    ``q``: int8 tokens [n, N+1, d] or their :class:`~exitlogic.fixedpoint.tapsums.TapSums`.

    * ``acc = sum_{i=1..N} q_i`` over the int8 codes (token 0, CLS, excluded), in
      ``ssa.acc`` (an integer format, ``F = 0``, validated wide enough: never overflows).
    * ``inv_N = quantize(1/N, ssa.recip)`` (a constant code ``R`` with ``F_R`` fractional bits).
    * ``x = cast[ssa.out](acc * R * 2**(scale_exp - F_R))``: one exact product, one cast.

    Result equals, exactly, the rational ``acc * R / 2**F_R * s_L`` rounded by ``ssa.out``;
    against the float mean ``acc / N * s_L`` the error is
    ``<= |acc| * s_L * |R/2**F_R - 1/N| + r(ssa.out)``.
    """
    fm = spec.formats
    f_acc, f_r, f_out = fm["ssa.acc"], fm["ssa.recip"], fm["ssa.out"]
    check_bits("ssa", f_acc.W + f_r.W, "acc * inv_N")
    acc = q.s1 if isinstance(q, TapSums) else q[:, 1:, :].sum(axis=1, dtype=np.int64)
    acc = ctx.cast("ssa.acc", acc, 0, f_acc)
    R = np.int64(consts["ssa.recip"])
    return ctx.cast("ssa.out", acc * R, f_r.F - scale_exp, f_out)


def sav_exact(q, scale_exp: int, spec, consts: dict, ctx: Ctx):
    """SAV from the int8 codes: exact integer ``T``, then one scaling cast.

    ``q``: int8 tokens [n, N+1, d] or their :class:`~exitlogic.fixedpoint.tapsums.TapSums`.

    * ``S1 = sum_i q_i`` (vector, d), ``S2 = sum_i ||q_i||**2`` over the N patch tokens,
      ``T = N * S2 - ||S1||**2`` (integers; ``T = N**2 * SAV / s_L**2`` exactly, ``T >= 0``).
      All three (N*S2, ||S1||**2, T) are held in ``sav.acc`` (integer, validated wide enough).
    * ``SAV = cast[sav.out](T * R2 * 2**(2*scale_exp - F_R2))`` with
      ``R2 = quantize(1/N**2, sav.recip)``.

    Error against the exact rational ``T * s_L**2 / N**2``:
    ``<= T * s_L**2 * |R2/2**F_R2 - 1/N**2| + r(sav.out)``.
    """
    fm = spec.formats
    f_acc, f_r, f_out = fm["sav.acc"], fm["sav.recip"], fm["sav.out"]
    check_bits("sav", f_acc.W + f_r.W, "T * inv_N2")
    sums = sums_of(q)
    n_tok, s1, s2 = sums.n_tokens, sums.s1, sums.s2
    ns2 = ctx.cast("sav.acc", np.int64(n_tok) * s2, 0, f_acc)
    s1sq = ctx.cast("sav.acc", np.einsum("nj,nj->n", s1, s1), 0, f_acc)
    T = ns2 - s1sq
    if ctx.keep:
        ctx.codes["sav.T"] = (T, 0)
    R2 = np.int64(consts["sav.recip"])
    return ctx.cast("sav.out", T * R2, f_r.F - 2 * scale_exp, f_out)


def layernorm(x: np.ndarray, fin: Fmt, gamma: np.ndarray, beta: np.ndarray, spec, consts: dict,
              tables: dict, ctx: Ctx):
    """LayerNorm over the d features of x (eps from the spec), affine with gamma/beta.

    1. ``mu = cast[ln.mean](sum_j x_j * inv_d)``, ``inv_d = quantize(1/d, ln.recip)``.
    2. ``c_j = cast[ln.diff](x_j - mu)``.
    3. ``ss = cast[ln.sumsq](sum_j c_j**2)`` (exact sum of exact squares, then one cast).
    4. ``v = cast[ln.var](ss * inv_d)``; ``v = cast[ln.var](v + eps_q)`` with
       ``eps_q = quantize(eps, ln.var)`` (may be 0 if eps is below ulp(ln.var)).
    5. ``r = y * 2**-k = rsqrt(v)`` by :func:`norm_unit` ``ln.rsqrt`` (LUT seed + Newton).
    6. ``n_j = cast[ln.norm](c_j * y * 2**-k)`` (exact product, variable binary point, one cast).
    7. ``o_j = cast[ln.out](n_j * gamma_j + beta_j)`` (gamma in ``ln.weight``, beta in ``ln.bias``).

    Error (against float LN of the same x with the quantised gamma/beta): about
    ``|gamma| * (|n| * (eps_r + eps_v / 2) + r * (e_mu + r(ln.diff)) + r(ln.norm)) + r(ln.out)``
    with ``eps_r`` the rsqrt relative error, ``eps_v`` the relative error of v
    (``(r(ln.sumsq) + r(ln.var)*d) / ss`` plus the inv_d constant's), ``e_mu`` the mean's
    absolute error and ``r = 1/sqrt(var + eps)``.
    """
    fm = spec.formats
    d = x.shape[-1]
    f_rd, f_mean, f_diff = fm["ln.recip"], fm["ln.mean"], fm["ln.diff"]
    f_ss, f_var, f_norm = fm["ln.sumsq"], fm["ln.var"], fm["ln.norm"]
    f_g, f_b, f_out = fm["ln.weight"], fm["ln.bias"], fm["ln.out"]
    fx = fin.F
    check_bits("ln", fin.W + clog2(d) + f_rd.W, "sum_j x_j * inv_d")
    rd = np.int64(consts["ln.recip"])
    s = x.sum(axis=-1)
    mu = ctx.cast("ln.mean", s * rd, fx + f_rd.F, f_mean)
    fc0 = max(fx, f_mean.F)
    check_bits("ln", max(_ib(fin), _ib(f_mean)) + fc0 + 2, "x - mu")
    diff = (x << np.int64(fc0 - fx)) - (mu << np.int64(fc0 - f_mean.F))[:, None]
    c = ctx.cast("ln.diff", diff, fc0, f_diff)
    check_bits("ln", 2 * f_diff.W + clog2(d), "sum_j c_j**2")
    ss = ctx.cast("ln.sumsq", (c * c).sum(axis=-1), 2 * f_diff.F, f_ss)
    check_bits("ln", f_ss.W + f_rd.W, "sumsq * inv_d")
    v = ctx.cast("ln.var", ss * rd, f_ss.F + f_rd.F, f_var)
    v = ctx.cast("ln.var", v + np.int64(consts["ln.eps"]), f_var.F, f_var)
    u = spec.units["ln.rsqrt"]
    Y, fy, k = norm_unit("ln.rsqrt", "rsqrt", v, f_var.F, _unit_fmts(fm, "ln.rsqrt"), u.lut_bits,
                         u.newton_steps, tables["ln.rsqrt"], ctx)
    check_bits("ln", f_diff.W + max(fm["ln.rsqrt.work"].W, fm["ln.rsqrt.lut"].W), "c_j * y")
    n = ctx.cast("ln.norm", c * Y[:, None], f_diff.F + fy + k[:, None], f_norm)
    fp = f_norm.F + f_g.F
    f_al = max(fp, f_b.F)
    check_bits("ln", max(_ib(f_norm) + _ib(f_g) + 1, _ib(f_b)) + f_al + 2, "n_j * gamma_j + beta_j")
    acc = (n * gamma[None, :] << np.int64(f_al - fp)) + (beta[None, :] << np.int64(f_al - f_b.F))
    return ctx.cast("ln.out", acc, f_al, f_out)


def dense(name: str, x: np.ndarray, fin: Fmt, w: np.ndarray, b: np.ndarray, spec, ctx: Ctx):
    """Dense layer ``y_o = cast[name.out](sum_j W_oj * x_j + b_o)`` (W in torch layout [out, in]).

    Weights in ``name.weight``, bias in ``name.bias``; products and their sum exact (accumulator
    ``ap_fixed<Wx + Ww + ceil(log2 d_in) + 1, ...>``), the bias aligned to the product's binary
    point (exact), one cast.  Error: ``r(name.out)`` against float on the same quantised operands.
    """
    fm = spec.formats
    f_w, f_b, f_out = fm[f"{name}.weight"], fm[f"{name}.bias"], fm[f"{name}.out"]
    fx = fin.F
    d_in = x.shape[-1]
    fp = fx + f_w.F
    f_al = max(fp, f_b.F)
    check_bits(name, fin.W + f_w.W + clog2(d_in) + (f_al - fp) + 1, "the accumulator sum_j W_oj x_j + b_o")
    check_bits(name, _ib(f_b) + f_al + 2, "the aligned bias")
    acc = int_matmul(x, w.T) << np.int64(f_al - fp)
    acc = acc + (b << np.int64(f_al - f_b.F))[None, :]
    return ctx.cast(f"{name}.out", acc, f_al, f_out)


def gelu(x: np.ndarray, fin: Fmt, spec, table: np.ndarray, ctx: Ctx):
    """GELU as ``x * Phi(x)``, Phi piecewise linear between ``entries + 1`` breakpoints on [-R, R].

    * ``step = 2R / entries`` (R and entries powers of two, so ``step = 2**sigma``);
      ``A = X + R * 2**F_x`` (x shifted to ``a = x + R >= 0``; needs ``F_x >= -log2 R``).
    * ``phi = 0`` if ``a < 0`` (x < -R), ``phi = 1`` if ``a >= 2R`` (x >= R), else
      ``phi = cast[gelu.phi](interp)`` by :func:`interp_lut` on the breakpoint table
      :func:`gelu_phi_table` (format ``gelu.phi``, ``ap_ufixed<W, 1>``).
    * ``g = cast[gelu.out](x * phi)`` (exact product, one cast).

    Error against exact-erf GELU of the same x: inside the range
    ``<= |x| * (0.242 * step**2 / 8 + 2 r(gelu.phi)) + r(gelu.out)`` (linear interpolation
    error of Phi, whose second derivative ``-x phi(x)`` is at most 0.242 in magnitude; the
    two table roundings and the cast of phi); outside it ``<= R * Phi(-R)`` (1.3e-4 for R = 4,
    5e-15 for R = 8).  Default table: 1024 segments over [-8, 8] (step 2**-6), 1025 rows.
    """
    fm = spec.formats
    lut = spec.luts["gelu"]
    f_phi, f_out = fm["gelu.phi"], fm["gelu.out"]
    fx = fin.F
    check_bits("gelu", fin.W + f_phi.W, "x * phi")
    entries = int(lut.entries)
    sigma = log2_exact(2.0 * lut.range / entries, "gelu LUT step")
    r_exp = log2_exact(lut.range, "gelu LUT range")
    if fx + r_exp < 0:
        raise WidthError(f"fixed-point stage 'gelu': the input format {fin} cannot represent the "
                         f"LUT range {lut.range} (needs F >= {-r_exp})")
    check_bits("gelu", fin.W + 2, "x + R")
    a = x + (np.int64(1) << np.int64(fx + r_exp))
    top = np.int64(1) << np.int64(fx + r_exp + 1)
    inside = (a >= 0) & (a < top)
    phi_in = interp_lut("gelu.phi", np.where(inside, a, 0), fx, sigma, table, f_phi, ctx)
    one = np.int64(1) << np.int64(f_phi.F)
    phi = np.where(inside, phi_in, np.where(a < 0, 0, one))
    return ctx.cast("gelu.out", x * phi, fx + f_phi.F, f_out)


def l2_normalize(h: np.ndarray, fin: Fmt, spec, tables: dict, ctx: Ctx):
    """``u = h / ||h||_2``.

    * ``ss = cast[l2.sumsq](sum_j h_j**2)`` (exact sum of exact squares, one cast).
    * ``r = y * 2**-k = rsqrt(ss)`` by :func:`norm_unit` ``l2.rsqrt``.
    * ``u_j = cast[l2.out](h_j * y * 2**-k)``.

    Error: ``|u| * (eps_r + r(l2.sumsq) / (2 ss)) + r(l2.out)`` (``eps_r`` the rsqrt relative
    error).  ``h = 0`` gives ``u = 0``.
    """
    fm = spec.formats
    f_ss, f_out = fm["l2.sumsq"], fm["l2.out"]
    e = h.shape[-1]
    fh = fin.F
    check_bits("l2", 2 * fin.W + clog2(e), "sum_j h_j**2")
    ss = ctx.cast("l2.sumsq", (h * h).sum(axis=-1), 2 * fh, f_ss)
    u = spec.units["l2.rsqrt"]
    Y, fy, k = norm_unit("l2.rsqrt", "rsqrt", ss, f_ss.F, _unit_fmts(fm, "l2.rsqrt"), u.lut_bits,
                         u.newton_steps, tables["l2.rsqrt"], ctx)
    check_bits("l2", fin.W + max(fm["l2.rsqrt.work"].W, fm["l2.rsqrt.lut"].W), "h_j * y")
    return ctx.cast("l2.out", h * Y[:, None], fh + fy + k[:, None], f_out)


def similarity(u: np.ndarray, fin: Fmt, text_scaled: np.ndarray, spec, ctx: Ctx):
    """Logits ``s_k = cast[sim.logit](sum_j u_j * T_kj)``.

    ``T = quantize(logit_scale * t, sim.text)``: the logit scale is folded into the stored
    text embeddings (one GEMV, no separate multiply).  Exact accumulation, one cast.
    Error: ``r(sim.logit)`` on the same operands; against unquantised ``logit_scale * t`` add
    ``sum_j |u_j| * r(sim.text)`` (``<= sqrt(e) * r(sim.text)``).
    """
    fm = spec.formats
    f_t, f_out = fm["sim.text"], fm["sim.logit"]
    fu = fin.F
    check_bits("sim", fin.W + f_t.W + clog2(u.shape[-1]), "sum_j u_j T_kj")
    return ctx.cast("sim.logit", int_matmul(u, text_scaled.T), fu + f_t.F, f_out)


def softmax_stats(s: np.ndarray, fin: Fmt, spec, tables: dict, ctx: Ctx):
    """pred, conf and margin from the logits with an exp LUT and a normalised reciprocal.

    * One top-2 scan over k ascending: ``if s > m1: (m2, m1, pred) = (m1, s, k)
      elif s > m2: m2 = s`` (m1, m2 start below every logit).  So ``pred`` is the first index
      of the maximum, ``s_max = m1`` and ``s_2nd = m2`` (``= s_max`` when the maximum is tied).
    * ``E = exp(s_k - s_max)`` from ``a = s_max - s_k >= 0`` (exact difference): if
      ``a < range``, ``E = cast[exp.out](interp)`` by :func:`interp_lut` on the breakpoint table
      :func:`exp_table` (``step = range / entries = 2**sigma``; ``E = 1`` exactly at ``a = 0``,
      so the maximum and ties with it contribute exactly 1), else ``E = 0``.
    * ``Z = sum_k E(s_k - s_max)`` exact (``ap_ufixed<W_e + ceil(log2 K), 1 + ceil(log2 K)>``),
      ``Z in [1, K]``.
    * ``conf = cast[conf.out](1/Z)`` with ``1/Z = y * 2**-k`` from :func:`norm_unit`
      ``conf.recip``.
    * ``margin = cast[margin.out](conf * (1 - E(s_2nd - s_max)))`` (exact product).

    Error: ``|E - exp(-a)| <= exp(-a) * step**2 / 8 + 2 r(exp.out)`` inside the range, and
    ``< exp(-range)`` for a dropped term; so ``|Z - Z_true| <= (Z_true - 1) * step**2 / 8 +
    K * (2 r(exp.out) + exp(-range))``; conf = 1/Z adds the recip's relative error and
    ``r(conf.out)``; margin adds ``r(margin.out)``.  Default table: 1024 segments over [0, 16]
    (step 2**-6), 1025 rows.
    """
    fm = spec.formats
    lut = spec.luts["exp"]
    f_e, f_conf, f_marg = fm["exp.out"], fm["conf.out"], fm["margin.out"]
    K = s.shape[-1]
    fs = fin.F
    pred = np.argmax(s, axis=-1)
    smax = s.max(axis=-1)
    s2 = -np.partition(-s, 1, axis=-1)[:, 1] if K > 1 else smax
    entries = int(lut.entries)
    sigma = log2_exact(lut.range / entries, "exp LUT step")

    one = np.int64(1) << np.int64(f_e.F)
    top = np.int64(entries) << np.int64(max(fs + sigma, 0)) if fs + sigma >= 0 else None

    def E(a):
        inside = (_floor_shift(a, fs + sigma) < entries) if top is None else (a < top)
        e = interp_lut("exp.out", np.where(inside, a, 0), fs, sigma, tables["exp"], f_e, ctx)
        return np.where(inside, e, 0)

    e_all = E(smax[:, None] - s)
    Z = e_all.sum(axis=-1)
    check_bits("softmax", f_e.W + clog2(K), "Z = sum_k E_k")
    u = spec.units["conf.recip"]
    Y, fy, k = norm_unit("conf.recip", "recip", Z, f_e.F, _unit_fmts(fm, "conf.recip"), u.lut_bits,
                         u.newton_steps, tables["conf.recip"], ctx)
    conf = ctx.cast("conf.out", Y, fy + k, f_conf)
    e2 = E(smax - s2)
    check_bits("softmax", f_conf.W + f_e.W + 1, "conf * (1 - E2)")
    margin = ctx.cast("margin.out", conf * (one - e2), f_conf.F + f_e.F, f_marg)
    if ctx.keep:
        ctx.codes["softmax.Z"] = (Z, f_e.F)
        ctx.codes["softmax.E2"] = (e2, f_e.F)
    return pred, conf, margin


def gate(conf: np.ndarray, margin: np.ndarray, sav: np.ndarray, wq: list, bq: int, thr_code: int,
         spec, ctx: Ctx):
    """Gate logit and exit decision: ``g = cast[gate.out](sum_i w'_i f_i + b')``, exit ``g >= T``.

    * ``f = (conf, margin, SAV)`` in ``conf.out``, ``margin.out``, ``sav.out``;
      ``w'_i = w_i / sigma_i`` quantised to ``gate.w_conf``, ``gate.w_margin``, ``gate.w_sav``;
      ``b' = b - sum_i w_i mu_i / sigma_i`` quantised to ``gate.b`` (folding in float64).
    * The three products and b' are added exactly at the common binary point
      ``F_al = max(F_w_i + F_f_i, F_b)``, then one cast to ``gate.out``.
    * ``T = ceil(logit(tau) * 2**F_g)`` (a code of ``gate.out``): ``g_code >= T`` holds iff the
      fixed-point value ``g >= logit(tau)``; this comparator bit is the exit decision
      (no sigmoid).

    Error: ``sum_i |f_i| r(w'_i) + r(b') + r(gate.out)`` against float on the same features.
    """
    fm = spec.formats
    f_out, f_b = fm["gate.out"], fm["gate.b"]
    feats = ((conf, fm["conf.out"], "gate.w_conf"), (margin, fm["margin.out"], "gate.w_margin"),
             (sav, fm["sav.out"], "gate.w_sav"))
    f_al = max([ff.F + fm[nm].F for _, ff, nm in feats] + [f_b.F])
    for _, ff, nm in feats:
        check_bits("gate", max(_ib(ff) + _ib(fm[nm]), _ib(f_b), 0) + f_al + 3, "the aligned gate sum")
    acc = np.full(conf.shape, np.int64(bq) << np.int64(f_al - f_b.F), dtype=np.int64)
    for (c, ff, nm), w in zip(feats, wq):
        acc = acc + ((c * np.int64(w)) << np.int64(f_al - ff.F - fm[nm].F))
    g = ctx.cast("gate.out", acc, f_al, f_out)
    return g, g >= np.int64(thr_code)


def _unit_fmts(fm: dict, name: str) -> dict:
    return {"mant": fm[f"{name}.mant"], "lut": fm[f"{name}.lut"], "work": fm[f"{name}.work"]}
