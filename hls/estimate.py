"""Resource and latency estimates of the exit blocks without vendor tools (formulas in :data:`FORMULAS`).

The target is an AMD UltraScale+ fabric (DSP48E2 27 x 18 signed multipliers, 18 Kb block RAMs,
6-input LUTs).  Counts are cells (DSP48E2, BRAM_18K, LUT, FF), latency and interval clock cycles.
These are estimates for design-space exploration, not synthesis results: run the generated
projects through Vitis HLS / Vivado HLS for vendor numbers.  Two parts are modelled on what the
open synthesis (Yosys ``synth_xilinx``) builds from the RTL of ``rtl/`` and checked against it
(README, Open RTL): :func:`const_dense` (the gate's constant-weight Dense) and
:func:`streaming_ssa_sav` (the RTL's streaming SSA mean / SAV block).
"""
from __future__ import annotations

import math

from .extension import EXIT_COMPARATOR, GELU, LAYER_NORM, SSA_MEAN

#: BRAM_18K aspect ratios (width bits, depth)
BRAM_CONFIGS = ((36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384))
#: a ROM of at most this many bits, or at most this many rows, goes to LUTs / registers, not BRAM
LUTROM_MAX_BITS = 1024
LUTROM_MAX_DEPTH = 64
MULT_PIPE = 3      # cycles of a pipelined (DSP) multiplier
RSQRT_FIXED = 3    # leading-one detector, mantissa slice, seed ROM read

FORMULAS = {
    "dsp_per_multiplier": "w_a x w_b bits: 0 if min(w_a, w_b) <= 4 (LUT multiplier), else "
                          "min(ceil((w_a-1)/26) * ceil((w_b-1)/17), ceil((w_a-1)/17) * ceil((w_b-1)/26)) "
                          "(DSP48E2 27x18 signed; wider products split into 26x17 unsigned partial products)",
    "dense_multipliers": "ceil(n_in * n_out / ReuseFactor) (hls4ml's multiplier_limit, both strategies)",
    "custom_multipliers": "per layer: the multiplications of one loop body (SSA: acc*inv_N; LN: x^2 per element, "
                          "mean and variance scalings, 3 per Newton step (rsqrt), c*y and n*gamma; GELU: "
                          "slope*frac and x*phi) times P, P = d under hls4ml's 'pipeline' style (everything "
                          "unrolled) and 1 under 'dataflow' (each loop pipelined at II = ReuseFactor)",
    "dsp": "sum over multipliers of dsp_per_multiplier",
    "bram_18k": "per stored array (weights, biases, LUTs, gamma/beta): 0 if bits <= 1024 or rows <= 64 "
                "(LUTRAM / registers), or for Dense weights under the Latency strategy (fully partitioned "
                "registers); else min over BRAM aspect ratios (36x512 ... 1x16384) of "
                "ceil(word_bits / width) * ceil(rows / depth).  Dense weights under the Resource strategy are "
                "reshaped by hls4ml into words of block_factor = ceil(n_in*n_out/RF) weights and RF rows",
    "latency_strategy_dense": "ReuseFactor 1 (with RF > 1 the multipliers are shared as under Resource); with the "
                              "weight codes known ('const_weights', the gate) the layer is costed as Yosys "
                              "synth_xilinx builds the same sum (see const_dense); else every weight is a w_in x "
                              "w_weight constant multiplier, registers: inputs and outputs",
    "const_dense": "constant-weight Dense at RF 1, modelled on Yosys synth_xilinx of the RTL gate (rtl/) and "
                   "checked on 88 synthesised gates (3 of the default, 85 of random formats and weights): LUT within "
                   "28 % (RMS 12 %, 2 beyond 25 %), FF within 5 %, DSP exact. Product x_i * c_i, c = o * 2**t (o "
                   "odd): nothing for o = +-1 (wires, an inverted summand), else one multiplier of x's width by o's "
                   "signed width, its register the exact product range of x * o (no sign bit when it cannot be "
                   "negative; the t zeros are wires). A product of >= 9 bits goes to DSP48E2s (Yosys mul2dsp: 1 when "
                   "it fits 27 x 18, else t = ceil((a-1)/26) * ceil((b-1)/17), a >= b the operand widths, whose t - 1 "
                   "partial products are added in LUTs: (t - 1) (product bits - 17)), a smaller one to "
                   "ceil(w_x * bits(o) / 2) LUTs. The sum of the aligned products and the constant (bias, + half an "
                   "LSB of the cast under RND) is exact, S = the signed width of its range; per bit column c of S, "
                   "k_c = the products' variable bits reaching it (signed ones sign-extend to the top) + the "
                   "constant's bit. LUTs per column: 2 when k_c >= 2 (carry-chain adder bit and its compressor; 1 "
                   "below the cast's dropped bits under TRN and RND, where only the carry counts), + 1 when "
                   "k_c >= 3, 1/2 when all its variable bits are sign-extension copies (shared logic). The one cast "
                   "adds 3/4 LUT per output bit when it can saturate. Registers: inputs with a nonzero weight (their "
                   "code widths), the product registers, the output; no weight registers",
    "streaming_ssa_sav": "the RTL ssa_sav block (rtl/blocks.py: one int8 token per clock, S1 = sum q_i [d] and "
                         "S2 = sum ||q_i||^2 accumulated, SSA mean and SAV once per sample), modelled on Yosys "
                         "synth_xilinx and checked against it at d = 2 ... 128 (see the README): widths are the "
                         "emitter's exact ranges. DSP48E2: d squarers q^2, d squarers S1^2, d products S1 * R when "
                         "1/N's code R is not a power of two (products >= 9 bits, const_dense's DSP rule), S2 * N and "
                         "T * R2. LUTs: a sum of n signed summands of total width w costs w (n = 2) or "
                         "1.5 (n - 2) w + w (n >= 3: rows of 3:2 compressors, then one carry-chain adder): the d "
                         "squares of the token and the d squares of S1; 2 per accumulator bit (d S1 and S2: adder "
                         "and load mux); T = N S2 - ||S1||^2 one per bit; each cast ceil(s / 4) for rounding s "
                         "dropped bits (RND, RND_CONV) + ceil(3/4 W) when it can saturate; the token counter "
                         "2 per bit. FF: the token (8 d) and its copy (8 d), d S1 and S2, the sum of squares, two "
                         "registers of each SSA element, N S2, ||S1||^2, SAV, the counter and 9 flags. Latency 4, "
                         "interval N + 1",
    "comparator": "g >= T against a constant: ceil(width / 4) LUTs (a carry-chain compare, Yosys), 1 cycle",
    "lut": "adders: one LUT per bit (accumulators n_mult * accum width, the SSA/LN sums, the GELU index "
           "and interpolation); LUT multipliers w_a*w_b; 30 per wide DSP product (partial-product adds); "
           "Resource-strategy input muxes n_mult * w_in; ROMs kept in LUTs: bits / 64",
    "ff": "pipeline registers: every multiplier's operands and product (w_a + w_b + w_a + w_b) and every "
          "accumulator (its width); Latency-strategy Dense: see latency_strategy_dense; comparator: the registered "
          "g and the exit bit (width + 1)",
    "latency_cycles": "Dense: Latency strategy ceil(log2 n_in) + 2, Resource RF + ceil(log2(n_in / min(n_in, RF)))"
                      " + 3; SSA: d*RF + ceil(log2 N) + 3 (dataflow) or ceil(log2 N) + 3 (pipeline); LN: "
                      "3*d*RF + 2*MULT_PIPE + rsqrt + 2*MULT_PIPE (dataflow) or 2*ceil(log2 d) + same terms "
                      "(pipeline), rsqrt = 3 + 3*MULT_PIPE*newton_steps; GELU: d*RF + 2 + 2*MULT_PIPE "
                      "(dataflow) or 2 + 2*MULT_PIPE; comparator 1; block = sum over layers + 2 (I/O)",
    "interval_cycles": "dataflow: max over layers of the layer interval (Dense: RF; SSA/GELU: d*RF; LN: 3*d*RF; "
                       "comparator 1); pipeline style: max ReuseFactor",
    "time": "latency_ns = latency_cycles * clock period; throughput = clock / interval_cycles",
}


def dsp_per_mult(wa: int, wb: int) -> int:
    wa, wb = int(wa), int(wb)
    if min(wa, wb) <= 4:
        return 0
    a, b = max(wa - 1, 1), max(wb - 1, 1)
    return min(math.ceil(a / 26) * math.ceil(b / 17), math.ceil(a / 17) * math.ceil(b / 26))


def lut_mult(wa: int, wb: int) -> int:
    return int(wa) * int(wb) if dsp_per_mult(wa, wb) == 0 else (30 if dsp_per_mult(wa, wb) > 1 else 0)


def bram18(rows: int, word_bits: int) -> int:
    rows, word_bits = int(rows), int(word_bits)
    if rows * word_bits <= LUTROM_MAX_BITS or rows <= LUTROM_MAX_DEPTH:
        return 0
    return min(math.ceil(word_bits / w) * math.ceil(rows / d) for w, d in BRAM_CONFIGS)


def signed_width(lo: int, hi: int) -> int:
    """Bits of the smallest two's-complement word holding every integer in [lo, hi]."""
    f = lambda v: (v.bit_length() if v >= 0 else (-v - 1).bit_length()) + 1  # noqa: E731
    return max(f(int(lo)), f(int(hi)))


def odd_part(code: int) -> tuple[int, int]:
    """(o, t) with code = o * 2**t, o odd (0, 0 for 0)."""
    c = int(code)
    if c == 0:
        return 0, 0
    t = (abs(c) & -abs(c)).bit_length() - 1
    return c >> t, t


def yosys_mult_dsp(wa: int, wb: int) -> int:
    """DSP48E2s Yosys synth_xilinx (mul2dsp) gives a wa x wb signed product (see FORMULAS const_dense)."""
    a, b = max(int(wa), int(wb)), min(int(wa), int(wb))
    if a <= 27 and b <= 18:
        return 1
    return math.ceil((a - 1) / 26) * math.ceil((b - 1) / 17)


def const_mult_cost(w_x: int, odd: int, product_bits: int) -> tuple[int, int]:
    """(DSP48E2, LUTs) of a ``w_x``-bit signed signal times the odd constant ``odd`` (|odd| >= 3) whose product
    keeps ``product_bits`` bits (FORMULAS["const_dense"]): a product of >= 9 bits goes to DSPs; one split over
    t > 1 DSPs adds its t - 1 partial products in the fabric, (t - 1) (product_bits - 17) LUTs."""
    wb = abs(int(odd)).bit_length() + 1
    if product_bits >= 9:
        t = yosys_mult_dsp(w_x, wb)
        return t, (t - 1) * max(int(product_bits) - 17, 0)
    return 0, math.ceil(int(w_x) * (wb - 1) / 2)


def _round_shift(c: int, s: int, rounding: str) -> int:
    if s <= 0:
        return c << -s
    if rounding == "TRN":
        return c >> s
    if rounding == "RND":
        return (c + (1 << (s - 1))) >> s
    fl, rem, half = c >> s, c & ((1 << s) - 1), 1 << (s - 1)
    return fl + (1 if rem > half or (rem == half and fl & 1) else 0)


def const_dense(cw: dict) -> dict:
    """LUT, FF, DSP and multipliers of a constant-weight Dense at ReuseFactor 1 (FORMULAS["const_dense"]).

    ``cw``: ``inputs`` [[width in bits, signed]] per input (integer codes); ``codes`` [[weight code]] per output;
    ``shifts`` [[left shift aligning x_i * c_oi at the sum's binary point]] per output; ``bias`` [code] per
    output and ``bias_shift``; ``cast`` {shift (bits dropped), W, signed, rounding, overflow} of the one cast."""
    ins = [(int(w), bool(sg)) for w, sg in cw["inputs"]]
    cast = cw["cast"]
    Wo, s = int(cast["W"]), int(cast["shift"])
    lo_o = -(1 << (Wo - 1)) if cast["signed"] else 0
    hi_o = (1 << (Wo - 1)) - 1 if cast["signed"] else (1 << Wo) - 1
    used = set()
    lut, ff, dsp, mults = 0.0, 0, 0, 0
    for codes, shifts, bias in zip(cw["codes"], cw["shifts"], cw["bias"]):
        const = int(bias) << int(cw["bias_shift"])
        lo = hi = const
        terms = []  # (lsb, width, can be negative)
        for i, (c, sh) in enumerate(zip(codes, shifts)):
            c, sh = int(c), int(sh)
            if c == 0:
                continue
            used.add(i)
            w, sg = ins[i]
            xl, xh = (-(1 << (w - 1)), (1 << (w - 1)) - 1) if sg else (0, (1 << w) - 1)
            lo, hi = lo + (min(xl * c, xh * c) << sh), hi + (max(xl * c, xh * c) << sh)
            o, t = odd_part(c)
            pl, ph = min(xl * o, xh * o), max(xl * o, xh * o)
            pw = signed_width(pl, ph) - (1 if pl >= 0 else 0)
            ff += pw
            if abs(o) > 1:
                mults += 1
                m_dsp, m_lut = const_mult_cost(w + (0 if sg else 1), o, pw)
                dsp, lut = dsp + m_dsp, lut + m_lut
            terms.append((t + sh, pw, pl < 0))
        S = signed_width(lo, hi)
        if cast["rounding"] == "RND" and s > 0:
            const += 1 << (s - 1)
        k, ext = [0] * S, [True] * S  # ext: every variable bit of the column is a sign-extension copy
        for lsb, pw, neg in terms:
            for col in range(lsb, S if neg else min(S, lsb + pw)):
                k[col] += 1
                ext[col] = ext[col] and col >= lsb + pw
        cm = const & ((1 << S) - 1)
        k = [v + ((cm >> col) & 1) for col, v in enumerate(k)]
        low = s if cast["rounding"] != "RND_CONV" else 0  # TRN / RND: the cast reads only the carry out of these
        lut += sum(0.5 * (v >= 2) if ext[col] else (2 if col >= low else 1) * (v >= 2) + (v >= 3)
                   for col, v in enumerate(k))
        if _round_shift(lo, s, cast["rounding"]) < lo_o or _round_shift(hi, s, cast["rounding"]) > hi_o:
            lut += math.ceil(0.75 * Wo)
        ff += Wo
    ff += sum(ins[i][0] for i in used)
    return {"lut": math.ceil(lut), "ff": int(ff), "dsp": int(dsp), "multipliers": int(mults)}


def _clog2(n: int) -> int:
    return max(int(n) - 1, 0).bit_length()


def _ap_width(ap: str) -> int:
    return int(ap.split("<", 1)[1].split(",")[0].rstrip(">"))


def layer_estimate(name: str, info: dict, style: str) -> dict:
    """Resources and timing of one layer (see FORMULAS)."""
    cls = info["class"]
    rf = int(info.get("reuse_factor", 1))
    P = None
    mults: list[tuple[int, int, int]] = []  # (count, w_a, w_b)
    adders_bits = 0
    ff = 0
    roms = []  # (rows, word bits, copies)
    fabric_mults: list[tuple[int, int, int]] = []  # Latency Dense, constant weights: no operand registers
    direct = {"lut": 0, "ff": 0, "dsp": 0, "multipliers": 0}  # parts costed whole (const_dense, the comparator)
    if cls == "Dense":
        n_in, n_out = info["n_in"], info["n_out"]
        n_mult = math.ceil(n_in * n_out / rf)
        wa, wb = info["mult_widths"]
        acc_w = _ap_width(info["accum"])
        if info["strategy"] == "Latency" and rf > 1:  # shared multipliers: the weights are no longer constants
            mults.append((n_mult, wa, wb))
            adders_bits += n_mult * acc_w
            ff += n_in * wa + n_out * acc_w
            lat = _clog2(n_in) + 2
        elif info["strategy"] == "Latency" and "const_weights" in info:
            direct = const_dense(info["const_weights"])
            lat = _clog2(n_in) + 2
        elif info["strategy"] == "Latency":  # weight codes unknown: full-width constant multipliers
            fabric_mults.append((n_mult, wa, wb))
            adders_bits += n_mult * acc_w
            ff += n_in * wa + n_out * acc_w
            lat = _clog2(n_in) + 2
        else:
            mults.append((n_mult, wa, wb))
            adders_bits += n_mult * acc_w
            ff += n_mult * acc_w
            lat = rf + _clog2(max(1, n_in // min(n_in, rf))) + 3
            adders_bits += n_mult * wa if rf > 1 else 0  # input muxes
            bf = math.ceil(n_in * n_out / rf)
            roms.append((rf, bf * wb, 1))
        if "const_weights" not in info:  # a constant-weight sum folds the bias into its constant summand
            rows, bits = info["rom_bits"]["bias"]
            roms.append((rows, bits, 1))
        ii = rf
    else:
        if cls == EXIT_COMPARATOR.name:
            direct = {"lut": math.ceil(info["cmp_width"] / 4), "ff": info["cmp_width"] + 1, "dsp": 0, "multipliers": 0}
            lat, ii = 1, 1
        else:
            d = info["n_out"]
            P = d if style == "pipeline" else 1
            if cls == SSA_MEAN.name:
                n = info["n_tokens"]
                wa, wb = info["mult_widths"]
                mults.append((P, wa, wb))
                adders_bits += P * (n - 1) * (wa + 1)
                lat = (_clog2(n) + 3) + (0 if style == "pipeline" else d * rf)
                ii = 1 if style == "pipeline" else d * rf
            elif cls == LAYER_NORM.name:
                steps = info["newton_steps"]
                wd = info["mult_widths"][0]
                (wa1, wb1), (wa2, wb2) = info["scale_mult_widths"]
                mults += [(P, wd, wd), (1, wa1, wb1), (1, wa2, wb2), (3 * steps, info["work_w"], info["mant_w"]),
                          (P, *info["norm_mult_widths"]), (P, *info["affine_mult_widths"])]
                adders_bits += P * (2 * wd + _clog2(d)) + P * (wd + 1) + P * 2 * wd
                rsqrt = RSQRT_FIXED + 3 * MULT_PIPE * steps
                core = 4 * MULT_PIPE + rsqrt
                lat = core + (2 * _clog2(d) if style == "pipeline" else 3 * d * rf)
                ii = 1 if style == "pipeline" else 3 * d * rf
            elif cls == GELU.name:
                wx, wphi = info["mult_widths"]
                mults += [(P, wphi + 1, wphi), (P, wx, wphi)]
                adders_bits += P * (wx + 2 + wphi + 2)
                lat = 2 + 2 * MULT_PIPE + (0 if style == "pipeline" else d * rf)
                ii = 1 if style == "pipeline" else d * rf
            else:
                raise ValueError(f"unknown layer class {cls}")
        for key, (rows, bits) in ({} if cls == EXIT_COMPARATOR.name else info.get("rom_bits", {})).items():
            copies = 1  # (the comparator's threshold is a constant of its compare)
            if P and P > 1 and key in ("phi_table",):
                copies = math.ceil(P / 2)  # two reads per element, dual-ported ROM copies
            roms.append((rows, bits, copies))
    dsp = direct["dsp"] + sum(c * dsp_per_mult(a, b) for c, a, b in mults + fabric_mults)
    lut = direct["lut"] + adders_bits + sum(c * lut_mult(a, b) for c, a, b in mults + fabric_mults)
    ff += direct["ff"] + sum(c * 2 * (a + b) for c, a, b in mults)
    ff += sum(c * (a + b) for c, a, b in fabric_mults if dsp_per_mult(a, b) == 0)  # LUT products: one register
    bram = 0
    for rows, bits, copies in roms:
        b = bram18(rows, bits)
        bram += b * copies
        if b == 0:
            lut += math.ceil(rows * bits / 64) * copies
    return {"class": cls, "custom": bool(info.get("custom")), "reuse_factor": rf,
            "strategy": info.get("strategy"),
            "multipliers": direct["multipliers"] + sum(c for c, _, _ in mults + fabric_mults),
            "dsp": int(dsp),
            "bram_18k": int(bram), "lut": int(lut), "ff": int(ff), "latency_cycles": int(lat),
            "interval_cycles": int(ii)}


def block_estimate(layer_info: dict, style: str, clock_period_ns: float) -> dict:
    """Per-layer and block totals (see FORMULAS)."""
    layers = {n: layer_estimate(n, i, style) for n, i in layer_info.items()}
    lat = sum(v["latency_cycles"] for v in layers.values()) + 2
    if style == "pipeline":
        ii = max(v["reuse_factor"] for v in layers.values())
    else:
        ii = max(v["interval_cycles"] for v in layers.values())
    tot = {k: sum(v[k] for v in layers.values()) for k in ("dsp", "bram_18k", "lut", "ff", "multipliers")}
    return {**tot, "latency_cycles": int(lat), "interval_cycles": int(ii), "pipeline_style": style,
            "latency_ns": lat * float(clock_period_ns), "clock_mhz": 1000.0 / float(clock_period_ns),
            "throughput_per_s": 1e9 / (ii * float(clock_period_ns)), "layers": layers}


#: the resources compared with synthesis counts (:func:`compare_counts`)
COMPARED = ("lut", "ff", "dsp", "bram_18k")


def compare_counts(counts: dict, est: dict) -> dict:
    """Per resource of :data:`COMPARED`: the synthesis count, the formula estimate, ``ratio`` = estimate / count
    (None when the count is 0) and ``off_by_more_than_25pct`` (|estimate - count| > 0.25 count; for a zero
    count: estimate != 0).  ``counts`` holds cells per resource (``bram_18k``: RAMB18 + 2 x RAMB36)."""
    out = {}
    for k in COMPARED:
        y, f = int(counts[k]), int(est[k])
        out[k] = {"yosys": y, "estimate": f, "ratio": (f / y) if y else None,
                  "off_by_more_than_25pct": (abs(f - y) > 0.25 * y) if y else (f != 0)}
    return out


def _cast(lo: int, hi: int, shift: int, fmt) -> tuple[int, int, int, bool]:
    """(lo, hi, LUTs, saturates) of the RTL cast of [lo, hi] dropping ``shift`` bits to ``fmt`` (streaming_ssa_sav)."""
    rounding = fmt.rounding
    lo2, hi2 = _round_shift(lo, shift, rounding), _round_shift(hi, shift, rounding)
    lut = math.ceil(shift / 4) if shift > 0 and rounding != "TRN" else 0
    sat = lo2 < fmt.min_code or hi2 > fmt.max_code
    if sat:
        lut += math.ceil(0.75 * fmt.W)
        lo2, hi2 = max(min(lo2, fmt.max_code), fmt.min_code), min(max(hi2, fmt.min_code), fmt.max_code)
    return lo2, hi2, lut, sat


def _sum_luts(n: int, width: int) -> int:
    """LUTs of an exact sum of ``n`` signed summands, ``width`` bits wide (FORMULAS["streaming_ssa_sav"])."""
    return 0 if n < 2 else width if n == 2 else math.ceil(1.5 * (n - 2) * width) + width


def _mult(width: int, code: int) -> tuple[int, int]:
    """(DSP48E2, LUTs) of a ``width``-bit signed signal times the constant ``code`` (const_mult_cost; 0 for a
    power of two)."""
    o, _ = odd_part(code)
    return (0, 0) if abs(o) <= 1 else const_mult_cost(width, o, width + abs(o).bit_length())


def streaming_ssa_sav(d: int, n_tokens: int, scale_exp: int, ssa_recip: int, sav_recip: int, fmts: dict) -> dict:
    """LUT, FF, DSP, BRAM and timing of the RTL streaming SSA-mean / SAV block (FORMULAS["streaming_ssa_sav"]).

    ``d`` token width (elements), ``n_tokens`` N patch tokens (+ CLS first), ``scale_exp`` e (token scale 2**e),
    ``ssa_recip`` / ``sav_recip`` the codes R, R2 of 1/N and 1/N**2, ``fmts`` the formats ssa.acc, ssa.recip,
    ssa.out, sav.acc, sav.recip, sav.out (objects with W, F, signed, rounding, overflow, min_code, max_code).
    Latency and interval in clock cycles."""
    d, n, e = int(d), int(n_tokens), int(scale_exp)
    fa, fr, fx = fmts["ssa.acc"], fmts["ssa.recip"], fmts["ssa.out"]
    fsa, fr2, fsv = fmts["sav.acc"], fmts["sav.recip"], fmts["sav.out"]
    cw = max(n, 1).bit_length()
    w_sq = signed_width(0, 128 * 128)  # one square of an int8 code
    w_sq_sum = signed_width(0, 128 * 128 * d)
    s1_lo, s1_hi = -128 * n, 127 * n
    w1, w2 = signed_width(s1_lo, s1_hi), signed_width(0, 128 * 128 * d * n)
    lut = 2 * cw + _sum_luts(d, w_sq_sum) + 2 * d * w1 + 2 * w2
    ff = cw + 9 + 16 * d + w_sq_sum + d * w1 + w2
    dsp = d  # q^2: 16-bit products, always DSP
    # SSA element: cast to ssa.acc, times R, cast to ssa.out (d copies)
    a_lo, a_hi, l1, _ = _cast(s1_lo, s1_hi, -fa.F, fa)
    m_dsp, m_lut = _mult(signed_width(a_lo, a_hi), ssa_recip)
    x_lo, x_hi, l2, sat = _cast(min(a_lo * ssa_recip, a_hi * ssa_recip), max(a_lo * ssa_recip, a_hi * ssa_recip),
                                fr.F - e - fx.F, fx)
    w_x = signed_width(x_lo, x_hi) - (1 if sat and x_lo >= 0 else 0)
    lut += d * (l1 + l2 + m_lut)
    dsp += d * m_dsp
    ff += 2 * d * w_x
    # SAV: N S2 and ||S1||^2 cast to sav.acc, T = difference, times R2, cast to sav.out
    ns_lo, ns_hi, l3, _ = _cast(0, 128 * 128 * d * n * n, -fsa.F, fsa)
    n_dsp, n_lut = _mult(w2, n)
    sq1 = max(s1_lo * s1_lo, s1_hi * s1_hi)
    w_s1s = signed_width(0, sq1)
    ss_lo, ss_hi, l4, _ = _cast(0, sq1 * d, -fsa.F, fsa)
    lut += l3 + l4 + n_lut + _sum_luts(d, signed_width(0, sq1 * d))
    dsp += n_dsp + (d * yosys_mult_dsp(w1, w1) if w_s1s >= 9 else 0)  # S1^2
    lut += 0 if w_s1s >= 9 else d * math.ceil(w1 * w1 / 2)
    t_lo, t_hi = ns_lo - ss_hi, ns_hi - ss_lo
    w_t = signed_width(t_lo, t_hi)
    r_dsp, r_lut = _mult(w_t, sav_recip)
    p_lo, p_hi = min(t_lo * sav_recip, t_hi * sav_recip), max(t_lo * sav_recip, t_hi * sav_recip)
    s_lo, s_hi, l5, sat2 = _cast(p_lo, p_hi, fr2.F - 2 * e - fsv.F, fsv)
    lut += w_t + r_lut + l5
    dsp += r_dsp
    ff += signed_width(ns_lo, ns_hi) + signed_width(ss_lo, ss_hi)
    ff += signed_width(s_lo, s_hi) - (1 if sat2 and s_lo >= 0 else 0)
    mults = 2 * d + d * (m_dsp + m_lut > 0) + (n_dsp + n_lut > 0) + (r_dsp + r_lut > 0)
    return {"dsp": int(dsp), "bram_18k": 0, "lut": int(lut), "ff": int(ff), "latency_cycles": 4,
            "interval_cycles": n + 1, "multipliers": int(mults)}
