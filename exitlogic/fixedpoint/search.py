"""Ranges, the generous default spec, memory accounting and the greedy minimal-width search.

* :func:`observed_ranges` runs the float reference and records ``[min, max]`` at every cast
  point (and of every parameter).
* :func:`integer_bits_required` turns ranges into integer bits ``I`` (data: plus a margin).
* :func:`default_spec` builds a generous spec from ranges (wide fractional parts).
* :func:`search_widths` shrinks the word lengths one cast point at a time (``I`` kept, so only
  fractional bits go), and optionally the LUT sizes, while the fixed-vs-float exit-decision
  agreement and prediction agreement stay at or above the target (``criterion="layer"``: pooled
  over the layers' samples; ``criterion="route"``: the routed system, see :func:`search_widths`).
* :func:`memory_bits` counts weight, LUT and constant storage in bits.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np

from common.errors import InputError

SEARCH_SAFETY = 4.0  # the search keeps SAFETY x the estimated disagreement rate within 1 - target


from .fixed import Fmt
from .spec import FORMATS, STAGE_OF, STAGE_ORDER, UNIT_KINDS, FixedPointSpec, LutParams, UnitParams, integer_bits
from .unit import ExitUnit, affected_stages, float_reference



def _geometry(params_per_layer: dict, text_embeddings, samples: dict) -> dict:
    p = next(iter(params_per_layer.values()))
    e, d = np.asarray(p["fc2.weight"]).shape
    k = np.asarray(text_embeddings).shape[0]
    q0 = next(iter(samples.values()))[0]
    return {"n_tokens": int(q0.shape[1] - 1), "d": int(d), "e": int(e), "k": int(k)}


def observed_ranges(params_per_layer: dict, text_embeddings, logit_scale: float, samples: dict,
                    ln_eps: float = 1e-5) -> dict[str, tuple[float, float]]:
    """``{cast point or parameter format: (min, max)}`` over all layers and samples (float reference).

    ``samples`` maps a layer to ``(q_int8 [n, N+1, d], token_scale)``.
    """
    acc: dict[str, list] = {}
    for layer, (q, scale) in samples.items():
        ref = float_reference(params_per_layer[layer], text_embeddings, logit_scale, q, scale,
                              ln_eps=ln_eps, intermediates=True)
        for name, v in ref["values"].items():
            v = np.asarray(v, np.float64)
            lo, hi = float(v.min()), float(v.max())
            if name in acc:
                acc[name] = [min(acc[name][0], lo), max(acc[name][1], hi)]
            else:
                acc[name] = [lo, hi]
    return {k: (v[0], v[1]) for k, v in acc.items()}


def integer_bits_required(ranges: dict, margin_bits: int = 1) -> dict[str, int]:
    """Integer bits (incl. sign) each cast point needs for its observed range.

    Data cast points get ``margin_bits`` extra bits (inputs outside the calibration set);
    parameters none (they are known exactly).  Unsigned formats: values must be >= 0.
    """
    out = {}
    for name, (lo, hi) in ranges.items():
        df = FORMATS.get(name)
        if df is None or df.kind not in ("data", "param"):
            continue
        out[name] = integer_bits(min(lo, 0.0), max(hi, 0.0), df.signed,
                                 margin_bits if df.kind == "data" else 0)
    return out


def default_spec(params_per_layer: dict, text_embeddings, logit_scale: float, samples: dict, *,
                 act_bits: int = 26, param_bits: int = 22, const_bits: int = 24, margin_bits: int = 1,
                 rounding: str = "RND_CONV", overflow: str = "SAT", ln_eps: float = 1e-5,
                 policy_sha256: str | None = None) -> FixedPointSpec:
    """A generous spec: integer bits from the observed ranges, ``act_bits`` / ``param_bits`` words.

    Structural formats: normalised-unit mantissas ``ap_ufixed<26,2,AP_TRN>``, seed tables
    ``ap_ufixed<18,1>`` (64 rows per parity, two Newton steps), Newton work ``ap_fixed<28,3>``,
    GELU Phi breakpoints ``ap_ufixed<22,1>`` (1024 segments over [-8, 8], interpolated), exp
    breakpoints ``ap_ufixed<20,1>`` (1024 segments over [0, 16], interpolated), conf / margin
    ``ap_ufixed<act_bits-2,1>``.
    """
    geo = _geometry(params_per_layer, text_embeddings, samples)
    ranges = observed_ranges(params_per_layer, text_embeddings, logit_scale, samples, ln_eps)
    ibits = integer_bits_required(ranges, margin_bits)
    n, d = geo["n_tokens"], geo["d"]
    consts = {"ssa.recip": 1.0 / n, "sav.recip": 1.0 / (n * n), "ln.recip": 1.0 / d}
    fmts: dict[str, Fmt] = {}
    for name, df in FORMATS.items():
        if df.kind == "int":
            bound = n * 128 if name == "ssa.acc" else n * n * d * 128 * 128
            w = bound.bit_length() + (1 if df.signed else 0)
            fmts[name] = Fmt(w, w, df.signed, "TRN", "SAT")
        elif df.kind == "const":
            i = integer_bits(0.0, consts[name], False)
            fmts[name] = Fmt(const_bits, i, False, rounding, overflow)
        elif df.kind == "struct":
            if name.endswith(".mant"):
                fmts[name] = Fmt(26, 2, False, "TRN", "SAT")
            elif name.endswith(".lut"):
                fmts[name] = Fmt(18, 1, False, rounding, overflow)
            elif name == "gelu.phi":
                fmts[name] = Fmt(22, 1, False, rounding, overflow)
            elif name.endswith(".work"):
                fmts[name] = Fmt(28, 3, True, rounding, overflow)
            elif name == "exp.out":
                fmts[name] = Fmt(20, 1, False, rounding, overflow)
            else:  # conf.out, margin.out
                fmts[name] = Fmt(act_bits - 2, 1, False, rounding, overflow)
        else:
            i = ibits.get(name, 1 if df.signed else 0)
            w = param_bits if df.kind == "param" else act_bits
            fmts[name] = Fmt(max(w, i + 4), i, df.signed, rounding, overflow)
    data_ranges = {k: v for k, v in ranges.items() if FORMATS.get(k) and FORMATS[k].kind == "data"}
    spec = FixedPointSpec(n_tokens=n, d=d, e=geo["e"], k=geo["k"], formats=fmts, ln_eps=ln_eps,
                          ranges=data_ranges, policy_sha256=policy_sha256)
    return spec.validate()


def memory_bits(spec: FixedPointSpec, n_layers: int) -> dict:
    """Storage in bits: per-layer weights, shared text embeddings, LUTs, constants."""
    fm, d, e, k = spec.formats, spec.d, spec.e, spec.k
    per_layer = (d * fm["ln.weight"].W + d * fm["ln.bias"].W + d * d * fm["fc1.weight"].W
                 + d * fm["fc1.bias"].W + e * d * fm["fc2.weight"].W + e * fm["fc2.bias"].W
                 + fm["gate.w_conf"].W + fm["gate.w_margin"].W + fm["gate.w_sav"].W + fm["gate.b"].W
                 + fm["gate.out"].W)  # the last: the threshold constant
    text = k * e * fm["sim.text"].W
    luts = {"gelu": (spec.luts["gelu"].entries + 1) * fm["gelu.phi"].W,
            "exp": (spec.luts["exp"].entries + 1) * fm["exp.out"].W}
    for n, u in spec.units.items():
        rows = (2 if u.kind == "rsqrt" else 1) << int(u.lut_bits)
        luts[n] = rows * fm[f"{n}.lut"].W
    consts = fm["ssa.recip"].W + fm["sav.recip"].W + fm["ln.recip"].W + fm["ln.var"].W
    weights = n_layers * per_layer + text
    return {"weights_per_layer_bits": per_layer, "text_bits": text, "weights_bits": weights,
            "lut_bits": sum(luts.values()), "lut_detail_bits": luts, "constants_bits": consts,
            "total_bits": weights + sum(luts.values()) + consts}


@dataclass
class SearchResult:
    spec: FixedPointSpec
    exit_agreement: float
    pred_agreement: float
    start_exit_agreement: float
    start_pred_agreement: float
    steps: list = field(default_factory=list)
    evaluations: int = 0
    memory_start: dict = field(default_factory=dict)
    memory: dict = field(default_factory=dict)


class _Evaluator:
    def __init__(self, params_per_layer, text, logit_scale, samples, policy_sha256, criterion="layer",
                 full_pred=None, safety=1.0):
        self.params, self.text, self.ls = params_per_layer, text, logit_scale
        self.samples = samples
        self.sha = policy_sha256
        self.criterion = criterion
        self.full_pred = full_pred
        self.safety = float(safety)
        self.refs = {}
        self.base_states = {}
        self.evaluations = 0
        self.cache = {}  # parameter codes and tables per format, shared by the units of every spec tried
        self.last_states = None  # the states of the last try that ran

    def refs_for(self, spec):
        if not self.refs:
            for layer, (q, s) in self.samples.items():
                self.refs[layer] = float_reference(self.params[layer], self.text, self.ls, q, s,
                                                   ln_eps=spec.ln_eps)
        return self.refs

    def unit(self, spec):
        return ExitUnit(spec, {L: self.params[L] for L in self.samples}, self.text, self.ls, cache=self.cache)

    def set_base(self, spec, states=None):
        """The states every try resumes from: those of ``spec``, computed, or ``states`` (a try's of the same
        spec: equal to a full run, tested), then no score."""
        if states is not None:
            self.base_states = states
            return None
        unit = self.unit(spec)
        self.base_states = {}
        for layer, (q, s) in self.samples.items():
            state = unit.start(layer, q, s)
            unit.run_stages(state)
            self.base_states[layer] = state
        return self.score(unit, self.base_states)

    def score(self, unit, states):
        refs = self.refs_for(unit.spec)
        if self.criterion == "route":
            return _route_score(unit, states, refs, sorted(states), self.full_pred, self.safety)
        ex = pr = tot = 0
        for layer, state in states.items():
            ref = refs[layer]
            ex += int(np.sum(state["exit"] == ref["exit"]))
            pr += int(np.sum(state["pred"] == ref["pred"]))
            tot += ref["exit"].size
        return ex / tot, pr / tot

    def try_spec(self, spec, first_stage):
        self.evaluations += 1
        try:
            unit = self.unit(spec)
        except InputError:
            return None
        states = {}
        redo = affected_stages(first_stage)  # only what reads the knob's stage (sav -> sav, gate)
        for layer, base in self.base_states.items():
            state = ExitUnit.snapshot(base, first_stage, redo)
            try:
                unit.run_stages(state, first_stage, only=redo)
            except InputError:
                return None
            states[layer] = state
        self.last_states = states
        return self.score(unit, states)


def _route_score(unit, states: dict, refs: dict, layers: list, full_pred, safety: float) -> tuple[float, float]:
    """(exit score, pred score) of the routed system (see :func:`search_widths`)."""
    from .validate import agreement_stats

    f_g = unit.spec.formats["gate.out"]
    fixed = {L: {"exit": states[L]["exit"], "pred": states[L]["pred"],
                 "gate_logit": np.ldexp(states[L]["g"].astype(np.float64), -f_g.F)} for L in layers}
    thr = {L: unit.layers[L]["logit_tau"] for L in layers}
    st = agreement_stats(fixed, refs, layers, full_pred, thr)
    dis = max([1.0 - v for v in st["layer_exit_agreement"].values()] + [1.0 - st["route_exit_agreement"]]
              + [safety * v for v in st["layer_disagreement_estimate"].values()]
              + [safety * st["route_disagreement_estimate"]])
    return 1.0 - dis, st["outcome_agreement"]


def _knobs(spec: FixedPointSpec, knobs, luts: bool):
    if knobs is None:
        knobs = [n for n in FORMATS if FORMATS[n].kind != "int"]
        if luts:
            knobs += ["lut:gelu", "lut:exp"] + [f"unit:{n}" for n in UNIT_KINDS] + [
                f"newton:{n}" for n in UNIT_KINDS]
    def stage(kn):
        if kn.startswith("lut:"):
            return "gelu" if kn == "lut:gelu" else "softmax"
        if kn.startswith(("unit:", "newton:")):
            return STAGE_OF[kn.split(":")[1] + ".lut"]
        return STAGE_OF[kn]
    return sorted(knobs, key=lambda kn: STAGE_ORDER.index(stage(kn))), stage


def _with(spec: FixedPointSpec, knob: str, v: int) -> FixedPointSpec:
    new = copy.deepcopy(spec)
    if knob.startswith("lut:"):
        n = knob[4:]
        new.luts[n] = LutParams(new.luts[n].range, 1 << v)
    elif knob.startswith("unit:"):
        n = knob[5:]
        u = new.units[n]
        new.units[n] = UnitParams(u.kind, v, u.newton_steps)
    elif knob.startswith("newton:"):
        n = knob[7:]
        u = new.units[n]
        new.units[n] = UnitParams(u.kind, u.lut_bits, v)
    else:
        new.formats[knob] = new.formats[knob].replace(W=v)
    return new


def _current(spec: FixedPointSpec, knob: str) -> int:
    if knob.startswith("lut:"):
        return int(spec.luts[knob[4:]].entries).bit_length() - 1
    if knob.startswith("unit:"):
        return int(spec.units[knob[5:]].lut_bits)
    if knob.startswith("newton:"):
        return int(spec.units[knob[7:]].newton_steps)
    return spec.formats[knob].W


def storage_counts(spec: FixedPointSpec) -> dict[str, int]:
    """Stored values per bit of word length for each knob that has storage (per layer for weights)."""
    d, e, k = spec.d, spec.e, spec.k
    out = {"fc1.weight": d * d, "fc2.weight": e * d, "sim.text": k * e, "ln.weight": d, "ln.bias": d,
           "fc1.bias": d, "fc2.bias": e, "gelu.phi": spec.luts["gelu"].entries + 1,
           "exp.out": spec.luts["exp"].entries + 1, "lut:gelu": spec.formats["gelu.phi"].W,
           "lut:exp": spec.formats["exp.out"].W, "gate.w_conf": 1, "gate.w_margin": 1, "gate.w_sav": 1,
           "gate.b": 1, "gate.out": 1}
    for n, u in spec.units.items():
        out[f"{n}.lut"] = (2 if u.kind == "rsqrt" else 1) << int(u.lut_bits)
        out[f"unit:{n}"] = spec.formats[f"{n}.lut"].W
    return out


def search_knobs(spec: FixedPointSpec, knobs: list | None = None, luts: bool = True,
                 order: str = "pipeline") -> list[str]:
    """The knobs :func:`search_widths` visits, in its order (for progress bars)."""
    ks, _ = _knobs(spec, knobs, luts)
    if order == "memory":
        cnt = storage_counts(spec)
        ks = sorted(ks, key=lambda kn: -cnt.get(kn, 0))  # stable: pipeline order among equals
    elif order != "pipeline":
        raise InputError(f"search order {order!r}; allowed: pipeline, memory")
    return ks


def search_widths(spec: FixedPointSpec, params_per_layer: dict, text_embeddings, logit_scale: float,
                  samples: dict, target: float = 0.999, pred_target: float | None = None,
                  knobs: list | None = None, luts: bool = True, log=None, criterion: str = "layer",
                  full_pred=None, safety: float = 1.0, order: str = "pipeline", progress=None) -> SearchResult:
    """Greedy minimal widths: for each knob in pipeline order, binary-search the smallest value
    (word length W with I kept; ``lut:<name>`` log2 entries; ``unit:<name>`` seed-table bits;
    ``newton:<name>`` Newton steps)
    at which exit agreement >= ``target`` and pred agreement >= ``pred_target`` (default:
    ``target``) hold on ``samples`` ({layer: (q_int8, token_scale)}), all other knobs at their
    current values.  Agreement is assumed monotone in each knob.  Stages before the knob's
    stage are not recomputed.

    ``criterion="layer"`` (default): agreement pooled over all layers' samples (exit decisions and
    predictions of every sample at every layer).  ``criterion="route"``: the routed system on the
    same images at every layer (layers in ascending order, ``full_pred`` [n] the full-depth
    prediction): the exit score is one minus the largest of (i) every layer's observed
    exit-decision disagreement rate, (ii) the observed routed exit-position disagreement rate and
    (iii) ``safety`` times the *estimated* per-layer and routed disagreement rates
    (:func:`.validate.agreement_stats`: each sample's flip probability under the empirical
    gate-logit error distribution; smooth, so the search does not stop on a lucky finite
    sample); the pred score is the fraction of samples whose routed outcome (exit position and
    final prediction) agrees.  ``order="memory"`` visits the knobs with the most stored bits first
    (weights, text embeddings, tables; then the rest in pipeline order), so the agreement budget
    goes where the memory is; ``progress(knob)`` is called after each knob.
    """
    pred_target = target if pred_target is None else pred_target
    if criterion not in ("layer", "route"):
        raise InputError(f"search criterion {criterion!r}; allowed: layer, route")
    if criterion == "route":
        ns = {q.shape[0] for q, _ in samples.values()}
        if full_pred is None or len(ns) != 1 or len(full_pred) not in ns:
            raise InputError("criterion 'route' needs the same samples at every layer and full_pred [n]")
    ev = _Evaluator(params_per_layer, text_embeddings, logit_scale, samples, spec.policy_sha256, criterion,
                    full_pred, safety)
    ex0, pr0 = ev.set_base(spec)
    if ex0 < target or pr0 < pred_target:
        raise InputError(f"the starting spec reaches exit agreement {ex0:.4f} and pred agreement {pr0:.4f}, "
                         f"below the targets {target} / {pred_target}; widen it first")
    n_layers = len(params_per_layer)
    res = SearchResult(spec=spec, exit_agreement=ex0, pred_agreement=pr0, start_exit_agreement=ex0,
                       start_pred_agreement=pr0, memory_start=memory_bits(spec, n_layers))
    _, stage_of = _knobs(spec, knobs, luts)
    order = search_knobs(spec, knobs, luts, order)
    cur = spec
    for knob in order:
        hi = _current(cur, knob)
        lo = 0 if knob.startswith("newton:") else 1
        best, best_states = hi, None
        best_score = (res.exit_agreement, res.pred_agreement)
        while lo < best:
            mid = (lo + best) // 2
            sc = ev.try_spec(_with(cur, knob, mid), stage_of(knob))
            if sc is not None and sc[0] >= target and sc[1] >= pred_target:
                best, best_score, best_states = mid, sc, ev.last_states
            else:
                lo = mid + 1
        if best != hi:
            cur = _with(cur, knob, best)
            res.exit_agreement, res.pred_agreement = best_score
            ev.set_base(cur, best_states)  # the accepted try's states: no full re-run
        res.steps.append({"knob": knob, "from": hi, "to": best, "exit_agreement": res.exit_agreement,
                          "pred_agreement": res.pred_agreement})
        if log:
            log(f"{knob}: {hi} -> {best} (exit {res.exit_agreement:.4f}, pred {res.pred_agreement:.4f})")
        if progress:
            progress(knob)
    res.spec = cur
    res.evaluations = ev.evaluations
    res.memory = memory_bits(cur, n_layers)
    return res


def lut_error_summary(spec: FixedPointSpec) -> dict:
    """Step sizes of the LUTs (for reports)."""
    g, e = spec.luts["gelu"], spec.luts["exp"]
    return {"gelu_step": 2 * g.range / g.entries, "exp_step": e.range / e.entries,
            "rsqrt_seed_rel_err": {n: math.ldexp(1.0, -(u.lut_bits + 2)) for n, u in spec.units.items()}}
