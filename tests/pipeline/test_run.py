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
         "precision": {"calib_n": 32, "sweep": ["w8a8", "w8a4"]}, "adavit": {"train_n": 64, "epochs": 1},
         "exits": {"seeds": 2, "epochs": 2}, "hls": {"vectors": 50}}


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
    """The result files of a run: every output the stage records list (not the timings, not the
    generated HLS project trees, whose compiled libraries carry build stamps)."""
    files = {}
    for rec in sorted((out / ".lraee-run").glob("*.json")):
        for rel in json.loads(rec.read_text())["outputs"]:
            files[rel] = (out / rel).read_bytes()
    assert len(files) > 20
    return files


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    cfg = _config(root, root / "cache")
    out = root / "ref"
    env = dict(os.environ, LRAEE_TIMING_LOG=str(root / "timing.jsonl"))  # where the time goes (bench_scale.py)
    r = subprocess.run(_cmd(cfg, out), capture_output=True, text=True, timeout=1800, env=env)
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
                    "CLS vs SSA", "Fixed-point", "HLS", "Hardware simulation", "DSE Pareto front",
                    "Findings: where early exit pays", "Precision x exit sweep", "AdaViT (matched FLOPs)"):
        assert section in html, section
    assert "paper (ViT-B/32, ImageNet-1K)" in html
    sweep = json.loads((out / "sweep" / "sweep.json").read_text())
    assert sweep["recipes"] == ["w8a8", "w8a4"] and len(sweep["findings"]) == 2
    assert sweep["rows"][0]["files"]["results"] == "../trace/results.json"  # the run's own recipe, reused
    assert (out / "sweep" / "w8a4" / "trace" / "trace.csv").is_file() and not (out / "sweep" / "w8a8").exists()
    dse = json.loads((out / "hwsim" / "dse" / "dse.json").read_text())
    assert set(dse["precisions"]) == {"w8a8", "w8a4"}  # one front over the traces of both recipes
    ada = json.loads((out / "adavit" / "adavit.json").read_text())
    res = json.loads((out / "trace" / "results.json").read_text())
    assert ada["target_saving"] == res["lra_ee"]["flops_saving"]["mean"] and len(ada["per_seed"]) == 2
    timings = json.loads((out / "timings.json").read_text())
    assert all(s["status"] == "ran" for s in timings["stages"].values())
    assert all(s["peak_rss_bytes"] > 50 << 20 for s in timings["stages"].values())  # this process, per stage
    recs = [json.loads(line) for line in (root / "timing.jsonl").read_text().splitlines()]
    passes = {(r["stage"], r["kind"], r["pass"].split(" seed")[0]) for r in recs}
    assert {("calibration", "backbone", "calibration"), ("features", "backbone", "features w8a8"),
            ("features", "backbone", "features fp32"), ("features", "text", "text tower"),
            ("exits", "work", "head training"), ("fixedpoint", "work", "width search"),
            ("fixedpoint", "work", "validation")} <= passes
    heads = [r for r in recs if r["pass"].startswith("head training") and r["stage"] == "exits"]
    assert len(heads) == 2 and all(r["images"] == 300 and r["split"] == "train" for r in heads)  # 2 seeds
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
    # kill inside the hls stage: it starts right after the fixedpoint record and compiles for seconds
    marker = out / ".lraee-run" / "fixedpoint.json"
    deadline = time.time() + 1200
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    time.sleep(2.0)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / ".lraee-run" / "hls.json").exists() and (out / ".lraee-run" / "fixedpoint.json").exists()
    r = subprocess.run(_cmd(cfg, out), capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    got, want = _results(out), _results(ref)
    assert got.keys() == want.keys()
    differ = [k for k in want if got[k] != want[k]]
    assert not differ, differ


@pytest.mark.slow
def test_real_path_with_random_vitb32_and_image_folders(tmp_path, vitb32_random):
    """The documented real-path command on a random ViT-B-32 checkpoint file and small ImageFolders."""
    import numpy as np
    from PIL import Image
    from safetensors.torch import save_file

    ckpt = tmp_path / "vitb32.safetensors"
    save_file({k: v.contiguous() for k, v in vitb32_random.model.state_dict().items()}, str(ckpt))
    rng = np.random.default_rng(0)
    folders = {}
    for split, per_class in (("train", 6), ("gating", 5), ("val", 4)):
        root = tmp_path / split
        for c, name in enumerate(("red_circle", "blue_square")):
            (root / name).mkdir(parents=True)
            for i in range(per_class):
                img = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
                img[..., c * 2] = 255 - i
                Image.fromarray(img).save(root / name / f"{i}.png")
        folders[split] = root
    cfg = tmp_path / "real.yaml"
    cfg.write_text(yaml.safe_dump({
        "data": {"train_source": f"folder:{folders['train']}", "gating_source": f"folder:{folders['gating']}",
                 "train_n": 12, "profile_n": 4, "templates": "simple"},
        "precision": {"calib_n": 4, "sweep": ["w8a8"]},  # the run's own recipe: the sweep reuses its files
        "runtime": {"cache_dir": str(tmp_path / "cache"), "batch_size": 8},
        "exits": {"seeds": 1, "epochs": 1, "exit_layers": "11", "head_batch_size": 8},
        "adavit": {"train_n": 8, "epochs": 1},
        "hls": {"vectors": 4},
    }))
    out = tmp_path / "out"
    r = subprocess.run(_cmd(cfg, out, "--model", "ViT-B-32-quickgelu", "--pretrained", str(ckpt), "--data",
                            f"folder:{folders['val']}"), capture_output=True, text=True, timeout=3000)
    assert r.returncode == 0, r.stderr[-3000:]
    model = json.loads((out / "model" / "model.json").read_text())
    assert model["geometry"]["patch_tokens"] == 49 and model["geometry"]["width"] == 768
    res = json.loads((out / "trace" / "results.json").read_text())
    assert res["n_eval"] == 8 and res["candidate_layers"] == [11]
    assert (out / "report" / "report.html").is_file()
