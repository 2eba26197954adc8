"""AdaViT baseline: the masked INT8 tower (quant/masked.py), the FLOP model, training to a FLOPs target,
seeding, and the adavit.json writer (analysis/adavit.py), on the shipped tiny model with a w8a8 recipe
calibrated on 8 procedural images."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from common.errors import InputError
from exitlogic.adavit import (AdaViTConfig, FlopModel, check_target, evaluate_adavit, mask_counts,
                              train_adavit)
from quant.masked import BlockMasks, MaskedTower

TARGET = 0.10
# Small but real: 192 training images, 3 epochs of batch 32, matching on 128 of them.
SMALL = AdaViTConfig(train_n=192, epochs=3, batch_size=32, match_n=128, match_steps=6)
TINY = AdaViTConfig(train_n=48, epochs=1, batch_size=16, match_n=32, match_steps=1)


def _images(enc, split: str, n: int):
    from analysis.data.loader import image_batches
    from analysis.data.sources import open_source

    src = open_source("procedural", split, n)
    _, x = next(image_batches(enc, src, n, workers=0))
    return src, x


@pytest.fixture(scope="module")
def setup():
    """(enc, prepared, tower, flops, text [K, E], logit scale)."""
    from hwsim.workload import layer_macs
    from quant.calibration import calibrate
    from quant.encoder import load_encoder
    from quant.fastpath import build_fast_visual
    from quant.prepare import PreparedRecipe
    from quant.recipes import parse_precision
    from analysis.templates import resolve_templates
    from analysis.zeroshot import class_embeddings

    torch.manual_seed(0)
    enc = load_encoder("tiny")
    recipe = parse_precision("w8a8")
    _, xc = _images(enc, "calibration", 8)
    qv = recipe.build(enc.model.visual, "percentile", recipe.fit(enc.model.visual, lambda: [xc]))
    calibrate(qv, [xc])
    fast = build_fast_visual(qv)
    prepared = PreparedRecipe(recipe, fast, brevitas=qv, calibration={"method": "percentile", "n": 8},
                              engine="fast")
    tower = MaskedTower(fast)
    flops = FlopModel(enc.geometry, tuple(layer_macs(enc.geometry)))
    src, _ = _images(enc, "eval", 1)
    _, templates = resolve_templates("paper")
    text = class_embeddings(enc.model, enc.tokenizer, src.classes, templates).numpy()
    return enc, prepared, tower, flops, text, float(enc.model.logit_scale.detach().exp())


@pytest.fixture(scope="module")
def data(setup):
    """Training z_0 and labels (train split), held-out z_0 and labels (gating split)."""
    enc, _, tower, *_ = setup
    tr, xt = _images(enc, "train", SMALL.train_n)
    ho, xh = _images(enc, "gating", 160)
    return tower.embed(xt), tr.labels, tower.embed(xh), ho.labels


def _ones(B, tower, N, grad=False):
    made = []

    def decide(l, x):
        m = BlockMasks(torch.ones(B, requires_grad=grad), torch.ones(B, tower.heads, requires_grad=grad),
                       torch.ones(B, N, requires_grad=grad))
        made.append(m)
        return m

    return decide, made


def test_all_ones_masks_equal_the_fast_path(setup):
    enc, prepared, tower, *_ = setup
    N = enc.geometry.patch_tokens
    x = _images(enc, "eval", 6)[1]
    with torch.no_grad():
        ref = prepared.taps(x).embedding
        decide, _ = _ones(6, tower, N)
        assert torch.equal(tower(x, decide).embedding, ref)
        assert torch.equal(tower(x).embedding, ref)  # no decide: the blocks themselves
    # soft masks that require gradients take the straight-through fake-quant path: same values
    decide, made = _ones(6, tower, N, grad=True)
    emb = tower(x, decide).embedding
    assert torch.equal(emb.detach(), ref)
    emb.pow(2).sum().backward()
    first = made[0]  # block 1's decisions get gradients through all 12 INT8 blocks
    for t in (first.block, first.heads, first.patches):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in tower.visual.parameters())


def test_fakequant_ste_keeps_values_and_passes_gradient_inside_the_range():
    from quant.fastpath import FakeQuant

    fq = FakeQuant(torch.tensor(2.0 ** -4), -128, 127)
    x = (torch.randn(4000) * 6).requires_grad_()
    y = fq(x)
    assert torch.equal(y.detach(), fq.quantize(x.detach()))
    y.sum().backward()
    inside = (torch.round(x.detach() / fq.scale) >= -128) & (torch.round(x.detach() / fq.scale) <= 127)
    assert 0 < int(inside.sum()) < 4000
    assert torch.equal(x.grad, inside.float())
    fq.fused = True  # the fused kernel's values, the same gradient
    x.grad = None
    y = fq(x)
    assert torch.equal(y.detach(), fq.quantize(x.detach()))
    y.sum().backward()
    assert torch.equal(x.grad, inside.float())


def test_flop_model_is_hwsim_at_full_keep(setup):
    from hwsim.workload import block_gemms, vision_macs

    enc, _, _, flops, *_ = setup
    g = enc.geometry
    assert flops.full_block_macs == sum(x.macs for x in block_gemms(g))
    assert flops.total_macs == vision_macs(g)
    full = torch.ones(1, g.depth)
    assert float(flops.macs(full, full * g.heads, full * g.tokens, with_decisions=False)) == flops.total_macs
    # a hand count: t tokens, h heads, width d, head width hd, MLP m
    t, h, d, hd, m = 20, 3, g.width, g.head_width, g.mlp_width
    assert flops.block_macs(t, h) == 3 * t * d * h * hd + 2 * h * t * t * hd + t * h * hd * d + 2 * t * d * m
    with pytest.raises(ValueError):
        FlopModel(g, tuple([1] * g.depth))


def test_skipped_block_is_identity_and_removes_exactly_its_flops(setup, data):
    enc, _, tower, flops, *_ = setup
    z = data[0][:4]
    skip = 5

    def decide(l, x):
        return BlockMasks(block=torch.full((x.shape[0],), 0.0 if l == skip else 1.0))

    with torch.no_grad():
        out = tower.forward_tokens(z, decide)
        h = z
        for i, blk in enumerate(tower.blocks):
            h = h if i == skip else blk(h)
        assert torch.equal(out.embedding, tower.pool(h))
    counts = mask_counts(out.masks, 4, enc.geometry)
    macs = flops.macs(*counts)
    assert torch.equal(macs, torch.full((4,), float(flops.total_macs + flops.decision_macs - flops.full_block_macs)))
    saving = 1 - flops.fraction(*counts, with_decisions=False)
    assert torch.allclose(saving, torch.tensor(flops.full_block_macs / flops.total_macs))


def test_dropped_tokens_are_untouched_and_invisible(setup, data):
    enc, _, tower, flops, *_ = setup
    g = enc.geometry
    z = data[0][:3].clone()
    keep = torch.ones(3, g.patch_tokens)
    keep[:, ::3] = 0  # drop every third patch token
    heads = torch.ones(3, g.heads)
    heads[:, 1] = 0
    masks = BlockMasks(torch.ones(3), heads, keep)
    dropped = torch.cat([torch.zeros(3, 1, dtype=torch.bool), keep == 0], 1)
    with torch.no_grad():
        y = tower.block(0, z, masks)
        assert torch.equal(y[dropped], z[dropped])  # a dropped token passes unchanged
        z2 = z.clone()
        z2[dropped] = torch.randn_like(z2[dropped]) * 3  # other content in the dropped tokens...
        y2 = tower.block(0, z2, masks)
        assert torch.equal(y2[~dropped], y[~dropped])  # ...does not reach the kept ones
    b, h, t = mask_counts([masks] + [None] * (g.depth - 1), 3, g)
    kept = 1 + g.patch_tokens - int((keep[0] == 0).sum())
    assert torch.equal(t[:, 0], torch.full((3,), float(kept)))
    expect = flops.total_macs - flops.full_block_macs + flops.block_macs(kept, g.heads - 1)
    assert torch.equal(flops.macs(b, h, t, with_decisions=False), torch.full((3,), float(expect)))


@pytest.fixture(scope="module")
def small_run(setup, data):
    enc, _, tower, flops, text, ls = setup
    z, y, zh, yh = data
    model = train_adavit(tower, z, y, text, ls, TARGET, flops, SMALL, seed=0, progress=False)
    held = evaluate_adavit(tower, model, [(zh[i:i + 80], yh[i:i + 80]) for i in range(0, len(zh), 80)], text, ls,
                           flops, progress=False)
    return model, held


def test_small_training_run_lands_at_its_flops_target(small_run):
    model, held = small_run
    match = model.record["match"]
    # Measured (seeds 0-4, 2 threads): saving on the 128 matching (training) images 0.0991-0.1006, on 160
    # held-out gating images 0.0950-0.1012 (seed 0: 0.1012); held-out top-1 0.63-0.68 (seed 0: 0.644) vs
    # 0.706 for the full-depth INT8 tower of this 8-image calibration. Tolerances: about 3x the worst seen.
    assert abs(match["saving"] - TARGET) <= 0.005, match
    assert abs(held.flops_saving - TARGET) <= 0.015, held.summary()
    assert held.flops_saving_backbone >= held.flops_saving  # the decision networks cost something
    assert held.top1 > 0.4
    assert np.all((held.flops_fraction > 0) & (held.flops_fraction <= 1 + 1e-9))


def test_same_seed_same_result(setup, data):
    enc, _, tower, flops, text, ls = setup
    z, y, zh, yh = data
    runs = [train_adavit(tower, z[:TINY.train_n], y[:TINY.train_n], text, ls, TARGET, flops, TINY, seed=s,
                         progress=False) for s in (3, 3, 4)]
    a, b, c = runs
    for (k, p), (_, q) in zip(a.nets.named_parameters(), b.nets.named_parameters()):
        assert torch.equal(p, q), k
    assert a.offset == b.offset and a.record["epochs"] == b.record["epochs"]
    assert any(not torch.equal(p, q) for p, q in zip(a.nets.parameters(), c.nets.parameters()))
    ea, eb = (evaluate_adavit(tower, m, [(zh[:64], yh[:64])], text, ls, flops, progress=False) for m in (a, b))
    assert np.array_equal(ea.pred, eb.pred) and np.array_equal(ea.macs, eb.macs)


def test_run_adavit_writes_adavit_json(setup, tmp_path):
    from analysis.adavit import run_adavit
    from analysis.data.sources import open_source

    enc, prepared, tower, flops, text, ls = setup
    tr, ev = open_source("procedural", "train", 64), open_source("procedural", "eval", 40)
    res = run_adavit(enc, prepared, tr, ev, text, ls, 0.08, tmp_path / "out", seeds=2, config=TINY, batch_size=32,
                     workers=0, progress=False)
    on_disk = json.loads((tmp_path / "out" / "adavit.json").read_text())
    timings = res.pop("timings")  # wall times beside the result, not in it (a rerun's adavit.json is identical)
    assert on_disk == json.loads(json.dumps(res)) and "seconds" not in json.dumps(on_disk)
    assert json.loads((tmp_path / "out" / "adavit.timings.json").read_text()) == timings
    assert [t["seed"] for t in timings["per_seed"]] == [0, 1] and timings["seconds"] > 0
    assert [p["seed"] for p in res["per_seed"]] == [0, 1]
    vals = [p["top1"] for p in res["per_seed"]]
    assert res["top1"]["values"] == vals and res["top1"]["mean"] == pytest.approx(np.mean(vals))
    assert res["flops_saving"]["std"] == pytest.approx(np.std([p["flops_saving"] for p in res["per_seed"]], ddof=1))
    assert res["paper"]["top1_pct"] == 59.84 and res["paper"]["flops_saving_pct"] == 13.50
    assert res["target_saving"] == 0.08 and res["train"]["n"] == TINY.train_n and res["eval"]["n"] == 40
    assert res["config"]["train_n"] == TINY.train_n


def test_bad_input_is_one_line(setup, tmp_path):
    from analysis.adavit import run_adavit
    from analysis.data.sources import open_source
    from quant.prepare import PreparedRecipe
    from quant.recipes import parse_precision

    enc, prepared, tower, flops, text, ls = setup
    tr, ev = open_source("procedural", "train", 8), open_source("procedural", "eval", 8)
    cases = [
        (dict(target_saving=1.2), "target_saving"),
        (dict(target_saving=float("nan")), "target_saving"),
        (dict(seeds=0), "seeds"),
        (dict(train_source=open_source("procedural", "eval", 8)), "train_source"),
        (dict(text_embeddings=text[:3]), "text_embeddings"),
        (dict(logit_scale=-1.0), "logit_scale"),
        (dict(prepared=PreparedRecipe(parse_precision("fp32"), enc.model.visual)), "precision"),
    ]
    for override, field in cases:
        kw = dict(enc=enc, prepared=prepared, train_source=tr, eval_source=ev, text_embeddings=text, logit_scale=ls,
                  target_saving=0.1, out=tmp_path / "bad", seeds=1, config=TINY, workers=0, progress=False)
        kw.update(override)
        with pytest.raises(InputError) as e:
            run_adavit(**kw)
        msg = str(e.value)
        assert field in msg and "allowed" in msg and "\n" not in msg, msg
    assert not (tmp_path / "bad" / "adavit.json").exists()
    with pytest.raises(InputError, match="adavit.epochs"):
        replace(TINY, epochs=0)
    assert check_target(0) == 0.0


def test_cli_target_out_of_range_names_the_flag_before_any_work(run_cli, tmp_path):
    rc, _, err = run_cli("adavit", "--policy", tmp_path / "no-policy", "--target", "1.5", "--out", tmp_path / "o")
    assert rc == 2 and err.strip().splitlines() == [err.strip()]
    assert "--target 1.5" in err and "allowed" in err and "[0, 1)" in err  # the flag, not the internal name
    assert not (tmp_path / "o" / "adavit.json").exists()
