"""``lraee run``: the co-design pipeline as resumable stages that talk through files.

Stages, in order (folder under ``--out`` in brackets):

==============  ==========================================================================
model           the encoder: shipped tiny weights (retrained with ``train-tiny`` if missing)
                or the user's checkpoint; weights hash and geometry [model/]
calibration     static INT8 recipe calibrated on the calibration split [calibration/]
profile         QIRC profile vs FP32 (INR for candidate pruning) [profile/]
features        feature cache of the train, gating and eval splits, INT8 and FP32 [features/]
exits           heads, gates (every seed), candidate layers, LCT thresholds, Pareto set [exits/]
trace           eval-split evaluation: per-sample trace, results.json, plots [trace/]
sweep           precision x exit sweep: per recipe of ``precision.sweep`` its calibration, profile,
                policy and trace (the run's own recipe reused); sweep.json/csv/png [sweep/]
adavit          AdaViT baseline at LRA-EE's FLOPs saving, INT8 backbone frozen [adavit/]
fixedpoint      bit-width search and fixed-point vs float validation [fixedpoint/]
rtl             open RTL of the exit blocks: Verilator bit-exact check, Yosys counts [rtl/]
                (skipped with a note, and a small rtl_report.json, without verilator / yosys)
hls             hls4ml projects per block, C-simulation, resource estimates beside the rtl
                stage's Yosys counts [hls/]
hwsim           SimPy replay of the trace and a DSE sweep over configs x Pareto policies [hwsim/]
report          report.html, report.md and the figures beside them [report/]
==============  ==========================================================================

Each stage has a key: SHA-256 of its name, its settings and the content hashes of the files
its upstream stages produced. ``DIR/.lraee-run/<stage>.json`` records the key and the hashes of
the stage's outputs once the stage has finished. A rerun skips a stage whose key is unchanged
and whose outputs are intact; ``--from STAGE`` reruns from there. A stage killed midway has no
record, so it runs again from a cleared folder; every stage writes its files atomically and
deterministically, so the results are byte-identical to an uninterrupted run. Wall times and each
stage's peak RSS of this process (bytes, :mod:`common.peak_rss`; decoding and DSE worker processes not
counted) go to ``DIR/timings.json`` (not a result: they differ between runs).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from common import atomic, peak_rss, timing
from common.hashing import file_sha256 as sha256_file
from common.errors import InputError
from analysis.pipeline.artifacts import RunFiles
from analysis.pipeline.config import RunConfig

STATE_DIR = ".lraee-run"
STAGES = ("model", "calibration", "profile", "features", "exits", "trace", "sweep", "adavit", "fixedpoint", "rtl",
          "hls", "hwsim", "report")
PIPELINE_VERSION = 2


def _sha_obj(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Stage:
    """One pipeline stage: ``run(ctx)`` writes into ``ctx.dir(name)`` and returns the result
    files (relative to --out) whose hashes downstream stages depend on."""

    name: str
    deps: tuple[str, ...]
    settings: Callable[[RunConfig], dict]
    run: Callable[["Context"], list[str]]
    help: str


class Context:
    """What a stage sees: the config, the output folder and the upstream stages' records."""

    def __init__(self, cfg: RunConfig, out: Path, progress: bool, log: Callable[[str], None]):
        from analysis.workflows import Session

        self.cfg = cfg
        self.out = out
        self.progress = progress
        self.log = log
        self.session = Session(cfg.runtime, progress, log)  # one encoder load and recipe per run, shared by stages
        self.files = RunFiles(out)

    def dir(self, name: str) -> Path:
        return self.files.stage(name)


def _record_path(out: Path, name: str) -> Path:
    return out / STATE_DIR / f"{name}.json"


def _read_record(out: Path, name: str) -> dict | None:
    p = _record_path(out, name)
    try:
        return json.loads(p.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _intact(out: Path, rec: dict) -> bool:
    for rel, sha in rec["outputs"].items():
        p = out / rel
        if not p.is_file() or sha256_file(p) != sha:
            return False
    return True


def run_pipeline(cfg: RunConfig, out: Path, stages: list[Stage], from_stage: str | None = None,
                 until: str | None = None, progress: bool = True, log=print) -> dict:
    """Run (or resume) the stages; returns {stage: {"status": ran|skipped, "seconds": s}}."""
    names = [s.name for s in stages]
    for flag, v in (("--from", from_stage), ("--until", until)):
        if v is not None and v not in names:
            raise InputError(f"{flag} {v!r}: unknown stage; allowed: {', '.join(names)}")
    if from_stage is not None and until is not None and names.index(from_stage) > names.index(until):
        raise InputError(f"--from {from_stage} --until {until}: {from_stage} comes after {until}, nothing would run; "
                         f"allowed: --from at or before --until (stage order: {', '.join(names)})")
    from common.atomic import removed_on_error

    cfg = absolute_paths(cfg)
    cwd = os.getcwd()
    fresh = removed_on_error(out)  # a new DIR whose first stage fails is removed again
    with fresh:
        out.mkdir(parents=True, exist_ok=True)
        (out / STATE_DIR).mkdir(exist_ok=True)
        os.chdir(out)  # stages write paths relative to DIR: results do not depend on where DIR is
        try:
            return _run(cfg, stages, names, from_stage, until, progress, log, fresh)
        finally:
            os.chdir(cwd)


def absolute_paths(cfg: RunConfig) -> RunConfig:
    """The config with every user path made absolute (before the runner changes directory)."""
    def ab(p):
        return None if p is None else str(Path(p).expanduser().resolve())

    def src(spec):
        if spec is None:
            return None
        kind, sep, arg = spec.partition(":")
        return f"{kind}:{ab(arg)}" if kind in ("folder", "imagenet") and arg else spec

    d, m, h, r = cfg.data, cfg.model, cfg.hwsim, cfg.runtime
    tiny_or_name = m.pretrained if m.pretrained is None else ab(m.pretrained)
    templates = d.templates if d.templates in ("paper", "simple", "openai") else ab(d.templates)
    return cfg.model_copy(update={
        "model": m.model_copy(update={"pretrained": tiny_or_name}),
        "data": d.model_copy(update={"source": src(d.source), "train_source": src(d.train_source),
                                     "gating_source": src(d.gating_source),
                                     "calibration_source": src(d.calibration_source), "classnames": ab(d.classnames),
                                     "templates": templates}),
        "runtime": r.model_copy(update={"cache_dir": ab(r.cache_dir)}),
        "hwsim": h.model_copy(update={"arch": ab(h.arch), "space": ab(h.space)}),
    })


def _run(cfg, stages, names, from_stage, until, progress, log, fresh=None) -> dict:
    out = Path(".")
    ctx = Context(cfg, out, progress, log)
    force = False
    status: dict[str, dict] = {}
    outputs_sha: dict[str, dict] = {}
    stop = names.index(until) if until else len(names) - 1
    for i, st in enumerate(stages):
        if i > stop:
            break
        force = force or st.name == from_stage
        key = _sha_obj({"stage": st.name, "version": PIPELINE_VERSION, "settings": st.settings(cfg),
                        "upstream": {d: outputs_sha[d] for d in st.deps}})
        rec = _read_record(out, st.name)
        if not force and rec and rec.get("key") == key and _intact(out, rec):
            outputs_sha[st.name] = rec["outputs"]
            status[st.name] = {"status": "skipped", "seconds": 0.0}
            log(f"[{i + 1}/{len(stages)}] {st.name}: up to date, skipped")
            continue
        force = True  # everything downstream of a rerun stage reruns
        _record_path(out, st.name).unlink(missing_ok=True)
        folder = ctx.dir(st.name)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        log(f"[{i + 1}/{len(stages)}] {st.name}: {st.help}")
        own_peak = peak_rss.reset()
        timing.set_stage(st.name)
        t0 = time.time()
        try:
            files = st.run(ctx)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)  # a failed stage leaves no partial folder behind
            raise
        finally:
            timing.set_stage(None)
        secs = time.time() - t0
        peak = peak_rss.peak_bytes()
        shas = {rel: sha256_file(out / rel) for rel in sorted(files)}
        atomic.write_json(_record_path(out, st.name), {"stage": st.name, "key": key, "outputs": shas})
        if fresh is not None:
            fresh.keep()  # a finished stage is kept for a resume, whatever fails later
        outputs_sha[st.name] = shas
        status[st.name] = {"status": "ran", "seconds": round(secs, 2), "peak_rss_bytes": peak,
                           "peak_rss_of": "stage" if own_peak else "process so far"}
        log(f"[{i + 1}/{len(stages)}] {st.name}: done in {secs:.1f} s")
    atomic.write_json(out / "timings.json", {"stages": status,
                                             "total_seconds": round(sum(v["seconds"] for v in status.values()), 2)})
    return status
