"""The float LRA-EE experiments: train exit heads and gates, choose thresholds, evaluate and report.

Three steps, each a command (``lraee train-exits``, ``lraee thresholds``, ``lraee exit-report``):

1. :func:`train_exits` — per seed, heads for every block 1..depth (SSA distilled = LRA-EE, SSA
   hard-label, CLS distilled) on the train split's cached features of the INT8 backbone (the
   teacher for distillation: the FP32 model's final embeddings of the same images); candidate
   layers from :mod:`exitlogic.pruning` (INR from a QIRC profile) unless given; learned gates on
   a seeded subsample of the gating split; the gating sample's per-sample predictions are stored
   for the threshold search.
2. :func:`choose_thresholds` — LCT per seed for every policy (``{variant}/learned`` and
   ``ssa-distill/heuristic``) under a compute budget, and the Pareto set (``pareto.json``, what
   ``lraee dse --policies`` sweeps).
3. :func:`exit_report` — on the eval split: the trace, baselines, analyses over seeds, plots.

Seeds re-draw (i) head initialisation and minibatch order and (ii) the gating-split subsample
(``gating_fraction`` of it); backbone weights and the eval split stay fixed (paper Sec. 5.2).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from common import atomic
from common.errors import InputError
from common.timing import span
from exitlogic import analyses as A
from exitlogic.artifacts import MAIN_VARIANT, VARIANTS, load_gating, save_policy
from exitlogic.baselines import TableInputs, baseline_rows, pabee_route
from hwsim.workload import cumulative_fraction, flops_saving, head_fraction
from exitlogic.gates import fit_gate, stack_features
from exitlogic.policy import apply_route, default_grid, pareto_records, route, sweep
from exitlogic.pruning import select_candidates
from quant.geometry import EncoderGeometry, ExitHeadGeometry

HEAD_SOURCE = {"ssa-distill": ("ssa_mean", "distill"), "ssa-hard": ("ssa_mean", "hard"),
               "cls-distill": ("cls", "distill")}
POLICIES = ("ssa-distill/learned", "ssa-hard/learned", "cls-distill/learned", "ssa-distill/heuristic")


def _check_finite(fs, source: str) -> None:
    """Refuse NaN/inf features (a damaged or hand-edited store), reading the store chunk by chunk."""
    arrays = getattr(fs, "arrays", fs)  # a FeatureSet (store) or a plain mapping of arrays
    for k in ("ssa_mean", "cls", "sav", "final_embedding"):
        if k not in arrays:
            continue
        a = arrays[k]
        chunks = a.chunks() if hasattr(a, "chunks") else [(0, a)]
        if not all(np.isfinite(c).all() for _, c in chunks):
            raise InputError(f"{source}: {k}: NaN or infinite features; allowed: finite values "
                             "(rebuild the feature cache)")


def int8_full(fs) -> tuple[np.ndarray, np.ndarray]:
    """The INT8 model's own full-depth prediction [n] and its correctness (from the cache's top-5)."""
    pred = np.asarray(fs["top5"][:, 0], np.int64)
    return pred, pred == np.asarray(fs["labels"])


def gate_features(outs, fs, cand: list[int]) -> list[np.ndarray]:
    """Per candidate layer L the [n, 3] (conf, margin, SAV) of heads ``outs`` on features ``fs``."""
    return [stack_features(outs.conf[:, outs.at(L)], outs.margin[:, outs.at(L)], fs["sav"][:, L - 1]) for L in cand]


# ---- 1. train ------------------------------------------------------------------------------
def train_exits(train_fs, teacher_fs, gating_fs, geometry: EncoderGeometry, out: Path, seeds: list[int],
                head_cfg, inr: dict[int, float] | None, exit_layers: list[int] | None, kappa: float,
                viability: float, max_candidates: int, gating_fraction: float, gate_l2: float,
                provenance: dict, device: str = "cpu", progress: bool = True, log=print) -> dict:
    """Train heads and gates, select candidates, write the policy folder; returns policy.json's dict."""
    from exitlogic.heads import head_outputs, train_heads

    for fs, name in ((train_fs, "train"), (teacher_fs, "teacher"), (gating_fs, "gating")):
        _check_finite(fs, f"{fs.path} ({name} features)")
    if not np.array_equal(train_fs["labels"], teacher_fs["labels"]):
        raise InputError(f"{teacher_fs.path}: labels differ from {train_fs.path}; allowed: FP32 features of the "
                         "same images")
    depth = geometry.depth
    layers = list(range(1, depth + 1))
    text = gating_fs["text_embeddings"]
    logit_scale = float(gating_fs.meta["logit_scale"])
    t0 = time.time()
    tensors = {"text_embeddings": text.astype(np.float32)}
    gate_outs = {}
    sources = {"ssa_mean": train_fs["ssa_mean"], "cls": train_fs["cls"]}
    for s in seeds:
        with span(f"head training seed {s}", len(train_fs), split="train"):
            trained = train_heads(sources, [HEAD_SOURCE[v] for v in VARIANTS], train_fs["labels"], text, logit_scale,
                                  layers, head_cfg, seed=s, teacher=teacher_fs["final_embedding"], device=device,
                                  progress=progress, desc=f"heads seed {s}", head=ExitHeadGeometry.of(geometry))
        for v, heads in zip(VARIANTS, trained):
            tensors.update(heads.tensors(f"seed{s}.{v}"))
            gate_outs[(s, v)] = head_outputs(heads, gating_fs[HEAD_SOURCE[v][0]], gating_fs["labels"], text,
                                             logit_scale)
    log(f"trained {len(seeds) * len(VARIANTS)} x {depth} heads in {time.time() - t0:.1f} s")

    full_pred, full_correct = int8_full(gating_fs)
    head_acc = {L: float(np.mean([gate_outs[(s, MAIN_VARIANT)].correct[:, L - 1].mean() for s in seeds]))
                for L in layers[:-1]}
    if exit_layers:
        candidates = {"candidate_layers": sorted(exit_layers), "source": "--exit-layers",
                      "head_accuracy": {str(L): head_acc[L] for L in layers[:-1]}}
    else:
        if inr is None:
            raise InputError("candidate selection needs the QIRC profile's INR; give --profile or --exit-layers")
        candidates = select_candidates(head_acc, float(full_correct.mean()), inr, depth, kappa=kappa,
                                       viability=viability, max_candidates=max_candidates)
        candidates["source"] = "INR pruning (paper Eq. 6)"
    cand = candidates["candidate_layers"]
    log(f"candidate exit layers {cand} ({candidates['source']})")

    gating = {}
    n_gate = len(gating_fs["labels"])
    m = max(1, int(round(gating_fraction * n_gate)))
    for s in seeds:
        idx = np.sort(np.random.default_rng(10_000 + s).choice(n_gate, size=m, replace=False))
        gating[f"seed{s}.labels"] = gating_fs["labels"][idx].astype(np.int64)
        gating[f"seed{s}.full_correct"] = full_correct[idx].astype(np.uint8)
        gating[f"seed{s}.full_pred"] = full_pred[idx].astype(np.int64)
        for v in VARIANTS:
            outs = gate_outs[(s, v)]
            feats = gate_features(outs, gating_fs, cand)
            scores, confs, corr = [], [], []
            for L, f in zip(cand, feats):
                y = outs.correct[idx, L - 1]
                g = fit_gate(f[idx], y, l2=gate_l2)
                for k, a in g.to_arrays().items():
                    tensors[f"seed{s}.{v}.gate.L{L}.{k}"] = a
                scores.append(g.score(f[idx]))
                confs.append(outs.conf[idx, L - 1])
                corr.append(y)
            gating[f"seed{s}.{v}.score"] = np.stack(scores, 1)
            gating[f"seed{s}.{v}.conf"] = np.stack(confs, 1)
            gating[f"seed{s}.{v}.correct"] = np.stack(corr, 1).astype(np.uint8)
            gating[f"seed{s}.{v}.pred"] = outs.pred[idx][:, [L - 1 for L in cand]]
    meta = dict(provenance, geometry=geometry.to_dict(), num_classes=int(text.shape[0]),
                classes=list(gating_fs.meta["classes"]), logit_scale=logit_scale, layers=layers,
                candidates=candidates, head_config=head_cfg.to_dict(), seeds=list(seeds), variants=list(VARIANTS),
                gate_l2=gate_l2, gating_fraction=gating_fraction, gating_n=m,
                keys={"train": train_fs.meta["key"], "teacher": teacher_fs.meta["key"],
                      "gating": gating_fs.meta["key"]},
                data={"train": train_fs.meta["dataset"], "gating": gating_fs.meta["dataset"]},
                thresholds=None)
    save_policy(out, meta, tensors, gating)
    return meta


# ---- 2. thresholds -------------------------------------------------------------------------
def choose_thresholds(policy, budget: float, grid: np.ndarray, with_heads: bool = False, log=print) -> dict:
    """LCT for every seed and policy; writes thresholds into policy.json and ``pareto.json``.

    A budget no threshold set on the grid reaches takes the least-compute set, with a warning and
    ``budget_met: false`` in the record."""
    if not 0.0 < budget <= 1.0:
        raise InputError(f"--budget {budget}: allowed: a compute fraction in (0, 1]")
    if np.any((grid < 0) | (grid > 1)):
        raise InputError(f"--grid: thresholds {grid.min()}..{grid.max()}; allowed: values in [0, 1]")
    geometry = EncoderGeometry.from_dict(policy.meta["geometry"])
    cand = policy.candidate_layers
    cum = cumulative_fraction(geometry)[[L - 1 for L in cand]]
    hf = head_fraction(geometry, policy.meta["num_classes"]) if with_heads else 0.0
    gating = load_gating(policy)
    by_seed, pareto = {}, None
    for s in policy.seeds:
        by = {}
        full = gating[f"seed{s}.full_correct"].astype(bool)
        for name in POLICIES:
            v, gate = name.split("/")
            scores = gating[f"seed{s}.{v}.score"] if gate == "learned" else gating[f"seed{s}.{v}.conf"]
            res = sweep(scores, gating[f"seed{s}.{v}.correct"].astype(bool), full, cum, grid, hf)
            i = res.choose(budget)
            met = i >= 0
            if not met:  # the budget is out of reach: the least-compute set (most accurate among equals)
                lo = np.flatnonzero(res.compute <= res.compute.min() + 1e-12)
                i = int(lo[np.argmax(res.accuracy[lo])])
                log(f"warning: seed {s} {name}: no threshold set on the grid fits --budget {budget}; using the "
                    f"least-compute set (compute {res.compute[i]:.3f} of full depth)")
            by[name] = {"thresholds": {str(L): float(t) for L, t in zip(cand, res.thresholds(i))},
                        "accuracy_gating": float(res.accuracy[i]), "flops_saving_gating": float(1 - res.compute[i]),
                        "budget_met": bool(met), "pareto": pareto_records(res, cand)}
            if s == policy.seeds[0] and name == f"{MAIN_VARIANT}/learned":
                pareto = {"schema_version": 1, "depth": geometry.depth, "candidate_layers": cand,
                          "split": "gating", "budget": budget, "seed": s, "policy": name,
                          "points": pareto_records(res, cand)}
        by_seed[str(s)] = by
    meta = dict(policy.meta)
    meta["thresholds"] = {"budget": budget, "grid": [float(x) for x in grid], "with_heads": with_heads,
                          "by_seed": by_seed}
    atomic.write_json(policy.path / "pareto.json", pareto)
    atomic.write_json(policy.path / "policy.json", meta)
    policy.meta = meta
    return meta["thresholds"]


# ---- 3. evaluate and report ----------------------------------------------------------------
def _policy_eval(name, pos, cand, depth, cand_pred, full_pred, labels, geometry, K, full_correct) -> dict:
    r = apply_route(pos, cand, depth, cand_pred, full_pred, labels)
    return {"policy": name, "top1": r.accuracy,
            "flops_saving": flops_saving(geometry, r.exit_layer),
            "flops_saving_with_heads": flops_saving(geometry, r.exit_layer, K, r.heads_evaluated),
            "exit_distribution": A.exit_distribution(r.exit_layer, cand, depth),
            "selectivity": A.selectivity(pos, r.correct, len(cand)),
            "quadrants": A.quadrants(r.correct, full_correct), "_routed": r}


def _agg(records: list[dict], keys=("top1", "flops_saving", "flops_saving_with_heads")) -> dict:
    return {k: A.mean_std([r[k] for r in records]) for k in keys}


def exit_report(policy, eval_fs, fp32_eval_fs, out: Path, log=print) -> dict:
    """Evaluate every seed's policies and the baselines on the eval split; write results, trace, plots."""
    from exitlogic.heads import head_outputs

    _check_finite(eval_fs, f"{eval_fs.path} (eval features)")
    if policy.meta.get("thresholds") is None:
        raise InputError(f"{policy.path / 'policy.json'}: thresholds: missing; run `lraee thresholds --policy "
                         f"{policy.path}` first")
    geometry = EncoderGeometry.from_dict(policy.meta["geometry"])
    depth, cand, K = geometry.depth, policy.candidate_layers, int(policy.meta["num_classes"])
    labels = np.asarray(eval_fs["labels"], np.int64)
    if eval_fs["text_embeddings"].shape[0] != K:
        raise InputError(f"{eval_fs.path}: {eval_fs['text_embeddings'].shape[0]} classes, the policy has {K}; "
                         "allowed: data with the policy's classes")
    text = policy.tensors["text_embeddings"]
    logit_scale = float(policy.meta["logit_scale"])
    full_pred, full_correct = int8_full(eval_fs)
    fp32_top1 = float((fp32_eval_fs["top5"][:, 0] == fp32_eval_fs["labels"]).mean()) if fp32_eval_fs else None
    cum = cumulative_fraction(geometry)
    ci = [L - 1 for L in cand]
    per_seed, main_trace = [], None
    for s in policy.seeds:
        outs = {v: head_outputs(policy.heads(s, v), eval_fs[HEAD_SOURCE[v][0]], labels, text, logit_scale)
                for v in VARIANTS}
        rec = {"seed": s, "policies": {}, "per_layer": {}, "pabee": [], "static": [], "sweeps": {}}
        for name in POLICIES:
            v, gate = name.split("/")
            o = outs[v]
            if gate == "learned":
                feats = gate_features(o, eval_fs, cand)
                logits = np.stack([policy.gate(s, v, L).logit(f) for L, f in zip(cand, feats)], 1)
                scores = 1.0 / (1.0 + np.exp(-logits))
            else:
                scores = o.conf[:, ci]
            taus = policy.thresholds(s, name)
            pos = route(scores, [taus[L] for L in cand])
            r = _policy_eval(name, pos, cand, depth, o.pred[:, ci], full_pred, labels, geometry, K, full_correct)
            r["thresholds"] = {str(L): taus[L] for L in cand}
            res = sweep(scores, o.correct[:, ci], full_correct, cum[ci],
                        np.asarray(policy.meta["thresholds"]["grid"]))
            idx = res.pareto()
            rec["sweeps"][name] = {"flops_saving": [float(1 - res.compute[i]) for i in idx],
                                   "top1": [float(res.accuracy[i]) for i in idx]}
            if s == policy.seeds[0] and name == f"{MAIN_VARIANT}/learned":
                main_trace = (r["_routed"], o, feats, logits, scores)
            r.pop("_routed")
            rec["policies"][name] = r
        o = outs[MAIN_VARIANT]
        for p in range(1, len(cand)):
            pos = pabee_route(o.pred[:, ci], p)
            r = _policy_eval(f"pabee-p{p}", pos, cand, depth, o.pred[:, ci], full_pred, labels, geometry, K,
                             full_correct)
            r.pop("_routed")
            rec["pabee"].append(dict(r, patience=p))
        for L in range(1, depth + 1):
            rec["static"].append({"layer": L, "top1": float(o.correct[:, L - 1].mean()),
                                  "flops_saving": float(1 - cum[L - 1])})
            rec["per_layer"][str(L)] = {v: float(outs[v].correct[:, L - 1].mean()) for v in VARIANTS}
        rec["ssa_last"] = {v: float(outs[v].correct[:, depth - 1].mean()) for v in ("ssa-hard", "ssa-distill")}
        per_seed.append(rec)

    int8_top1 = float(full_correct.mean())
    main = [r["policies"][f"{MAIN_VARIANT}/learned"] for r in per_seed]

    baselines = baseline_rows(TableInputs(per_seed, int8_top1, fp32_top1, len(cand)))
    static = [{"layer": L, "top1": A.mean_std([r["static"][L - 1]["top1"] for r in per_seed]),
               "flops_saving": per_seed[0]["static"][L - 1]["flops_saving"]} for L in range(1, depth + 1)]
    ablation = [
        {"row": "i", "config": "INT8 baseline", "head": "[CLS]", "supervision": "-", "routing": "full depth",
         "top1": A.mean_std([int8_top1]), "flops_saving": A.mean_std([0.0])},
        {"row": "ii", "config": "SSA-Last (hard)", "head": "SSA", "supervision": "hard label", "routing": "full depth",
         "top1": A.mean_std([r["ssa_last"]["ssa-hard"] for r in per_seed]), "flops_saving": A.mean_std([0.0])},
        {"row": "iii", "config": "SSA-Last (distilled)", "head": "SSA", "supervision": "FP32 distill",
         "routing": "full depth", "top1": A.mean_std([r["ssa_last"]["ssa-distill"] for r in per_seed]),
         "flops_saving": A.mean_std([0.0])},
        {"row": "iv", "config": "LRA-EE (hard)", "head": "SSA", "supervision": "hard label", "routing": "adaptive",
         **_agg([r["policies"]["ssa-hard/learned"] for r in per_seed], ("top1", "flops_saving"))},
        {"row": "v", "config": "LRA-EE (distilled)", "head": "SSA", "supervision": "FP32 distill",
         "routing": "adaptive", **_agg(main, ("top1", "flops_saving"))},
    ]
    per_layer = [{"layer": L, **{v: A.mean_std([r["per_layer"][str(L)][v] for r in per_seed]) for v in VARIANTS}}
                 for L in range(1, depth + 1)]
    first = main[0]
    results = {
        "schema_version": 1,
        "model": policy.meta["model"], "precision": policy.meta["precision"],
        "data": {"eval": eval_fs.meta["dataset"], **policy.meta.get("data", {})},
        "n_eval": int(len(labels)), "num_classes": K, "seeds": policy.seeds, "candidate_layers": cand,
        "budget": policy.meta["thresholds"]["budget"],
        "int8_top1": int8_top1, "fp32_top1": fp32_top1,
        "lra_ee": {**_agg(main), "delta_top1_pp": A.mean_std([100 * (m["top1"] - int8_top1) for m in main])},
        "baselines": baselines, "static_truncation": static, "ablation": ablation, "cls_vs_ssa": per_layer,
        "quadrants": first["quadrants"], "quadrants_by_seed": [m["quadrants"] for m in main],
        "selectivity": first["selectivity"], "exit_distribution": first["exit_distribution"],
        "exit_distribution_mean": {k: A.mean_std([m["exit_distribution"][k] for m in main])["mean"]
                                   for k in first["exit_distribution"]},
        "thresholds_by_seed": {str(r["seed"]): r["policies"][f"{MAIN_VARIANT}/learned"]["thresholds"]
                               for r in per_seed},
        "per_seed": per_seed,
    }
    out.mkdir(parents=True, exist_ok=True)
    routed, o, feats, logits, scores = main_trace
    write_exit_trace(out / "trace.csv", policy, geometry, labels, routed, full_pred, full_correct, o, feats,
                     scores, cand)
    from analysis.exit_plots import plot_cls_vs_ssa, plot_exit_distribution, plot_pareto

    with atomic.atomic_path(out / "pareto.png") as tmp:
        plot_pareto(results, tmp)
    with atomic.atomic_path(out / "exit_distribution.png") as tmp:
        plot_exit_distribution(results, tmp)
    with atomic.atomic_path(out / "cls_vs_ssa.png") as tmp:
        plot_cls_vs_ssa(results, tmp)
    atomic.write_json(out / "results.json", results)
    return results


def write_exit_trace(path: Path, policy, geometry, labels, routed, full_pred, full_correct, outs, feats, scores,
                     cand) -> None:
    """The per-sample exit trace in hwsim's schema (:func:`hwsim.trace.write_trace`) with every
    column the policy knows: label, pred, full_pred, full_correct and per candidate layer conf,
    margin, SAV, gate score and the head's prediction."""
    from hwsim.trace import write_trace

    name = f"{MAIN_VARIANT}/learned"
    write_trace(path, routed.exit_layer, cand, geometry.depth, int(policy.meta["num_classes"]),
                correct=routed.correct, geometry=geometry, label=labels, pred=routed.pred, full_pred=full_pred,
                full_correct=full_correct, conf=np.stack([f[:, 0] for f in feats], 1),
                margin=np.stack([f[:, 1] for f in feats], 1), sav=np.stack([f[:, 2] for f in feats], 1),
                gate=scores, pred_at=outs.pred[:, [L - 1 for L in cand]],
                thresholds=policy.thresholds(policy.seeds[0], name),
                extra_meta={"policy": f"{name} seed {policy.seeds[0]}", "policy_sha256": policy.meta["policy_sha256"],
                            "precision": policy.meta["precision"], **recipe_bits(policy.meta["precision"])})


def recipe_bits(precision: str) -> dict:
    """The trace meta's ``weight_bits`` / ``act_bits`` of a recipe name (hwsim sizes operands from them)."""
    from quant.recipes import parse_precision

    r = parse_precision(precision)
    return {"weight_bits": r.w_bits, "act_bits": r.a_bits} if r.w_bits and r.a_bits else {}
