"""Resource and latency estimates of the exit blocks without vendor tools (formulas in :data:`FORMULAS`).

The target is an AMD UltraScale+ fabric (DSP48E2 27 x 18 signed multipliers, 18 Kb block RAMs,
6-input LUTs).  These are first-order estimates for design-space exploration, not synthesis
results: run the generated projects through Vitis HLS / Vivado HLS for real numbers.
"""
from __future__ import annotations

import math

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
    "latency_strategy_dense": "ReuseFactor 1, constant weights (fixed from Yosys synth_xilinx counts of the RTL gate, "
                              "rtl/; with RF > 1 the multipliers are shared as under Resource, no weight registers): each "
                              "multiplier is w_in x (significant bits of its weight code: trailing zeros and "
                              "redundant sign bits dropped), zero weights cost nothing; registers are the inputs "
                              "(n_in * w_in) and the outputs (n_out * accum width) only (no weight registers; the "
                              "operand/product registers of DSP-mapped products sit inside the DSP48E2); adders one "
                              "LUT per bit over (nonzero terms + bias - 1) adders of width w_in + max weight bits + "
                              "ceil(log2(n_in + 1)), per output. Per-multiplier widths come from the layer's "
                              "'mult_widths_each' [[w_in, w_weight] per weight, row-major]",
    "lut": "adders: one LUT per bit (accumulators n_mult * accum width, the SSA/LN sums, the GELU index "
           "and interpolation); LUT multipliers w_a*w_b; 30 per wide DSP product (partial-product adds); "
           "Resource-strategy input muxes n_mult * w_in; ROMs kept in LUTs: bits / 64",
    "ff": "pipeline registers: every multiplier's operands and product (w_a + w_b + w_a + w_b) and every "
          "accumulator (its width); Latency-strategy Dense: see latency_strategy_dense",
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


def const_bits(code: int) -> int:
    """Significant bits of a constant multiplicand's signed code (trailing zeros dropped; 0 for 0)."""
    c = abs(int(code))
    if c == 0:
        return 0
    while c % 2 == 0:
        c //= 2
    return c.bit_length() + 1


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
    fabric_mults: list[tuple[int, int, int]] = []  # Latency Dense: registers inside DSPs, see FORMULAS
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
        elif info["strategy"] == "Latency":
            each = info.get("mult_widths_each") or [[wa, wb]] * (n_in * n_out)
            for o in range(n_out):
                row = [tuple(map(int, w)) for w in each[o * n_in:(o + 1) * n_in]]
                live = [(a, b) for a, b in row if b > 0]
                fabric_mults += [(1, a, b) for a, b in live]
                if live:
                    width = max(a for a, _ in live) + max(b for _, b in live) + _clog2(n_in + 1)
                    adders_bits += len(live) * width  # (live terms + bias - 1) adders
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
        rows, bits = info["rom_bits"]["bias"]
        roms.append((rows, bits, 1))
        ii = rf
    else:
        if cls == "LraeeExitComparator":
            adders_bits += info["cmp_width"]
            lat, ii = 1, 1
        else:
            d = info["n_out"]
            P = d if style == "pipeline" else 1
            if cls == "LraeeSSAMean":
                n = info["n_tokens"]
                wa, wb = info["mult_widths"]
                mults.append((P, wa, wb))
                adders_bits += P * (n - 1) * (wa + 1)
                lat = (_clog2(n) + 3) + (0 if style == "pipeline" else d * rf)
                ii = 1 if style == "pipeline" else d * rf
            elif cls == "LraeeLayerNorm":
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
            elif cls == "LraeeGELU":
                wx, wphi = info["mult_widths"]
                mults += [(P, wphi + 1, wphi), (P, wx, wphi)]
                adders_bits += P * (wx + 2 + wphi + 2)
                lat = 2 + 2 * MULT_PIPE + (0 if style == "pipeline" else d * rf)
                ii = 1 if style == "pipeline" else d * rf
            else:
                raise ValueError(f"unknown layer class {cls}")
        for key, (rows, bits) in info.get("rom_bits", {}).items():
            copies = 1
            if P and P > 1 and key in ("phi_table",):
                copies = math.ceil(P / 2)  # two reads per element, dual-ported ROM copies
            roms.append((rows, bits, copies))
    dsp = sum(c * dsp_per_mult(a, b) for c, a, b in mults + fabric_mults)
    lut = adders_bits + sum(c * lut_mult(a, b) for c, a, b in mults + fabric_mults)
    ff += sum(c * 2 * (a + b) for c, a, b in mults)
    ff += sum(c * (a + b) for c, a, b in fabric_mults if dsp_per_mult(a, b) == 0)  # LUT products: one register
    bram = 0
    for rows, bits, copies in roms:
        b = bram18(rows, bits)
        bram += b * copies
        if b == 0:
            lut += math.ceil(rows * bits / 64) * copies
    return {"class": cls, "custom": bool(info.get("custom")), "reuse_factor": rf,
            "strategy": info.get("strategy"), "multipliers": sum(c for c, _, _ in mults + fabric_mults),
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
