"""Generate, compile and C-simulate the exit blocks of a policy; write ``hls_report.json``.

``hls_report.json`` (schema ``lraee/hls-report`` version 2; version 2 added the ``rtl`` fields)::

    {
      "schema": "lraee/hls-report", "version": 2,
      "latency_cycles": int, "interval_cycles": int,     # the exit unit hwsim charges (gate blocks, worst layer)
      "exit_unit": {"blocks": [...], "latency_cycles", "interval_cycles", "dsp", "bram_18k", "lut", "ff"},
      "head": {"latency_cycles", "interval_cycles", ...},  # the worst SSA head block (hwsim maps heads on the array)
      "backend", "part", "clock_period_ns", "clock_mhz", "io_type", "policy_sha256", "spec": {path, sha, source},
      "vectors": {"source", "n", "files", "scale_exp"},
      "blocks": {"head_L9": {"kind", "layer", "project_dir" (relative to this file), "project_name", "csim": {"vectors", "exact_match",
                 "mismatches", "exit_match" (gate), "float_error": {...}}, (wall times: hls_timings.json)
                 "estimate": {dsp, bram_18k, lut, ff, latency_cycles, interval_cycles, latency_ns, layers},
                 "rtl": {...} (with --rtl-report, when lraee rtl built the matching block; see below)}},
      "formulas": {...}, "synthesis": {"available": bool, "how": str},
      "rtl": {"report" (path relative to this file), "sha256", "status": "done" | "skipped", "why" (skipped),
              "part", "family", "blocks_merged": [...]}            (with --rtl-report only)
    }

With ``--rtl-report`` (the ``rtl_report.json`` of ``lraee rtl`` on the same policy and spec) each block gets
the Yosys ``synth_xilinx`` counts of its open-RTL twin (:func:`merge_rtl`)::

    gate_L{L}: "rtl": {"block": "gate_L{L}", "module", "family", "sim_exact_match", "relation" (text),
                       "yosys": {lut, ff, carry, dsp, bram_18k} (cells; bram_18k: RAMB18 + 2 RAMB36),
                       "compare": {lut|ff|dsp|bram_18k: {"yosys", "estimate" (hls/estimate.py on the RTL gate's
                                   datapath: each feature in its own format), "ratio" (estimate / yosys; null when
                                   yosys is 0), "off_by_more_than_25pct"}},
                       "hls_block": {same fields, "estimate" = this block's estimate above (union input type)}}
    head_L{L}: "rtl": {"block": "ssa_sav_L{L}", ..., "relation": the head's ssa layer + SAV as a streaming
                       accumulator (another architecture), "compare": against that architecture's formula
                       (hls.estimate.streaming_ssa_sav); no hls_block (nothing to compare this block's with)}

A block whose twin was not synthesised (``lraee rtl --synth gate``: no ssa_sav counts) has ``"yosys": null``.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from common.atomic import write_json
from common.errors import InputError
from common.threads import in_order, per_thread_stdout

from .blocks import BLOCKS, BlockOptions, convert, gate_block, head_block
from .estimate import COMPARED, FORMULAS, block_estimate, compare_counts
from .extension import CUSTOM_LAYERS
from .tools import ToolFailed, last_error

SCHEMA = "lraee/hls-report"
VERSION = 2
RTL_SCHEMA, RTL_VERSION = "lraee/rtl-report", 2  # rtl.flow's (hls does not import rtl)
TB_VECTORS = 100  # vectors written to each project's tb_data/ for the vendor C-simulation


def inside(root: Path, path: Path) -> Path:
    """``path`` resolved, refused unless it lies inside ``root`` (no user-derived path escapes --out)."""
    r, p = Path(root).resolve(), Path(path).resolve()
    if p != r and r not in p.parents:
        raise InputError(f"{path}: resolves outside the output folder {root}; allowed: names inside --out")
    return p


def requested_layers(policy, layers, vectors, needs_thresholds: bool) -> list[int]:
    """The candidate layers a block flow builds (all of the policy's by default), each with input vectors;
    a gate needs the policy's thresholds. One-line InputError otherwise (shared by hls and rtl)."""
    cand = policy.candidate_layers
    layers = list(cand) if not layers else [int(L) for L in layers]
    bad = [L for L in layers if L not in cand]
    if bad:
        raise InputError(f"--layers {bad}: not candidate layers of {policy.path}; allowed: {cand}")
    missing = [L for L in layers if L not in vectors.tokens]
    if missing:
        raise InputError(f"no input vectors for layers {missing}")
    if needs_thresholds and policy.meta.get("thresholds") is None:
        raise InputError(f"{policy.path / 'policy.json'}: thresholds: missing; run `lraee thresholds --policy "
                         f"{policy.path}` first")
    return layers


def synthesis_tools() -> dict:
    found = {t: shutil.which(t) for t in ("vitis_hls", "vivado_hls", "vivado")}
    have = {k: v for k, v in found.items() if v}
    return {"available": bool(have), "tools": have,
            "how": "run `vitis_hls -f build_prj.tcl` (Vitis backend) or `vivado_hls -f build_prj.tcl` (Vivado "
                   "backend) in a block's folder, or hls_model.build(csim=False, synth=True) from Python"}


def _gate_inputs(res: dict, fm: dict) -> np.ndarray:
    I = res["intermediates"]  # noqa: E741
    cols = [np.ldexp(I[k][0].astype(np.float64), -fm[k].F) for k in ("conf.out", "margin.out", "sav.out")]
    return np.ascontiguousarray(np.stack(cols, axis=1))


def testbench(kind: str, unit, q: np.ndarray, ref: dict, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` C-simulation vectors and the fixed-point model's outputs (the vendor csim test bench)."""
    fm = unit.spec.formats
    if kind == "head":
        x = q[:n].reshape(min(n, q.shape[0]), -1).astype(np.float64)
        y = np.ldexp(ref["intermediates"]["fc2.out"][0][:n].astype(np.float64), -fm["fc2.out"].F)
        return x, y
    x = _gate_inputs(ref, fm)[:n]
    g = np.ldexp(ref["intermediates"]["gate.out"][0][:n].astype(np.float64), -fm["gate.out"].F)
    return x, np.stack([g, ref["exit"][:n].astype(np.float64)], axis=1)


def check_exact_decodable(fmt, what: str) -> None:
    if fmt.W > 53:
        raise InputError(f"{what} format {fmt} is wider than 53 bits: its values do not pass through float64 "
                         "exactly, so the C-simulation cannot be compared bit for bit; narrow it in the spec")


def csim_block(hm, kind: str, unit, layer: int, q: np.ndarray, scale: float, ref: dict, fref: dict) -> dict:
    """C-simulate ``hm`` on the vectors and compare with the fixed-point model (codes) and the float reference."""
    fm = unit.spec.formats
    n = q.shape[0]
    if kind == "head":
        x = np.ascontiguousarray(q.reshape(n, -1).astype(np.float64))
        fo = fm["fc2.out"]
        check_exact_decodable(fo, "fc2.out")
        y = np.asarray(hm.predict(x), np.float64).reshape(n, -1)
        want = ref["intermediates"]["fc2.out"][0]
        got = np.rint(np.ldexp(y, fo.F)).astype(np.int64)
        on_grid = bool(np.all(np.ldexp(got.astype(np.float64), -fo.F) == y))
        eq = np.all(got == want, axis=1) & on_grid
        h_float = np.asarray(fref["values"]["fc2.out"], np.float64)
        err = np.abs(y - h_float)
        out = {"vectors": int(n), "output": "h = fc2.out", "exact_match": float(np.mean(eq)),
               "mismatches": int(np.sum(~eq)), "elements_exact": float(np.mean((got == want))),
               "float_error": {"what": "h (fixed, C-sim) vs float64 reference head output",
                               "max_abs": float(err.max()), "mean_abs": float(err.mean()),
                               "rel_rms": float(np.sqrt(np.mean(err ** 2)) / max(np.sqrt(np.mean(h_float ** 2)), 1e-30))}}
        return out
    x = _gate_inputs(ref, fm)
    fg = fm["gate.out"]
    y = np.asarray(hm.predict(x), np.float64).reshape(n, -1)
    g_codes = np.rint(np.ldexp(y[:, 0], fg.F)).astype(np.int64)
    want_g = ref["intermediates"]["gate.out"][0]
    exit_hls = y[:, 1] == 1.0
    eq = (g_codes == want_g) & (np.ldexp(g_codes.astype(np.float64), -fg.F) == y[:, 0]) & \
        (exit_hls == ref["exit"]) & ((y[:, 1] == 0.0) | (y[:, 1] == 1.0))
    err = np.abs(y[:, 0] - fref["gate_logit"])
    return {"vectors": int(n), "output": "[g = gate.out, exit bit]", "exact_match": float(np.mean(eq)),
            "mismatches": int(np.sum(~eq)), "exit_match": float(np.mean(exit_hls == ref["exit"])),
            "exit_rate": float(np.mean(exit_hls)),
            "float_error": {"what": "gate logit (fixed, C-sim) vs float64 reference on the same tokens",
                            "max_abs": float(err.max()), "mean_abs": float(err.mean()),
                            "exit_agreement_vs_float": float(np.mean(exit_hls == fref["exit"]))}}


def build_spec(policy, vectors, spec_path: Path | None, log=print):
    """The spec: ``spec_path`` (refused when sized for another policy) or a default spec from the vectors."""
    from exitlogic.fixedpoint import FixedPointSpec, default_spec

    sha = policy.meta["policy_sha256"]
    if spec_path is not None:
        spec = FixedPointSpec.load(spec_path, policy_sha256=sha, policy_source=str(policy.path))
        if spec.policy_sha256 is None:
            log(f"note: {spec_path} records no policy hash; it cannot be checked against {policy.path}")
        return spec, {"source": "file", "path": str(spec_path)}
    layers = sorted(vectors.tokens)
    params = {L: policy.layer_params(L) for L in layers}
    samples = {L: (vectors.tokens[L], vectors.scale(L)) for L in layers}
    spec = default_spec(params, policy.tensors["text_embeddings"], float(policy.meta["logit_scale"]), samples,
                        policy_sha256=sha)
    return spec, {"source": "default_spec", "sized_on": f"{vectors.source} vectors"}


def check_blocks(blocks) -> tuple:
    """The one rule for ``--blocks``: a non-empty selection of :data:`hls.blocks.BLOCKS`."""
    blocks = tuple(blocks)
    bad_blocks = [b for b in blocks if b not in BLOCKS]
    if bad_blocks or not blocks:
        raise InputError(f"--blocks {list(blocks)}; allowed: {', '.join(BLOCKS)}")
    return blocks


def run(policy, vectors, out: Path, spec_path: Path | None = None, layers: list[int] | None = None,
        blocks: tuple = BLOCKS, opts: BlockOptions | None = None, compile: bool = True, log=print,
        keep: dict | None = None, rtl_report: Path | None = None, workers: int | None = None) -> dict:
    """Generate every (block, layer) project under ``out``, compile and C-simulate; write hls_report.json.

    ``keep`` (a dict) receives the exit unit (``"unit"``) and the compiled hls4ml models by block name.
    ``rtl_report``: the rtl_report.json of ``lraee rtl`` on the same policy and spec; its Yosys counts are
    merged into the blocks (:func:`merge_rtl`). ``workers``: blocks converted, compiled and C-simulated at
    once (default :func:`common.threads.block_workers`); the report is the same for any count."""
    from exitlogic.fixedpoint import ExitUnit

    opts = (opts or BlockOptions()).validate()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    check_blocks(blocks)
    layers = requested_layers(policy, layers, vectors, needs_thresholds="gate" in blocks)
    rtl = None if rtl_report is None else (Path(rtl_report), load_rtl_report(rtl_report, policy.meta["policy_sha256"]))
    # everything is generated in a staging folder beside --out and moved in when complete: a failed or
    # killed run leaves no partial project at the final path (and no --out when there was none)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        report = _generate(policy, vectors, stage, spec_path, layers, blocks, opts, compile, log, keep, rtl, out,
                           workers)
        publish_tree(stage, out)
    except BaseException as exc:
        if not getattr(exc, "keep_stage", False):
            shutil.rmtree(stage, ignore_errors=True)
        raise
    for name, hm in (keep or {}).items():  # the kept models now live under --out
        if hasattr(hm, "config") and name in report["blocks"]:
            hm.config.config["OutputDir"] = str(out / name)
    for name in report["blocks"]:
        _repoint(out / name, stage, out)
    syn = report["synthesis"]
    log(f"wrote {len(report['blocks'])} projects and {out / 'hls_report.json'}")
    if not syn["available"]:
        log("synthesis needs Vitis HLS or Vivado HLS (vitis_hls / vivado_hls), which this machine lacks; "
            + syn["how"])
    return report


def publish_tree(stage: Path, out: Path) -> None:
    """Move the complete tree ``stage`` to ``out``: a rename when ``out`` does not exist, else entry by
    entry (an entry of the same name is replaced; ``hls_report.json`` goes last)."""
    if not out.exists():
        os.replace(stage, out)
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    try:
        for entry in sorted(stage.iterdir(), key=lambda p: (p.name == "hls_report.json", p.name)):
            dest = out / entry.name
            if dest.exists() or dest.is_symlink():
                os.replace(dest, trash / entry.name)
            os.replace(entry, dest)
    finally:
        shutil.rmtree(trash, ignore_errors=True)
    stage.rmdir()


def _repoint(project: Path, stage: Path, out: Path) -> None:
    """hls4ml records its output folder in the project's config: point it at the final path."""
    old, new = str(stage.resolve()), str(out.resolve())
    for f in (project / "hls4ml_config.yml",):
        if f.is_file():
            text = f.read_text()
            if old in text:
                f.write_text(text.replace(old, new))


def _generate(policy, vectors, out: Path, spec_path, layers, blocks, opts, compile, log, keep, rtl=None,
              final: Path | None = None, workers: int | None = None) -> dict:
    """Write every project, the spec and the reports under ``out`` (the staging folder; ``final``: the folder
    it becomes, for paths relative to the report).  ``rtl``: (path, loaded rtl_report.json) or None."""
    from exitlogic.fixedpoint import ExitUnit

    spec, spec_info = build_spec(policy, vectors, spec_path, log)
    sha = policy.meta["policy_sha256"]
    params = {L: policy.layer_params(L) for L in layers}
    text, ls = policy.tensors["text_embeddings"], float(policy.meta["logit_scale"])
    unit = ExitUnit(spec, params, text, ls, policy_sha256=sha, policy_source=str(policy.path))
    if keep is not None:
        keep["unit"] = unit
    spec_file = inside(out, out / "fixedpoint_spec.json")
    spec.save(spec_file)
    spec_info["written"] = spec_file.name  # beside hls_report.json
    spec_info["sha256"] = hashlib.sha256(spec_file.read_bytes()).hexdigest()
    if rtl is not None:  # before any project is compiled
        check_rtl_spec(rtl[1], rtl[0], spec_info["sha256"])

    report = {"schema": SCHEMA, "version": VERSION, "policy": str(policy.path), "policy_sha256": sha,
              "backend": opts.backend, "part": opts.part, "clock_period_ns": float(opts.clock_period_ns),
              "clock_mhz": 1000.0 / float(opts.clock_period_ns), "io_type": opts.io_type, "project": opts.project,
              "spec": spec_info,
              "vectors": {"source": vectors.source, "files": vectors.files,
                          "n": {str(L): int(vectors.tokens[L].shape[0]) for L in layers},
                          "scale_exp": {str(L): int(vectors.scale_exp[L]) for L in layers}},
              "blocks": {}, "formulas": FORMULAS, "synthesis": synthesis_tools()}
    refs = {}
    for L in layers:
        q, s = vectors.tokens[L], vectors.scale(L)
        refs[L] = (unit.run(L, q, s, keep=True), unit.float_reference(L, q, s, intermediates=True))
    jobs = [(L, kind) for L in layers for kind in blocks]
    with per_thread_stdout() as router:  # hls4ml prints; each block's printout goes to its own log
        # g++ runs as a subprocess: while one block compiles, another is converted or C-simulated
        args = [(kind, L, unit, vectors, *refs[L], out, opts, compile, router) for L, kind in jobs]
        for name, entry, hm, line in in_order(_block, args, workers, "lraee-hls"):
            log(line)
            report["blocks"][name] = entry
            if keep is not None:
                keep[name] = hm
            del hm  # the compiled model (weights, C library) is freed unless kept
    if rtl is not None:
        merge_rtl(report, rtl[1], rtl[0], final or out)
        log(f"merged the Yosys counts of {len(report['rtl'].get('blocks_merged', []))} blocks from {rtl[0]}"
            if rtl[1]["status"] == "done" else f"{rtl[0]}: RTL skipped ({report['rtl']['why']}); no counts merged")
    _summaries(report)
    # wall times differ between runs: they go to hls_timings.json, the report holds results only
    write_json(inside(out, out / "hls_timings.json"),
               {name: b.pop("timing_s") for name, b in report["blocks"].items() if "timing_s" in b})
    write_json(inside(out, out / "hls_report.json"), report)
    return report


def _block(kind, L, unit, vectors, ref, fref, out: Path, opts, compile: bool, router) -> tuple:
    """Convert, write, compile and C-simulate one (kind, layer) block under ``out``: (name, report entry, the
    hls4ml model, the log line). hls4ml's printout goes to the project's ``hls4ml_log.txt``."""
    q, s = vectors.tokens[L], vectors.scale(L)
    t0 = time.time()
    bd = head_block(unit, L, vectors.scale_exp[L], opts) if kind == "head" else gate_block(unit, L, opts)
    pdir = inside(out, out / bd.name)
    buf = io.StringIO()
    with router.capture(buf):
        hm = convert(bd, pdir, opts, testbench=testbench(kind, unit, q, ref, TB_VECTORS), write=not compile)
    t_gen = time.time() - t0
    entry = {"kind": kind, "layer": int(L), "project_dir": bd.name,
             "project_name": f"{opts.project}_{bd.name}", "timing_s": {"generate": round(t_gen, 3)}}
    style = str(hm.config.pipeline_style or "dataflow").lower()
    entry["estimate"] = block_estimate(bd.layer_info, style, opts.clock_period_ns)
    entry["hls4ml_layers"] = {n: _layer_entry(i) for n, i in bd.layer_info.items()}
    if not compile:
        (pdir / "hls4ml_log.txt").write_text(buf.getvalue())
        return bd.name, entry, hm, f"{bd.name}: generated in {t_gen:.1f} s (not compiled)"
    t1 = time.time()
    try:
        with router.capture(buf):
            hm.compile()  # writes the project, then g++
    except Exception as exc:  # g++ output is in hls4ml's printout: keep it for the user
        log_file = pdir / "hls4ml_log.txt"
        log_file.write_text(buf.getvalue())
        err = ToolFailed("g++", f"hls4ml compile of {bd.name}: {exc}; the partial output folder is kept",
                         log_file, last_error(buf.getvalue()))
        err.keep_stage = True
        raise err from None
    entry["timing_s"]["compile"] = round(time.time() - t1, 3)
    t2 = time.time()
    with router.capture(buf):
        entry["csim"] = csim_block(hm, kind, unit, L, q, s, ref, fref)
    entry["timing_s"]["csim"] = round(time.time() - t2, 3)
    (pdir / "hls4ml_log.txt").write_text(buf.getvalue())
    c, est = entry["csim"], entry["estimate"]
    line = (f"{bd.name}: generate {t_gen:.1f} s, write and compile {entry['timing_s']['compile']:.1f} s, C-sim "
            f"{c['vectors']} vectors: exact {c['exact_match']:.4f}"
            + (f", exit decisions {c['exit_match']:.4f}" if kind == "gate" else "")
            + f"; est. {est['dsp']} DSP, {est['bram_18k']} BRAM_18K, "
              f"{est['latency_cycles']} cycles (II {est['interval_cycles']})")
    return bd.name, entry, hm, line


def _layer_entry(info: dict) -> dict:
    """A block's layer in the report; a custom layer also names the numpy stage its C++ mirrors."""
    e = {"class": info["class"], "custom": bool(info.get("custom")), "out": info["out_fmt"],
         "reuse_factor": info.get("reuse_factor"), "strategy": info.get("strategy")}
    if info["class"] in CUSTOM_LAYERS:
        e["mirrors"] = f"exitlogic.fixedpoint.stages.{CUSTOM_LAYERS[info['class']].twin}"
    return e


def _summaries(report: dict) -> None:
    def agg(kind):
        bl = [b for b in report["blocks"].values() if b["kind"] == kind]
        if not bl:
            return None
        worst = max(bl, key=lambda b: b["estimate"]["latency_cycles"])
        out = {"blocks": sorted(n for n, b in report["blocks"].items() if b["kind"] == kind),
               "latency_cycles": int(worst["estimate"]["latency_cycles"]),
               "interval_cycles": int(max(b["estimate"]["interval_cycles"] for b in bl)),
               "latency_ns": float(worst["estimate"]["latency_ns"])}
        for k in ("dsp", "bram_18k", "lut", "ff"):
            out[f"{k}_per_block_max"] = int(max(b["estimate"][k] for b in bl))
            out[f"{k}_all_blocks"] = int(sum(b["estimate"][k] for b in bl))
        cs = [b["csim"] for b in bl if "csim" in b]
        if cs:
            out["csim_vectors"] = int(sum(c["vectors"] for c in cs))
            out["exact_match"] = float(min(c["exact_match"] for c in cs))
        return out

    gate, head = agg("gate"), agg("head")
    if gate:
        report["exit_unit"] = gate
        report["latency_cycles"] = gate["latency_cycles"]
        report["interval_cycles"] = gate["interval_cycles"]
    if head:
        report["head"] = head
        if not gate:
            report["latency_cycles"] = head["latency_cycles"]
            report["interval_cycles"] = head["interval_cycles"]
    cs = [b["csim"]["exact_match"] for b in report["blocks"].values() if "csim" in b]
    report["exact_match"] = float(min(cs)) if cs else None


YOSYS_KEYS = ("lut", "ff", "carry", "dsp", "bram_18k")
RELATION_GATE = ("the same function; the HLS block takes the three features in one union input type, the RTL each "
                 "in its own format: compare is the hls/estimate.py formula on the RTL's datapath, hls_block this "
                 "block's own estimate, against the same Yosys counts")
RELATION_HEAD = ("the head's ssa layer + SAV as a streaming accumulator (another architecture): compare is that "
                 "architecture's formula (hls.estimate.streaming_ssa_sav); nothing is compared with this block's "
                 "estimate")


def _need(d, key: str, path: Path, field: str, kind=dict):
    v = d.get(key) if isinstance(d, dict) else None
    if not isinstance(v, kind) or isinstance(v, bool) and kind is not bool:
        raise InputError(f"{path}: {field}: missing or not a {getattr(kind, '__name__', kind)}; allowed: the "
                         f"rtl_report.json of `lraee rtl`")
    return v


def load_rtl_report(path: Path, policy_sha256: str) -> dict:
    """The ``rtl_report.json`` of ``lraee rtl`` given to ``--rtl-report``: schema, version, status, the policy and
    every block field :func:`merge_rtl` reads checked (one-line InputError naming the file and field)."""
    from common.readers import read_json

    path = Path(path)
    d = read_json(path, allowed="rtl_report.json of `lraee rtl`")
    if not isinstance(d, dict) or d.get("schema") != RTL_SCHEMA:
        raise InputError(f"{path}: schema {d.get('schema') if isinstance(d, dict) else d!r}; allowed: {RTL_SCHEMA!r}")
    if d.get("version") != RTL_VERSION:
        raise InputError(f"{path}: version {d.get('version')!r}; allowed: {RTL_VERSION} (rerun `lraee rtl`)")
    if d.get("status") not in ("done", "skipped"):
        raise InputError(f"{path}: status {d.get('status')!r}; allowed: 'done', 'skipped'")
    if d["status"] == "skipped":
        return d
    if d.get("policy_sha256") != policy_sha256:
        raise InputError(f"{path}: policy_sha256 {str(d.get('policy_sha256'))[:12]}...: made for another policy "
                         f"(this one: {policy_sha256[:12]}...); allowed: the rtl_report.json of `lraee rtl` on the "
                         f"same --policy")
    _need(_need(d, "spec", path, "spec"), "sha256", path, "spec.sha256", str)
    _need(d, "family", path, "family", str)
    for name, b in _need(d, "blocks", path, "blocks").items():
        f = f"blocks.{name}"
        _need(b, "module", path, f"{f}.module", str)
        _need(_need(b, "sim", path, f"{f}.sim"), "exact_match", path, f"{f}.sim.exact_match", (int, float))
        _need(b, "estimate", path, f"{f}.estimate")
        if "synth" in b:
            c = _need(_need(b, "synth", path, f"{f}.synth"), "counts", path, f"{f}.synth.counts")
            for k in ("lut", "ff", "carry", "dsp", "bram_18k_equiv"):
                _need(c, k, path, f"{f}.synth.counts.{k}", int)
            for k in COMPARED:
                _need(b["estimate"], k, path, f"{f}.estimate.{k}", int)
    return d


def check_rtl_spec(rtl: dict, rtl_path: Path, spec_sha256: str) -> None:
    """Refuse (one-line InputError) an RTL report emitted from another fixed-point spec than ``spec_sha256``."""
    if rtl["status"] == "done" and rtl["spec"]["sha256"] != spec_sha256:
        raise InputError(f"--rtl-report {rtl_path}: spec.sha256 {rtl['spec']['sha256'][:12]}... differs from this "
                         f"run's fixed-point spec ({spec_sha256[:12]}...); allowed: the rtl_report.json of "
                         f"`lraee rtl` with the same --spec")


def merge_rtl(report: dict, rtl: dict, rtl_path: Path, out: Path) -> None:
    """Put the Yosys counts of each block's open-RTL twin (``lraee rtl``) beside its estimate (see module doc).

    gate_L{L} <- the RTL gate_L{L} (the same function; compared with this block's own estimate);
    head_L{L} <- the RTL ssa_sav_L{L} (the head's ssa layer + SAV, streaming: compared with its own formula).
    Refused (InputError) when the RTL was emitted from another fixed-point spec than this report's."""
    rtl_path = Path(rtl_path)
    top = {"report": os.path.relpath(rtl_path.resolve(), Path(out).resolve()),
           "sha256": hashlib.sha256(rtl_path.read_bytes()).hexdigest(), "status": rtl["status"]}
    report["rtl"] = top
    if rtl["status"] == "skipped":
        top["why"] = str(rtl.get("why", ""))
        return
    check_rtl_spec(rtl, rtl_path, report["spec"]["sha256"])
    top.update(part=rtl.get("part"), family=rtl["family"], blocks_merged=[])
    for name, entry in report["blocks"].items():
        twin = name if entry["kind"] == "gate" else f"ssa_sav_L{entry['layer']}"
        rb = rtl["blocks"].get(twin)
        if rb is None:
            continue
        same = entry["kind"] == "gate"
        r = {"block": twin, "module": rb["module"], "family": rtl["family"],
             "sim_exact_match": float(rb["sim"]["exact_match"]),
             "relation": RELATION_GATE if same else RELATION_HEAD, "yosys": None}
        if "synth" in rb:
            c = rb["synth"]["counts"]
            r["yosys"] = {k: int(c["bram_18k_equiv" if k == "bram_18k" else k]) for k in YOSYS_KEYS}
            r["compare"] = compare_counts(r["yosys"], rb["estimate"])
            if same:
                r["hls_block"] = compare_counts(r["yosys"], entry["estimate"])
        entry["rtl"] = r
        top["blocks_merged"].append(name)


def load_report(path: Path) -> dict:
    from common.readers import read_json

    d = read_json(path, allowed="hls_report.json of `lraee hls`")
    if not isinstance(d, dict) or d.get("schema") != SCHEMA:
        raise InputError(f"{path}: schema {d.get('schema') if isinstance(d, dict) else d!r}; allowed: {SCHEMA!r}")
    return d

