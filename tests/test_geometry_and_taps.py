import json

import pytest
import torch

from quant.geometry import EncoderGeometry
from quant.taps import tapped_forward


def test_vitb32_geometry(vitb32_random):
    g = vitb32_random.geometry
    assert (g.depth, g.width, g.heads, g.patch_tokens, g.tokens, g.embed_dim) == (12, 768, 12, 49, 50, 512)
    assert (g.grid, g.patch_size, g.image_size, g.mlp_width) == (7, 32, 224, 3072)
    assert g.vision_params == sum(p.numel() for p in vitb32_random.model.visual.parameters())


def test_tiny_geometry_keeps_vitb32_token_layout(tiny_random):
    g = tiny_random.geometry
    assert (g.depth, g.grid, g.patch_tokens, g.tokens) == (12, 7, 49, 50)
    assert g.width <= 256


def test_geometry_json_round_trip(tmp_path, tiny_random):
    p = tmp_path / "g.json"
    p.write_text(tiny_random.geometry.to_json())
    assert EncoderGeometry.from_json(p) == tiny_random.geometry
    d = json.loads(p.read_text())
    del d["tokens"]
    with pytest.raises(ValueError, match="tokens"):
        EncoderGeometry.from_dict(d)


def test_info_json_cli(run_cli):
    rc, out, err = run_cli("info", "--model", "ViT-B-32", "--json")
    assert rc == 0, err
    d = json.loads(out)
    assert (d["tokens"], d["width"], d["depth"], d["patch_tokens"]) == (50, 768, 12, 49)
    assert abs(d["macs"] - 4.41e9) / 4.41e9 < 0.01


@pytest.mark.parametrize("enc_fixture", ["tiny_random", "vitb32_random"])
def test_tapped_forward_equals_encode_image(request, enc_fixture):
    enc = request.getfixturevalue(enc_fixture)
    s = enc.geometry.image_size
    torch.manual_seed(1)
    x = torch.randn(2, 3, s, s)
    with torch.no_grad():
        taps = tapped_forward(enc.model.visual, x)
        ref = enc.model.encode_image(x)
    assert torch.equal(taps.embedding, ref)
    assert len(taps.tokens) == enc.geometry.depth + 1
    assert all(t.shape == (2, enc.geometry.tokens, enc.geometry.width) for t in taps.tokens)


def test_truncated_taps_are_a_prefix(tiny_random):
    x = torch.randn(3, 3, 56, 56)
    with torch.no_grad():
        full = tapped_forward(tiny_random.model.visual, x)
        part = tapped_forward(tiny_random.model.visual, x, depth=5, keep={5})
    assert part.embedding is None and len(part.tokens) == 6
    assert part.tokens[3].numel() == 0
    assert torch.equal(part.tokens[5], full.tokens[5])


@pytest.mark.parametrize("enc_fixture", ["tiny_random", "vitb32_random"])
def test_shipped_geometry_matches_the_model(request, enc_fixture):
    """The JSON copies torch-free code reads must equal what the loader reads off the model."""
    from quant.geometry import shipped_geometry

    enc = request.getfixturevalue(enc_fixture)
    assert shipped_geometry(enc.name) == enc.geometry
