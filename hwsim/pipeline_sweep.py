"""Throughput and resources of a layer-pipelined early-exit accelerator against exit probability.

For each exit probability p, a synthetic trace of n samples (seeded): a fraction p leaves at
the exit layer ``L`` (the head and gate run at L for every sample), the rest runs to the
last block. Three designs at the same PE budget:

* ``sized``: the stages' arrays allocated for that p (:func:`hwsim.pipelined.allocate_pes`);
* ``fixed``: the arrays of the arch file (one design, evaluated at every p);
* ``no_exit``: the arrays allocated for p = 0 (every sample at full depth, no exit head),
  running every sample to full depth: the baseline that early exit must beat.

Rows: throughput (images/s, closed arrivals = the pipeline's capacity), the bottleneck
stage, the PEs of each stage, the conditional buffer depth (samples) and size (KiB), and
the service latency p50 and sojourn p99 (us); buffers and latencies are measured under
Poisson arrivals at ``LOAD`` (0.8) x the design's own throughput. ``sweep.png`` plots throughput vs p and the PE split.
"""
from __future__ import annotations

import csv

import numpy as np

from common.atomic import atomic_path, write_json
from quant.geometry import EncoderGeometry

from .config import ArchConfig
from .pipelined import allocate_pes, check_stages, evaluate_pipelined
from .trace import ExitTrace


def exit_trace(n: int, depth: int, layer: int, p: float, num_classes: int, seed: int) -> ExitTrace:
    """n samples; a seeded random fraction p (exactly round(p*n)) exits at ``layer``."""
    rng = np.random.default_rng(seed)
    el = np.full(n, depth, np.int64)
    el[rng.permutation(n)[:int(round(p * n))]] = layer
    ev = np.ones((n, 1), bool)
    return ExitTrace([str(i) for i in range(n)], el, ev, None, (layer,), depth, num_classes)


LOAD = 0.8   # conditional buffers and latencies are measured at this fraction of each design's capacity


def _evaluate(arch: ArchConfig, geometry, trace, seed):
    """(closed-arrival summary, Poisson summary at LOAD x the closed throughput)."""
    closed = evaluate_pipelined(arch.model_copy(update={"arrivals": arch.arrivals.model_copy(update={"mode": "closed"})}),
                                geometry, trace)
    rate = LOAD * closed["throughput_img_s"]
    loaded = evaluate_pipelined(arch.model_copy(update={"arrivals": arch.arrivals.model_copy(
        update={"mode": "poisson", "rate_per_s": rate, "seed": seed})}), geometry, trace)
    return closed, loaded


def _row(p, design, pair):
    s, ld = pair
    pl = s["pipeline"]
    bufs = ld["pipeline"]["conditional_buffers"]
    buf = bufs[0] if bufs else {"depth_samples": 0, "kib": 0.0}
    return {"exit_probability": p, "design": design, "throughput_img_s": s["throughput_img_s"],
            "throughput_bound_img_s": pl["throughput_bound_img_s"], "bottleneck_stage": pl["bottleneck_stage"],
            "stage_arrays": " | ".join(st["array"] for st in pl["stages"]),
            "stage_pes": ";".join(str(st["pes"]) for st in pl["stages"]), "pes_total": pl["pes_total"],
            "sram_kb_total": pl["sram_kb_total"], "conditional_buffer_depth": buf["depth_samples"],
            "conditional_buffer_kib": buf["kib"], "load": LOAD,
            "service_latency_p50_us": ld["service_latency_us"]["p50"],
            "sojourn_latency_p99_us": ld["latency_us"]["p99"],
            "energy_per_image_uj": s["energy_per_image_uj"]["total"]}


def sweep(arch: ArchConfig, geometry: EncoderGeometry, out_dir, layer: int, probs, pe_budget: int,
          n: int = 2000, num_classes: int = 25, seed: int = 0) -> dict:
    """Run the sweep; write ``sweep.csv``, ``sweep.json`` and ``sweep.png`` under ``out_dir``."""
    from pathlib import Path
    out_dir = Path(out_dir)
    D = geometry.depth
    check_stages(arch, D)
    base = exit_trace(n, D, layer, 0.0, num_classes, seed)
    no_exit_arch, _ = allocate_pes(arch, geometry, base.full_depth(), pe_budget)
    no_exit = _evaluate(no_exit_arch, geometry, base.full_depth(), seed)
    rows = []
    for p in probs:
        tr = exit_trace(n, D, layer, float(p), num_classes, seed)
        sized, _ = allocate_pes(arch, geometry, tr, pe_budget)
        rows.append(_row(float(p), "sized", _evaluate(sized, geometry, tr, seed)))
        rows.append(_row(float(p), "fixed", _evaluate(arch, geometry, tr, seed)))
        rows.append(_row(float(p), "no_exit", no_exit))
    with atomic_path(out_dir / "sweep.csv") as tmp:
        with tmp.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    summary = {"exit_layer": layer, "pe_budget": pe_budget, "samples": n, "seed": seed, "load": LOAD,
               "stages": [list(st.blocks) for st in arch.stages], "model": geometry.model, "rows": rows}
    write_json(out_dir / "sweep.json", summary)
    _plot(out_dir / "sweep.png", rows, layer, pe_budget, geometry.model)
    return summary


def _plot(path, rows, layer, budget, model):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    for design, style, label in (("sized", "o-", "pipelined, PEs sized for p"),
                                 ("fixed", "s--", "pipelined, arch file's arrays"),
                                 ("no_exit", "k:", "no-exit pipeline (equal PEs)")):
        r = [x for x in rows if x["design"] == design]
        ax.plot([x["exit_probability"] for x in r], [x["throughput_img_s"] for x in r], style, ms=4, label=label)
    ax.set_xlabel(f"exit probability at block {layer}")
    ax.set_ylabel("throughput (images/s)")
    ax.set_title(f"{model}: throughput vs exit probability ({budget} PEs)")
    ax.legend(fontsize=8)
    r = [x for x in rows if x["design"] == "sized"]
    ps = [x["exit_probability"] for x in r]
    split = np.array([[int(v) for v in x["stage_pes"].split(";")] for x in r])
    bottom = np.zeros(len(r))
    width = (ps[1] - ps[0]) * 0.8 if len(ps) > 1 else 0.05
    for s in range(split.shape[1]):
        bx.bar(ps, split[:, s], width=width, bottom=bottom, label=f"stage {s + 1}")
        bottom += split[:, s]
    bx2 = bx.twinx()
    bx2.plot(ps, [x["conditional_buffer_depth"] for x in r], "r^-", ms=4,
             label=f"conditional buffer at load {LOAD:g} (samples)")
    bx.set_xlabel(f"exit probability at block {layer}")
    bx.set_ylabel("PEs per stage (sized design)")
    bx2.set_ylabel("conditional buffer depth (samples)")
    bx.legend(fontsize=8, loc="lower left")
    bx2.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
