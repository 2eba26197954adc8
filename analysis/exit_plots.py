"""Plots of the float LRA-EE results (paper Fig. 2 and 3, Sec. 6.2), written from ``results.json``'s dict."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _title(results: dict) -> str:
    return f"{results['model']} {results['precision']}, {results['data']['eval']} (n={results['n_eval']})"


def plot_pareto(results: dict, path) -> None:
    """Heuristic vs learned gate: Pareto fronts of the full threshold sweep on the eval split (one
    line per seed), the chosen operating points (thresholds from the gating split) and baselines."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    colors = {"ssa-distill/learned": "tab:blue", "ssa-distill/heuristic": "tab:orange", "cls-distill/learned": "tab:gray"}
    labels = {"ssa-distill/learned": "LRA-EE learned gate", "ssa-distill/heuristic": "confidence-only heuristic",
              "cls-distill/learned": "CLS-EE"}
    for name, c in colors.items():
        for k, rec in enumerate(results["per_seed"]):
            sw = rec["sweeps"][name]
            ax.step([100 * x for x in sw["flops_saving"]], [100 * y for y in sw["top1"]], where="post", color=c,
                    alpha=0.8, lw=1.2, label=labels[name] if k == 0 else None)
            p = rec["policies"][name]
            ax.plot(100 * p["flops_saving"], 100 * p["top1"], "o", color=c, ms=5)
    ax.axhline(100 * results["int8_top1"], color="k", ls="--", lw=1, label="INT8 full depth")
    if results.get("fp32_top1") is not None:
        ax.axhline(100 * results["fp32_top1"], color="tab:green", ls=":", lw=1, label="FP32 full depth")
    ax.set_xlabel("FLOPs saving (%)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title("Pareto fronts of the threshold sweep (dots: chosen on gating split)", fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(_title(results), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def plot_exit_distribution(results: dict, path) -> None:
    """Per-layer exit distribution of LRA-EE (mean over seeds; paper Fig. 2b)."""
    d = results["exit_distribution_mean"]
    keys = list(d)
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    ax.bar([("full" if i == len(keys) - 1 else f"L{k}") for i, k in enumerate(keys)], [100 * d[k] for k in keys],
           color="tab:blue")
    ax.set_ylabel("samples (%)")
    ax.set_title(f"Exit distribution, LRA-EE ({_title(results)})", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def plot_cls_vs_ssa(results: dict, path) -> None:
    """Accuracy per block of SSA and [CLS] heads (mean +- std over seeds), INT8 full depth for reference."""
    rows = results["cls_vs_ssa"]
    L = [r["layer"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    for v, c, lab in (("ssa-distill", "tab:blue", "SSA head (distilled)"), ("ssa-hard", "tab:cyan", "SSA head (hard)"),
                      ("cls-distill", "tab:gray", "[CLS] head (distilled)")):
        m = [100 * r[v]["mean"] for r in rows]
        s = [100 * r[v]["std"] for r in rows]
        ax.errorbar(L, m, yerr=s, color=c, marker="o", ms=3, capsize=2, label=lab)
    ax.axhline(100 * results["int8_top1"], color="k", ls="--", lw=1, label="INT8 full depth")
    for c in results["candidate_layers"]:
        ax.axvline(c, color="tab:red", alpha=0.2, lw=6)
    ax.set_xlabel("block L (shaded: candidate exit layers)")
    ax.set_ylabel("top-1 (%)")
    ax.set_xticks(L)
    ax.legend(fontsize=7)
    ax.set_title(f"CLS vs SSA per layer ({_title(results)})", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)
