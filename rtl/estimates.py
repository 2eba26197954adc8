"""The HLS formula estimates (:mod:`hls.estimate`) of what each RTL block implements, for comparison.

* gate: the HLS gate block's layers (Dense 3 -> 1, Latency strategy, and the comparator), the
  same layer description :func:`hls.blocks.gate_block` builds (here without torch / hls4ml).
* ssa_sav: the HLS head block's ``ssa`` layer (LraeeSSAMean: the patch-token mean only; the HLS
  flow has no SAV unit, so SAV has no formula).  The HLS layer reads all N+1 tokens at once
  (io_parallel); the RTL streams one token per clock, so the comparison is of two architectures.
"""
from __future__ import annotations

from hls.blocks import _dense_accum, dense_defaults, fixed_type, union_fmt
from hls.estimate import block_estimate, const_bits, layer_estimate

COMPARED = ("lut", "ff", "dsp", "bram_18k")


def gate_layer_info(spec, weight_codes: list[int] | None = None) -> dict:
    """hls.estimate layer description of the gate block (mirrors :func:`hls.blocks.gate_block`).

    ``weight_codes`` (the three gate weights' codes): the multipliers the RTL builds, each feature in its
    own format (unsigned ones widened by the sign bit) times the weight's significant bits."""
    fm = spec.formats
    s_in, i_in, f_in = union_fmt([fm["conf.out"], fm["margin.out"], fm["sav.out"]])
    ws, wi, wf = union_fmt([fm["gate.w_conf"], fm["gate.w_margin"], fm["gate.w_sav"]])
    fg = fm["gate.out"]
    sg, rg = dense_defaults(3, 1, None)
    each = None
    if weight_codes is not None:
        each = [[fm[f].W + (0 if fm[f].signed else 1), const_bits(int(c))]
                for f, c in zip(("conf.out", "margin.out", "sav.out"), weight_codes)]
    return {
        "gate": {"class": "Dense", "custom": False, "n_in": 3, "n_out": 1, "strategy": sg, "reuse_factor": rg,
                 "mult_widths": [i_in + f_in, wi + wf], "out_fmt": fg.ap_type(),
                 "accum": _dense_accum((s_in, i_in, f_in), (ws, wi, wf), fm["gate.b"], 3),
                 "rom_bits": {"weight": (3, wi + wf), "bias": (1, fm["gate.b"].W)},
                 **({"mult_widths_each": each} if each else {})},
        "comparator": {"class": "LraeeExitComparator", "custom": True, "n_in": 1, "n_out": 2, "reuse_factor": 1,
                       "cmp_width": fg.W, "out_fmt": fixed_type(True, max(fg.I, 2), fg.F),
                       "rom_bits": {"threshold": (1, fg.W)}},
    }


def ssa_layer_info(spec) -> dict:
    """hls.estimate layer description of the HLS ``ssa`` layer (mirrors :func:`hls.blocks.head_block`)."""
    fm = spec.formats
    return {"class": "LraeeSSAMean", "custom": True, "n_in": (spec.n_tokens + 1) * spec.d, "n_out": spec.d,
            "n_tokens": spec.n_tokens, "reuse_factor": 1, "mult_widths": [fm["ssa.acc"].W, fm["ssa.recip"].W],
            "out_fmt": fm["ssa.out"].ap_type(), "rom_bits": {}}


def estimate(kind: str, spec, style: str, clock_period_ns: float, weight_codes: list[int] | None = None) -> dict:
    """Formula estimate of block ``kind`` (see module doc): dsp, bram_18k, lut, ff, latency, interval.

    gate: with ``weight_codes``, of the multipliers the RTL builds (see :func:`gate_layer_info`)."""
    if kind == "gate":
        e = block_estimate(gate_layer_info(spec, weight_codes), style, clock_period_ns)
        return {k: e[k] for k in ("dsp", "bram_18k", "lut", "ff", "latency_cycles", "interval_cycles")} | {
            "covers": "HLS gate block (Dense 3->1 + comparator)", "pipeline_style": style}
    e = layer_estimate("ssa", ssa_layer_info(spec), style)
    return {k: e[k] for k in ("dsp", "bram_18k", "lut", "ff", "latency_cycles", "interval_cycles")} | {
        "covers": "HLS ssa layer (patch-token mean only, all tokens in parallel); no SAV formula exists",
        "pipeline_style": style}


def compare(counts: dict, est: dict) -> dict:
    """Per resource: yosys count, formula estimate, ratio estimate / yosys (None when yosys gives 0)."""
    out = {}
    for k in COMPARED:
        y = int(counts["bram_18k_equiv"] if k == "bram_18k" else counts[k])
        f = int(est[k])
        out[k] = {"yosys": y, "estimate": f, "ratio": (f / y) if y else None,
                  "off_by_more_than_25pct": (abs(f - y) > 0.25 * y) if y else (f != 0)}
    return out
