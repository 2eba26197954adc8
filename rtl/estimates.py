"""The :mod:`hls.estimate` formulas of what each RTL block implements, for comparison with Yosys.

* gate: the HLS gate block's layers (Dense 3 -> 1 at ReuseFactor 1 with constant weights, and the
  comparator), described by :func:`hls.blocks.gate_layer_info` as the RTL computes the sum (each
  feature in its own format times its weight code; ``native_inputs``), costed by
  :func:`hls.estimate.const_dense` (modelled on Yosys synth_xilinx).
* ssa_sav: :func:`hls.estimate.streaming_ssa_sav`, the streaming accumulator the RTL builds (one token
  per clock, S1 / S2 accumulators, SSA mean and SAV once per sample).  The HLS head block's ``ssa``
  layer is another architecture (all N+1 tokens at once, no SAV); its formula is reported beside it
  (``hls_ssa_layer``) but not compared.
"""
from __future__ import annotations

from hls.blocks import gate_layer_info
from hls.estimate import block_estimate, compare_counts, layer_estimate, streaming_ssa_sav

KEYS = ("dsp", "bram_18k", "lut", "ff", "latency_cycles", "interval_cycles")


def ssa_layer_info(spec) -> dict:
    """hls.estimate layer description of the HLS ``ssa`` layer (mirrors :func:`hls.blocks.head_block`)."""
    fm = spec.formats
    return {"class": "LraeeSSAMean", "custom": True, "n_in": (spec.n_tokens + 1) * spec.d, "n_out": spec.d,
            "n_tokens": spec.n_tokens, "reuse_factor": 1, "mult_widths": [fm["ssa.acc"].W, fm["ssa.recip"].W],
            "out_fmt": fm["ssa.out"].ap_type(), "rom_bits": {}}


def estimate(kind: str, spec, style: str, clock_period_ns: float, layer_params: dict | None = None,
             consts: dict | None = None, scale_exp: int | None = None) -> dict:
    """Formula estimate of block ``kind`` (see module doc): dsp, bram_18k, lut, ff (cells), latency and
    interval (clock cycles).

    gate: ``layer_params`` the exit unit's quantised layer (``gate.w`` codes, ``gate.b`` code); ssa_sav:
    ``consts`` the unit's constant codes (``ssa.recip``, ``sav.recip``) and ``scale_exp`` the layer's token
    scale exponent."""
    if kind == "gate":
        info = gate_layer_info(spec, layer_params["gate.w"], layer_params["gate.b"], native_inputs=True)
        e = block_estimate(info, style, clock_period_ns)
        return {k: e[k] for k in KEYS} | {"covers": "the RTL gate's sum: hls.estimate const_dense (Dense 3->1, "
                                                    "constant weights) + comparator", "pipeline_style": style}
    fm = spec.formats
    e = streaming_ssa_sav(spec.d, spec.n_tokens, scale_exp, consts["ssa.recip"], consts["sav.recip"], fm)
    h = layer_estimate("ssa", ssa_layer_info(spec), style)
    return {k: e[k] for k in KEYS} | {
        "covers": "the RTL streaming SSA mean + SAV: hls.estimate streaming_ssa_sav",
        "hls_ssa_layer": {k: h[k] for k in KEYS} | {
            "covers": "the HLS head's ssa layer (patch-token mean only, all tokens in parallel): another "
                      "architecture, not compared"}}


def compare(counts: dict, est: dict) -> dict:
    """Per resource: yosys count, formula estimate, ratio estimate / yosys (None when yosys gives 0)
    (:func:`hls.estimate.compare_counts` on the Yosys resource classes of :func:`rtl.synth.classify`)."""
    return compare_counts(yosys_counts(counts), est)


def yosys_counts(counts: dict) -> dict:
    """lut, ff, carry, dsp, bram_18k (RAMB18 + 2 x RAMB36) cells from :func:`rtl.synth.classify` classes."""
    return {k: int(counts["bram_18k_equiv" if k == "bram_18k" else k])
            for k in ("lut", "ff", "carry", "dsp", "bram_18k")}
