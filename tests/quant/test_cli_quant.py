"""eval / profile / features / export with the INT8 recipes, end to end on the random tiny checkpoint."""
import json

import numpy as np
import pytest

from quant.profile import PROFILE_KEYS


def test_eval_w8a8_and_dynamic_report_fp32_next_to_int8(run_cli, tiny_ckpt, tmp_path):
    cache = tmp_path / "fc"
    cal = tmp_path / "cal"
    for prec in ("w8a8", "int8-dynamic"):
        out = tmp_path / f"{prec}.json"
        rc, stdout, err = run_cli("eval", "--pretrained", tiny_ckpt, "--precision", prec, "--n", "8", "--calib-n", "8",
                                  "--out", out, "--cache-dir", cache, "--no-progress")
        assert rc == 0, err
        r = json.loads(out.read_text())
        assert r["precision"] == prec and r["n"] == 8
        assert {"top1", "fp32_top1", "fp32_top5", "delta_top1", "recipe"} <= set(r)
        assert "fp32 top1" in stdout
    meta = json.loads((next(cache.glob("lraee-tiny-w8a8-*.store")) / "meta.json").read_text())["meta"]
    assert meta["key"]["recipe_sha256"] and meta["recipe"]["calibration"]["state_sha256"]
    assert meta["recipe"]["calibration"]["n"] == 8


def test_features_cache_stores_int8_block_outputs_and_keys_on_calibration(run_cli, tiny_ckpt, tmp_path):
    from common.store import Store

    cache = tmp_path / "fc"
    args = ["features", "--pretrained", tiny_ckpt, "--n", "4", "--cache-dir", cache, "--no-progress"]
    assert run_cli(*args)[0] == 0
    assert run_cli(*args, "--precision", "w8a8", "--calib-n", "4")[0] == 0
    f32 = Store(next(cache.glob("*-fp32-*.store")))
    q = Store(next(cache.glob("*-w8a8-*.store")))
    assert f32["ssa_mean"].shape == q["ssa_mean"].shape and not np.array_equal(f32.load("ssa_mean"), q.load("ssa_mean"))
    # another calibration (other n) gives another key: the entry is rebuilt, not reused
    rc, out, _ = run_cli(*args, "--precision", "w8a8", "--calib-n", "6")
    assert rc == 0 and out.startswith("built")
    rc, out, _ = run_cli(*args, "--precision", "w8a8", "--calib-n", "6")
    assert rc == 0 and out.startswith("reused")


def test_profile_writes_one_record_per_block_with_every_key(run_cli, tiny_ckpt, tmp_path):
    out = tmp_path / "prof"
    rc, stdout, err = run_cli("profile", "--pretrained", tiny_ckpt, "--precision", "w8a8", "--n", "6", "--calib-n", "6",
                              "--out", out, "--no-progress", "--cache-dir", tmp_path / "fc")
    assert rc == 0, err
    p = json.loads((out / "profile.json").read_text())
    assert len(p["blocks"]) == 12 and p["n"] == 6 and p["split"] == "calibration"
    for i, r in enumerate(p["blocks"], start=1):
        assert set(PROFILE_KEYS) <= set(r) and r["block"] == i
        assert r["d_nat"] > 0 and r["d_quant"] > 0 and r["inr"] > 0 and 0 < r["cos_int8_fp32_pooled"] <= 1 + 1e-9
        assert r["ratio"] == pytest.approx(r["d_quant"] / r["d_nat"])
    png = (out / "profile.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    rc, _, err = run_cli("profile", "--pretrained", tiny_ckpt, "--precision", "fp32", "--out", tmp_path / "p2")
    assert rc == 2 and not (tmp_path / "p2").exists()


def test_profile_math_on_known_noise():
    """Eq. 1 / 5 definitions on synthetic taps: q = fp + known noise."""
    import torch

    from quant.profile import qirc_profile
    from quant.taps import Taps

    torch.manual_seed(0)
    zs = [torch.randn(64, 5, 8) for _ in range(3)]
    noise = [torch.randn(64, 5, 8) * 0.1 for _ in range(3)]

    class FP(torch.nn.Module):
        pass

    class Q:
        def taps(self, x):
            return Taps([z + e for z, e in zip(zs, noise)], zs[-1][:, 0] + noise[-1][:, 0])

    import quant.profile as qp

    orig = qp.tapped_forward
    qp.tapped_forward = lambda v, x: Taps(zs, zs[-1][:, 0])
    try:
        prof = qirc_profile(FP(), Q(), [torch.zeros(64)], depth=2)
    finally:
        qp.tapped_forward = orig
    r = prof["blocks"][1]
    e = noise[2].double()
    assert r["d_quant"] == pytest.approx(float(e.flatten(1).norm(dim=1).mean()))
    assert r["d_nat"] == pytest.approx(float((zs[2] - zs[1]).double().flatten(1).norm(dim=1).mean()))
    assert r["mse"] == pytest.approx(float((e ** 2).mean()))
    inr = float((zs[2].double().mean(0) ** 2).sum()) / float(e.var(0, unbiased=False).sum())
    assert r["inr"] == pytest.approx(inr)


@pytest.mark.slow
def test_cli_export(run_cli, tiny_ckpt, tmp_path):
    for pkg in ("onnx", "onnxoptimizer", "onnxruntime", "qonnx"):
        pytest.importorskip(pkg)
    out = tmp_path / "t.onnx"
    rc, stdout, err = run_cli("export", "--pretrained", tiny_ckpt, "--calib-n", "4", "--check-n", "1", "--out", out)
    assert rc == 0, err
    rec = json.loads(out.with_suffix(".json").read_text())  # the layer-wise check: tests/quant/test_qonnx.py
    assert out.exists() and len(rec["layers"]) + rec["weights_biases"]["nodes"] == rec["quant_nodes"] > 0
    assert rec["sync"]["unexplained"] == 0 and rec["weights_biases"]["codes_differ"] == 0
    assert 0.0 <= rec["top1_agreement"] <= 1.0 and rec["templates"] == "paper"
    assert "per node (inputs re-fed from Brevitas)" in stdout
    assert not list(tmp_path.glob(".*tmp*"))
