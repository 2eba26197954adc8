"""``report.md`` and ``report.html`` of a ``lraee run`` output folder, figures beside them.

Every table names the model, data and recipe that made it. Where the paper (Nam & Choi 2026,
CLIP ViT-B/32 on ImageNet-1K, dynamic INT8) has a number for a row, it stands in its own
column labelled as the paper's, never mixed with ours.
"""
from __future__ import annotations

import html
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from analysis.pipeline.artifacts import RunFiles
from exitlogic.baselines import paper_row
from common import atomic

PAPER = "paper (ViT-B/32, ImageNet-1K)"
PAPER_TABLE1 = {"INT8 full depth": ("0.00", "58.72"), "LRA-EE (ours)": ("13.38 ± 0.11", "61.16 ± 0.06")}
PAPER_TABLE3 = {"i": ("0.0", "58.72"), "ii": ("0.0", "59.18"), "iii": ("0.0", "59.65"), "iv": ("13.38", "60.42"),
                "v": ("13.38", "61.16")}
PAPER_TABLE4 = {"both": ("5,162", "51.6"), "rescue": ("947", "9.5"), "loss": ("710", "7.1"),
                "neither": ("3,181", "31.8"), "net": ("+237", "+2.37 pp")}


@dataclass
class Table:
    title: str
    made_by: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    note: str = ""

    def md(self) -> str:
        out = [f"**{self.title}** — {self.made_by}", "", "| " + " | ".join(self.columns) + " |",
               "| " + " | ".join("---" for _ in self.columns) + " |"]
        out += ["| " + " | ".join(str(c) for c in r) + " |" for r in self.rows]
        if self.note:
            out += ["", f"_{self.note}_"]
        return "\n".join(out) + "\n"

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in self.rows)
        note = f"<p class='note'>{html.escape(self.note)}</p>" if self.note else ""
        return (f"<h3>{html.escape(self.title)}</h3><p class='by'>{html.escape(self.made_by)}</p>"
                f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}")


@dataclass
class Section:
    title: str
    text: str = ""
    tables: list[Table] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)  # (file name in report/, caption)


def add_figure(section: Section, copies: list, src: Path, name: str, caption: str) -> None:
    """Show ``src`` (copied into report/ as ``name``) in ``section`` when the stage wrote it."""
    if Path(src).is_file():
        copies.append((Path(src), name))
        section.figures.append((name, caption))


def pct(x, digits=2) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f}"


def pm(ms: dict | None, digits=2) -> str:
    if ms is None:
        return "—"
    return f"{100 * ms['mean']:.{digits}f} ± {100 * ms['std']:.{digits}f}"


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def build_sections(out: Path) -> tuple[list[Section], list[tuple[Path, str]]]:
    """Sections from the stage outputs under ``out``; returns (sections, figures to copy (src, name))."""
    f = RunFiles(out)
    model = _load(f.model_json) or {}
    prof = _load(f.profile_json)
    res = _load(f.results_json)
    val = _load(f.validate_json)
    hls = _load(f.hls_report)
    rtl = _load(f.rtl_report)
    sim = _load(f.sim_summary)
    sweep = _load(f.sweep_json)
    adavit = _load(f.adavit_json)
    copies: list[tuple[Path, str]] = []
    secs: list[Section] = []
    if sweep:
        secs.append(findings_section(sweep))

    if res:
        made = (f"ours: {res['model']} {res['precision']}, eval {res['data']['eval']} (n={res['n_eval']}), "
                f"{len(res['seeds'])} seeds, candidate layers {res['candidate_layers']}, budget {res['budget']}")
    else:
        made = "ours"

    if prof:
        s = Section("QIRC profile (paper Fig. 1 and 4)",
                    f"Layer-wise quantization noise of {prof.get('model')} {prof.get('precision')} against FP32 "
                    f"on {prof.get('dataset')} (n={prof.get('n')}).")
        t = Table("Per-block noise", f"ours: {prof.get('model')} {prof.get('precision')}, {prof.get('dataset')}",
                  ["block", "d_nat", "d_quant", "ratio %", "cos(INT8, FP32)", "MSE", "INR", "act. max"])
        for b in prof["blocks"]:
            t.rows.append([b["block"], f"{b['d_nat']:.4g}", f"{b['d_quant']:.4g}", pct(b["ratio"]),
                           f"{b['cos_int8_fp32_pooled']:.4f}", f"{b['mse']:.3g}", f"{b['inr']:.4g}",
                           f"{b['act_absmax']:.4g}"])
        t.note = "Paper (ViT-B/32 dynamic INT8): ratio below 10% in shallow blocks, 52% at block 11."
        s.tables.append(t)
        add_figure(s, copies, f.profile_png, "profile.png", "QIRC profile")
        secs.append(s)

    if res:
        lr = res["lra_ee"]
        t1 = Table("Main results (paper Table 1)", made,
                   ["method", "FLOPs saving % (ours)", "top-1 % (ours)", "Δ top-1 pp (ours)",
                    f"FLOPs saving % ({PAPER})", f"top-1 % ({PAPER})"])
        t1.rows.append(["INT8 full depth", "0.00", pct(res["int8_top1"]), "0.00", *PAPER_TABLE1["INT8 full depth"]])
        t1.rows.append(["LRA-EE (ours)", pm(lr["flops_saving"]), pm(lr["top1"]), pm(
            {k: v / 100 for k, v in lr["delta_top1_pp"].items() if k != "values"}), *PAPER_TABLE1["LRA-EE (ours)"]])
        sq_rows = smoothquant_rows(sweep)
        t1.rows += sq_rows
        t1.note = (f"FLOPs saving with the exit heads' own compute: {pm(lr['flops_saving_with_heads'])} %. "
                   "Mean ± std over seeds (head init and shuffling, gating-split sample)."
                   + (" SmoothQuant rows: that recipe's own calibration, policy and eval trace (precision sweep, "
                      "same budget and seeds)." if sq_rows else ""))
        t2 = Table("Baselines (paper Table 2)", made,
                   ["method", "FLOPs saving % (ours)", "top-1 % (ours)", f"FLOPs saving % ({PAPER})",
                    f"top-1 % ({PAPER})"])
        for b in res["baselines"]:
            t2.rows.append([b["method"], pm(b["flops_saving"]), pm(b["top1"]), *(paper_row(b["method"]) or ("—", "—"))])
        t2.rows.append(adavit_row(adavit))
        if adavit:
            t2.note = (f"AdaViT: decision networks trained with Gumbel-softmax toward LRA-EE's saving "
                       f"({pct(adavit['target_saving'])} %), INT8 backbone frozen, {len(adavit['per_seed'])} seeds "
                       f"(adavit/adavit.json).")
        st = Table("Static truncation (SSA head at block L for every sample)", made,
                   ["block", "FLOPs saving %", "top-1 %"])
        for r in res["static_truncation"]:
            st.rows.append([r["layer"], pct(r["flops_saving"]), pm(r["top1"])])
        secs.append(Section("Main results and baselines", tables=[t1, t2, st]))

        t3 = Table("Factorial ablation (paper Table 3)", made,
                   ["#", "configuration", "head", "supervision", "routing", "FLOPs saving % (ours)", "top-1 % (ours)",
                    f"FLOPs saving % ({PAPER})", f"top-1 % ({PAPER})"])
        for a in res["ablation"]:
            t3.rows.append([a["row"], a["config"], a["head"], a["supervision"], a["routing"], pm(a["flops_saving"]),
                            pm(a["top1"]), *PAPER_TABLE3[a["row"]]])
        secs.append(Section("Ablation", tables=[t3]))

        q = res["quadrants"]
        t4 = Table("Four-quadrant outcome decomposition (paper Table 4)", made + f", seed {res['seeds'][0]}",
                   ["outcome", "samples (ours)", "% (ours)", f"samples ({PAPER}, n=10,000)", f"% ({PAPER})"])
        for k, name in (("both", "both correct"), ("rescue", "rescue (EE ✓, full ✗)"),
                        ("loss", "loss (EE ✗, full ✓)"), ("neither", "both incorrect")):
            t4.rows.append([name, q[k], pct(q[f"{k}_fraction"]), *PAPER_TABLE4[k]])
        t4.rows.append(["net gain (rescue − loss)", f"{q['net']:+d}", f"{q['net_pp']:+.2f} pp", *PAPER_TABLE4["net"]])
        t4.note = (f"net = rescue − loss = n × (top-1 EE − top-1 full depth) exactly: "
                   f"{q['net']:+d} = {q['n']} × ({pct(q['top1_ee'])} − {pct(q['top1_full'])}) %.")
        sel = res["selectivity"]
        ts = Table("Gate selectivity (paper Sec. 7.2)", made + f", seed {res['seeds'][0]}",
                   ["group", "fraction % (ours)", "top-1 % (ours)", f"fraction % ({PAPER})", f"top-1 % ({PAPER})"])
        ts.rows.append(["early-exited", pct(sel["exited_fraction"]), pct(sel["exited_accuracy"]), "75.7", "68.81"])
        ts.rows.append(["full depth", pct(sel["full_depth_fraction"]), pct(sel["full_depth_accuracy"]), "24.3",
                        "37.00"])
        te = Table("Exit distribution (paper Fig. 2b)", made + " (mean over seeds)",
                   ["exit after block", "samples % (ours)"])
        for k, v in res["exit_distribution_mean"].items():
            te.rows.append([k + (" (full depth)" if int(k) == max(int(x) for x in res["exit_distribution_mean"]) else ""),
                            pct(v)])
        te.note = "Paper: L8 10.1 %, L10 25.3 %, L11 32.1 %, full depth 32.5 % (candidates {8, 10, 11})."
        sec = Section("Anatomy of the rescue effect", tables=[t4, ts, te])
        add_figure(sec, copies, f.trace_plot("exit_distribution.png"), "exit_distribution.png",
                   "Per-layer exit distribution")
        secs.append(sec)

        tc = Table("CLS vs SSA head accuracy per block (paper Sec. 6.2)", made,
                   ["block", "SSA distilled %", "SSA hard %", "[CLS] distilled %"])
        for r in res["cls_vs_ssa"]:
            tc.rows.append([r["layer"], pm(r["ssa-distill"]), pm(r["ssa-hard"]), pm(r["cls-distill"])])
        tc.note = "Paper: SSA beats [CLS] by 18-24 pp at blocks 8, 10, 11 (45.60 vs 21.73 % at block 8)."
        sec = Section("Heads and gates", tables=[tc])
        for name, cap in (("cls_vs_ssa.png", "CLS vs SSA per block"),
                          ("pareto.png", "Heuristic vs learned gate: Pareto fronts (paper Fig. 3)")):
            add_figure(sec, copies, f.trace_plot(name), name, cap)
        secs.append(sec)

    if sweep:
        secs.append(sweep_section(sweep, out, copies))
    if val:
        secs.append(fixedpoint_section(val, out, copies))
    if hls:
        secs.append(hls_section(hls))
    if rtl:
        secs.append(rtl_section(rtl))
    if sim:
        secs.append(hwsim_section(sim, out, copies))
    return secs, copies


def findings_section(sweep: dict) -> Section:
    """One measured sentence per recipe of the precision sweep (analysis/precision_sweep.py)."""
    s = Section("Findings: where early exit pays",
                f"Precision sweep on {sweep.get('model')}, {sweep.get('data')}: per recipe its own calibration, "
                f"exit policy ({sweep.get('seeds')} seeds, budget {sweep.get('budget')}) and eval trace.")
    s.text += " " + " ".join(sweep.get("findings", []))
    return s


def smoothquant_rows(sweep: dict | None) -> list[list[str]]:
    """Table 1 rows of the sweep's SmoothQuant recipes: full depth and LRA-EE + SmoothQuant."""
    out = []
    for r in (sweep or {}).get("rows", []):
        if r.get("smoothquant_alpha") is None:
            continue
        m = r["methods"]
        out.append([f"SmoothQuant full depth ({r['recipe']})", "0.00", pm(m["INT8 full depth"]["top1"]), "—",
                    "—", "—"])
        d = r["lra_ee_delta_pp"]
        out.append([f"LRA-EE + SmoothQuant ({r['recipe']})", pm(m["LRA-EE"]["flops_saving"]), pm(m["LRA-EE"]["top1"]),
                    f"{d['mean']:.2f} ± {d['std']:.2f}", "13.4", "62.41"])
    return out


def adavit_row(adavit: dict | None) -> list[str]:
    """Table 2's AdaViT row from adavit.json (stage adavit), the paper's beside it."""
    paper = paper_row("AdaViT") or ("—", "—")
    if not adavit:
        return ["AdaViT", "not run (adavit.enabled: false)", "—", *paper]
    return ["AdaViT (matched FLOPs)", pm(adavit["flops_saving"]), pm(adavit["top1"]), *paper]


def sweep_section(sweep: dict, out: Path, copies: list) -> Section:
    """The precision x exit sweep table and figure."""
    s = Section("Precision sweep: where early exit pays",
                "Top-1 % per recipe (mean ± std over seeds). LRA-EE, CLS-EE and the confidence-only heuristic "
                "at the same FLOPs budget (LCT on the gating split); PABEE at the patience whose saving is nearest "
                "LRA-EE's; rescue/loss: LRA-EE vs full depth (mean over seeds); noise ratio at the deepest candidate "
                "(QIRC, calibration images).")
    t = Table("Precision x exit sweep", f"ours: {sweep.get('model')}, {sweep.get('data')}, budget {sweep.get('budget')}",
              ["recipe", "W/A bits", "FP32", "INT8 full depth", "SSA-Last", "LRA-EE", "LRA-EE saving %",
               "Δ vs full (pp)", "CLS-EE", "confidence-only", "PABEE", "rescue / loss", "noise ratio %"])
    for r in sweep["rows"]:
        m = r["methods"]

        def top(name):
            return pm(m[name]["top1"]) if m.get(name) else "—"

        d = r["lra_ee_delta_pp"]
        pab = m.get("PABEE")
        t.rows.append([r["recipe"], f"{r.get('weight_bits')}/{r.get('act_bits')}", top("FP32 full depth"),
                       top("INT8 full depth"), top("SSA-Last"), top("LRA-EE"), pm(m["LRA-EE"]["flops_saving"]),
                       f"{d['mean']:+.2f} ± {d['std']:.2f}", top("CLS-EE"), top("Confidence-only"),
                       "—" if pab is None else f"{pm(pab['top1'])} (p={pab['patience']}, "
                                               f"{pct(pab['flops_saving']['mean'], 1)} %)",
                       f"{r['rescue']['mean']:.0f} / {r['loss']['mean']:.0f}",
                       "—" if r.get("noise") is None else f"{100 * r['noise']['ratio']:.0f} (block {r['noise']['block']})"])
    s.tables.append(t)
    add_figure(s, copies, RunFiles(out).sweep / "sweep.png", "sweep.png",
               "top-1 against activation bits; rescue and loss counts")
    return s


def fixedpoint_section(val: dict, out: Path, copies: list) -> Section:
    data = val.get("data") or {}
    data = f"eval {data.get('eval')}, widths searched on {data.get('search')}" if isinstance(data, dict) else data
    made = (f"ours: {val.get('model')} {val.get('precision')}, {data}, candidate layers "
            f"{val.get('candidate_layers')}, target {val['target']['exit_agreement']:.3%} decisions, "
            f"{val['target']['top1_delta_pp']} pp top-1")
    s = Section("Fixed-point exit unit vs float policy",
                "(a) the fixed-point unit against a float64 reference on the same int8 exit-tap tokens (the "
                "arithmetic); (b) against the float policy of the trace stage on float features (adds the int8 "
                "tap of the block output); the tap alone. Widths from the search on the gating split.")
    t = Table("Decision agreement and top-1", made, ["comparison", "exit-decision agreement", "top-1 fixed %",
                                                     "top-1 reference %"])
    t.rows += [list(r) for r in val.get("report_rows", [])]
    mem = val.get("memory_bits", {})
    t.note = (f"exit-unit memory: {mem.get('total_bits', 0):,} bits (weights {mem.get('weights_bits', 0):,}, "
              f"LUTs {mem.get('lut_bits', 0):,}, constants {mem.get('constants_bits', 0):,}); tap scales "
              f"{val.get('tap', {}).get('scales')}")
    s.tables.append(t)
    fmts = val.get("spec", {}).get("formats", {})
    if fmts:
        tw = Table("Chosen widths (fixedpoint_spec.json)", made, ["cast point", "format"])
        tw.rows += [[k, v] for k, v in fmts.items()]
        s.tables.append(tw)
    for p in RunFiles(out).fixedpoint_plots():
        add_figure(s, copies, p, f"fixedpoint_{p.name}", p.stem.replace("_", " "))
    return s


def hls_section(hls: dict) -> Section:
    made = (f"ours: hls4ml {hls.get('backend')} backend, {hls.get('part')} @ {hls.get('clock_mhz')} MHz, "
            f"{hls.get('io_type')}; estimates from the documented formulas (no synthesis on this machine)")
    s = Section("HLS exit blocks (hls4ml C-simulation and estimates)",
                f"C-simulation with hls4ml's compile()/predict() against the fixed-point model; overall exact-match "
                f"fraction {hls.get('exact_match')}. Synthesis needs Vitis HLS or Vivado HLS: "
                f"{hls.get('synthesis', {}).get('how', '')}.")
    t = Table("Blocks", made, ["block", "csim vectors", "exact match", "exit match", "DSP", "BRAM_18K", "LUT", "FF",
                               "latency (cycles)", "II (cycles)"])
    for name, b in sorted(hls.get("blocks", {}).items(), key=lambda kv: (kv[1]["layer"], kv[1]["kind"])):
        c, e = b.get("csim", {}), b.get("estimate", {})
        t.rows.append([name, c.get("vectors"), c.get("exact_match"), c.get("exit_match", "—"), e.get("dsp"),
                       e.get("bram_18k"), e.get("lut"), e.get("ff"), e.get("latency_cycles"), e.get("interval_cycles")])
    s.tables.append(t)
    return s


def rtl_section(rtl: dict) -> Section:
    """Open RTL: Verilator exact-match fraction and Yosys counts beside the hls/estimate.py formulas."""
    if rtl.get("status") != "done":
        return Section("Open RTL of the exit blocks (Verilator, Yosys)", f"Skipped: {rtl.get('why', '')}.")
    made = (f"ours: Verilog from the fixed-point spec, Verilator, Yosys synth_xilinx -family {rtl.get('family')} "
            f"(part {rtl.get('part')}), out of context; estimates from hls/estimate.py")
    s = Section("Open RTL of the exit blocks (Verilator, Yosys)",
                f"RTL simulation with Verilator against the fixed-point model, overall exact-match fraction "
                f"{rtl.get('exact_match')}; latency as stated in every block: {rtl.get('latency_ok')}. Head MLP: "
                f"{rtl.get('head_mlp', {}).get('why', '')}.")
    t = Table("Blocks: Yosys counts vs formula estimates", made,
              ["block", "vectors", "exact match", "exit match", "latency / II (cycles)", "LUT (est.)", "FF (est.)",
               "CARRY", "DSP (est.)", "BRAM_18K (est.)"])
    for name, b in sorted(rtl.get("blocks", {}).items(), key=lambda kv: (kv[1]["layer"], kv[1]["kind"])):
        c, e = b.get("sim", {}), b.get("estimate", {})
        y = b.get("synth", {}).get("counts", {})

        def ye(k, yk=None):
            return f"{y.get(yk or k, '—')} ({e.get(k)})"

        t.rows.append([name, c.get("vectors"), c.get("exact_match"), c.get("exit_match", "—"),
                       f"{b.get('latency_cycles')} / {b.get('interval_cycles')}", ye("lut"), ye("ff"),
                       y.get("carry", "—"), ye("dsp"), ye("bram_18k", "bram_18k_equiv")])
    t.note = ("estimates: gate = the HLS gate block's formulas; ssa_sav = the HLS ssa layer's (mean only, all tokens "
              "in parallel; no SAV formula exists), so that column compares two architectures")
    s.tables.append(t)
    return s


def hwsim_compare_tables(out: Path) -> list:
    """static / regroup / stream / pipelined (equal PEs) from hwsim/compare/*/summary.json."""
    from hwsim.compare import VARIANTS

    sims = {v: _load(RunFiles(out).compare(v) / "summary.json") for v in VARIANTS}
    sims = {k: v for k, v in sims.items() if v}
    if not sims:
        return []
    any_s = next(iter(sims.values()))
    ld = any_s["at_load"]
    t = Table(f"Batch policies and a layer-pipelined design, service latency at load {ld['load']:g}",
              f"ours: {any_s['workload']['model']}, trace of {any_s['trace']['samples']} samples; Poisson arrivals "
              f"(seed {any_s['arch']['arrivals']['seed']}) at {ld['load']:g} x each design's full-depth throughput; "
              "SLO = 2 x the design's full-depth service p99",
              ["design", "hardware", "throughput (img/s)", "vs full depth", "service p50 (µs)", "service p99 (µs)",
               "sojourn p50 (µs)", "sojourn p99 (µs)", "SLO met", "energy / image (µJ)", "bound"])
    for name, sm in sims.items():
        a, ee, at = sm["arch"], sm["early_exit"], sm["at_load"]
        if a.get("architecture") == "pipelined":
            hw = " + ".join(f"{st['array']['rows']}x{st['array']['cols']} (blocks {st['blocks'][0]}-{st['blocks'][1]})"
                            for st in a["stages"])
            bufs = at.get("conditional_buffers", ee["pipeline"]["conditional_buffers"])
            hw += "; cond. buffers at load (samples) " + ", ".join(f"L{b['layer']}: {b['depth_samples']}" for b in bufs)
        else:
            bs = 1 if a["batch"]["policy"] == "stream" else a["batch"]["size"]
            hw = f"{a['array']['rows']}x{a['array']['cols']} {a['array']['dataflow']}, batch {bs}"
        b = sm.get("bound", {})
        t.rows.append([name, hw, f"{ee['throughput_img_s']:.4g}", f"{100 * sm['savings']['throughput_gain']:+.1f} %",
                       f"{at['service_p50_us']:.4g}", f"{at['service_p99_us']:.4g}", f"{at['sojourn_p50_us']:.4g}",
                       f"{at['sojourn_p99_us']:.4g}", f"{pct(at['slo_attainment'], 1)} % of ≤ {at['slo_us']:.4g} µs",
                       f"{ee['energy_per_image_uj']['total']:.4g}",
                       b.get("bound", "—") + (f" (stage {b['stage']})" if "stage" in b else "")])
    t.note = ("Throughput with closed arrivals (capacity); latencies under Poisson arrivals at the stated load. "
              "The pipelined design splits the blocks at an exit point into two stages whose arrays are sized for "
              "this trace's exit profile within the monolithic array's PEs (lraee sim --size-stages).")
    return [t]


def hwsim_section(sim: dict, out: Path, copies: list) -> Section:
    arch = sim["arch"]
    made = (f"ours: {sim['workload']['model']}, trace of {sim['trace']['samples']} samples; "
            f"{arch['array']['rows']}x{arch['array']['cols']} {arch['array']['dataflow']} @ {arch['clock_mhz']} MHz")
    t = Table("Early exit vs full depth on the accelerator", made, ["metric", "early exit", "full depth", "saving"])
    ee, fd, sv = sim["early_exit"], sim["full_depth"], sim["savings"]
    t.rows += [
        ["cycles (makespan)", f"{ee['makespan_cycles']:.6g}", f"{fd['makespan_cycles']:.6g}", pct(sv["cycles_saving"])],
        ["energy / image (µJ)", f"{ee['energy_per_image_uj']['total']:.4g}",
         f"{fd['energy_per_image_uj']['total']:.4g}", pct(sv["energy_saving"])],
        ["service latency p50 (µs)", f"{ee['service_latency_us']['p50']:.4g}",
         f"{fd['service_latency_us']['p50']:.4g}", "—"],
        ["service latency p99 (µs)", f"{ee['service_latency_us']['p99']:.4g}",
         f"{fd['service_latency_us']['p99']:.4g}", "—"],
        ["throughput (img/s)", f"{ee['throughput_img_s']:.4g}", f"{fd['throughput_img_s']:.4g}",
         f"{100 * sv['throughput_gain']:+.2f} (gain)"],
        ["MACs / image incl. heads", f"{ee['macs_per_image']:.4g}", f"{fd['macs_per_image']:.4g}",
         pct(sv["macs_saving_incl_heads"])],
        ["FLOPs saving (backbone, paper's definition)", "", "", pct(sv["flops_saving"])],
    ]
    t.note = ("Cycle, energy and latency savings differ from the FLOPs saving: exit heads, batching holes and memory. "
              "Service latency: start of service to result (no queueing); closed-batch throughput.")
    s = Section("Hardware simulation (hwsim)", tables=[t])
    s.tables += hwsim_compare_tables(out)
    front = RunFiles(out).dse / "pareto.csv"
    if front.is_file():
        import csv

        with front.open() as fh:
            rows = list(csv.DictReader(fh))
        if rows:
            cols = [c for c in ("config_id", "recipe", "weight_bits", "act_bits", "policy_id", "array.rows",
                                "array.cols", "array.dataflow", "accuracy", "service_latency_p95_us",
                                "energy_per_image_uj", "area_proxy") if c in rows[0]]
            td = Table("DSE Pareto front (accuracy x service latency x energy x area)", made.split(";")[0] +
                       f"; {len(rows)} Pareto points of the sweep", cols)
            for r in rows[:20]:
                td.rows.append([r[c] for c in cols])
            notes = []
            dse = _load(RunFiles(out).dse / "dse.json") or {}
            prec = dse.get("precisions") or {}
            if len(prec) > 1:
                notes.append(f"{dse.get('evaluations')} evaluations over the traces of {len(prec)} recipes, each "
                             "re-thresholded with its own policy's Pareto sets; front points per recipe: " +
                             ", ".join(f"{k} {v['pareto_points']}" for k, v in prec.items()))
            if len(rows) > 20:
                notes.append(f"first 20 of {len(rows)} rows; all in hwsim/dse/pareto.csv")
            td.note = "; ".join(notes)
            s.tables.append(td)
    add_figure(s, copies, RunFiles(out).dse / "pareto.png", "dse_pareto.png", "DSE Pareto front")
    return s


CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse;"
       "margin:.5em 0 1.2em}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}"
       "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.by{color:#555;font-size:12px;"
       "margin:0}.note{color:#555;font-size:12px}img{max-width:100%;border:1px solid #ddd}")


def write_report(ctx) -> list[Path]:
    """Write report.md, report.html and the figures into ``ctx.dir('report')``; returns the paths."""
    out = ctx.out
    rep = ctx.files.report
    secs, copies = build_sections(out)
    written = []
    for src, name in copies:
        if src.is_file():
            dst = rep / name
            with atomic.atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)
            written.append(dst)
    title = "lraee run report"
    intro = ("LRA-EE co-design pipeline: INT8 encoder, QIRC profile, float exit policy, fixed-point exit unit, "
             "hls4ml blocks and systolic-array simulation. Our numbers come from the run in this folder; the "
             "paper's, where shown, are in their own columns.")
    md = [f"# {title}", "", intro, ""]
    body = [f"<h1>{title}</h1><p>{html.escape(intro)}</p>"]
    for s in secs:
        md += [f"## {s.title}", ""]
        body.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.text:
            md += [s.text, ""]
            body.append(f"<p>{html.escape(s.text)}</p>")
        for t in s.tables:
            md += [t.md(), ""]
            body.append(t.html())
        for name, cap in s.figures:
            if (rep / name).is_file():
                md += [f"![{cap}]({name})", ""]
                body.append(f"<figure><img src='{html.escape(name)}' alt='{html.escape(cap)}'>"
                            f"<figcaption>{html.escape(cap)}</figcaption></figure>")
    atomic.write_text(rep / "report.md", "\n".join(md))
    atomic.write_text(rep / "report.html", "<!doctype html><html><head><meta charset='utf-8'><title>"
                      f"{title}</title><style>{CSS}</style></head><body>{''.join(body)}</body></html>\n")
    return [rep / "report.md", rep / "report.html", *written]
