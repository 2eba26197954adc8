"""``lraee run``: config handling, resumability, SIGKILL mid-stage -> byte-identical results."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

SMALL = {"data": {"train_n": 300, "gating_n": 200, "eval_n": 200, "profile_n": 32},
         "precision": {"calib_n": 32}, "exits": {"seeds": 2, "epochs": 2}, "hls": {"vectors": 50}}


def _config(tmp: Path, cache: Path) -> Path:
    cfg = json.loads(json.dumps(SMALL))
    cfg["runtime"] = {"cache_dir": str(cache)}
    p = tmp / "run.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def _cmd(cfg: Path, out: Path, *extra) -> list[str]:
    return [sys.executable, "-m", "analysis.cli", "run", "--config", str(cfg), "--out", str(out), "--no-progress",
            *extra]


def _results(out: Path) -> dict[str, bytes]:
    """Every result file of a run (not the timings, not the stage records)."""
    skip = {"timings.json"}
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in skip and ".lraee-run" not in p.parts and "projects" not in p.parts}


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    cfg = _config(root, root / "cache")
    out = root / "ref"
    r = subprocess.run(_cmd(cfg, out), capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    return root, cfg, out, r.stdout


def test_print_config_round_trips(run_cli, tmp_path):
    rc, out, _ = run_cli("run", "--print-config")
    assert rc == 0
    cfg = yaml.safe_load(out)
    assert cfg["precision"]["recipe"] == "w8a8" and cfg["exits"]["seeds"] == 3
    p = tmp_path / "c.yaml"
    p.write_text(out)
    from analysis.pipeline.config import load_config

    assert load_config(p).model_dump() == cfg


def test_bad_config_is_one_line(run_cli, tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("exits: {seeds: 0}\n")
    rc, _, err = run_cli("run", "--config", p, "--out", tmp_path / "o")
    assert rc == 2 and "exits.seeds" in err and len(err.strip().splitlines()) == 1
    p.write_text("exitz: {}\n")
    rc, _, err = run_cli("run", "--config", p, "--out", tmp_path / "o")
    assert rc == 2 and "exitz" in err
    p.write_text("precision: {recipe: fp32}\n")
    rc, _, err = run_cli("run", "--config", p, "--out", tmp_path / "o")
    assert rc == 2 and "static INT8" in err
    rc, _, err = run_cli("run", "--out", tmp_path / "o", "--from", "nope")
    assert rc == 2 and "--from 'nope'" in err


@pytest.mark.slow
def test_full_run_report_and_skip(reference_run):
    root, cfg, out, stdout = reference_run
    html = (out / "report" / "report.html").read_text()
    for section in ("QIRC profile", "Main results", "Baselines", "Factorial ablation", "Four-quadrant",
                    "CLS vs SSA", "Fixed-point", "HLS", "Hardware simulation", "DSE Pareto front"):
        assert section in html, section
    assert "paper (ViT-B/32, ImageNet-1K)" in html
    timings = json.loads((out / "timings.json").read_text())
    assert all(s["status"] == "ran" for s in timings["stages"].values())
    before = _results(out)
    r = subprocess.run(_cmd(cfg, out), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0
    timings = json.loads((out / "timings.json").read_text())
    assert all(s["status"] == "skipped" for s in timings["stages"].values())
    assert _results(out) == before
    r = subprocess.run(_cmd(cfg, out, "--from", "hwsim"), capture_output=True, text=True, timeout=600)
    st = json.loads((out / "timings.json").read_text())["stages"]
    assert st["trace"]["status"] == "skipped" and st["hwsim"]["status"] == "ran" and st["report"]["status"] == "ran"
    assert _results(out) == before


@pytest.mark.slow
def test_sigkill_mid_stage_then_resume_is_byte_identical(reference_run):
    root, cfg, ref, _ = reference_run
    out = root / "killed"
    proc = subprocess.Popen(_cmd(cfg, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = out / ".lraee-run" / "features.json"  # the exits stage starts right after this record
    deadline = time.time() + 1200
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(3.0)  # inside the exits stage (head training)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / ".lraee-run" / "exits.json").exists()
    r = subprocess.run(_cmd(cfg, out), capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    got, want = _results(out), _results(ref)
    assert got.keys() == want.keys()
    differ = [k for k in want if got[k] != want[k]]
    assert not differ, differ
