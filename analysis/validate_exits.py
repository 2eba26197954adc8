"""Validation of the bit-true fixed-point exit unit against the float LRA-EE policy (``lraee validate-exits``).

Inputs: a policy folder (after ``lraee thresholds``; its seed-0 ``ssa-distill`` heads, learned
gates and ``ssa-distill/learned`` thresholds), feature sets with exit-tap int8 tokens at the
candidate layers (:mod:`analysis.features`), and a fixed-point spec, either given or found by
the width search on the gating split.

Three comparisons on the eval split, per candidate layer (all samples) and end to end (the routed
system: first candidate whose comparator fires, else full depth with the INT8 model's own
prediction):

- ``arithmetic``: the fixed unit vs the float64 reference on the same int8 tokens
  (:func:`exitlogic.fixedpoint.float_reference`): the fixed-point arithmetic alone.
- ``float_policy``: the fixed unit vs the float policy exactly as ``lraee exit-report`` runs it
  (float32 heads on the cached float SSA means, float SAV, sigmoid(gate) >= tau): arithmetic plus
  the exit-tap quantization of the block output.
- ``tap_only``: the float64 reference on int8 tokens vs the float policy: the tap quantization alone.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from common import atomic
from common.errors import InputError
from analysis.exits import gate_features, int8_full
from exitlogic.artifacts import MAIN_VARIANT
from exitlogic.fixedpoint import ExitUnit, FixedPointSpec, TapSums, default_spec, memory_bits, search_widths
from exitlogic.fixedpoint import validate as V
from exitlogic.fixedpoint.search import SEARCH_SAFETY, search_knobs

SCHEMA = "lraee/validate-exits"
SCHEMA_VERSION = 1
SEED = 0
TOP1_TOLERANCE_PP = 0.1
SEARCH_ORDER = "memory"
SEARCH_MAX_N = 5000  # gating images the width search runs on (a seeded sample beyond that): bounded memory
VALIDATE_CHUNK = 4096  # eval images per chunk of the validation
SPEC_FILE = "fixedpoint_spec.json"
RESULT_FILE = "validate.json"
HIST_FILES = {"arithmetic": "errors_arithmetic.png", "float_policy": "errors_float_policy.png"}
WHAT = {
    "arithmetic": "fixed-point unit vs the float64 reference on the same int8 tokens (arithmetic only)",
    "float_policy": "fixed-point unit on int8 tokens vs the float policy of `lraee exit-report` on float "
                    "features (arithmetic plus the exit-tap quantization)",
    "tap_only": "float64 reference on int8 tokens vs the float policy on float features (the exit-tap "
                "quantization alone)",
}


def policy_unit_params(policy) -> dict:
    """{layer: ExitUnit parameter dict} of the seed-0 LRA-EE unit (refuses a policy without thresholds)."""
    if policy.meta.get("thresholds") is None:
        raise InputError(f"{policy.path / 'policy.json'}: thresholds: missing; run `lraee thresholds --policy "
                         f"{policy.path}` first")
    if SEED not in policy.seeds:
        raise InputError(f"{policy.path / 'policy.json'}: seeds {policy.seeds}; allowed: a policy with seed {SEED}")
    return {L: policy.layer_params(L, seed=SEED, variant=MAIN_VARIANT) for L in policy.candidate_layers}


def make_unit(spec: FixedPointSpec, policy, params: dict) -> ExitUnit:
    """The exit unit of ``policy`` under ``spec`` (hash checked; WidthError names the stage)."""
    return ExitUnit(spec, params, policy.tensors["text_embeddings"], float(policy.meta["logit_scale"]),
                    policy_sha256=policy.meta["policy_sha256"], policy_source=str(policy.path))


def tap_tokens(fs, layers, rows=slice(None)) -> dict:
    """{layer: (TapSums, token_scale)} of ``rows`` from a store with exit-tap sums (see
    :mod:`analysis.features`): what the SSA and SAV stages read, S1 [n, d] and S2 [n]."""
    n_tokens = int(fs.meta["geometry"]["patch_tokens"])
    out = {}
    for L in layers:
        if L not in fs.tap_layers():
            raise InputError(f"{fs.path}: tap_sum: no exit-tap sums of layer {L}; allowed: a store built with "
                             "exit-tap tokens of the candidate layers")
        s1, s2, e = fs.tap_sums(L, rows)
        out[L] = (TapSums(s1, s2, n_tokens), math.ldexp(1.0, e))
    return out


def run_chunked(unit, fs, layers, rows: np.ndarray | None = None, chunk: int = VALIDATE_CHUNK) -> tuple[dict, dict]:
    """The fixed unit and its float64 reference on the exit-tap sums of ``fs`` (``rows`` or all), read and
    run ``chunk`` images at a time; returns ({layer: outputs}, {layer: reference}) over all of them
    (per-sample arrays only: memory grows with n by a few scalars per image)."""
    n = len(fs) if rows is None else len(rows)
    fixed_parts, ref_parts = [], []
    for s in range(0, n, chunk):
        sel = slice(s, min(n, s + chunk)) if rows is None else rows[s:s + chunk]
        toks = tap_tokens(fs, layers, sel)
        fixed_parts.append(V.run_unit(unit, toks))
        ref_parts.append(V.run_reference(unit, toks))
    return _concat(fixed_parts, layers), _concat(ref_parts, layers)


def _concat(parts: list[dict], layers) -> dict:
    return {L: {k: np.concatenate([p[L][k] for p in parts]) for k in parts[0][L]} for L in layers}


def float_policy_outputs(policy, fs, layers) -> dict:
    """The float policy as ``lraee exit-report`` evaluates it (seed 0, ssa-distill, learned gate):
    {layer: pred, conf, margin, sav, gate_logit, exit} on the float features of ``fs``."""
    from exitlogic.heads import head_outputs

    text = policy.tensors["text_embeddings"]
    ls = float(policy.meta["logit_scale"])
    o = head_outputs(policy.heads(SEED, MAIN_VARIANT), fs["ssa_mean"], fs["labels"], text, ls)
    taus = policy.thresholds(SEED, f"{MAIN_VARIANT}/learned")
    feats = gate_features(o, fs, layers)
    out = {}
    for L, f in zip(layers, feats):
        i = o.at(L)
        g = policy.gate(SEED, MAIN_VARIANT, L).logit(f)
        score = 1.0 / (1.0 + np.exp(-g))
        out[L] = {"pred": o.pred[:, i].astype(np.int64), "conf": o.conf[:, i], "margin": o.margin[:, i],
                  "sav": f[:, 2], "gate_logit": g, "exit": score >= taus[L]}
    return out


START_WIDTHS = ((30, 26), (26, 22), (24, 22), (22, 20))  # (activation, parameter) word lengths


def search_rows(n: int, max_n: int = SEARCH_MAX_N) -> np.ndarray:
    """The gating rows the width search runs on: all of them up to ``max_n``, else a seeded sample (sorted)."""
    if n <= max_n:
        return np.arange(n)
    return np.sort(np.random.default_rng(20_000).choice(n, size=max_n, replace=False))


def run_search(policy, params: dict, tokens: dict, full_pred: np.ndarray, target: float, start: FixedPointSpec | None,
               safety: float = SEARCH_SAFETY, progress: bool = True, log=print) -> tuple[FixedPointSpec, dict]:
    """Minimal widths on ``tokens`` (the gating split): start from ``start`` or the generous default
    spec sized on these tokens; criterion ``route`` with ``safety`` on the estimated disagreement
    rates (see :func:`exitlogic.fixedpoint.search_widths`)."""
    from tqdm import tqdm

    text = policy.tensors["text_embeddings"]
    ls = float(policy.meta["logit_scale"])
    sha = policy.meta["policy_sha256"]
    t0 = time.time()
    # generous starting points, widest first that the 61-bit intermediates allow (d = 768 needs narrower
    # activations than d = 128); the first that already meets the target is searched down from
    starts = [start] if start is not None else [(a, p) for a, p in START_WIDTHS]
    res, err = None, None
    for st in starts:
        try:
            spec0 = st if isinstance(st, FixedPointSpec) else default_spec(
                params, text, ls, tokens, act_bits=st[0], param_bits=st[1], policy_sha256=sha)
            spec0.policy_sha256 = sha
            knobs = search_knobs(spec0, order=SEARCH_ORDER)
            bar = tqdm(total=len(knobs), desc="width search", unit="knob", disable=not progress)

            def tick(knob):
                bar.set_postfix_str(knob)
                bar.update(1)

            try:
                res = search_widths(spec0, params, text, ls, tokens, target=target, criterion="route",
                                    full_pred=full_pred, safety=safety, order=SEARCH_ORDER, progress=tick)
            finally:
                bar.close()
            break
        except InputError as e:  # too wide for the 61-bit intermediates, or below the target: next start
            err = e
            if start is not None:
                raise
    if res is None:
        raise InputError(f"width search: no starting spec reaches the target {target} ({err})")
    spec = res.spec
    spec.policy_sha256 = sha
    spec.source = None
    unit = make_unit(spec, policy, params)
    fixed = V.run_unit(unit, tokens)
    ref = V.run_reference(unit, tokens)
    thr = {L: unit.layers[L]["logit_tau"] for L in tokens}
    final = V.agreement_stats(fixed, ref, sorted(tokens), full_pred, thr)
    final = {k: ({str(L): x for L, x in v.items()} if isinstance(v, dict) else v) for k, v in final.items()}
    rec = {"split": "gating", "n": int(len(full_pred)), "target": target, "criterion": "route", "safety": safety,
           "order": SEARCH_ORDER,
           "rule": "greedy per knob, most stored bits first (word length W with I kept, LUT sizes, seed-table bits, "
                   "Newton steps), binary search for the smallest value with: every layer's and the routed "
                   "exit-decision disagreement <= 1 - target (observed), safety x the estimated disagreement rates "
                   "<= 1 - target, routed-outcome agreement >= target; on the gating split",
           "start": "given spec" if start is not None else "generous default (default_spec)",
           "start_score": {"exit": res.start_exit_agreement, "outcome": res.start_pred_agreement},
           "score": {"exit": res.exit_agreement, "outcome": res.pred_agreement},
           "final_on_search_split": final,
           "evaluations": res.evaluations, "steps": res.steps, "memory_bits_start": res.memory_start}
    log(f"width search on the gating split ({len(full_pred)} images, {res.evaluations} evaluations, "
        f"{time.time() - t0:.1f} s): routed exit agreement {100 * final['route_exit_agreement']:.2f}% (estimated "
        f"disagreement {100 * final['route_disagreement_estimate']:.3f}%), outcome agreement "
        f"{100 * final['outcome_agreement']:.2f}%; memory {res.memory_start['total_bits']} -> "
        f"{res.memory['total_bits']} bits")
    return spec, rec


def _compare(fixed: dict, ref: dict, layers, full_pred, labels, thr: dict) -> dict:
    per_layer = {str(L): V.compare_layer(fixed[L], ref[L]) for L in layers}
    e2e = V.compare_routes(V.routed(fixed, layers, full_pred), V.routed(ref, layers, full_pred), labels, layers)
    st = V.agreement_stats(fixed, ref, layers, full_pred, thr)
    for L in layers:
        per_layer[str(L)]["exit_disagreement_estimate"] = st["layer_disagreement_estimate"][L]
    e2e["exit_disagreement_estimate"] = st["route_disagreement_estimate"]
    return {"per_layer": per_layer, "end_to_end": e2e}


def _met(comp: dict, target: float) -> dict:
    e = comp["end_to_end"]
    layer_ok = {L: r["exit_agreement"] >= target for L, r in comp["per_layer"].items()}
    return {"per_layer_exit_agreement": layer_ok,
            "end_to_end_exit_agreement": e["exit_agreement"] >= target,
            "top1_within_tolerance": abs(e["top1_delta_pp"]) <= TOP1_TOLERANCE_PP + 1e-9,
            "all": all(layer_ok.values()) and e["exit_agreement"] >= target
            and abs(e["top1_delta_pp"]) <= TOP1_TOLERANCE_PP + 1e-9}


def validate(policy, spec: FixedPointSpec, eval_fs, target: float, tap_meta: dict, search_rec: dict | None = None,
             spec_origin: str = "search", log=print) -> tuple[dict, dict]:
    """All three comparisons on ``eval_fs``; returns (validate.json's dict, histogram data)."""
    layers = policy.candidate_layers
    params = policy_unit_params(policy)
    unit = make_unit(spec, policy, params)
    labels = np.asarray(eval_fs["labels"], np.int64)
    full_pred, _ = int8_full(eval_fs)
    fixed, ref = run_chunked(unit, eval_fs, layers)
    flt = float_policy_outputs(policy, eval_fs, layers)
    thr = {L: unit.layers[L]["logit_tau"] for L in layers}
    comps = {"arithmetic": _compare(fixed, ref, layers, full_pred, labels, thr),
             "float_policy": _compare(fixed, flt, layers, full_pred, labels, thr),
             "tap_only": _compare(ref, flt, layers, full_pred, labels, thr)}
    for k, c in comps.items():
        c["what"] = WHAT[k]
        if k != "tap_only":
            c["targets_met"] = _met(c, target)
    e2e_float = comps["float_policy"]["end_to_end"]
    taus = {str(L): float(params[L]["tau"]) for L in layers}
    sat = {str(L): float(eval_fs.meta.get("tokens", {}).get("saturated_fraction", {}).get(str(L), float("nan")))
           for L in layers}
    result = {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "policy": {"path": str(policy.path), "policy_sha256": policy.meta["policy_sha256"], "seed": SEED,
                   "heads": MAIN_VARIANT, "gate": f"{MAIN_VARIANT}/learned", "thresholds": taus},
        "model": policy.meta.get("model"), "precision": policy.meta.get("precision"),
        "data": {"eval": eval_fs.meta["dataset"], "n_eval": int(len(labels)),
                 "search": None if search_rec is None else search_rec.get("data")},
        "candidate_layers": list(layers),
        "target": {"exit_agreement": target, "top1_delta_pp": TOP1_TOLERANCE_PP},
        "tap": {**tap_meta, "saturated_fraction_eval": sat},
        "spec": {"file": spec_origin, "policy_sha256": spec.policy_sha256,
                 "formats": {n: f.ap_type() for n, f in spec.formats.items()},
                 "luts": {n: {"range": v.range, "entries": v.entries} for n, v in spec.luts.items()},
                 "units": {n: {"lut_bits": u.lut_bits, "newton_steps": u.newton_steps} for n, u in spec.units.items()}},
        "memory_bits": memory_bits(spec, len(layers)),
        "search": search_rec,
        "int8_top1": float(np.mean(full_pred == labels)),
        "float_policy_top1": e2e_float["top1_ref"],
        "fixed_top1": e2e_float["top1_fixed"],
        "comparisons": comps,
        "report_rows": report_rows(comps),
        "overflow": {str(L): V.overflow_summary(fixed[L]) for L in layers},
    }
    hist = {k: {L: {q: V.errors(fixed[L], (ref if k == "arithmetic" else flt)[L], q) for q in V.QUANTITIES}
                for L in layers} for k in HIST_FILES}
    return result, hist


def report_rows(comps: dict) -> list[list[str]]:
    """Rows [scope, exit-decision agreement, top-1 fixed %, top-1 reference %] for reports."""
    rows = []
    for k, label in (("arithmetic", "(a) vs float64 on int8 tokens"), ("float_policy", "(b) vs float policy"),
                     ("tap_only", "tap quantization alone")):
        c = comps[k]
        for L, r in c["per_layer"].items():
            rows.append([f"{label}, layer {L}", f"{100 * r['exit_agreement']:.2f} %", "", ""])
        e = c["end_to_end"]
        rows.append([f"{label}, end to end", f"{100 * e['exit_agreement']:.2f} %", f"{100 * e['top1_fixed']:.2f}",
                     f"{100 * e['top1_ref']:.2f}"])
    return rows


def plot_error_histograms(hist: dict, title: str, path: Path) -> None:
    """2 x 2 histograms (conf, margin, SAV, gate logit) of the signed error fixed - ref, one line per layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(8.0, 5.6))
    for ax, q in zip(axes.ravel(), V.QUANTITIES):
        for L, errs in hist.items():
            e = errs[q]
            lim = float(np.max(np.abs(e))) if e.size else 0.0
            lim = lim if lim > 0 else 1e-12
            ax.hist(e, bins=61, range=(-lim, lim), histtype="step", lw=1.2, label=f"L{L} (max {lim:.2g})")
        ax.set_yscale("log")
        ax.set_title(f"{q}: fixed - ref", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def write_outputs(out: Path, result: dict, hist: dict, spec: FixedPointSpec | None) -> list[Path]:
    """Write (atomically) the spec (when searched), the histogram PNGs and validate.json (last)."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if spec is not None:
        spec.save(out / SPEC_FILE)
        written.append(out / SPEC_FILE)
    for k, name in HIST_FILES.items():
        title = (f"{result['model']} {result['precision']}, {result['data']['eval']} (n={result['data']['n_eval']}): "
                 f"{k.replace('_', ' ')}")
        with atomic.atomic_path(out / name) as tmp:
            plot_error_histograms(hist[k], title, tmp)
        written.append(out / name)
    atomic.write_json(out / RESULT_FILE, result)
    written.append(out / RESULT_FILE)
    return written


def summary_lines(result: dict) -> list[str]:
    """Human-readable summary (the command prints it)."""
    lines = []
    for k in ("arithmetic", "float_policy", "tap_only"):
        c = result["comparisons"][k]
        e = c["end_to_end"]
        per = " ".join(f"L{L} {100 * r['exit_agreement']:.2f}%" for L, r in c["per_layer"].items())
        met = c.get("targets_met", {}).get("all")
        tag = "" if met is None else ("  [targets met]" if met else "  [TARGETS NOT MET]")
        lines.append(f"{k:<13} exit agreement {per} | end to end {100 * e['exit_agreement']:.2f}% "
                     f"({e['exit_disagreements']} of {e['n']}), top-1 {100 * e['top1_fixed']:.2f}% vs "
                     f"{100 * e['top1_ref']:.2f}% ({e['top1_delta_pp']:+.2f} pp){tag}")
    m = result["memory_bits"]
    ov = sum(v["total"] for v in result["overflow"].values())
    lines.append(f"memory: weights {m['weights_bits']} bits, LUTs {m['lut_bits']} bits, total {m['total_bits']} bits; "
                 f"overflow events on eval: {ov}")
    return lines
