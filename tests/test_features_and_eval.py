import json

import numpy as np
import pytest
import torch

from analysis.data.sources import open_source
from analysis.features import get_features
from analysis.templates import resolve_templates
from quant.encoder import TINY_WEIGHTS, load_encoder


def _features(enc, cache, templates="paper", n=12):
    src = open_source("procedural", "gating", n)
    name, t = resolve_templates(templates)
    return get_features(enc, src, "fp32", name, t, cache, batch_size=5, progress=False)


def test_cache_contents(tmp_path, tiny_random):
    fs = _features(tiny_random, tmp_path)
    g = tiny_random.geometry
    assert not fs.hit
    assert fs["ssa_mean"].shape == (12, g.depth, g.width) and fs["cls"].shape == (12, g.depth, g.width)
    assert fs["sav"].shape == (12, g.depth) and (fs["sav"] > 0).all()
    assert fs["final_embedding"].shape == (12, g.embed_dim)
    assert fs["top5"].shape == (12, 5) and fs["text_embeddings"].shape == (25, g.embed_dim)
    meta = json.loads((fs.path / "meta.json").read_text())["meta"]
    assert meta["blocks"] == list(range(1, g.depth + 1)) and meta["key"]["weights_sha256"]
    assert fs.path.suffix == ".store" and sorted(p.name for p in fs.path.iterdir()) == sorted(
        ["meta.json"] + [f"{k}.npy" for k in ("ssa_mean", "cls", "sav", "final_embedding", "top5", "labels",
                                              "text_embeddings")])


def test_cache_matches_direct_computation(tmp_path, tiny_random):
    """SSA mean, CLS and SAV of block 4 equal a direct tapped forward."""
    from analysis.data.loader import image_batches
    from quant.taps import tapped_forward

    fs = _features(tiny_random, tmp_path, n=4)
    src = open_source("procedural", "gating", 4)
    _, x = next(image_batches(tiny_random, src, 4))
    with torch.no_grad():
        z = tapped_forward(tiny_random.model.visual, x).tokens[4]
    p = z[:, 1:]
    assert np.array_equal(fs["ssa_mean"][:, 3], p.mean(1).numpy())
    assert np.array_equal(fs["cls"][:, 3], z[:, 0].numpy())
    sav = ((p - p.mean(1, keepdim=True)) ** 2).sum(-1).mean(1)
    assert np.allclose(fs["sav"][:, 3], sav.numpy(), rtol=1e-6)


def test_cache_hit_and_invalidation(tmp_path):
    torch.manual_seed(3)
    enc = load_encoder("tiny", random_init=True)
    first = _features(enc, tmp_path)
    first_ssa = first["ssa_mean"][:]  # stores are read lazily: keep a copy before the rebuild replaces it
    again = _features(enc, tmp_path)
    assert again.hit and np.array_equal(again["ssa_mean"], first_ssa)
    assert not _features(enc, tmp_path, templates="simple").hit  # templates changed
    with torch.no_grad():
        enc.model.visual.transformer.resblocks[3].mlp.c_fc.bias.add_(0.5)  # weights changed
    rebuilt = _features(enc, tmp_path)
    assert not rebuilt.hit and not np.array_equal(rebuilt["ssa_mean"][:, 3], first_ssa[:, 3])
    assert np.array_equal(rebuilt["ssa_mean"][:, 2], first_ssa[:, 2])  # blocks before 4 unchanged
    # a damaged sidecar is rebuilt, not trusted
    (rebuilt.path / "meta.json").write_text("{")
    assert not _features(enc, tmp_path).hit
    assert _features(enc, tmp_path).hit


needs_tiny = pytest.mark.skipif(not TINY_WEIGHTS.is_file(), reason="shipped tiny checkpoint missing")


@needs_tiny
def test_eval_cli_writes_result(run_cli, tmp_path):
    out = tmp_path / "r.json"
    rc, stdout, err = run_cli("eval", "--n", "50", "--cache-dir", tmp_path / "c", "--no-progress", "--out", out)
    assert rc == 0, err
    r = json.loads(out.read_text())
    assert set(r) >= {"model", "pretrained", "dataset", "precision", "templates", "n", "top1", "top5",
                      "mean_per_class_recall"}
    assert r["n"] == 50 and r["model"] == "lraee-tiny" and r["precision"] == "fp32"
    assert 0 <= r["top1"] <= r["top5"] <= 1
    assert "top1" in stdout


@needs_tiny
@pytest.mark.slow
def test_default_eval_accuracy_in_band(run_cli, tmp_path):
    """The acceptance check: the shipped tiny CLIP scores 60-95 % top-1 on the 2,000-image eval split."""
    out = tmp_path / "r.json"
    rc, _, err = run_cli("eval", "--cache-dir", tmp_path / "c", "--no-progress", "--out", out)
    assert rc == 0, err
    r = json.loads(out.read_text())
    assert r["n"] >= 2000 and 0.60 <= r["top1"] <= 0.95


def test_eval_on_image_folder_with_random_vit(run_cli, tmp_path, tiny_random):
    """The real-data path: an ImageFolder through a checkpoint file."""
    from PIL import Image
    from safetensors.torch import save_file

    for c in ("red_star", "blue_square"):
        (tmp_path / "data" / c).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.random.default_rng(i).integers(0, 255, (70, 60, 3), dtype=np.uint8)).save(
                tmp_path / "data" / c / f"{i}.jpg")
    ckpt = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_random.model.state_dict().items()}, str(ckpt))
    out = tmp_path / "r.json"
    rc, _, err = run_cli("eval", "--model", "tiny", "--pretrained", ckpt, "--data", f"folder:{tmp_path / 'data'}",
                         "--cache-dir", tmp_path / "c", "--no-progress", "--out", out)
    assert rc == 0, err
    r = json.loads(out.read_text())
    assert r["n"] == 4 and r["dataset"].startswith("folder-data")


@pytest.mark.parametrize("argv, needle", [
    (["--data", "folder:{empty}"], "no images"),
    (["--templates", "fancy"], "allowed: paper, simple, openai"),
    (["--split", "test"], "allowed: train, calibration, gating, eval"),
])
def test_eval_bad_input_leaves_no_output(run_cli, tmp_path, argv, needle):
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    out = tmp_path / "r.json"
    argv = [a.format(empty=tmp_path / "empty") for a in argv]
    rc, _, err = run_cli("eval", *argv, "--cache-dir", tmp_path / "c", "--out", out)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and needle in err
    assert not out.exists() and not (tmp_path / "c").exists()


def _summaries_by_definition(tokens, depth, exit_tap, t_layers, t_exps, V):
    """The feature pass's per-batch arrays computed as defined: int8 codes by float64 scaling, dequantised
    tokens z = q * s, float32 mean / [CLS] / SAV, integer sums (the loop before the fused one)."""
    import math

    def q8(z, e):
        return torch.clamp(torch.round(z.double() * math.ldexp(1.0, -e)), -128, 127).to(torch.int8)

    means, clss, savs = [], [], []
    for L in range(1, depth + 1):
        z = tokens[L].float()
        if exit_tap is not None and L in exit_tap.exponents:
            z = q8(z, exit_tap.exponents[L]).float() * math.ldexp(1.0, exit_tap.exponents[L])
        patches = z[:, 1:]
        mean = patches.mean(1)
        means.append(mean)
        clss.append(z[:, 0])
        savs.append(((patches - mean[:, None]) ** 2).sum(-1).mean(1))
    out = {"ssa_mean": torch.stack(means, 1), "cls": torch.stack(clss, 1), "sav": torch.stack(savs, 1)}
    qs = [q8(tokens[L].float(), t_exps[L]) for L in t_layers]
    out["tap_sum"] = torch.stack([q[:, 1:].to(torch.int32).sum(1) for q in qs], 1).to(torch.int32)
    out["tap_sumsq"] = torch.stack([(q[:, 1:].to(torch.int64) ** 2).sum((1, 2)) for q in qs], 1)
    out["saturated"] = {L: int((q.to(torch.int16).abs() >= 127).sum()) for L, q in zip(t_layers, qs)}
    out["tap_tokens"] = torch.stack([q[:V] for q in qs], 1)
    return out


def test_batch_summaries_bit_for_bit_the_definition():
    """The fused per-batch reductions of the feature pass give the bytes the definitions give (signed zeros,
    ties, saturation, blocks without an exit tap, token layers with another scale)."""
    from analysis.features import _batch_summaries
    from quant.tap import TokenTap, tap_quantize

    g = torch.Generator().manual_seed(0)
    B, T, d, depth = 6, 10, 24, 5
    tokens = [torch.empty(0)]
    for L in range(1, depth + 1):
        z = torch.randn(B, T, d, generator=g) * (0.3 * L)
        z[0, :, :3] = 0.0  # all-zero columns
        z[1, :, 3:5] = -1e-3  # negatives that round to code 0 (-0.0)
        z[2, 1:4, 5] = torch.tensor([0.5, 1.5, -2.5]) * 2.0 ** (L - 3)  # exact ties (half to even)
        z[3, 2, 6:9] = torch.tensor([1e4, -1e4, 1e-30])  # saturation, underflow
        tokens.append(z)
    exit_tap = TokenTap([1, 2, 3, 4], {1: -3, 2: -2, 3: -1, 4: 0})
    t_exps = {1: -3, 2: -4, 3: -1, 4: 0}  # block 2's sums at another scale than its exit tap
    for features in (True, False):
        fast = _batch_summaries(tokens, depth, exit_tap, ([1, 2, 3, 4], t_exps, 4), features)
        ref = _summaries_by_definition(tokens, depth, exit_tap, [1, 2, 3, 4], t_exps, 4)
        keys = ["tap_sum", "tap_sumsq", "tap_tokens"] + (["ssa_mean", "cls", "sav"] if features else [])
        for k in keys:
            a, b = fast[k].numpy(), ref[k].numpy()
            assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), k
        assert fast["saturated"] == ref["saturated"] and sum(fast["saturated"].values()) > 0
    for e in (-6, 0, 3):  # the float32 codes equal the float64 definition's
        z = torch.cat([tokens[2].reshape(-1), torch.tensor([3e38, -3e38, 1e-45, -1e-45, 0.0, -0.0])])
        ref = torch.clamp(torch.round(z.double() * 2.0 ** -e), -128, 127).to(torch.int8)
        assert torch.equal(tap_quantize(z, e), ref)


def test_stores_of_one_split_built_in_one_pass_equal_the_stores_built_alone(tmp_path, tiny_random, monkeypatch):
    """get_feature_sets decodes a split once for its INT8 (exit tap, token sums and vectors) and FP32 stores;
    each store equals, file for file, the one get_features builds alone; a cached store is not rebuilt."""
    import analysis.features as F
    from analysis.features import get_feature_sets, split_request
    from quant.prepare import prepare_recipe
    from quant.tap import TokenTap

    depth = tiny_random.geometry.depth
    src = open_source("procedural", "gating", 11)
    name, t = resolve_templates("paper")
    from analysis.data.loader import calibration_images

    int8 = prepare_recipe(tiny_random, "w8a8", calib_images=calibration_images(tiny_random, n=16))
    fp32 = prepare_recipe(tiny_random, "fp32")
    tap = TokenTap(list(range(1, depth + 1)), {L: -3 for L in range(1, depth + 1)})
    reqs = [{"precision": int8, **split_request("eval", tap, depth, token_vectors=3)},
            {"precision": fp32, **split_request("teacher", None, depth)}]
    decodes = []
    real = F.image_batches
    monkeypatch.setattr(F, "image_batches", lambda *a, **k: decodes.append(1) or real(*a, **k))
    both = get_feature_sets(tiny_random, src, reqs, name, t, tmp_path / "pair", batch_size=4, progress=False)
    assert len(decodes) == 1 and not any(fs.hit for fs in both)
    alone = [get_features(tiny_random, src, r["precision"], name, t, tmp_path / "alone", batch_size=4,
                          progress=False, **{k: v for k, v in r.items() if k != "precision"}) for r in reqs]
    assert len(decodes) == 3
    for a, b in zip(both, alone):
        files = sorted(p.name for p in a.path.iterdir() if p.suffix == ".npy")
        assert files == sorted(p.name for p in b.path.iterdir() if p.suffix == ".npy") and "final_embedding.npy" in files
        assert all((a.path / f).read_bytes() == (b.path / f).read_bytes() for f in files)
        assert a.meta["key"] == b.meta["key"]
    assert "tap_tokens.npy" in {p.name for p in both[0].path.iterdir()}
    again = get_feature_sets(tiny_random, src, reqs, name, t, tmp_path / "pair", batch_size=4, progress=False)
    assert all(fs.hit for fs in again) and len(decodes) == 3
