"""The real path: a checkpoint file loaded through --pretrained, and bad checkpoints."""
import torch
from safetensors.torch import save_file

from quant.encoder import load_encoder


def test_vitb32_checkpoint_file_round_trip(tmp_path, vitb32_random):
    """A random ViT-B-32 saved to .pt and .safetensors loads to identical outputs (OpenAI-weights path)."""
    sd = vitb32_random.model.state_dict()
    pt, st = tmp_path / "vitb32.pt", tmp_path / "vitb32.safetensors"
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, pt)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(st))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ref = vitb32_random.model.encode_image(x)
        for path in (pt, st):
            enc = load_encoder("ViT-B-32", pretrained=str(path))
            assert torch.equal(enc.model.encode_image(x), ref)
            assert enc.geometry == vitb32_random.geometry


def test_quickgelu_config_builds_quickgelu(tmp_path, tiny_random):
    enc = load_encoder("ViT-B-32-quickgelu", random_init=True)
    assert enc.geometry.activation == "quick_gelu"
    enc2 = load_encoder("ViT-B-32", random_init=True, force_quick_gelu=True)
    assert enc2.geometry.activation == "quick_gelu"


def _one_line_error(rc, err, *needles):
    assert rc == 2
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("lraee: note:")]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], lines[0]


def test_missing_checkpoint(run_cli, tmp_path):
    out = tmp_path / "r.json"
    rc, _, err = run_cli("eval", "--model", "tiny", "--pretrained", tmp_path / "nope.pt", "--n", "10", "--out", out)
    _one_line_error(rc, err, "nope.pt", "not found")
    assert not out.exists()


def test_corrupt_checkpoint(run_cli, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x80\x02garbage" * 100)
    out = tmp_path / "r.json"
    rc, _, err = run_cli("eval", "--model", "tiny", "--pretrained", bad, "--n", "10", "--out", out)
    _one_line_error(rc, err, "bad.pt", "cannot read checkpoint")
    assert not out.exists()
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"not a safetensors file")
    rc, _, err = run_cli("info", "--model", "tiny", "--pretrained", bad_st)
    _one_line_error(rc, err, "bad.safetensors")


def test_checkpoint_of_another_model(run_cli, tmp_path, tiny_random):
    p = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_random.model.state_dict().items()}, str(p))
    rc, _, err = run_cli("info", "--model", "ViT-B-32", "--pretrained", p)
    _one_line_error(rc, err, "tiny.safetensors", "does not fit model ViT-B-32")


def test_unknown_model_name(run_cli, tmp_path):
    out = tmp_path / "r.json"
    rc, _, err = run_cli("eval", "--model", "ViT-Z-99", "--out", out)
    _one_line_error(rc, err, "ViT-Z-99", "allowed")
    assert not out.exists()


def test_hub_schema_refused(run_cli):
    rc, _, err = run_cli("info", "--model", "hf-hub:timm/whatever")
    _one_line_error(rc, err, "hf-hub")
