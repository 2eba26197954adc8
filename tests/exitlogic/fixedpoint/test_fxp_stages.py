"""Each stage against float64 on the same fixed-point inputs, within the bound its docstring states."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from exitlogic.fixedpoint import ExitUnit, Fmt, LutParams, quantize, to_float
from exitlogic.fixedpoint import stages as st
from exitlogic.fixedpoint.unit import fold_gate, gelu_exact

SLACK = 1.0 + 1e-9
TINY = 1e-12


def rr(f: Fmt) -> float:
    return f.lsb if f.rounding == "TRN" else f.lsb / 2


def codes_in(rng, f: Fmt, lo: float, hi: float, n) -> np.ndarray:
    return quantize(rng.uniform(lo, hi, n), f).codes


def test_dense_exact_products_one_rounding(unit):
    spec, P = unit.spec, unit.layers[6]
    rng = np.random.default_rng(1)
    fin = spec.formats["ln.out"]
    x = codes_in(rng, fin, -4, 4, (64, spec.d))
    for name, w, b in (("fc1", P["fc1.weight"], P["fc1.bias"]),):
        ctx = st.Ctx(n=64)
        y = st.dense(name, x, fin, w, b, spec, ctx)
        ref = to_float(x, fin.F) @ to_float(w, spec.formats[f"{name}.weight"].F).T + to_float(
            b, spec.formats[f"{name}.bias"].F)
        fo = spec.formats[f"{name}.out"]
        assert np.max(np.abs(to_float(y, fo.F) - ref)) <= rr(fo) * SLACK + TINY


@pytest.mark.parametrize("coarse", [False, True])
def test_gelu_within_bound(unit, coarse):
    spec = copy.deepcopy(unit.spec)
    if coarse:  # a small table, a narrow Phi: the bound must still hold
        spec.luts["gelu"] = LutParams(4.0, 64)
        spec.formats["gelu.phi"] = Fmt(12, 1, False, "TRN", "SAT")
    lut = spec.luts["gelu"]
    table = st.gelu_phi_table(lut.range, lut.entries, spec.formats["gelu.phi"])
    fin, fphi, fo = spec.formats["fc1.out"], spec.formats["gelu.phi"], spec.formats["gelu.out"]
    rng = np.random.default_rng(2)
    R, step = lut.range, 2 * lut.range / lut.entries
    x = np.concatenate([codes_in(rng, fin, -12, 12, 20000), codes_in(rng, fin, -R - 0.01, -R + 0.01, 500),
                        codes_in(rng, fin, R - 0.01, R + 0.01, 500),
                        quantize(np.arange(-R, R + step, step), fin).codes])
    ctx = st.Ctx(n=x.size)
    g = to_float(st.gelu(x[:, None], fin, spec, table, ctx)[:, 0], fo.F)
    xv = to_float(x, fin.F)
    ref = gelu_exact(xv)
    inside = (xv >= -R) & (xv < R)
    bound = np.where(inside, np.abs(xv) * (0.242 * step ** 2 / 8 + 2 * rr(fphi)),
                     R * 0.5 * math.erfc(R / math.sqrt(2))) + rr(fo)
    assert np.all(np.abs(g - ref) <= bound * SLACK + TINY)


def test_layernorm_within_bound(unit, world):
    spec, P, consts = unit.spec, unit.layers[8], unit.consts
    fm = spec.formats
    q, s = world["samples"][8]
    ctx = st.Ctx(n=q.shape[0])
    x = st.ssa_mean(q, st.log2_exact(s, "s"), spec, consts, ctx)
    fin = fm["ssa.out"]
    o = st.layernorm(x, fin, P["ln.weight"], P["ln.bias"], spec, consts, unit.tables, ctx)
    xv = to_float(x, fin.F)
    gam, bet = to_float(P["ln.weight"], fm["ln.weight"].F), to_float(P["ln.bias"], fm["ln.bias"].F)
    d, eps = spec.d, spec.ln_eps
    mu = xv.mean(-1, keepdims=True)
    c = xv - mu
    v = (c * c).mean(-1, keepdims=True) + eps
    ref = c / np.sqrt(v) * gam + bet
    rd = consts["ln.recip"] * fm["ln.recip"].lsb
    e_mu = np.abs(xv.sum(-1, keepdims=True)) * abs(rd - 1 / d) + rr(fm["ln.mean"])
    e_c = e_mu + rr(fm["ln.diff"])
    e_ss = (2 * np.abs(c) * e_c + e_c ** 2).sum(-1, keepdims=True) + rr(fm["ln.sumsq"])
    e_v = (e_ss * rd + (c * c).sum(-1, keepdims=True) * abs(rd - 1 / d) + rr(fm["ln.var"])
           + abs(consts["ln.eps"] * fm["ln.var"].lsb - eps))
    u = spec.units["ln.rsqrt"]
    eps_r = st.norm_unit_rel_error("rsqrt", u.lut_bits, u.newton_steps, st._unit_fmts(fm, "ln.rsqrt"))
    r = 1 / np.sqrt(v)
    rel_r = eps_r + 0.5 * (e_v / v) * (1 + e_v / v)
    e_n = np.abs(c) * r * rel_r + e_c * r * (1 + rel_r) + rr(fm["ln.norm"])
    bound = np.abs(gam) * e_n + rr(fm["ln.out"])
    err = np.abs(to_float(o, fm["ln.out"].F) - ref)
    assert np.all(err <= bound * 1.01 + TINY)
    assert not any(np.any(v) for v in ctx.overflow.values())


@pytest.mark.parametrize("kind", ["rsqrt", "recip"])
@pytest.mark.parametrize("cfg", [(6, 0, 18, 28, 24), (6, 1, 18, 28, 24), (6, 2, 18, 28, 24), (3, 2, 10, 20, 16),
                                 (1, 1, 4, 12, 8)])
def test_norm_unit_within_bound(kind, cfg):
    t, steps, wl, ww, fmn = cfg
    fm = {"mant": Fmt(fmn + 2, 2, False, "TRN"), "lut": Fmt(wl, 1, False), "work": Fmt(ww, 3)}
    table = st.norm_table(kind, t, fm["lut"])
    rng = np.random.default_rng(3)
    v = np.concatenate([rng.integers(1, 2 ** 45, 5000), rng.integers(1, 2 ** 10, 5000),
                        np.arange(1, 3000), 2 ** np.arange(0, 50)]).astype(np.int64)
    fv = 20
    ctx = st.Ctx(n=v.size)
    Y, fy, k = st.norm_unit("u", kind, v, fv, fm, t, steps, table, ctx)
    r = Y * np.ldexp(1.0, -(fy + k))
    val = np.ldexp(v.astype(np.float64), -fv)
    ref = 1 / np.sqrt(val) if kind == "rsqrt" else 1 / val
    assert np.max(np.abs(r / ref - 1)) <= st.norm_unit_rel_error(kind, t, steps, fm)
    # zero input: counted, result 0
    ctx = st.Ctx(n=1)
    Y, _, _ = st.norm_unit("u", kind, np.zeros(1, np.int64), fv, fm, t, steps, table, ctx)
    assert Y[0] == 0 and ctx.overflow["u"][0] == 1


def test_l2_and_similarity_within_bound(unit):
    spec = unit.spec
    fm = spec.formats
    rng = np.random.default_rng(4)
    fin = fm["fc2.out"]
    h = codes_in(rng, fin, -2, 2, (300, spec.e))
    h[0] = 0  # h = 0 -> u = 0
    ctx = st.Ctx(n=300)
    u = st.l2_normalize(h, fin, spec, unit.tables, ctx)
    hv = to_float(h, fin.F)
    ss = (hv * hv).sum(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = np.where(ss > 0, hv / np.sqrt(ss), 0.0)
    un = spec.units["l2.rsqrt"]
    eps_r = st.norm_unit_rel_error("rsqrt", un.lut_bits, un.newton_steps, st._unit_fmts(fm, "l2.rsqrt"))
    with np.errstate(invalid="ignore", divide="ignore"):
        bound = np.abs(ref) * (eps_r + np.where(ss > 0, rr(fm["l2.sumsq"]) / (2 * ss), 0)) + rr(fm["l2.out"])
    uv = to_float(u, fm["l2.out"].F)
    assert np.all(np.abs(uv - ref) <= bound * 1.01 + TINY)
    assert np.all(u[0] == 0) and ctx.overflow["l2.rsqrt"][0] == 1
    # similarity: exact accumulation, one rounding (logit scale folded into the text codes)
    s = st.similarity(u, fm["l2.out"], unit.text_q, spec, ctx)
    ref_s = uv @ to_float(unit.text_q, fm["sim.text"].F).T
    assert np.max(np.abs(to_float(s, fm["sim.logit"].F) - ref_s)) <= rr(fm["sim.logit"]) * SLACK + TINY
    # against the unquantised logit_scale * t: add sum_j |u_j| r(sim.text)
    ref_t = uv @ (unit.logit_scale * unit.text).T
    extra = np.abs(uv).sum(-1, keepdims=True) * rr(fm["sim.text"])
    assert np.all(np.abs(to_float(s, fm["sim.logit"].F) - ref_t) <= extra + rr(fm["sim.logit"]) + TINY)


def test_softmax_stats_within_bound(unit):
    spec = unit.spec
    fm = spec.formats
    fin = fm["sim.logit"]
    rng = np.random.default_rng(5)
    n, K = 2000, spec.k
    s = codes_in(rng, fin, -1, 1, (n, K)) * rng.integers(1, 60, (n, 1))
    s[:50, 3] = s[:50].max(-1)  # ties with the maximum
    s[:50, 7] = s[:50, 3]
    ctx = st.Ctx(n=n)
    pred, conf, margin = st.softmax_stats(s, fin, spec, unit.tables, ctx)
    sv = to_float(s, fin.F)
    assert np.array_equal(pred, np.argmax(sv, -1))
    smax = sv.max(-1, keepdims=True)
    z = np.exp(sv - smax).sum(-1)
    c_ref = 1 / z
    s2 = -np.partition(-sv, 1, axis=-1)[:, 1]
    e2 = np.exp(s2 - smax[:, 0])
    m_ref = c_ref * (1 - e2)
    lut = spec.luts["exp"]
    step = lut.range / lut.entries
    dz = (z - 1) * step ** 2 / 8 + K * (2 * rr(fm["exp.out"]) + math.exp(-lut.range))
    u = spec.units["conf.recip"]
    eps_r = st.norm_unit_rel_error("recip", u.lut_bits, u.newton_steps, st._unit_fmts(fm, "conf.recip"))
    e_conf = c_ref * (dz / z * (1 + dz / z) + eps_r) + rr(fm["conf.out"])
    cv = to_float(conf, fm["conf.out"].F)
    assert np.all(np.abs(cv - c_ref) <= e_conf * SLACK + TINY)
    e_e2 = e2 * step ** 2 / 8 + 2 * rr(fm["exp.out"]) + math.exp(-lut.range)
    e_m = e_conf * (1 - e2) + (c_ref + e_conf) * e_e2 + rr(fm["margin.out"])
    mv = to_float(margin, fm["margin.out"].F)
    assert np.all(np.abs(mv - m_ref) <= e_m * SLACK + TINY)
    assert np.all(mv[:50] == 0)  # a tie with the maximum: E = 1 exactly, margin exactly 0


def test_exp_table_exact_at_zero(unit):
    assert unit.tables["exp"][0] == 1 << unit.spec.formats["exp.out"].F


def test_gate_within_bound(unit, world):
    spec = unit.spec
    fm = spec.formats
    P = unit.layers[10]
    rng = np.random.default_rng(6)
    n = 3000
    conf = codes_in(rng, fm["conf.out"], 0.04, 1, n)
    margin = codes_in(rng, fm["margin.out"], 0, 1, n)
    sav = codes_in(rng, fm["sav.out"], 0, 100, n)
    ctx = st.Ctx(n=n)
    g, ex = st.gate(conf, margin, sav, P["gate.w"], P["gate.b"], P["gate.thr"], spec, ctx)
    wf, bf = fold_gate(world["params"][10])
    f = np.stack([to_float(conf, fm["conf.out"].F), to_float(margin, fm["margin.out"].F),
                  to_float(sav, fm["sav.out"].F)], -1)
    ref = f @ wf + bf
    names = ("gate.w_conf", "gate.w_margin", "gate.w_sav")
    bound = sum(np.abs(f[:, i]) * rr(fm[nm]) for i, nm in enumerate(names)) + rr(fm["gate.b"]) + rr(fm["gate.out"])
    gv = to_float(g, fm["gate.out"].F)
    assert np.all(np.abs(gv - ref) <= bound * SLACK + TINY)
    assert np.array_equal(ex, gv >= P["logit_tau"])


def test_unit_outputs_shape_and_types(unit, world):
    q, s = world["samples"][6]
    out = unit.run(6, q[:7], s)
    for k in ("pred", "conf", "margin", "sav", "gate_logit", "exit", "overflow.total", "overflow.fc1.out"):
        assert out[k].shape == (7,), k
    assert out["exit"].dtype == bool and out["pred"].dtype == np.int64
    assert isinstance(unit, ExitUnit)
