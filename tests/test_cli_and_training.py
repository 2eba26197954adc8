import json
import subprocess
import sys

import torch

from analysis.train_tiny import TrainConfig, train_tiny
from quant.encoder import load_encoder


def test_console_script_exit_status(tmp_path):
    out = tmp_path / "r.json"
    p = subprocess.run([sys.executable, "-m", "analysis.cli", "eval", "--model", "ViT-Q-1", "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 1 and "ViT-Q-1" in p.stderr
    assert not out.exists()


def test_help_lists_only_implemented_commands(run_cli):
    rc, out, _ = run_cli("--help")
    assert rc == 0
    for cmd in ("info", "eval", "features", "train-tiny"):
        assert cmd in out


def test_train_tiny_smoke_loads_through_open_clip_path(tmp_path):
    out = tmp_path / "t.safetensors"
    cfg = TrainConfig(n_train=32, steps=2, batch_size=8, threads=1, monitor_every=1, monitor_n=8, warmup=1)
    meta = train_tiny(cfg, out)
    assert len(meta["history"]) == 2 and json.loads(out.with_suffix(".json").read_text())["config"]["steps"] == 2
    enc = load_encoder("tiny", pretrained=str(out))
    fresh = load_encoder("tiny", random_init=True)
    assert not torch.equal(enc.model.visual.conv1.weight, fresh.model.visual.conv1.weight)
    assert enc.model.visual.conv1.weight.dtype == torch.float32


def test_train_recipe_chains_stages(tmp_path):
    """Stage 2 starts from stage 1's checkpoint and records its settings."""
    from analysis.train_tiny import train_recipe

    small = dict(n_train=16, batch_size=8, threads=1, monitor_every=1, monitor_n=8, warmup=1)
    out = tmp_path / "t.safetensors"
    meta = train_recipe((TrainConfig(steps=1, **small), TrainConfig(steps=1, seed=1, **small)), out)
    assert (tmp_path / "t.stage1.safetensors").is_file() and out.is_file()
    assert meta["config"]["init"].endswith("t.stage1.safetensors") and meta["init_meta"]["config"]["seed"] == 0
