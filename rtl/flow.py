"""Emit, simulate (Verilator) and synthesise (Yosys) the exit-unit RTL of a policy; write ``rtl_report.json``.

Layout of ``--out``::

    rtl_report.json            results (schema lraee/rtl-report, version 2)
    fixedpoint_spec.json       the spec the RTL was emitted from
    {block}/{module}.v         e.g. gate_L9/lraee_gate_L9.v (the clocked, pipelined top)
    {block}/sim/               Verilator bench (tb.cpp, obj/, vectors_out.txt, verilator.log)
    {block}/synth/             Yosys (yosys.log, stat.json)

Every block folder is built in a temporary folder under ``--out`` and renamed when complete.  When a tool
fails (:class:`~rtl.tools.ToolFailed`: one line naming the tool and its log, exit status 2), that folder is
moved beside ``--out`` (``.{out}.{block}.failed-*``) so the log it names outlives the failed command.

``rtl_report.json``::

    {"schema": "lraee/rtl-report", "version": 2, "status": "done" | "skipped", "skipped": [tools] (if skipped),
     "part", "family", "family_rule", "project", "policy", "policy_sha256",
     "spec": {"source", "path" (file), "written", "sha256" (of the written fixedpoint_spec.json)},
     "vectors": {"source", "n": {L: n}, "scale_exp": {L: e}}, "tools": {verilator, yosys},
     "head_mlp": {"emitted": false, "why": str},
     "blocks": {"gate_L9": {"kind", "layer", "module", "verilog", "latency_cycles", "interval_cycles",
                "sim": {"vectors", "exact_match", "mismatches", "exit_match" (gate), "latency_measured",
                        "outputs"}, "synth": {"family", "script", "cells", "counts"},
                "estimate": {dsp, bram_18k, lut, ff (cells), latency_cycles, interval_cycles, covers, ...}
                            (rtl.estimates: gate hls.estimate.const_dense + comparator, ssa_sav
                             hls.estimate.streaming_ssa_sav, with the HLS ssa layer's as hls_ssa_layer),
                "compare": {lut|ff|dsp|bram_18k: {yosys, estimate, ratio, off_by_more_than_25pct}}}},
     "exact_match": min over blocks}
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from common.atomic import write_json, write_text
from common.errors import InputError
from common.threads import in_order

from hls.flow import requested_layers

from . import tools
from .tools import ToolFailed
from .blocks import KINDS, gate_rtl, ssa_sav_rtl
from .estimates import compare, estimate
from .names import block_name, verilog_identifier
from .sim import build, simulate
from .synth import FAMILIES, family_of, synthesize

SCHEMA = "lraee/rtl-report"
VERSION = 2  # 2: spec.sha256; the ssa_sav estimate is the streaming formula (hls.estimate.streaming_ssa_sav)
DEFAULT_PART = "xcvu13p-flga2577-2-e"
SYNTH_CHOICES = ("all", "gate", "none")
HEAD_MLP_WHY = ("not emitted: LayerNorm (LUT + Newton rsqrt), fc1 d x d, GELU (1,025-entry table), fc2 d x e, L2 "
                "norm, K-way similarity and the softmax statistics are a full datapath; fully parallel at d = 128 "
                "that is 32,768 weight multipliers (d = 768: 983,040, far beyond any FPGA), so it needs a folded "
                "(time-multiplexed) architecture with weight memories, which this emitter does not generate; the "
                "HLS flow (lraee hls) covers the head")


def inside(root: Path, path: Path) -> Path:
    """``path`` resolved, refused unless it lies inside ``root`` (no user-derived path escapes --out)."""
    r, p = Path(root).resolve(), Path(path).resolve()
    if p != r and r not in p.parents:
        raise InputError(f"{path}: resolves outside the output folder {root}; allowed: names inside --out")
    return p


def skipped_report(out: Path, missing: list[str], why: str) -> dict:
    """The small report written when a tool is missing (the pipeline stage still has an output)."""
    rep = {"schema": SCHEMA, "version": VERSION, "status": "skipped", "skipped": list(missing), "why": why,
           "tools": tools.available()}
    write_json(inside(out, Path(out) / "rtl_report.json"), rep)
    return rep


def _sim_gate(blk, exe, unit, ref, work) -> dict:
    fm = unit.spec.formats
    I = ref["intermediates"]  # noqa: E741
    ins = [I[k][0] for k in ("conf.out", "margin.out", "sav.out")]
    got = simulate(blk, exe, ins, work)
    n = ins[0].shape[0]
    want_g, want_e = I["gate.out"][0].astype(np.int64), ref["exit"].astype(np.int64)
    if got["n_out"] != n:
        return {"vectors": n, "outputs": got["n_out"], "exact_match": 0.0, "mismatches": n,
                "error": f"{got['n_out']} outputs for {n} vectors"}
    eq = (got["out_g"] == want_g) & (got["out_exit"] == want_e)
    return {"vectors": n, "outputs": got["n_out"], "output": "[g = gate.out code, exit bit]",
            "exact_match": float(np.mean(eq)), "mismatches": int(np.sum(~eq)),
            "exit_match": float(np.mean(got["out_exit"] == want_e)), "exit_rate": float(np.mean(want_e)),
            "latency_measured": sorted({int(v) for v in got["latency"]}), "clock_cycles": got["cycles"],
            "gate_out_format": fm["gate.out"].ap_type()}


def _sim_ssa(blk, exe, unit, q, ref, work) -> dict:
    I = ref["intermediates"]  # noqa: E741
    got = simulate(blk, exe, [q], work)
    n = q.shape[0]
    want_x, want_s = I["ssa.out"][0].astype(np.int64), I["sav.out"][0].astype(np.int64)
    if got["n_out"] != n:
        return {"vectors": n, "outputs": got["n_out"], "exact_match": 0.0, "mismatches": n,
                "error": f"{got['n_out']} outputs for {n} vectors"}
    eq = np.all(got["out_x"] == want_x, axis=1) & (got["out_sav"] == want_s)
    return {"vectors": n, "outputs": got["n_out"], "output": "[x = ssa.out codes (d), SAV = sav.out code]",
            "exact_match": float(np.mean(eq)), "mismatches": int(np.sum(~eq)),
            "elements_exact": float(np.mean(got["out_x"] == want_x)),
            "sav_match": float(np.mean(got["out_sav"] == want_s)),
            "latency_measured": sorted({int(v) for v in got["latency"]}), "clock_cycles": got["cycles"],
            "throughput_check": f"{n} samples streamed back to back, one token per clock"}


def _emit_block(kind, L, unit, vectors, ref, out, project, spec, family, synth, style, clock_period_ns, cache_dir):
    """Emit, simulate and synthesise one (kind, layer) block in a temporary folder under ``out``, renamed to
    ``out/{block}`` when complete: (name, report entry, wall times in s, the RTLBlock)."""
    q, e = vectors.tokens[L], int(vectors.scale_exp[L])
    name = block_name(kind, int(L))
    module = f"{project}_{name}"
    blk = gate_rtl(unit, L, module) if kind == "gate" else ssa_sav_rtl(unit, L, e, module)
    final = inside(out, out / name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out))
    try:
        t0 = time.time()
        vfile = tmp / f"{module}.v"
        write_text(vfile, blk.verilog)
        exe = build(blk, vfile, tmp / "sim", cache_dir)
        t1 = time.time()
        sim = _sim_gate(blk, exe, unit, ref, tmp / "sim") if kind == "gate" else \
            _sim_ssa(blk, exe, unit, q, ref, tmp / "sim")
        t2 = time.time()
        entry = {"kind": kind, "layer": int(L), "module": module, "verilog": f"{name}/{module}.v",
                 "latency_cycles": blk.latency, "interval_cycles": blk.interval,
                 "latency_definition": "clock edges from the edge sampling the input (ssa_sav: the last "
                                       "patch token) to the edge after which out_valid is high",
                 "ports": {"in": [vars(p) for p in blk.inputs], "out": [vars(p) for p in blk.outputs]},
                 "sim": sim, "estimate": estimate(kind, spec, style, clock_period_ns,
                                                  layer_params=unit.layers[L], consts=unit.consts,
                                                  scale_exp=e)}
        tm = {"verilate_build": round(t1 - t0, 2), "simulate": round(t2 - t1, 2)}
        if synth == "all" or synth == kind:
            entry["synth"] = synthesize(vfile, module, family, tmp / "synth", cache_dir)
            entry["compare"] = compare(entry["synth"]["counts"], entry["estimate"])
            tm["synthesize"] = round(time.time() - t2, 2)
        shutil.rmtree(tmp / "sim" / "obj", ignore_errors=True)  # build products: regenerated on demand
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    except ToolFailed as exc:  # keep the block's folder (Verilog, bench, logs) beside --out for the user
        kept = Path(tempfile.mkdtemp(prefix=f".{out.name}.{name}.failed-", dir=out.parent))
        kept.rmdir()
        os.replace(tmp, kept)
        raise exc.moved(tmp, kept) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return name, entry, tm, blk


def run(policy, vectors, out: Path, spec_path: Path | None = None, layers: list[int] | None = None,
        part: str = DEFAULT_PART, project: str = "lraee", kinds: tuple = KINDS, synth: str = "all",
        style: str = "pipeline", clock_period_ns: float = 5.0, cache_dir: Path | None = None, log=print,
        workers: int | None = None) -> dict:
    """Emit every (kind, layer) block under ``out``, simulate it against the fixed-point unit and
    synthesise it; write ``rtl_report.json`` (see module doc).  ``cache_dir``: reuse Verilator builds and
    Yosys statistics of identical Verilog (:mod:`rtl.cache`).  ``synth``: ``all`` blocks, ``gate`` blocks
    only (the ssa_sav block at d = 128 takes minutes in YoWASP Yosys) or ``none``.  Raises ToolMissing (an
    InputError) before writing anything when Verilator (or, unless ``synth == "none"``, Yosys) is missing.
    ``workers``: blocks built at once (default :func:`common.threads.block_workers`); the report is the same for any count."""
    from exitlogic.fixedpoint import ExitUnit
    from hls.flow import build_spec

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    project = verilog_identifier(project, "--project")
    family = family_of(part)
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise InputError(f"--blocks {list(kinds)}; allowed: {', '.join(KINDS)}")
    layers = requested_layers(policy, layers, vectors, needs_thresholds="gate" in kinds)
    if synth not in SYNTH_CHOICES:
        raise InputError(f"--synth {synth!r}; allowed: {', '.join(SYNTH_CHOICES)}")
    tools.require("verilator")
    if synth != "none":
        tools.require("yosys")
    out.mkdir(parents=True, exist_ok=True)

    spec, spec_info = build_spec(policy, vectors, spec_path, log)
    sha = policy.meta["policy_sha256"]
    params = {L: policy.layer_params(L) for L in layers}
    unit = ExitUnit(spec, params, policy.tensors["text_embeddings"], float(policy.meta["logit_scale"]),
                    policy_sha256=sha, policy_source=str(policy.path))
    spec_file = inside(out, out / "fixedpoint_spec.json")
    spec.save(spec_file)
    spec_info["written"] = spec_file.name
    spec_info["sha256"] = hashlib.sha256(spec_file.read_bytes()).hexdigest()  # lraee hls --rtl-report checks it
    report = {"schema": SCHEMA, "version": VERSION, "status": "done", "policy": str(policy.path),
              "policy_sha256": sha, "part": part, "family": family,
              "family_rule": [{"part_regex": p, "family": f} for p, f in FAMILIES], "project": project,
              "clock_period_ns": float(clock_period_ns), "synthesised": synth, "spec": spec_info,
              "vectors": {"source": vectors.source, "n": {str(L): int(vectors.tokens[L].shape[0]) for L in layers},
                          "scale_exp": {str(L): int(vectors.scale_exp[L]) for L in layers}},
              "tools": tools.available(), "head_mlp": {"emitted": False, "why": HEAD_MLP_WHY}, "blocks": {}}
    refs = {L: unit.run(L, vectors.tokens[L], vectors.scale(L), keep=True) for L in layers}
    jobs = [(int(L), kind) for L in layers for kind in kinds]
    timings = {}
    args = [(kind, L, unit, vectors, refs[L], out, project, spec, family, synth, style, clock_period_ns, cache_dir)
            for L, kind in jobs]  # the tools run as subprocesses: the threads only wait on them
    for (L, kind), (name, entry, tm, blk) in zip(jobs, in_order(_emit_block, args, workers, "lraee-rtl")):
        timings[name] = tm
        report["blocks"][name] = entry
        sim, c = entry["sim"], entry.get("synth", {}).get("counts")
        log(f"{name}: Verilator {sim['vectors']} vectors, exact {sim['exact_match']:.4f}"
            + (f", exit {sim['exit_match']:.4f}" if kind == "gate" else "")
            + f", latency {sim.get('latency_measured')} (stated {blk.latency})"
            + (f"; yosys {family}: LUT {c['lut']}, FF {c['ff']}, CARRY {c['carry']}, DSP {c['dsp']}, "
               f"BRAM_18K {c['bram_18k_equiv']}" if c else "")
            + f"; est. LUT {entry['estimate']['lut']}, FF {entry['estimate']['ff']}, DSP {entry['estimate']['dsp']}")
    sims = [b["sim"]["exact_match"] for b in report["blocks"].values()]
    report["exact_match"] = float(min(sims)) if sims else None
    report["latency_ok"] = all(b["sim"].get("latency_measured") == [b["latency_cycles"]]
                               for b in report["blocks"].values())
    write_json(inside(out, out / "rtl_timings.json"), timings)
    write_json(inside(out, out / "rtl_report.json"), report)
    log(f"wrote {len(report['blocks'])} blocks and {out / 'rtl_report.json'}")
    return report
