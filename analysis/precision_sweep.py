"""The precision x exit co-design sweep: where early exit pays.

Per recipe of the sweep (``precision.sweep`` in ``lraee run``, ``lraee sweep-precision``) the flow
of the main run is repeated on that recipe's INT8 backbone (calibration, QIRC profile, INT8
features, exit policy over the seeds at the same FLOPs budget, eval trace and results); the FP32
features and the text embeddings are the same files for every recipe (one build, cached by
content). This module turns the per-recipe ``results.json`` / ``profile.json`` into one row per
recipe (:func:`sweep_row`), the sweep files (``sweep.json``, ``sweep.csv``) and plots, and one
measured sentence per recipe (:func:`findings`). Accuracies are fractions in the files (top-1 of the
eval split), percentages in the sentences; ``mean``/``std`` are over seeds (population std, as
:func:`exitlogic.analyses.mean_std`).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from common import atomic

SCHEMA = "lraee/precision-sweep"
VERSION = 1

#: The methods a sweep row reports (results.json -> baselines ``method``, or a key of its own).
METHODS = ("FP32 full depth", "INT8 full depth", "SSA-Last", "LRA-EE", "CLS-EE", "Confidence-only", "PABEE")

CSV_COLUMNS = ("recipe", "weight_bits", "act_bits", "smoothquant_alpha", "n_eval", "seeds", "candidate_layers",
               "fp32_top1", "int8_top1", "int8_loss_pp", "ssa_last_top1", "ssa_last_top1_std",
               "lra_ee_top1", "lra_ee_top1_std", "lra_ee_saving", "lra_ee_saving_std", "lra_ee_delta_pp",
               "lra_ee_delta_pp_std", "cls_ee_top1", "cls_ee_top1_std", "cls_ee_saving",
               "confidence_top1", "confidence_top1_std", "confidence_saving",
               "pabee_patience", "pabee_top1", "pabee_top1_std", "pabee_saving",
               "rescue", "loss", "net", "noise_block", "noise_ratio", "inr")


def slug(recipe: str) -> str:
    """A recipe's folder name under the sweep folder (``w8a8+sq0.75`` -> ``w8a8-sq0.75``)."""
    return recipe.replace("+", "-")


def _row_of(results: dict, method: str) -> dict | None:
    for r in results.get("baselines", []):
        if r["method"] == method:
            return r
    return None


def _pabee_matched(results: dict, saving: float) -> dict | None:
    """The PABEE row (one per patience) whose mean FLOPs saving is nearest LRA-EE's (PABEE has no budget)."""
    rows = [r for r in results.get("baselines", []) if r["method"].startswith("PABEE (patience ")]
    if not rows:
        return None
    return min(rows, key=lambda r: abs(r["flops_saving"]["mean"] - saving))


def sweep_row(recipe: str, results: dict, profile: dict, bits: dict) -> dict:
    """One recipe's sweep record from its ``results.json`` (:func:`analysis.exits.exit_report`), its QIRC
    ``profile.json`` and its bits (``weight_bits``, ``act_bits``, ``smoothquant_alpha`` or None).

    Methods hold ``top1`` and ``flops_saving`` as ``{mean, std}`` (fractions); ``rescue``/``loss`` are the
    LRA-EE four-quadrant counts (samples of the eval split) averaged over seeds; ``noise`` is the QIRC
    noise ratio d_quant / d_nat and INR at the deepest candidate layer."""
    from exitlogic.analyses import mean_std

    lra = results["lra_ee"]
    saving = lra["flops_saving"]["mean"]
    ssa_last = [r for r in results["ablation"] if r["row"] == "iii"][0]["top1"]
    methods = {
        "FP32 full depth": None if results.get("fp32_top1") is None else
        {"top1": mean_std([results["fp32_top1"]]), "flops_saving": mean_std([0.0])},
        "INT8 full depth": {"top1": mean_std([results["int8_top1"]]), "flops_saving": mean_std([0.0])},
        "SSA-Last": {"top1": ssa_last, "flops_saving": mean_std([0.0])},
        "LRA-EE": {"top1": lra["top1"], "flops_saving": lra["flops_saving"]},
    }
    for name, method in (("CLS-EE", "CLS-EE"), ("Confidence-only", "Confidence-only heuristic")):
        r = _row_of(results, method)
        methods[name] = None if r is None else {"top1": r["top1"], "flops_saving": r["flops_saving"]}
    pab = _pabee_matched(results, saving)
    methods["PABEE"] = None if pab is None else {"top1": pab["top1"], "flops_saving": pab["flops_saving"],
                                                  "patience": int(pab["method"].split()[-1].rstrip(")"))}
    quads = results.get("quadrants_by_seed") or [results["quadrants"]]
    rescue = mean_std([q["rescue"] for q in quads])
    loss = mean_std([q["loss"] for q in quads])
    deepest = max(results["candidate_layers"])
    blk = next((b for b in profile["blocks"] if int(b["block"]) == deepest), None)
    return {
        "recipe": recipe, **bits, "n_eval": results["n_eval"], "seeds": list(results["seeds"]),
        "candidate_layers": list(results["candidate_layers"]), "budget": results.get("budget"),
        "methods": methods,
        "int8_loss_pp": None if results.get("fp32_top1") is None else
        100 * (results["fp32_top1"] - results["int8_top1"]),
        "lra_ee_delta_pp": lra["delta_top1_pp"],
        "rescue": rescue, "loss": loss,
        "noise": None if blk is None else {"block": deepest, "ratio": float(blk["ratio"]), "inr": float(blk["inr"])},
    }


def _f(x, scale=1.0, digits=6):
    return "" if x is None else round(float(x) * scale, digits)


def csv_rows(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        m = r["methods"]

        def get(name, key="top1", part="mean"):
            v = m.get(name)
            return None if v is None else v[key][part]

        out.append({
            "recipe": r["recipe"], "weight_bits": r.get("weight_bits"), "act_bits": r.get("act_bits"),
            "smoothquant_alpha": r.get("smoothquant_alpha") if r.get("smoothquant_alpha") is not None else "",
            "n_eval": r["n_eval"], "seeds": len(r["seeds"]),
            "candidate_layers": " ".join(str(c) for c in r["candidate_layers"]),
            "fp32_top1": _f(get("FP32 full depth")), "int8_top1": _f(get("INT8 full depth")),
            "int8_loss_pp": _f(r["int8_loss_pp"]),
            "ssa_last_top1": _f(get("SSA-Last")), "ssa_last_top1_std": _f(get("SSA-Last", part="std")),
            "lra_ee_top1": _f(get("LRA-EE")), "lra_ee_top1_std": _f(get("LRA-EE", part="std")),
            "lra_ee_saving": _f(get("LRA-EE", "flops_saving")),
            "lra_ee_saving_std": _f(get("LRA-EE", "flops_saving", "std")),
            "lra_ee_delta_pp": _f(r["lra_ee_delta_pp"]["mean"]), "lra_ee_delta_pp_std": _f(r["lra_ee_delta_pp"]["std"]),
            "cls_ee_top1": _f(get("CLS-EE")), "cls_ee_top1_std": _f(get("CLS-EE", part="std")),
            "cls_ee_saving": _f(get("CLS-EE", "flops_saving")),
            "confidence_top1": _f(get("Confidence-only")), "confidence_top1_std": _f(get("Confidence-only", part="std")),
            "confidence_saving": _f(get("Confidence-only", "flops_saving")),
            "pabee_patience": "" if m.get("PABEE") is None else m["PABEE"]["patience"],
            "pabee_top1": _f(get("PABEE")), "pabee_top1_std": _f(get("PABEE", part="std")),
            "pabee_saving": _f(get("PABEE", "flops_saving")),
            "rescue": _f(r["rescue"]["mean"]), "loss": _f(r["loss"]["mean"]),
            "net": _f(r["rescue"]["mean"] - r["loss"]["mean"]),
            "noise_block": "" if r["noise"] is None else r["noise"]["block"],
            "noise_ratio": "" if r["noise"] is None else _f(r["noise"]["ratio"]),
            "inr": "" if r["noise"] is None else _f(r["noise"]["inr"]),
        })
    return out


def finding(r: dict) -> str:
    """One measured sentence: does early exit gain or lose against full depth at this recipe, and by how much."""
    m = r["methods"]
    lra, full = m["LRA-EE"], m["INT8 full depth"]["top1"]["mean"]
    d = r["lra_ee_delta_pp"]
    verb = "gains" if d["mean"] > 0 else "loses"
    fp = ""
    if r["int8_loss_pp"] is not None:
        fp = (f"INT8 full depth {100 * full:.2f} % ({'-' if r['int8_loss_pp'] >= 0 else '+'}"
              f"{abs(r['int8_loss_pp']):.2f} pp against FP32); ")
    noise = "" if r["noise"] is None else f"; noise ratio {100 * r['noise']['ratio']:.0f} % at block {r['noise']['block']}"
    return (f"{r['recipe']}: {fp}LRA-EE {verb} {abs(d['mean']):.2f} ± {d['std']:.2f} pp against full depth "
            f"({100 * lra['top1']['mean']:.2f} %) at {100 * lra['flops_saving']['mean']:.1f} % FLOPs saving "
            f"(rescue {r['rescue']['mean']:.0f} vs loss {r['loss']['mean']:.0f}{noise}).")


def findings(rows: list[dict]) -> list[str]:
    return [finding(r) for r in rows]


def plot_sweep(rows: list[dict], path, title: str) -> None:
    """Top-1 against activation bits per method, one line style per weight width (left; SmoothQuant recipes
    hollow markers at their bits), and
    LRA-EE's rescue/loss counts with the noise ratio at the deepest candidate per recipe (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11.0, 4.2))
    colors = {"FP32 full depth": "tab:green", "INT8 full depth": "k", "SSA-Last": "tab:cyan", "LRA-EE": "tab:blue",
              "CLS-EE": "tab:gray", "Confidence-only": "tab:orange", "PABEE": "tab:purple"}
    plain = sorted([r for r in rows if r.get("smoothquant_alpha") is None], key=lambda r: -(r.get("act_bits") or 0))
    sq = [r for r in rows if r.get("smoothquant_alpha") is not None]
    wbits = sorted({r.get("weight_bits") for r in plain if r.get("weight_bits") is not None}, reverse=True)
    styles = ("-", "--", ":", "-.")
    for name, c in colors.items():
        for k, w in enumerate(wbits):  # one line per weight width, against the activation bits
            pts = [(r.get("act_bits"), r["methods"].get(name)) for r in plain if r.get("weight_bits") == w]
            pts = [(a, v) for a, v in pts if a is not None and v is not None]
            if pts:
                ax.errorbar([a for a, _ in pts], [100 * v["top1"]["mean"] for _, v in pts],
                            yerr=[100 * v["top1"]["std"] for _, v in pts], fmt="o", ls=styles[k % len(styles)],
                            color=c, ms=4, lw=1.2, capsize=2, label=name if k == 0 else None)
        for r in sq:
            v = r["methods"].get(name)
            if v is not None and r.get("act_bits") is not None:
                ax.plot(r["act_bits"] + 0.08, 100 * v["top1"]["mean"], "D", mfc="none", color=c, ms=5)
    if len(wbits) > 1:
        for k, w in enumerate(wbits):
            ax.plot([], [], ls=styles[k % len(styles)], color="k", label=f"{w}-bit weights")
    if sq:
        ax.plot([], [], "D", mfc="none", color="k", label="+SmoothQuant (hollow)")
    ax.set_xlabel("activation bits (weights: " + ", ".join(sorted({f"{r.get('weight_bits')}" for r in rows})) + ")")
    ax.set_ylabel("top-1 (%)")
    ax.set_xticks(sorted({r["act_bits"] for r in rows if r.get("act_bits") is not None}))
    ax.invert_xaxis()
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title("top-1 per recipe (LCT at the same budget; PABEE at the nearest saving)", fontsize=8)
    names = [r["recipe"] for r in rows]
    x = range(len(rows))
    bx.bar([i - 0.2 for i in x], [r["rescue"]["mean"] for r in rows], 0.4, color="tab:green", label="rescue")
    bx.bar([i + 0.2 for i in x], [r["loss"]["mean"] for r in rows], 0.4, color="tab:red", label="loss")
    bx.set_xticks(list(x), names, fontsize=8)
    bx.set_ylabel("eval samples (mean over seeds)")
    tx = bx.twinx()
    tx.plot(list(x), [100 * r["noise"]["ratio"] if r["noise"] else float("nan") for r in rows], "k^--",
            label="noise ratio (%)")
    tx.set_ylabel("noise ratio at the deepest candidate (%)")
    h1, l1 = bx.get_legend_handles_labels()
    h2, l2 = tx.get_legend_handles_labels()
    bx.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left")
    bx.set_title("LRA-EE vs full depth: rescue and loss counts", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def write_sweep(out: Path, rows: list[dict], meta: dict) -> list[Path]:
    """``out/sweep.json``, ``out/sweep.csv`` and ``out/sweep.png`` (atomic); returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"schema": SCHEMA, "version": VERSION, **meta, "recipes": [r["recipe"] for r in rows],
           "findings": findings(rows), "rows": rows}
    atomic.write_json(out / "sweep.json", doc)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    w.writeheader()
    w.writerows(csv_rows(rows))
    atomic.write_text(out / "sweep.csv", buf.getvalue())
    with atomic.atomic_path(out / "sweep.png") as tmp:
        plot_sweep(rows, tmp, f"precision sweep: {meta.get('model')}, {meta.get('data')}")
    return [out / "sweep.json", out / "sweep.csv", out / "sweep.png"]
