"""The bit-true exit unit (:class:`ExitUnit`) and its float64 reference (:func:`float_reference`).

Pipeline per candidate layer L (stage functions in :mod:`.stages`)::

    q [n, N+1, d] int8, s_L = 2**e
      ssa      x = mean of the N patch tokens                    -> ssa.out
      sav      SAV exact in integers, then scaled                -> sav.out
      ln       LayerNorm (rsqrt: LUT seed + Newton)              -> ln.out
      fc1      Dense d -> d                                      -> fc1.out
      gelu     x * Phi(x), Phi from a LUT                        -> gelu.out
      fc2      Dense d -> e                                      -> fc2.out (h)
      l2       u = h / ||h|| (rsqrt: LUT seed + Newton)          -> l2.out
      sim      s_k = u . (logit_scale * t_k)                     -> sim.logit
      softmax  pred, conf = 1/sum exp LUT, margin                -> conf.out, margin.out
      gate     g = w'.f + b', exit = (g >= logit(tau_L))         -> gate.out, comparator bit

Parameters per layer (numpy float32 arrays, torch layout): ``ln.weight [d]``, ``ln.bias [d]``,
``fc1.weight [d, d]``, ``fc1.bias [d]``, ``fc2.weight [e, d]``, ``fc2.bias [e]``,
``gate.w [3]``, ``gate.b [1]``, ``gate.mu [3]``, ``gate.sigma [3]``, ``tau`` (float);
shared ``text_embeddings [K, e]`` (L2-normalised) and ``logit_scale`` (float).
"""
from __future__ import annotations

import math

import numpy as np

from common.errors import InputError
from quant.geometry import ExitHeadGeometry

from . import stages as st
from .fixed import WidthError, quantize, to_float
from .spec import FORMATS, STAGE_OF, STAGE_ORDER, FixedPointSpec
from .tapsums import TapSums

PARAM_KEYS = ("ln.weight", "ln.bias", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias",
              "gate.w", "gate.b", "gate.mu", "gate.sigma")
OUTPUT_KEYS = ("pred", "conf", "margin", "sav", "gate_logit", "exit")
#: names under which overflow events are counted (cast points plus the normalised units' zero input)
COUNTER_NAMES = tuple(FORMATS) + ("ln.rsqrt", "l2.rsqrt", "conf.recip")
#: the stages whose results each stage reads (besides the tokens and its own formats and parameters)
STAGE_INPUTS = {"ssa": (), "sav": (), "ln": ("ssa",), "fc1": ("ln",), "gelu": ("fc1",), "fc2": ("gelu",),
                "l2": ("fc2",), "sim": ("l2",), "softmax": ("sim",), "gate": ("softmax", "sav")}


def affected_stages(first: str) -> tuple[str, ...]:
    """``first`` and every stage that reads its results, directly or not, in pipeline order: what must be
    recomputed when only ``first``'s formats (or tables) change (``sav`` -> sav, gate)."""
    out = {first}
    for name in STAGE_ORDER:
        if any(i in out for i in STAGE_INPUTS[name]):
            out.add(name)
    return tuple(n for n in STAGE_ORDER if n in out)


def logit(tau: float) -> float:
    """``log(tau / (1 - tau))`` in float64 (the exact value both models compare against)."""
    tau = float(tau)
    if not 0.0 < tau < 1.0:
        raise InputError(f"threshold tau = {tau} must lie in (0, 1)")
    return math.log(tau / (1.0 - tau))


def fold_gate(p: dict) -> tuple[np.ndarray, float]:
    """``w' = w / sigma``, ``b' = b - sum(w * mu / sigma)`` in float64."""
    w = np.asarray(p["gate.w"], np.float64).reshape(3)
    mu = np.asarray(p["gate.mu"], np.float64).reshape(3)
    sg = np.asarray(p["gate.sigma"], np.float64).reshape(3)
    b = float(np.asarray(p["gate.b"], np.float64).reshape(-1)[0])
    return w / sg, b - float(np.sum(w * mu / sg))


def scale_exponent(token_scale: float) -> int:
    try:
        return st.log2_exact(token_scale, "token_scale")
    except ValueError as exc:
        raise InputError(str(exc)) from None


def _check_q(q: np.ndarray, n_tokens: int, d: int) -> np.ndarray:
    q = np.asarray(q)
    if q.ndim != 3 or q.shape[1] != n_tokens + 1 or q.shape[2] != d:
        raise InputError(f"tokens must have shape [n, {n_tokens + 1}, {d}] (CLS + {n_tokens} patches), "
                         f"got {list(q.shape)}")
    if q.dtype != np.int8:
        if not np.issubdtype(q.dtype, np.integer) or (q.size and (q.min() < -128 or q.max() > 127)):
            raise InputError(f"tokens must be int8 codes, got dtype {q.dtype}")
        q = q.astype(np.int8)
    return q


def _check_sums(q: TapSums, n_tokens: int, d: int) -> TapSums:
    if q.n_tokens != n_tokens or q.s1.ndim != 2 or q.s1.shape[1] != d or q.s2.shape != (q.s1.shape[0],):
        raise InputError(f"tap sums must be S1 [n, {d}] and S2 [n] of {n_tokens} patch tokens, got S1 "
                         f"{list(q.s1.shape)}, S2 {list(q.s2.shape)} of {q.n_tokens} tokens")
    lim = 128 * n_tokens
    if q.s1.size and (int(np.abs(q.s1).max()) > lim or int(q.s2.min()) < 0 or int(q.s2.max()) > lim * 128 * d):
        raise InputError(f"tap sums outside the range of {n_tokens} int8 tokens (|S1| <= {lim})")
    return TapSums(np.asarray(q.s1, np.int64), np.asarray(q.s2, np.int64), q.n_tokens)


def _check_params(params_per_layer: dict, head: ExitHeadGeometry) -> None:
    shapes = {**head.param_shapes(), "gate.w": (3,), "gate.b": (1,), "gate.mu": (3,), "gate.sigma": (3,)}
    for layer, p in params_per_layer.items():
        for key, shp in shapes.items():
            if key not in p:
                raise InputError(f"layer {layer}: parameter {key!r} missing (needed: {', '.join(PARAM_KEYS)}, tau)")
            a = np.asarray(p[key])
            if a.size != int(np.prod(shp)) or (len(shp) == 2 and a.shape != shp):
                raise InputError(f"layer {layer}: parameter {key!r} has shape {list(a.shape)}, expected {list(shp)}")
        if "tau" not in p:
            raise InputError(f"layer {layer}: threshold 'tau' missing")
        if np.any(np.asarray(p["gate.sigma"], np.float64) <= 0):
            raise InputError(f"layer {layer}: gate.sigma must be > 0")


class ExitUnit:
    """Bit-true fixed-point exit unit for every candidate layer of one policy.

    ``ExitUnit(spec, params_per_layer, text_embeddings, logit_scale)``; ``params_per_layer``
    maps a layer index to its parameter dict (see module doc).  Parameters are quantised
    once here; a parameter that does not fit its format raises :class:`WidthError` naming
    the stage.  ``policy_sha256`` (optional) must match ``spec.policy_sha256``.
    """

    def __init__(self, spec: FixedPointSpec, params_per_layer: dict, text_embeddings, logit_scale: float,
                 policy_sha256: str | None = None, policy_source: str | None = None, cache: dict | None = None):
        spec.check_policy(policy_sha256, policy_source)
        spec.validate()
        self.spec = spec
        fm = spec.formats
        # ``cache``: a dict shared by units of other specs over the same parameter objects (the width
        # search): parameter codes and tables are looked up by (format, source object), not recomputed
        self._cache = cache
        t = np.asarray(text_embeddings, np.float64)
        if t.shape != (spec.k, spec.e):
            raise InputError(f"text_embeddings shape {list(t.shape)} does not match the spec's "
                             f"[k, e] = [{spec.k}, {spec.e}]")
        _check_params(params_per_layer, spec.head)
        self.logit_scale = float(logit_scale)
        self.text = t
        self.params = params_per_layer
        self.consts = spec.constants()
        self.text_q = self._cached(("sim.text", fm["sim.text"], self.logit_scale), text_embeddings,
                                   lambda: self._q("sim.text", self.logit_scale * t, "shared"))
        self.tables = {
            n: self._cached(("norm_table", u.kind, u.lut_bits, fm[f"{n}.lut"]), None,
                            lambda u=u, n=n: st.norm_table(u.kind, u.lut_bits, fm[f"{n}.lut"]))
            for n, u in spec.units.items()}
        g = spec.luts["gelu"]
        self.tables["gelu"] = self._cached(("gelu", g.range, g.entries, fm["gelu.phi"]), None,
                                           lambda: st.gelu_phi_table(g.range, g.entries, fm["gelu.phi"]))
        ex = spec.luts["exp"]
        self.tables["exp"] = self._cached(("exp", ex.range, ex.entries, fm["exp.out"]), None,
                                          lambda: st.exp_table(ex.range, ex.entries, fm["exp.out"]))
        self.layers = {}
        for layer, p in params_per_layer.items():
            wf, bf = fold_gate(p)
            thr = logit(p["tau"])
            f_g = fm["gate.out"]
            thr_code = math.ceil(math.ldexp(thr, f_g.F))
            if not f_g.min_code <= thr_code <= f_g.max_code:
                raise WidthError(f"{spec.where}: stage 'gate.out': {f_g} cannot hold the threshold "
                                 f"logit(tau={float(p['tau'])}) = {thr:.6g} of layer {layer}")
            self.layers[layer] = {
                "ln.weight": self._qp("ln.weight", p, layer).reshape(-1),
                "ln.bias": self._qp("ln.bias", p, layer).reshape(-1),
                "fc1.weight": self._qp("fc1.weight", p, layer),
                "fc1.bias": self._qp("fc1.bias", p, layer).reshape(-1),
                "fc2.weight": self._qp("fc2.weight", p, layer),
                "fc2.bias": self._qp("fc2.bias", p, layer).reshape(-1),
                "gate.w": [int(self._cached(("gate", nm, layer, fm[nm]), p, lambda i=i, nm=nm: self._q(nm, wf[i], layer)))
                           for i, nm in enumerate(("gate.w_conf", "gate.w_margin", "gate.w_sav"))],
                "gate.b": int(self._cached(("gate", "gate.b", layer, fm["gate.b"]), p,
                                           lambda: self._q("gate.b", bf, layer))),
                "gate.thr": int(thr_code),
                "tau": float(p["tau"]),
                "logit_tau": thr,
            }
        # one dry run validates every worst-case intermediate width (errors name the stage)
        if self.layers:
            first = next(iter(self.layers))
            self.run(first, np.zeros((1, spec.n_tokens + 1, spec.d), np.int8), 1.0)

    def _cached(self, key: tuple, source, make):
        """``make()``, looked up in the shared cache under ``key`` and the identity of ``source``."""
        if self._cache is None:
            return make()
        hit = self._cache.get(key)
        if hit is not None and hit[0] is source:
            return hit[1]
        value = make()
        if isinstance(value, np.ndarray):
            value.setflags(write=False)  # shared by every unit of the cache
        self._cache[key] = (source, value)
        return value

    def _qp(self, fname: str, p: dict, layer) -> np.ndarray:
        """The codes of parameter ``fname`` of ``layer`` (``p[fname]`` quantised to its format)."""
        return self._cached(("param", fname, layer, self.spec.formats[fname]), p[fname],
                            lambda: self._q(fname, p[fname], layer))

    def _q(self, fname: str, values, layer) -> np.ndarray:
        fmt = self.spec.formats[fname]
        c = quantize(np.asarray(values, np.float64), fmt)
        if np.any(c.overflow):
            v = np.asarray(values, np.float64)
            lo, hi = float(v.min()), float(v.max())
            from .spec import integer_bits

            raise WidthError(f"{self.spec.where}: stage '{fname}' ({'layer ' + str(layer) if layer != 'shared' else 'shared'}): "
                             f"{fmt} holds [{fmt.min_value:.6g}, {fmt.max_value:.6g}] but the parameters "
                             f"span [{lo:.6g}, {hi:.6g}]; needs I >= {integer_bits(min(lo, 0.0), max(hi, 0.0), fmt.signed)}")
        return c.codes

    # ---- running ----------------------------------------------------------------------
    def start(self, layer, q, token_scale, keep: bool = False) -> dict:
        """Initial pipeline state for ``run_stages``."""
        if layer not in self.layers:
            raise InputError(f"layer {layer} has no parameters (candidate layers: {sorted(self.layers)})")
        q = _check_sums(q, self.spec.n_tokens, self.spec.d) if isinstance(q, TapSums) else \
            _check_q(q, self.spec.n_tokens, self.spec.d)
        return {"layer": layer, "q": q, "e": scale_exponent(token_scale),
                "ctx": st.Ctx(n=q.shape[0], keep=keep)}

    def run_stages(self, state: dict, first: str = "ssa", only=None) -> dict:
        """Run the stages from ``first`` to the end, in place (earlier results must be in ``state``);
        ``only``: just these stages (e.g. :func:`affected_stages`; the others' results must be in ``state``)."""
        sp, fm, P, T = self.spec, self.spec.formats, self.layers[state["layer"]], self.tables
        ctx, q, e = state["ctx"], state["q"], state["e"]
        i0 = STAGE_ORDER.index(first)
        todo = STAGE_ORDER[i0:] if only is None else tuple(only)
        if "ssa" in todo:
            state["x"] = st.ssa_mean(q, e, sp, self.consts, ctx)
        if "sav" in todo:
            state["sav"] = st.sav_exact(q, e, sp, self.consts, ctx)
        if "ln" in todo:
            state["ln"] = st.layernorm(state["x"], fm["ssa.out"], P["ln.weight"], P["ln.bias"], sp,
                                       self.consts, T, ctx)
        if "fc1" in todo:
            state["fc1"] = st.dense("fc1", state["ln"], fm["ln.out"], P["fc1.weight"], P["fc1.bias"], sp, ctx)
        if "gelu" in todo:
            state["gelu"] = st.gelu(state["fc1"], fm["fc1.out"], sp, T["gelu"], ctx)
        if "fc2" in todo:
            state["fc2"] = st.dense("fc2", state["gelu"], fm["gelu.out"], P["fc2.weight"], P["fc2.bias"], sp, ctx)
        if "l2" in todo:
            state["u"] = st.l2_normalize(state["fc2"], fm["fc2.out"], sp, T, ctx)
        if "sim" in todo:
            state["logits"] = st.similarity(state["u"], fm["l2.out"], self.text_q, sp, ctx)
        if "softmax" in todo:
            state["pred"], state["conf"], state["margin"] = st.softmax_stats(
                state["logits"], fm["sim.logit"], sp, T, ctx)
        if "gate" in todo:
            state["g"], state["exit"] = st.gate(state["conf"], state["margin"], state["sav"], P["gate.w"],
                                                P["gate.b"], P["gate.thr"], sp, ctx)
        return state

    @staticmethod
    def snapshot(state: dict, before: str, redo=None) -> dict:
        """A copy of ``state`` holding only what the stages before ``before`` produced (for resuming);
        ``redo``: the overflow counts of just these stages are dropped (for ``run_stages(only=redo)``)."""
        i0 = STAGE_ORDER.index(before)
        ctx = state["ctx"]
        new_ctx = st.Ctx(n=ctx.n, keep=ctx.keep)
        new_ctx.overflow = {k: v for k, v in ctx.overflow.items()
                            if (STAGE_ORDER.index(STAGE_OF[k]) < i0 if redo is None else STAGE_OF[k] not in redo)}
        out = dict(state)
        out["ctx"] = new_ctx
        return out

    def outputs(self, state: dict) -> dict:
        fm = self.spec.formats
        ctx = state["ctx"]
        out = {
            "pred": state["pred"].astype(np.int64),
            "conf": to_float(state["conf"], fm["conf.out"].F),
            "margin": to_float(state["margin"], fm["margin.out"].F),
            "sav": to_float(state["sav"], fm["sav.out"].F),
            "gate_logit": to_float(state["g"], fm["gate.out"].F),
            "exit": state["exit"].astype(bool),
        }
        total = np.zeros(ctx.n, np.int64)
        for name in COUNTER_NAMES:
            v = ctx.overflow.get(name, np.zeros(ctx.n, np.int64))
            out[f"overflow.{name}"] = v
            total = total + v
        out["overflow.total"] = total
        if ctx.keep:
            out["intermediates"] = dict(ctx.codes)
        return out

    def run(self, layer, q_int8, token_scale: float, keep: bool = False) -> dict:
        """Run the unit on ``q_int8 [n, N+1, d]`` (int8 codes, ``z = q * token_scale``).

        Returns float64 values of the fixed-point results (exact decodings of the codes):
        ``pred`` (int64), ``conf``, ``margin``, ``sav``, ``gate_logit``, ``exit`` (bool), and
        ``overflow.<cast point>`` (int64 [n], events per sample) plus ``overflow.total``.
        ``keep=True`` adds ``intermediates``: {cast point: (codes, F)} of the last cast there.
        """
        state = self.start(layer, q_int8, token_scale, keep)
        self.run_stages(state)
        return self.outputs(state)

    def float_reference(self, layer, q_int8, token_scale: float, intermediates: bool = False) -> dict:
        """:func:`float_reference` with this unit's parameters."""
        return float_reference(self.params[layer], self.text, self.logit_scale, q_int8, token_scale,
                               ln_eps=self.spec.ln_eps, intermediates=intermediates)

    def quantized_parameters(self, layer) -> dict:
        """The integer codes the HLS project embeds for ``layer`` (and the shared ones), with formats."""
        fm = self.spec.formats
        P = self.layers[layer]
        out = {k: (P[k], fm[k]) for k in ("ln.weight", "ln.bias", "fc1.weight", "fc1.bias", "fc2.weight",
                                           "fc2.bias", "gate.b")}
        for i, nm in enumerate(("gate.w_conf", "gate.w_margin", "gate.w_sav")):
            out[nm] = (P["gate.w"][i], fm[nm])
        out["gate.threshold"] = (P["gate.thr"], fm["gate.out"])
        out["sim.text"] = (self.text_q, fm["sim.text"])
        for n, c in self.consts.items():
            out[f"const.{n}"] = (c, fm["ln.var" if n == "ln.eps" else n])
        for n, tab in self.tables.items():
            fmt = fm["gelu.phi"] if n == "gelu" else fm["exp.out"] if n == "exp" else fm[f"{n}.lut"]
            out[f"lut.{n}"] = (tab, fmt)
        return out


_erf = np.frompyfunc(math.erf, 1, 1)


def gelu_exact(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU in float64."""
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


def float_reference(params: dict, text_embeddings, logit_scale: float, q_int8, token_scale: float,
                    ln_eps: float = 1e-5, intermediates: bool = False) -> dict:
    """The float64 policy on the dequantised tokens ``z = q * token_scale`` (``q_int8``: tokens
    [n, N+1, d] or their :class:`~exitlogic.fixedpoint.tapsums.TapSums`).

    Same outputs as :meth:`ExitUnit.run` (``pred, conf, margin, sav, gate_logit, exit``);
    ``intermediates=True`` adds ``values``: {cast point: float64 array} for range calibration.
    """
    s = float(token_scale)
    sums = q_int8 if isinstance(q_int8, TapSums) else None
    if sums is None:
        q = np.asarray(q_int8)
        z = q.astype(np.float64) * s
        zp = z[:, 1:, :]
        n_tok = zp.shape[1]
        x = zp.mean(axis=1)
    else:  # S1 s / N is the float64 mean of the dequantised tokens (the sum of small integers is exact)
        n_tok = sums.n_tokens
        x = sums.s1.astype(np.float64) * s / n_tok
    mu = x.mean(axis=-1, keepdims=True)
    c = x - mu
    var = (c * c).mean(axis=-1, keepdims=True)
    nrm = c / np.sqrt(var + ln_eps)
    f64 = lambda k: np.asarray(params[k], np.float64)  # noqa: E731
    o = nrm * f64("ln.weight").reshape(-1) + f64("ln.bias").reshape(-1)
    y1 = o @ f64("fc1.weight").T + f64("fc1.bias").reshape(-1)
    a1 = gelu_exact(y1)
    h = a1 @ f64("fc2.weight").T + f64("fc2.bias").reshape(-1)
    ss = (h * h).sum(axis=-1, keepdims=True)
    u = h / np.sqrt(ss)
    t = np.asarray(text_embeddings, np.float64)
    logits = float(logit_scale) * (u @ t.T)
    pred = np.argmax(logits, axis=-1)
    smax = logits.max(axis=-1)
    s2 = -np.partition(-logits, 1, axis=-1)[:, 1]
    conf = 1.0 / np.exp(logits - smax[:, None]).sum(axis=-1)
    margin = conf * (1.0 - np.exp(s2 - smax))
    if sums is None:
        sav = ((zp - x[:, None, :]) ** 2).sum(axis=-1).mean(axis=1)
    else:  # SAV = (N S2 - ||S1||^2) s^2 / N^2, from the exact integer numerator
        t_int = n_tok * sums.s2 - np.einsum("nj,nj->n", sums.s1, sums.s1)
        sav = t_int.astype(np.float64) * (s * s) / (n_tok * n_tok)
    w = f64("gate.w").reshape(3)
    gm, gs = f64("gate.mu").reshape(3), f64("gate.sigma").reshape(3)
    feats = np.stack([conf, margin, sav], axis=-1)
    g = ((feats - gm) / gs) @ w + float(f64("gate.b").reshape(-1)[0])
    thr = logit(params["tau"])
    out = {"pred": pred.astype(np.int64), "conf": conf, "margin": margin, "sav": sav, "gate_logit": g,
           "exit": g >= thr}
    if intermediates:
        ts = sums if sums is not None else TapSums.of_tokens(q)
        wf, bf = fold_gate(params)
        out["values"] = {
            "ssa.acc": ts.s1, "ssa.out": x, "sav.acc": n_tok * ts.s2, "sav.out": sav,
            "ln.mean": mu, "ln.diff": c, "ln.sumsq": (c * c).sum(axis=-1), "ln.var": var + ln_eps,
            "ln.norm": nrm, "ln.out": o, "fc1.out": y1, "gelu.out": a1, "fc2.out": h,
            "l2.sumsq": ss, "l2.out": u, "sim.logit": logits, "conf.out": conf, "margin.out": margin,
            "gate.out": np.concatenate([g, [thr]]),
            "ln.weight": f64("ln.weight"), "ln.bias": f64("ln.bias"), "fc1.weight": f64("fc1.weight"),
            "fc1.bias": f64("fc1.bias"), "fc2.weight": f64("fc2.weight"), "fc2.bias": f64("fc2.bias"),
            "sim.text": float(logit_scale) * t, "gate.w_conf": wf[:1], "gate.w_margin": wf[1:2],
            "gate.w_sav": wf[2:], "gate.b": np.array([bf]),
        }
    return out
