"""hls4ml projects of the exit blocks, built from a fixed-point spec and a quantised exit unit.

Two blocks per candidate layer L (names ``head_L{L}``, ``gate_L{L}``):

* **head** ``[(N+1)*d] int8 codes -> [e]`` (the head output h, format ``fc2.out``)::

      x (ap_int<8>) -> ssa  LraeeSSAMean     (custom)  ssa.out
                    -> ln   LraeeLayerNorm   (custom)  ln.out
                    -> fc1  Dense d -> d     (stock)   fc1.out
                    -> gelu LraeeGELU        (custom)  gelu.out
                    -> fc2  Dense d -> e     (stock)   fc2.out

* **gate** ``[conf, margin, SAV] -> [g, exit]``::

      x (ap_ufixed holding conf.out, margin.out, sav.out exactly)
                    -> gate       Dense 3 -> 1          (stock)   gate.out
                    -> comparator LraeeExitComparator   (custom)  [g, g >= T]

Every cast point's format is the spec's (``Fmt.ap_type()``), set per layer through the hls4ml
configuration; weights are the codes of :meth:`ExitUnit.quantized_parameters`, written by hls4ml
as exact decimals.  The Dense accumulators are sized so the sum is exact before the one cast
(the numpy contract of :func:`exitlogic.fixedpoint.stages.dense` and ``gate``).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.errors import InputError
from common.names import identifier
from exitlogic.fixedpoint.fixed import Fmt
from exitlogic.fixedpoint.stages import clog2, log2_exact

from quant.geometry import ExitHeadGeometry

from .extension import EXIT_COMPARATOR, GELU, LAYER_NORM, SSA_MEAN, cpp_type

BLOCKS = ("head", "gate")
BACKENDS = ("Vitis", "Vivado")
IO_TYPES = ("io_parallel", "io_stream")
STRATEGIES = ("Latency", "Resource")
DEFAULT_PART = "xcvu13p-flga2577-2-e"
DEFAULT_CLOCK_NS = 5.0
#: default multipliers per Dense layer (ReuseFactor = n_in * n_out / this, rounded to a valid value)
DEFAULT_MULTS = 128
#: above this many weights a Dense layer defaults to the Resource strategy (hls4ml's unroll limit)
LATENCY_MAX_WEIGHTS = 4096
HEAD_LAYERS = ("ssa", "ln", "fc1", "gelu", "fc2")
GATE_LAYERS = ("gate", "comparator")
_CPP_KEYWORDS = {"alignas", "alignof", "and", "asm", "auto", "bool", "break", "case", "catch", "char", "class",
                 "const", "continue", "default", "delete", "do", "double", "else", "enum", "explicit", "export",
                 "extern", "false", "float", "for", "friend", "goto", "if", "inline", "int", "long", "main",
                 "mutable", "namespace", "new", "not", "operator", "or", "private", "protected", "public",
                 "register", "return", "short", "signed", "sizeof", "static", "struct", "switch", "template",
                 "this", "throw", "true", "try", "typedef", "typename", "union", "unsigned", "using", "virtual",
                 "void", "volatile", "while", "xor", "nnet", "std", "hls"}


def sanitize_identifier(name: str, what: str = "name", max_len: int = 48) -> str:
    """A C++ identifier (and file-name stem) from user input (:func:`common.names.identifier`, never a
    C++ keyword or an hls4ml namespace)."""
    return identifier(name, what, max_len, _CPP_KEYWORDS)


def fixed_type(signed: bool, I: int, F: int) -> str:  # noqa: E741
    """An exact (TRN, WRAP: never used to drop bits) ap type with I integer and F fractional bits."""
    W = int(I) + int(F)
    if W < 1:
        W, I = 1, 1 - int(F)
    return cpp_type(f"ap_{'' if signed else 'u'}fixed<{W},{int(I)}>")


def union_fmt(fmts: list[Fmt]) -> tuple[bool, int, int]:
    """(signed, I, F) of the smallest type holding every value of every format exactly."""
    signed = any(f.signed for f in fmts)
    F = max(f.F for f in fmts)
    I = max(f.I + (1 if signed and not f.signed else 0) for f in fmts)  # noqa: E741
    return signed, I, F


@dataclass
class LayerKnobs:
    """Per-layer hls4ml knobs (``None``: the default for the layer's size)."""

    reuse_factor: int | None = None
    strategy: str | None = None


@dataclass
class BlockOptions:
    backend: str = "Vitis"
    part: str = DEFAULT_PART
    clock_period_ns: float = DEFAULT_CLOCK_NS
    io_type: str = "io_parallel"
    project: str = "lraee"
    knobs: dict[str, LayerKnobs] = field(default_factory=dict)  # layer name (ssa, ln, fc1, ...) -> knobs

    def validate(self) -> "BlockOptions":
        if self.backend not in BACKENDS:
            raise InputError(f"--backend {self.backend!r}; allowed: {', '.join(BACKENDS)}")
        if self.io_type not in IO_TYPES:
            raise InputError(f"--io-type {self.io_type!r}; allowed: {', '.join(IO_TYPES)}")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]{2,63}", self.part or ""):
            raise InputError(f"--part {self.part!r}; allowed: an FPGA part name (letters, digits, '-', '_', '.')")
        if not (isinstance(self.clock_period_ns, (int, float)) and 0.5 <= float(self.clock_period_ns) <= 100.0):
            raise InputError(f"clock period {self.clock_period_ns} ns; allowed: 0.5 to 100 ns (10 to 2000 MHz)")
        for name, k in self.knobs.items():
            if name not in HEAD_LAYERS + GATE_LAYERS:
                raise InputError(f"layer knob for {name!r}; allowed layers: {', '.join(HEAD_LAYERS + GATE_LAYERS)}")
            if k.strategy is not None and k.strategy not in STRATEGIES:
                raise InputError(f"--strategy {name}={k.strategy!r}; allowed: {', '.join(STRATEGIES)}")
            if k.reuse_factor is not None and not (isinstance(k.reuse_factor, int) and k.reuse_factor >= 1):
                raise InputError(f"--reuse {name}={k.reuse_factor!r}; allowed: a positive integer")
        self.project = sanitize_identifier(self.project, "--project")
        return self


def valid_reuse_factors(n_in: int, n_out: int) -> list[int]:
    """hls4ml's valid ReuseFactors of a Dense layer under the Resource strategy."""
    out = []
    for rf in range(1, n_in * n_out + 1):
        mult = min(n_in, rf)
        lim = math.ceil(n_in * n_out / mult)
        ok = (lim % n_out == 0) or rf >= n_in
        ok = ok and ((rf % n_in == 0) or rf < n_in)
        ok = ok and (n_in * n_out) % rf == 0
        if ok:
            out.append(rf)
    return out


def dense_defaults(n_in: int, n_out: int, knobs: LayerKnobs | None) -> tuple[str, int]:
    """(strategy, reuse factor) of a Dense layer: Latency with RF 1 when small, else Resource with
    the valid RF closest to ``n_in * n_out / DEFAULT_MULTS`` (about 128 multipliers per layer)."""
    k = knobs or LayerKnobs()
    big = n_in * n_out > LATENCY_MAX_WEIGHTS
    strategy = k.strategy or ("Resource" if big else "Latency")
    if k.reuse_factor is not None:
        rf = k.reuse_factor
    elif strategy == "Latency":
        rf = 1
    else:
        target = max(1, n_in * n_out // DEFAULT_MULTS)
        rf = min(valid_reuse_factors(n_in, n_out), key=lambda r: (abs(r - target), r))
    if strategy == "Resource" and rf not in valid_reuse_factors(n_in, n_out):
        good = valid_reuse_factors(n_in, n_out)
        near = sorted(good, key=lambda r: abs(r - rf))[:4]
        raise InputError(f"ReuseFactor {rf} is not valid for a {n_in} -> {n_out} Dense layer under the Resource "
                         f"strategy; nearest valid: {', '.join(map(str, sorted(near)))}")
    if strategy == "Latency" and n_in * n_out // rf > LATENCY_MAX_WEIGHTS:
        raise InputError(f"a {n_in} -> {n_out} Dense layer with the Latency strategy and ReuseFactor {rf} unrolls "
                         f"{n_in * n_out // rf} multiplications (> {LATENCY_MAX_WEIGHTS}); use --strategy "
                         f"Resource or a larger --reuse")
    return strategy, int(rf)


def _values(codes, fmt: Fmt) -> np.ndarray:
    return np.ldexp(np.asarray(codes, np.float64), -fmt.F)


def _dense_accum(fin: Fmt | tuple, fw: Fmt | tuple, fb: Fmt, n_in: int) -> str:
    si, ii, fi = (fin.signed, fin.I, fin.F) if isinstance(fin, Fmt) else fin
    sw, iw, fw_ = (fw.signed, fw.I, fw.F) if isinstance(fw, Fmt) else fw
    F = max(fi + fw_, fb.F)
    I = max(ii + iw + clog2(n_in) + 1, fb.I) + 1  # noqa: E741
    return fixed_type(True, I, F)


@dataclass
class BlockDef:
    """What hls4ml needs for one block: the torch model, the hls config, layer formats for reports."""

    kind: str
    layer: int
    name: str
    model: object
    input_shape: tuple
    hls_config: dict
    input_precision: str
    layer_info: dict  # layer name -> {class, n_in, n_out, strategy, reuse_factor, widths ...}
    output_fmt: Fmt


def _norm_unit(fm: dict, unit_name: str, v: Fmt, spec) -> dict:
    u = spec.units[unit_name]
    mant, lut, work = fm[f"{unit_name}.mant"], fm[f"{unit_name}.lut"], fm[f"{unit_name}.work"]
    _, yi, yf = union_fmt([lut, work])
    return {
        "consts": {"rsqrt": u.kind == "rsqrt", "v_w": v.W, "v_f": v.F, "lut_bits": int(u.lut_bits),
                   "newton_steps": int(u.newton_steps), "mant_w": mant.W, "mant_f": mant.F,
                   "shift_w": max(v.W, mant.W) + 2},
        "types": {"mant_t": cpp_type(mant.ap_type()), "lut_t": cpp_type(lut.ap_type()),
                  "work_t": cpp_type(work.ap_type()),
                  "y_t": fixed_type(True, yi, yf)},  # holds the seed (lut) and Newton (work) values exactly
        "y": (True, yi, yf),
    }


def head_geometry(unit, layer: int) -> ExitHeadGeometry:
    """The shape of ``layer``'s head: the spec's :attr:`~exitlogic.fixedpoint.spec.FixedPointSpec.head`, checked
    against the fc1 and fc2 weight codes the exit unit holds."""
    P = unit.quantized_parameters(layer)
    w1, w2 = np.asarray(P["fc1.weight"][0]), np.asarray(P["fc2.weight"][0])
    hg = unit.spec.head
    shapes = hg.param_shapes()
    if w1.shape != shapes["fc1.weight"] or w2.shape != shapes["fc2.weight"]:
        raise InputError(f"layer {layer}: head weights fc1 {list(w1.shape)}, fc2 {list(w2.shape)}; allowed: "
                         f"{list(shapes['fc1.weight'])} and {list(shapes['fc2.weight'])} (spec d = {hg.width}, "
                         f"e = {hg.embed_dim})")
    return hg


def head_block(unit, layer: int, scale_exp: int, opts: BlockOptions) -> BlockDef:
    """The SSA head block of ``layer`` (token scale ``2**scale_exp``); sizes from :func:`head_geometry`."""
    import torch

    sp, fm = unit.spec, unit.spec.formats
    P = unit.quantized_parameters(layer)
    hg = head_geometry(unit, layer)
    n, d, hid, e = sp.n_tokens, hg.width, hg.hidden, hg.embed_dim
    knobs = opts.knobs

    # --- ssa --------------------------------------------------------------------------------------
    sum_bits = (n * 128).bit_length() + 1
    ssa = SSA_MEAN.attributes(
        n_tokens=n, d=d, reuse_factor=(knobs.get("ssa") or LayerKnobs()).reuse_factor or 1,
        scale=math.ldexp(1.0, scale_exp),
        consts={"recip": _values([P["const.ssa.recip"][0]], fm["ssa.recip"])},
        cpp_consts={"n_tokens": n, "d": d},
        cpp_types={"sum_t": fixed_type(True, sum_bits, 0), "acc_t": fm["ssa.acc"].ap_type(),
                   "recip_t": fm["ssa.recip"].ap_type(), "pow2_t": f"ap_ufixed<1,{scale_exp + 1}>"})
    # --- ln ---------------------------------------------------------------------------------------
    fx, fdiff, fvar = fm["ssa.out"], fm["ln.diff"], fm["ln.var"]
    un = _norm_unit(fm, "ln.rsqrt", fvar, sp)
    _, yi, yf = un["y"]
    e_min, e_max = -fvar.F, fvar.I - 1
    k_min, k_max = e_min // 2, e_max // 2
    pi, pf = fdiff.I + yi, fdiff.F + yf
    ln = LAYER_NORM.attributes(
        n_in=d, reuse_factor=(knobs.get("ln") or LayerKnobs()).reuse_factor or 1,
        unit={"consts": un["consts"], "types": un["types"]},
        consts={"recip": _values([P["const.ln.recip"][0]], fm["ln.recip"]),
                "eps": _values([P["const.ln.eps"][0]], fvar),
                "table": _values(P["lut.ln.rsqrt"][0], fm["ln.rsqrt.lut"]),
                "gamma": _values(P["ln.weight"][0], fm["ln.weight"]),
                "beta": _values(P["ln.bias"][0], fm["ln.bias"])},
        cpp_consts={"n_in": d},
        cpp_types={"sum_t": fixed_type(True, fx.I + clog2(d) + 1, fx.F), "recip_t": fm["ln.recip"].ap_type(),
                   "mean_t": fm["ln.mean"].ap_type(), "diff_t": fdiff.ap_type(),
                   "sumsq_acc_t": fixed_type(True, 2 * fdiff.I + clog2(d) + 1, 2 * fdiff.F),
                   "sumsq_t": fm["ln.sumsq"].ap_type(), "var_t": fvar.ap_type(), "norm_t": fm["ln.norm"].ap_type(),
                   "shift_t": fixed_type(True, pi + max(0, -k_min) + 1, pf + max(0, k_max)),
                   "gamma_t": fm["ln.weight"].ap_type(), "beta_t": fm["ln.bias"].ap_type()})
    # --- gelu -------------------------------------------------------------------------------------
    f1 = fm["fc1.out"]
    lut = sp.luts["gelu"]
    r_exp = log2_exact(lut.range, "gelu LUT range")
    sigma = log2_exact(2.0 * lut.range / lut.entries, "gelu LUT step")
    r_shift, sh = f1.F + r_exp, f1.F + sigma
    if r_shift < 0:
        raise InputError(f"fixed-point stage 'gelu': fc1.out {f1} cannot represent the LUT range {lut.range}")
    gelu = GELU.attributes(
        n_in=hid, reuse_factor=(knobs.get("gelu") or LayerKnobs()).reuse_factor or 1,
        consts={"table": _values(P["lut.gelu"][0], fm["gelu.phi"])},
        cpp_consts={"n_in": hid, "x_w": f1.W, "a_w": max(f1.W, r_shift + 2) + 2, "r_shift": r_shift, "sh": sh,
                    "entries": int(lut.entries)},
        cpp_types={"frac_t": f"ap_ufixed<{max(sh, 1)},0>", "phi_t": fm["gelu.phi"].ap_type()})

    class HeadBlock(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.ssa = SSA_MEAN.module(ssa)
            self.ln = LAYER_NORM.module(ln)
            self.fc1 = torch.nn.Linear(d, hid)
            self.gelu = GELU.module(gelu)
            self.fc2 = torch.nn.Linear(hid, e)

        def forward(self, x):
            return self.fc2(self.gelu(self.fc1(self.ln(self.ssa(x)))))

    model = HeadBlock().double()
    with torch.no_grad():
        model.fc1.weight.copy_(torch.from_numpy(_values(P["fc1.weight"][0], fm["fc1.weight"])))
        model.fc1.bias.copy_(torch.from_numpy(_values(P["fc1.bias"][0], fm["fc1.bias"])))
        model.fc2.weight.copy_(torch.from_numpy(_values(P["fc2.weight"][0], fm["fc2.weight"])))
        model.fc2.bias.copy_(torch.from_numpy(_values(P["fc2.bias"][0], fm["fc2.bias"])))
    model.eval()

    s1, r1 = dense_defaults(d, hid, knobs.get("fc1"))
    s2, r2 = dense_defaults(hid, e, knobs.get("fc2"))
    prec = {
        "ssa": {"result": fm[SSA_MEAN.output].ap_type(), "recip": fm["ssa.recip"].ap_type()},
        "ln": {"result": fm[LAYER_NORM.output].ap_type(), "recip": fm["ln.recip"].ap_type(), "eps": fvar.ap_type(),
               "table": fm["ln.rsqrt.lut"].ap_type(), "gamma": fm["ln.weight"].ap_type(),
               "beta": fm["ln.bias"].ap_type()},
        "fc1": {"result": f1.ap_type(), "weight": fm["fc1.weight"].ap_type(), "bias": fm["fc1.bias"].ap_type(),
                "accum": _dense_accum(fm["ln.out"], fm["fc1.weight"], fm["fc1.bias"], d)},
        "gelu": {"result": fm[GELU.output].ap_type(), "table": fm["gelu.phi"].ap_type()},
        "fc2": {"result": fm["fc2.out"].ap_type(), "weight": fm["fc2.weight"].ap_type(),
                "bias": fm["fc2.bias"].ap_type(),
                "accum": _dense_accum(fm["gelu.out"], fm["fc2.weight"], fm["fc2.bias"], hid)},
    }
    rfs = {"ssa": ssa["reuse_factor"], "ln": ln["reuse_factor"], "fc1": r1, "gelu": gelu["reuse_factor"], "fc2": r2}
    strategies = {"fc1": s1, "fc2": s2}
    info = {
        "ssa": {"class": SSA_MEAN.name, "custom": True, "n_in": (n + 1) * d, "n_out": d, "n_tokens": n,
                "reuse_factor": rfs["ssa"], "mult_widths": [fm["ssa.acc"].W, fm["ssa.recip"].W],
                "out_fmt": fm["ssa.out"].ap_type(), "rom_bits": {}},
        "ln": {"class": LAYER_NORM.name, "custom": True, "n_in": d, "n_out": d, "reuse_factor": rfs["ln"],
               "newton_steps": int(sp.units["ln.rsqrt"].newton_steps),
               "mult_widths": [fdiff.W, fdiff.W],
               "scale_mult_widths": [[fx.W + clog2(d) + 1, fm["ln.recip"].W], [fm["ln.sumsq"].W, fm["ln.recip"].W]],
               "norm_mult_widths": [fdiff.W, max(fm["ln.rsqrt.work"].W,
                                                                                  fm["ln.rsqrt.lut"].W)],
               "affine_mult_widths": [fm["ln.norm"].W, fm["ln.weight"].W],
               "work_w": fm["ln.rsqrt.work"].W, "mant_w": fm["ln.rsqrt.mant"].W,
               "out_fmt": fm["ln.out"].ap_type(),
               "rom_bits": {"rsqrt_seed": (2 << int(sp.units["ln.rsqrt"].lut_bits), fm["ln.rsqrt.lut"].W),
                            "gamma": (d, fm["ln.weight"].W), "beta": (d, fm["ln.bias"].W)}},
        "fc1": {"class": "Dense", "custom": False, "n_in": d, "n_out": hid, "strategy": s1, "reuse_factor": r1,
                "mult_widths": [fm["ln.out"].W, fm["fc1.weight"].W], "out_fmt": f1.ap_type(),
                "accum": prec["fc1"]["accum"],
                "rom_bits": {"weight": (d * hid, fm["fc1.weight"].W), "bias": (hid, fm["fc1.bias"].W)}},
        "gelu": {"class": GELU.name, "custom": True, "n_in": hid, "n_out": hid, "reuse_factor": rfs["gelu"],
                 "mult_widths": [f1.W, fm["gelu.phi"].W], "out_fmt": fm["gelu.out"].ap_type(),
                 "rom_bits": {"phi_table": (int(lut.entries) + 1, fm["gelu.phi"].W)}},
        "fc2": {"class": "Dense", "custom": False, "n_in": hid, "n_out": e, "strategy": s2, "reuse_factor": r2,
                "mult_widths": [fm["gelu.out"].W, fm["fc2.weight"].W], "out_fmt": fm["fc2.out"].ap_type(),
                "accum": prec["fc2"]["accum"],
                "rom_bits": {"weight": (hid * e, fm["fc2.weight"].W), "bias": (e, fm["fc2.bias"].W)}},
    }
    cfg = _hls_config(model, ((n + 1) * d,), "ap_int<8>", prec, rfs, strategies, opts)
    return BlockDef("head", layer, f"head_L{int(layer)}", model, ((n + 1) * d,), cfg, "ap_int<8>", info,
                    fm["fc2.out"])


def gate_input_fmt(spec) -> tuple[bool, int, int]:
    fm = spec.formats
    return union_fmt([fm["conf.out"], fm["margin.out"], fm["sav.out"]])


GATE_FEATURES = (("conf.out", "gate.w_conf"), ("margin.out", "gate.w_margin"), ("sav.out", "gate.w_sav"))


def gate_layer_info(spec, w_codes, b_code: int, strategy: str = "Latency", reuse_factor: int = 1,
                    native_inputs: bool = False) -> dict:
    """:mod:`hls.estimate` description of the gate block: ``gate`` (Dense 3 -> 1) and ``comparator``.

    ``w_codes``: the three weight codes (formats gate.w_conf, gate.w_margin, gate.w_sav), ``b_code``: gate.b's.
    The constant-weight sum (``const_weights``, :func:`hls.estimate.const_dense`) is the HLS layer's: the features
    in the union input type, the weights in the union weight type, aligned at the accumulator's binary point.
    ``native_inputs``: the RTL gate's (:func:`rtl.blocks.gate_rtl`): each feature in its own format times its own
    weight, aligned at F_al = max(F_f + F_w, F_b)."""
    fm = spec.formats
    s_in, i_in, f_in = gate_input_fmt(spec)
    ws, wi, wf = union_fmt([fm[w] for _, w in GATE_FEATURES])
    fg, fb = fm["gate.out"], fm["gate.b"]
    accum = _dense_accum((s_in, i_in, f_in), (ws, wi, wf), fb, 3)
    w_codes = [int(c) for c in w_codes]
    if native_inputs:
        f_al = max([fm[f].F + fm[w].F for f, w in GATE_FEATURES] + [fb.F])
        inputs = [[fm[f].W, fm[f].signed] for f, _ in GATE_FEATURES]
        codes = w_codes
        shifts = [f_al - fm[f].F - fm[w].F for f, w in GATE_FEATURES]
    else:
        f_al = max(f_in + wf, fb.F)  # the accumulator's F (_dense_accum)
        inputs = [[i_in + f_in, s_in]] * 3
        codes = [c << (wf - fm[w].F) for c, (_, w) in zip(w_codes, GATE_FEATURES)]
        shifts = [f_al - f_in - wf] * 3
    const = {"inputs": inputs, "codes": [codes], "shifts": [shifts], "bias": [int(b_code)], "bias_shift": f_al - fb.F,
             "cast": {"shift": f_al - fg.F, "W": fg.W, "signed": fg.signed, "rounding": fg.rounding,
                      "overflow": fg.overflow}}
    return {
        "gate": {"class": "Dense", "custom": False, "n_in": 3, "n_out": 1, "strategy": strategy,
                 "reuse_factor": int(reuse_factor), "mult_widths": [i_in + f_in, wi + wf], "out_fmt": fg.ap_type(),
                 "accum": accum, "const_weights": const,
                 "rom_bits": {"weight": (3, wi + wf), "bias": (1, fb.W)}},
        "comparator": {"class": EXIT_COMPARATOR.name, "custom": True, "n_in": 1, "n_out": 2, "reuse_factor": 1,
                       "cmp_width": fg.W, "out_fmt": fixed_type(True, max(fg.I, 2), fg.F),
                       "rom_bits": {"threshold": (1, fg.W)}},
    }


def gate_block(unit, layer: int, opts: BlockOptions) -> BlockDef:
    """The gate block of ``layer``: 3 -> 1 Dense on (conf, margin, SAV) and the threshold comparator."""
    import torch

    sp, fm = unit.spec, unit.spec.formats
    P = unit.quantized_parameters(layer)
    knobs = opts.knobs
    s_in, i_in, f_in = gate_input_fmt(sp)
    in_type = fixed_type(s_in, i_in, f_in)
    ws, wi, wf = union_fmt([fm["gate.w_conf"], fm["gate.w_margin"], fm["gate.w_sav"]])
    w_type = fixed_type(ws, wi, wf)
    fg = fm[EXIT_COMPARATOR.output]
    out_type = fixed_type(True, max(fg.I, 2), fg.F)  # g exactly, and the exit bit (1 needs I >= 2)
    w = np.array([[_values([P[n][0]], fm[n])[0] for n in ("gate.w_conf", "gate.w_margin", "gate.w_sav")]])
    b = _values([P["gate.b"][0]], fm["gate.b"])
    thr = _values([P["gate.threshold"][0]], fg)
    comp = EXIT_COMPARATOR.attributes(reuse_factor=1, threshold=float(thr[0]), consts={"threshold": thr},
                                      cpp_consts={}, cpp_types={"thr_t": fg.ap_type()})

    class GateBlock(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gate = torch.nn.Linear(3, 1)
            self.comparator = EXIT_COMPARATOR.module(comp)

        def forward(self, x):
            return self.comparator(self.gate(x))

    model = GateBlock().double()
    with torch.no_grad():
        model.gate.weight.copy_(torch.from_numpy(w))
        model.gate.bias.copy_(torch.from_numpy(b))
    model.eval()
    sg, rg = dense_defaults(3, 1, knobs.get("gate"))
    prec = {"gate": {"result": fg.ap_type(), "weight": w_type, "bias": fm["gate.b"].ap_type(),
                     "accum": _dense_accum((s_in, i_in, f_in), (ws, wi, wf), fm["gate.b"], 3)},
            "comparator": {"result": out_type, "threshold": fg.ap_type()}}
    info = gate_layer_info(sp, [P[w][0] for _, w in GATE_FEATURES], P["gate.b"][0], sg, rg)
    cfg = _hls_config(model, (3,), in_type, prec, {"gate": rg, "comparator": 1}, {"gate": sg}, opts)
    return BlockDef("gate", layer, f"gate_L{int(layer)}", model, (3,), cfg, in_type, info, fg)


def _hls_config(model, input_shape, input_precision, prec, rfs, strategies, opts: BlockOptions) -> dict:
    import hls4ml

    from .extension import register

    register()
    cfg = hls4ml.utils.config_from_pytorch_model(model, input_shape, granularity="name", backend=opts.backend,
                                                 default_precision="ap_fixed<16,6>", default_reuse_factor=1,
                                                 transpose_outputs=False)
    names = cfg["LayerName"]
    inputs = [k for k in names if k not in prec]
    for k in inputs:
        names[k]["Precision"] = {"result": input_precision}
    for lname, p in prec.items():
        entry = names.setdefault(lname, {})
        entry["Precision"] = dict(p)
        entry["ReuseFactor"] = int(rfs.get(lname, 1))
        if lname in strategies:
            entry["Strategy"] = strategies[lname]
    cfg["Model"]["Strategy"] = "Resource" if "Resource" in strategies.values() else "Latency"
    cfg["Model"]["ReuseFactor"] = 1
    return cfg


def convert(block: BlockDef, out_dir, opts: BlockOptions, testbench: tuple | None = None, write: bool = True):
    """hls4ml ModelGraph of ``block`` for ``out_dir`` (not compiled), written there unless ``write`` is False
    (``compile()`` writes the project itself: a caller that compiles next passes False, so that the
    project, its weights and test-bench files are written once).

    ``testbench = (inputs, expected outputs)`` (float64 arrays) become the project's
    ``tb_data/tb_input_features.dat`` / ``tb_output_predictions.dat`` for the vendor C-simulation.

    The torch module the graph was converted from is dropped from the graph's config: hls4ml's writer
    would dump it into ``hls4ml_config.yml`` as a pickled Python object (12.6 MB and about 5 s per write
    for a ViT-B/32 head; a YAML no safe loader reads). The project's weights are in ``firmware/weights``."""
    import hls4ml

    from .extension import register

    register()
    tb = {}
    if testbench is not None:  # hls4ml re-reads these on every write() (compile() writes again): keep them
        d = Path(out_dir) / "tb_data"
        d.mkdir(parents=True, exist_ok=True)
        tb = {"input_data_tb": str(d / "lraee_tb_input.npy"), "output_data_tb": str(d / "lraee_tb_expected.npy")}
        np.save(tb["input_data_tb"], np.ascontiguousarray(testbench[0], np.float64))
        np.save(tb["output_data_tb"], np.ascontiguousarray(testbench[1], np.float64))
    hm = hls4ml.converters.convert_from_pytorch_model(
        block.model, hls_config=block.hls_config, output_dir=str(out_dir), backend=opts.backend,
        io_type=opts.io_type, part=opts.part, clock_period=float(opts.clock_period_ns),
        project_name=f"{opts.project}_{block.name}", **tb)
    check_precisions(hm, block)
    hm.config.config.pop("PytorchModel", None)
    if write:
        hm.write()
    return hm


def check_precisions(hm, block: BlockDef) -> None:
    """Refuse a graph whose layer result types are not the spec's (a silent default would break exactness)."""
    for layer in hm.get_layers():
        want = block.hls_config["LayerName"].get(layer.name, {}).get("Precision", {})
        res = want.get("result") if isinstance(want, dict) else None
        if res is None:
            continue
        got = layer.get_output_variable().type.precision
        if not _same_type(str(res), got):
            raise RuntimeError(f"hls4ml layer {layer.name}: result type {got} differs from the spec's {res}")


def _same_type(ap: str, precision) -> bool:
    from hls4ml.backends import get_backend

    want = get_backend("Vivado").convert_precision_string(ap)
    return want == precision or str(want) == str(precision)
