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
