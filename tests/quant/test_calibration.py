"""Calibration: save / load round trip, refusals (zero images, other model, uncalibrated)."""
import json

import pytest
import torch

from common.errors import InputError
from quant.brevitas_model import build_quant_visual, quant_tapped_forward
from quant.calibration import calibrate, calibration_state, load_calibration, save_calibration, state_sha256
from quant.prepare import calibration_expect, prepare_recipe
from quant.recipes import parse_precision

W8A8 = parse_precision("w8a8")


def test_save_load_round_trip_identical_outputs(tiny_random, tiny_w8a8, images, tmp_path):
    path = tmp_path / "cal.safetensors"
    expect = calibration_expect(tiny_random, W8A8, "percentile")
    rec = save_calibration(path, tiny_w8a8, {**expect, "n": 8, "data": "test"})
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["state_sha256"] == rec["state_sha256"] == state_sha256(calibration_state(tiny_w8a8))
    assert side["weights_sha256"] == expect["weights_sha256"] and side["tensors"] > 0
    fresh = build_quant_visual(tiny_random.model.visual, W8A8)
    load_calibration(path, fresh, expect)
    x = images(tiny_random, 2, "eval")
    with torch.no_grad():
        a, b = quant_tapped_forward(tiny_w8a8, x), quant_tapped_forward(fresh, x)
    assert all(torch.equal(u, v) for u, v in zip(a.tokens, b.tokens)) and torch.equal(a.embedding, b.embedding)


def test_calibration_file_from_another_model_is_refused(tiny_random, tiny_w8a8, tmp_path):
    path = tmp_path / "cal.safetensors"
    expect = calibration_expect(tiny_random, W8A8, "percentile")
    save_calibration(path, tiny_w8a8, {**expect, "n": 8, "data": "test"})
    other = {**expect, "weights_sha256": "0" * 64}
    with pytest.raises(InputError, match="hash mismatch") as e:
        load_calibration(path, build_quant_visual(tiny_random.model.visual, W8A8), other)
    assert "\n" not in str(e.value)
    with pytest.raises(InputError, match="recipe"):
        load_calibration(path, build_quant_visual(tiny_random.model.visual, W8A8),
                         {**expect, "recipe": parse_precision("w4a8").descriptor()})


def test_tampered_state_is_refused(tiny_random, tiny_w8a8, tmp_path):
    from safetensors.torch import load_file, save_file

    path = tmp_path / "cal.safetensors"
    expect = calibration_expect(tiny_random, W8A8, "percentile")
    save_calibration(path, tiny_w8a8, {**expect, "n": 8, "data": "test"})
    st = load_file(str(path))
    k = next(iter(st))
    st[k] = st[k] + 1
    save_file(st, str(path))
    with pytest.raises(InputError, match="state_sha256"):
        load_calibration(path, build_quant_visual(tiny_random.model.visual, W8A8), expect)


def test_zero_images_refused_nothing_changed(tiny_random):
    qv = build_quant_visual(tiny_random.model.visual, W8A8)
    with pytest.raises(InputError, match="at least one image"):
        calibrate(qv, [])
    assert not getattr(qv, "lraee_calibrated", False)


def test_uncalibrated_model_refuses_to_evaluate(tiny_random):
    from quant.prepare import PreparedRecipe

    p = PreparedRecipe(W8A8, build_quant_visual(tiny_random.model.visual, W8A8))
    with pytest.raises(InputError, match="not calibrated"):
        p.taps(torch.zeros(1, 3, 56, 56))
    from quant.fastpath import build_fast_visual

    with pytest.raises(ValueError, match="uncalibrated"):
        build_fast_visual(p.visual)


def test_default_calibration_is_saved_then_reloaded_not_recomputed(tiny_random, tmp_path, capsys):
    from analysis.data.loader import calibration_images

    a = prepare_recipe(tiny_random, "w8a8", calib_images=calibration_images(tiny_random, n=4), cache_dir=tmp_path)
    assert any("calibrating" in n for n in a.notes) and "calibrating" in capsys.readouterr().err
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".safetensors")
    b = prepare_recipe(tiny_random, "w8a8", calib_images=calibration_images(tiny_random, n=4), cache_dir=tmp_path)
    assert b.notes == [] and b.calibration["state_sha256"] == a.calibration["state_sha256"]
    assert a.descriptor() == b.descriptor() and "calibration" in a.descriptor()
    with pytest.raises(InputError, match="--n 0"):
        prepare_recipe(tiny_random, "w8a8", calib_images=calibration_images(tiny_random, n=0), cache_dir=tmp_path / "z")
    with pytest.raises(InputError, match="needs a calibration"):
        prepare_recipe(tiny_random, "w8a8", cache_dir=tmp_path / "z")
    assert not (tmp_path / "z").exists()


def test_cli_calibrate_zero_images_and_other_model(run_cli, tiny_ckpt, tmp_path):
    out = tmp_path / "c.safetensors"
    rc, _, err = run_cli("calibrate", "--pretrained", tiny_ckpt, "--calib-n", "0", "--out", out)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and not out.exists()
    rc, _, err = run_cli("calibrate", "--pretrained", tiny_ckpt, "--calib-n", "4", "--out", out, "--no-progress",
                         "--check-exact")
    assert rc == 0 and out.exists() and out.with_suffix(".json").exists()
    ex = json.loads((tmp_path / "c.exactness.json").read_text())
    assert ex["all_exact"] and ex["layers"] == 74
    assert all(r["acc_bits"] > 0 and "acc_max_abs" in r for r in ex["records"])
    # the same file given to a model with other weights (random init of ViT geometry differs: use tiny, new seed)
    from safetensors.torch import save_file

    from quant.encoder import load_encoder

    torch.manual_seed(123)
    other = load_encoder("tiny", random_init=True)
    ck = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in other.model.state_dict().items()}, str(ck))
    r = tmp_path / "r.json"
    rc, _, err = run_cli("eval", "--pretrained", ck, "--precision", "w8a8", "--calibration", out, "--n", "4",
                         "--out", r, "--cache-dir", tmp_path / "fc")
    assert rc == 2 and "hash mismatch" in err and len(err.strip().splitlines()) == 1
    assert not r.exists() and not (tmp_path / "fc").exists()
