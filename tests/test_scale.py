"""The data path at scale: bounded memory, one text-tower pass, no eval leakage, folder class names."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

_MEMORY_SCRIPT = r"""
import json, resource, sys, torch
from analysis.data.sources import open_source
from analysis.features import get_features, split_request
from exitlogic.heads import HeadTrainConfig, train_heads
from quant.encoder import load_encoder
from quant.tap import TokenTap
torch.manual_seed(0)
torch.set_num_threads(1)
n, cache = int(sys.argv[1]), sys.argv[2]
enc = load_encoder("tiny", random_init=True)
D = enc.geometry.depth
tap = TokenTap(range(1, D + 1), {L: -3 for L in range(1, D + 1)}, {"name": "fixed"})
src = open_source("procedural", "train", n)
fs = get_features(enc, src, "fp32", "paper", ["a photo of a {}."], cache, batch_size=64, progress=False,
                  workers=0, **split_request("eval", tap, D, 16))
heads = train_heads({"ssa_mean": fs["ssa_mean"]}, [("ssa_mean", "hard")], fs["labels"], fs["text_embeddings"],
                    10.0, list(range(1, D + 1)), HeadTrainConfig(epochs=1, batch_size=128), seed=0, progress=False)
print(json.dumps({"maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "disk": fs.store.disk_bytes()}))
"""


@pytest.mark.slow
def test_feature_build_and_head_training_memory_is_independent_of_n(tmp_path):
    """Features (with exit-tap sums) for n and 8n images, then head training from the store: the peak RSS
    grows by far less than the data the larger store holds (an in-memory path would grow by all of it).
    glibc's allocator keeps freed batch buffers for reuse, so identical processes differ by up to about 40 MB of
    peak RSS; with large blocks mapped and unmapped directly (``MALLOC_MMAP_THRESHOLD_``) the peak is steady
    to about 1 MB, and what remains is what the work holds."""
    res = {}
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    for n in (1024, 8192):
        r = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(n), str(tmp_path / f"c{n}")],
                           capture_output=True, text=True, timeout=900, env=env)
        assert r.returncode == 0, r.stderr[-2000:]
        res[n] = json.loads(r.stdout.strip().splitlines()[-1])
    grown = (res[8192]["maxrss_kb"] - res[1024]["maxrss_kb"]) * 1024
    more_data = res[8192]["disk"] - res[1024]["disk"]
    assert more_data > 120e6
    assert grown < 0.3 * more_data, (grown, more_data)


def test_text_tower_runs_once_and_is_cached_by_content(tmp_path, tiny_random, monkeypatch):
    from analysis.data.sources import open_source
    from analysis.features import get_features
    from analysis.zeroshot import class_embeddings, text_embeddings

    import analysis.zeroshot as zs

    calls = []
    real = zs.encode_text
    monkeypatch.setattr(zs, "encode_text", lambda m, t: calls.append(len(t)) or real(m, t))
    templates = ["a {}.", "the {} here."]
    for split in ("gating", "eval"):  # two splits, one precision each: one text pass in all
        get_features(tiny_random, open_source("procedural", split, 6), "fp32", "x", templates, tmp_path,
                     progress=False, workers=0)
    assert sum(calls) == 25 * 2  # K x T prompts, once
    emb, hit = text_embeddings(tiny_random, open_source("procedural", "eval", 2).classes, templates, tmp_path / "text")
    assert hit and emb.shape == (25, tiny_random.geometry.embed_dim)
    emb2, hit2 = text_embeddings(tiny_random, ["red circle", "blue star"], templates, tmp_path / "text")
    assert not hit2 and emb2.shape[0] == 2
    # batched across classes == one class at a time
    one = torch.cat([class_embeddings(tiny_random.model, tiny_random.tokenizer, [c], templates)
                     for c in ("red circle", "blue star")])
    assert torch.allclose(torch.from_numpy(emb2), one, atol=1e-6)
    with torch.no_grad():  # other text weights: another entry
        tiny_random.model.token_embedding.weight[5] += 1.0
    assert not text_embeddings(tiny_random, ["red circle", "blue star"], templates, tmp_path / "text")[1]


def test_text_tower_on_the_shortest_prefix_equals_encode_text(tiny_random, vitb32_random):
    """The causal text tower read at the end-of-text token, on the context cut after the longest prompt's
    end-of-text token: the same embeddings as open_clip's encode_text (up to float rounding)."""
    import analysis.zeroshot as zs

    prompts = ["a {}.".format("red circle"), "a blurry photo of the {} in a field.".format("blue star"),
               " ".join(["word"] * 100)]  # the last fills the whole context (truncated by the tokenizer)
    for enc in (tiny_random, vitb32_random):
        m = enc.model.eval()
        for batch in (prompts[:2], prompts):
            toks = enc.tokenizer(batch)
            with torch.no_grad():
                want, got = m.encode_text(toks), zs.encode_text(m, toks)
            assert got.shape == want.shape
            assert torch.allclose(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
    calls = []  # an overridden encode_text is respected
    real = tiny_random.model.encode_text
    tiny_random.model.encode_text = lambda t: calls.append(len(t)) or real(t)
    try:
        zs.encode_text(tiny_random.model, tiny_random.tokenizer(prompts[:2]))
    finally:
        del tiny_random.model.encode_text
    assert calls == [2]


def _folder(root, classes, per_class=2, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray((rng.random((20, 20, 3)) * 255).astype(np.uint8)).save(root / c / f"{i}.png")
    return root


def test_folder_sources_take_the_eval_class_names_and_indices(tmp_path):
    from analysis.data.sources import open_source

    ev = open_source(f"folder:{_folder(tmp_path / 'val', ['n01', 'n02', 'n03'])}")
    gate = open_source(f"folder:{_folder(tmp_path / 'gate', ['n02', 'n03'])}", "gating", like=ev)
    assert gate.classes == ev.classes and gate.labels.tolist() == [1, 1, 2, 2]
    from common.errors import InputError

    with pytest.raises(InputError, match="not classes of the eval source"):
        open_source(f"folder:{_folder(tmp_path / 'other', ['zebra'])}", "gating", like=ev)
    cal = open_source(f"folder:{tmp_path / 'val'}", "calibration", 3)
    assert len(cal) == 3 and cal.descriptor["sample"]["split"] == "calibration"


@pytest.mark.parametrize("data, needle", [
    ({"train_source": "folder:{train}", "gating_source": "folder:{val}"}, "data.gating_source: "),
    ({"train_source": "folder:{train}", "gating_source": "folder:{gate}", "calibration_source": "folder:{val}"},
     "data.calibration_source: "),
    ({"train_source": "folder:{link}", "gating_source": "folder:{gate}"}, "data.train_source: "),
    ({"gating_source": "folder:{gate}"}, "data.train_source: missing"),
])
def test_run_refuses_leakage_into_eval_before_any_stage(run_cli, tmp_path, data, needle):
    val = _folder(tmp_path / "val", ["a", "b"])
    train = _folder(tmp_path / "train", ["a", "b"], seed=1)
    gate = _folder(tmp_path / "gate", ["a", "b"], seed=2)
    (tmp_path / "link").mkdir()
    (tmp_path / "link" / "a").symlink_to(val / "a")  # the same files under another name
    cfg = tmp_path / "run.yaml"
    fmt = {"train": train, "val": val, "gate": gate, "link": tmp_path / "link"}
    cfg.write_text(yaml.safe_dump({"data": {k: v.format(**fmt) for k, v in data.items()},
                                   "runtime": {"cache_dir": str(tmp_path / "cache")}}))
    out = tmp_path / "out"
    rc, _, err = run_cli("run", "--config", cfg, "--data", f"folder:{val}", "--out", out, "--no-progress")
    assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not (tmp_path / "cache").exists()


def test_decoding_workers_give_the_same_batches(tiny_random):
    """DataLoader workers and in-process decoding (``workers=0``) yield the same batches in the same order, bit for
    bit."""
    from analysis.data import loader
    from analysis.data.sources import open_source

    src = open_source("procedural", "eval", 40)
    got = {w: [(s, x.clone()) for s, x in loader.image_batches(tiny_random, src, 16, workers=w)] for w in (0, 2)}
    assert [s for s, _ in got[0]] == [s for s, _ in got[2]] == [0, 16, 32]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(got[0], got[2]))


def test_peak_rss_is_measured_per_stretch_of_work():
    from common import peak_rss

    if not peak_rss.reset():
        pytest.skip("the kernel does not allow resetting the RSS high-water mark here")
    import mmap

    base = peak_rss.peak_bytes()
    big = mmap.mmap(-1, 200 << 20)  # 200 MiB of fresh anonymous pages (not freed heap the allocator reuses)
    np.frombuffer(big, dtype=np.uint8)[::4096] = 1  # touch every page
    grown = peak_rss.peak_bytes()
    big.close()
    assert grown - base >= 190 << 20
    assert peak_rss.reset()
    assert peak_rss.peak_bytes() < grown - (150 << 20)  # the peak restarted at the current RSS


def test_pass_timing_records_carry_the_stage(tmp_path, monkeypatch):
    from common import timing

    log = tmp_path / "t.jsonl"
    monkeypatch.setenv(timing.ENV, str(log))
    for stage in ("features", None):
        timing.set_stage(stage)
        t = timing.PassTimer("features int8")
        t.start()
        t.stop(4)
        t.close()
    timing.set_stage(None)
    with timing.span("width search", 7, split="gating"):
        pass
    with pytest.raises(RuntimeError):
        with timing.span("validation", 9, split="eval"):
            raise RuntimeError("no record for a span that raised")
    recs = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["stage"] for r in recs] == ["features", None, None] and recs[0]["images"] == 4
    assert [(r["kind"], r["split"]) for r in recs] == [("backbone", None), ("backbone", None), ("work", "gating")]
    assert recs[2]["pass"] == "width search" and recs[2]["images"] == 7
