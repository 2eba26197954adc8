"""Recipe strings, the --precision flag's errors, and the documented quantized / float parts."""
import pytest
import torch
from torch import nn

from common.errors import InputError
from quant.recipes import parse_precision


@pytest.mark.parametrize("text,w,a", [("w8a8", 8, 8), ("w4a8", 4, 8), ("w6a6", 6, 6), ("W2A16", 2, 16),
                                      ("w16a2", 16, 2)])
def test_wxay_parsing(text, w, a):
    r = parse_precision(text)
    assert (r.kind, r.w_bits, r.a_bits, r.scales, r.name) == ("static", w, a, "po2", f"w{w}a{a}")
    assert parse_precision(text, "float").descriptor()["scales"] == "float"


def test_fp32_and_dynamic():
    assert parse_precision("fp32").kind == "fp32"
    assert parse_precision("int8-dynamic").kind == "dynamic"


# Feature stores, calibration files and pipeline results are keyed by these strings. The values
# were computed by the string-branch code before the recipe protocol (issue 14) and must never drift.
GOLDEN = [  # text, scales, sha256(descriptor)[:16], tag (percentile), tag (mse)
    ("fp32", "po2", "b6d0b68108210824", "fp32", "fp32"),
    ("int8-dynamic", "po2", "74f2e2c12c754070", "int8-dynamic", "int8-dynamic"),
    ("w8a8", "po2", "d9cf11630c4032a4", "w8a8", "w8a8-mse"),
    ("w8a8", "float", "355bc484da29cf04", "w8a8-float", "w8a8-float-mse"),
    ("w4a8", "po2", "d73ea554019616cd", "w4a8", "w4a8-mse"),
    ("w6a6", "float", "cb008678a3cafc7a", "w6a6-float", "w6a6-float-mse"),
]


@pytest.mark.parametrize("text,scales,sha,tag,tag_mse", GOLDEN)
def test_recipe_identity_strings_are_unchanged(text, scales, sha, tag, tag_mse):
    from common.hashing import json_sha256
    from quant.prepare import PreparedRecipe, default_calibration_path

    r = parse_precision(text, scales)
    assert json_sha256(r.descriptor())[:16] == sha
    cal = {"method": "mse", "n": 8, "data": "d", "state_sha256": "0" * 64} if r.needs_calibration else None
    assert PreparedRecipe(r, None).tag == tag and PreparedRecipe(r, None, calibration=cal).tag == tag_mse

    class Enc:
        name = "lraee-tiny"

    if r.needs_calibration:
        assert default_calibration_path(Enc(), r, "minmax", 8, "procedural").name == \
            f"lraee-tiny-{tag}-minmax-procedural.safetensors"


def test_registry_implements_the_protocol_and_derives_the_allowed_values():
    from quant.recipes import (ALLOWED_TEXT, MODIFIERS, PRECISIONS, RECIPES, Modifier, Recipe,
                               quantized_allowed_text, static_allowed_text)

    assert list(RECIPES) == ["fp32", "int8-dynamic", "wXaY"] and list(MODIFIERS) == ["sq"]
    assert PRECISIONS == ("fp32", "int8-dynamic", "w8a8", "wXaY")
    for cls in RECIPES.values():
        assert issubclass(cls, Recipe) and not getattr(cls, "__abstractmethods__", None)
        assert cls.grammar in ALLOWED_TEXT
        assert (cls.grammar in static_allowed_text()) == cls.needs_calibration
        assert (cls.grammar in quantized_allowed_text()) == (cls.kind != "fp32")
    for m in MODIFIERS.values():
        assert issubclass(m, Modifier) and not getattr(m, "__abstractmethods__", None) and m.grammar in ALLOWED_TEXT
    assert ALLOWED_TEXT.startswith("fp32, int8-dynamic, w8a8, or wXaY with X, Y in 2..16 (e.g. w4a8, w6a6)")
    bits = {t: (parse_precision(t).w_bits, parse_precision(t).a_bits) for t in ("fp32", "int8-dynamic", "w4a6+sq")}
    assert bits == {"fp32": (None, None), "int8-dynamic": (8, 8), "w4a6+sq": (4, 6)}
    assert [parse_precision(t).needs_calibration for t in ("fp32", "int8-dynamic", "w8a8", "w8a8+sq")] == \
        [False, False, True, True]


def test_info_precision_without_value_lists_the_registry(run_cli):
    import json

    from quant.recipes import MODIFIERS, RECIPES

    rc, out, _ = run_cli("info", "--precision")
    assert rc == 0
    for cls in RECIPES.values():
        assert cls.grammar in out and cls.summary in out
    for m in MODIFIERS.values():
        assert m.grammar in out
    rc, out, _ = run_cli("info", "--precision", "--json")
    reg = json.loads(out)
    assert [r["recipe"] for r in reg["recipes"]] == list(RECIPES) and reg["modifiers"][0]["modifier"] == "+sq"
    rc, out, _ = run_cli("info", "--precision", "w4a8+sq0.7")
    assert rc == 0 and "precision w4a8+sq0.7" in out and "SmoothQuant (alpha 0.7)" in out


@pytest.mark.parametrize("bad", ["int8", "w1a8", "w8a1", "w17a8", "w8a17", "w0a0", "w8", "fp16", "", "w8a8x"])
def test_bad_precision_strings(bad):
    with pytest.raises(InputError) as e:
        parse_precision(bad)
    msg = str(e.value)
    assert "\n" not in msg and "--precision" in msg and "wXaY" in msg


def test_bad_scales():
    with pytest.raises(InputError, match="--scales"):
        parse_precision("w8a8", "pot")


@pytest.mark.parametrize("bad", ["int4", "w1a8", "w8a20"])
def test_cli_unknown_precision_one_line_exit_2_nothing_written(run_cli, tmp_path, bad):
    out = tmp_path / "r.json"
    rc, _, err = run_cli("eval", "--precision", bad, "--out", out)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "--precision" in err
    assert not out.exists()
    rc, _, err = run_cli("profile", "--precision", bad, "--out", tmp_path / "p")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and not (tmp_path / "p").exists()


def test_info_lists_float_parts(run_cli):
    rc, out, _ = run_cli("info", "--precision", "w4a8")
    assert rc == 0
    assert "LayerNorm" in out and "GELU" in out and "softmax" in out and "residual" in out
    assert "4-bit per channel" in out and "8-bit" in out
    rc, out, _ = run_cli("info", "--precision", "int8-dynamic")
    assert rc == 0 and "c_fc" in out and "out_proj" in out


def test_static_model_quantizes_exactly_the_listed_layers_and_keeps_the_rest_float(tiny_random):
    """The explicit lists of quant.recipes match the Brevitas tower that is built."""
    import brevitas.nn as qnn

    from quant.brevitas_model import build_quant_visual, quant_modules

    qv = build_quant_visual(tiny_random.model.visual, parse_precision("w8a8"))
    names = list(quant_modules(qv))
    kinds = {n.split(".")[-1] for n in names}
    assert kinds == {"conv1", "in_proj", "out_proj", "c_fc", "c_proj", "proj_q"}
    depth = tiny_random.geometry.depth
    assert len(names) == 2 + 4 * depth and qv.proj is None
    attn = [m for m in qv.modules() if isinstance(m, qnn.QuantMultiheadAttention)]
    assert len(attn) == depth
    for m in attn:  # q/k/v operands and the softmax output are quantized, the softmax input is not
        assert m.q_scaled_quant.act_quant.is_quant_enabled and m.k_transposed_quant.act_quant.is_quant_enabled
        assert m.v_quant.act_quant.is_quant_enabled and m.attn_output_weights_quant.act_quant.is_quant_enabled
        assert not m.softmax_input_quant.act_quant.is_quant_enabled
    lns = [m for m in qv.modules() if isinstance(m, nn.LayerNorm)]
    assert len(lns) == 2 * depth + 2  # ln_pre, ln_post, ln_1/ln_2 per block stay float
    gelu = type(tiny_random.model.visual.transformer.resblocks[0].mlp.gelu)
    assert sum(isinstance(m, gelu) for m in qv.modules()) == depth
    assert not any(isinstance(m, (qnn.QuantIdentity,)) and m.act_quant.is_quant_enabled
                   for n, m in qv.named_modules() if "ln" in n or "gelu" in n)


def test_dynamic_quantizes_exactly_the_documented_modules(tiny_random):
    from quant.dynamic import dynamic_quantized_modules, dynamic_visual

    dv = dynamic_visual(tiny_random.model.visual)
    depth = tiny_random.geometry.depth
    expected = [f"transformer.resblocks.{i}.mlp.{n}" for i in range(depth) for n in ("c_fc", "c_proj")]
    assert dynamic_quantized_modules(dv) == expected
    b0 = dv.transformer.resblocks[0]
    assert type(b0.attn.out_proj).__name__ == "NonDynamicallyQuantizableLinear"
    assert isinstance(b0.attn.in_proj_weight, nn.Parameter) and isinstance(dv.conv1, nn.Conv2d)
    assert isinstance(dv.proj, nn.Parameter)
    from quant.taps import tapped_forward

    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        a, b = tapped_forward(dv, x), tapped_forward(tiny_random.model.visual, x)
    rel = float((a.embedding - b.embedding).norm() / b.embedding.norm())
    assert 0 < rel < 0.2  # quantized, but close
