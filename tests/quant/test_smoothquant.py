"""SmoothQuant (``+sq``): same FP32 function, integer-exact, fast path == Brevitas, saved and reloaded."""
import json

import pytest
import torch

from common.errors import InputError
from quant.brevitas_model import quant_tapped_forward
from quant.recipes import parse_precision
from quant.smoothquant import activation_absmax, fold_smoothing, smooth_visual, smoothing_factors, targets
from quant.taps import tapped_forward

# Folding rewrites y = sum_j x_j W_ij as sum_j (x_j / s_j)(W_ij s_j): mathematically the same, but each
# term now carries up to two more float32 roundings (relative 2^-24 each) and the twelve blocks pass
# them on through the residual stream and the LayerNorms. Measured on the tiny tower (random and
# shipped weights, alpha 0, 0.5, 1): worst |diff| / max|value| 3e-7 .. 6e-7 (3 to 5 float32 eps).
# The bound below is 1e-5 (about 80 eps): loose enough for other BLAS orderings, and far below what
# a wrong fold gives (smoothing only the LayerNorm moves the embedding by more than 1e-2).
FOLD_RTOL = 1e-5


def _same(a, b):
    return all(torch.equal(u, v) for u, v in zip(a.tokens, b.tokens)) and torch.equal(a.embedding, b.embedding)


def _rel(a, b) -> float:
    return float((a - b).abs().max() / a.abs().max())


class _Images:
    """Calibration images as :class:`quant.prepare.CalibrationImages` (a fixed tensor)."""

    def __init__(self, x, name="test-images"):
        self.x, self.name, self.descriptor = x, name, {"images": int(x.shape[0])}

    def __len__(self):
        return int(self.x.shape[0])

    def batches(self, batch_size, device):
        for i in range(0, len(self), batch_size):
            yield self.x[i:i + batch_size].to(device)


@pytest.fixture(scope="module")
def sq_factors(tiny_random, images):
    x = images(tiny_random, 8)
    return x, smoothing_factors(tiny_random.model.visual, activation_absmax(tiny_random.model.visual, [x]), 0.5)


def test_factors_follow_the_formula_on_the_layernorm_outputs(tiny_random, sq_factors):
    x, f = sq_factors
    v = tiny_random.model.visual
    assert list(f) == list(targets(v)) and len(f) == 2 * tiny_random.geometry.depth
    with torch.no_grad():
        z0 = tapped_forward(v, x, depth=0).tokens[0]  # the input of block 0 (after ln_pre)
        b0 = v.transformer.resblocks[0]
        xmax = b0.ln_1(z0).abs().amax(dim=(0, 1)).double()
    wmax = b0.attn.in_proj_weight.detach().abs().amax(dim=0).double()
    expected = (xmax.pow(0.5) / wmax.pow(0.5)).float()
    assert torch.equal(f["transformer.resblocks.0.ln_1"], expected)
    s = f["transformer.resblocks.0.ln_2"]
    assert s.dtype == torch.float32 and s.shape == (tiny_random.geometry.width,) and bool((s > 0).all())
    assert float(s.max() / s.min()) > 1.2  # per channel, not a single constant


def test_smoothing_keeps_the_fp32_function(tiny_random, sq_factors, images):
    """(a) After folding and before quantization the tower computes the same function (FOLD_RTOL)."""
    _, f = sq_factors
    v = tiny_random.model.visual
    sv = smooth_visual(v, f)
    y = images(tiny_random, 8, "eval")
    with torch.no_grad():
        a, b = tapped_forward(v, y), tapped_forward(sv, y)
    assert not torch.equal(sv.transformer.resblocks[0].ln_1.weight, v.transformer.resblocks[0].ln_1.weight)
    assert _rel(a.embedding, b.embedding) <= FOLD_RTOL
    assert max(_rel(u, w) for u, w in zip(a.tokens, b.tokens)) <= FOLD_RTOL
    # the check can fail: dividing the LayerNorm without scaling the Linear changes the function
    half = smooth_visual(v, {k: torch.ones_like(s) for k, s in f.items()})
    for name, (ln, _) in targets(half).items():
        with torch.no_grad():
            ln.weight.div_(f[name])
            ln.bias.div_(f[name])
    with torch.no_grad():
        assert _rel(a.embedding, tapped_forward(half, y).embedding) > 1e-2


def test_fold_refuses_factors_that_do_not_fit(tiny_random, sq_factors):
    _, f = sq_factors
    v = smooth_visual(tiny_random.model.visual, {k: torch.ones_like(s) for k, s in f.items()})
    with pytest.raises(ValueError, match="do not fit"):
        fold_smoothing(v, dict(list(f.items())[1:]))
    bad = dict(f)
    bad["transformer.resblocks.0.ln_1"] = -bad["transformer.resblocks.0.ln_1"]
    with pytest.raises(ValueError, match="finite positive"):
        fold_smoothing(v, bad)


def test_brevitas_tower_is_built_from_the_smoothed_float_tower(tiny_random, sq_factors):
    _, f = sq_factors
    r = parse_precision("w8a8+sq")
    state = {f"modifier.sq.{k}": s for k, s in f.items()}
    qv = r.build(tiny_random.model.visual, "percentile", state)
    sv = smooth_visual(tiny_random.model.visual, f)
    q0, s0 = qv.transformer.resblocks[0], sv.transformer.resblocks[0]
    assert torch.equal(q0.ln_1.weight, s0.ln_1.weight) and torch.equal(q0.ln_2.bias, s0.ln_2.bias)
    assert torch.equal(q0.attn.in_proj.weight, s0.attn.in_proj_weight)
    assert torch.equal(q0.mlp.c_fc.weight, s0.mlp.c_fc.weight)
    assert set(qv.lraee_modifier_state) == set(state)
    with pytest.raises(ValueError, match="no fitted state"):
        r.build(tiny_random.model.visual, "percentile", None)
    with pytest.raises(ValueError, match="belongs to no modifier"):
        parse_precision("w8a8").build(tiny_random.model.visual, "percentile", state)


@pytest.mark.parametrize("precision", ["w8a8+sq", "w4a6+sq0.8"])
def test_smoothed_model_every_layer_exact(tiny_random, make_calibrated, images, precision):
    """(b) The integer reference proves every quantized layer of the smoothed tower (==)."""
    from quant.exactness import check_exactness, summary

    qv = make_calibrated(tiny_random, precision, n=4)
    assert qv.lraee_modifier_state  # the smoothing factors are in the tower that is checked
    res = check_exactness(qv, images(tiny_random, 2, "eval"))
    s = summary(res)
    assert s["layers"] == 2 + 6 * tiny_random.geometry.depth and s["ulp_max"] == 0.0
    assert all(r.exact for r in res), [(r.name, r.checks) for r in res if not r.exact]


@pytest.mark.parametrize("precision,scales", [("w8a8+sq", "po2"), ("w8a4+sq0.7", "float")])
def test_fast_path_equals_brevitas_on_the_smoothed_model(tiny_random, make_calibrated, images, precision, scales):
    """(c)"""
    from quant.fastpath import build_fast_visual

    qv = make_calibrated(tiny_random, precision, scales=scales, n=4)
    x = images(tiny_random, 8, "eval")
    with torch.no_grad():
        assert _same(quant_tapped_forward(qv, x), quant_tapped_forward(build_fast_visual(qv), x))


@pytest.mark.parametrize("bad,what", [("w8a8+xx", "unknown modifier '+xx'"), ("w8a8+sq1.5", "outside [0, 1]"),
                                      ("w4a8+sq-0.2", "not a decimal"), ("w8a8+sqabc", "not a decimal"),
                                      ("fp32+sq", "static recipes only"), ("int8-dynamic+sq", "static recipes only"),
                                      ("w8a8+sq+sq0.6", "given twice"), ("w8a8+", "unknown modifier")])
def test_bad_modifiers_one_line_with_allowed_values(bad, what):
    """(d)"""
    with pytest.raises(InputError) as e:
        parse_precision(bad)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"--precision {bad!r}") and what in msg
    assert "+sqALPHA" in msg and "[0, 1]" in msg


def test_cli_bad_modifier_exit_2_one_line(run_cli, tmp_path):
    for bad in ("w8a8+xx", "w8a8+sq2"):
        out = tmp_path / "r.json"
        rc, _, err = run_cli("eval", "--precision", bad, "--out", out)
        assert rc == 2 and len(err.strip().splitlines()) == 1 and "+sqALPHA" in err and not out.exists()
        rc, _, err = run_cli("info", "--precision", bad)
        assert rc == 2 and len(err.strip().splitlines()) == 1


def test_alpha_grammar_and_identity():
    a, b, c = parse_precision("w8a8+sq"), parse_precision("W8A8+SQ0.50"), parse_precision("w8a8+sq.7")
    assert a == b and a.name == "w8a8+sq" and a.descriptor() == b.descriptor()
    assert c.name == "w8a8+sq0.7" and c.modifiers[0].alpha == 0.7 and c.tag("mse") == "w8a8+sq0.7-mse"
    assert parse_precision("w4a8+sq1").name == "w4a8+sq1" and parse_precision("w4a8+sq0").modifiers[0].alpha == 0.0
    plain = parse_precision("w8a8").descriptor()
    assert "modifiers" not in plain and a.descriptor()["modifiers"][0]["alpha"] == 0.5
    assert {k: v for k, v in a.descriptor().items() if k not in ("modifiers", "precision")} == \
        {k: v for k, v in plain.items() if k != "precision"}
    assert parse_precision(c.name) == c  # the canonical name parses back to the same recipe
    assert any("SmoothQuant (alpha 0.7)" in p for p in c.float_parts())


def test_factors_saved_with_the_calibration_and_reloaded_identically(tiny_random, images, tmp_path):
    """(e) run_calibration saves the factors; --calibration FILE rebuilds the identical tower without
    refitting (changing the saved factors changes the outputs); a file without them is refused."""
    from safetensors.torch import load_file, save_file

    from quant.calibration import state_sha256
    from quant.prepare import prepare_recipe, run_calibration

    recipe = parse_precision("w8a8+sq0.6")
    path = tmp_path / "sq.safetensors"
    qv, meta = run_calibration(tiny_random, recipe, "percentile", _Images(images(tiny_random, 8)), batch_size=4,
                               out=path)
    st = load_file(str(path))
    sq_keys = sorted(k for k in st if k.startswith("modifier.sq."))
    assert len(sq_keys) == 2 * tiny_random.geometry.depth and meta["recipe"]["modifiers"][0]["alpha"] == 0.6
    x = images(tiny_random, 4, "eval")
    with torch.no_grad():
        ref = quant_tapped_forward(qv, x)
        for engine in ("brevitas", "fast"):
            p = prepare_recipe(tiny_random, recipe, calibration=path, engine=engine)
            assert _same(ref, p.taps(x)) and p.calibration["state_sha256"] == meta["state_sha256"]
    assert p.tag == "w8a8+sq0.6"
    with pytest.raises(InputError, match="precision recipe"):  # made for another alpha
        prepare_recipe(tiny_random, "w8a8+sq0.7", calibration=path)

    def rewrite(state):
        save_file(state, str(path))
        side = json.loads(path.with_suffix(".json").read_text())
        side["state_sha256"] = state_sha256(state)
        path.with_suffix(".json").write_text(json.dumps(side))

    rewrite({k: (v * 2 if k in sq_keys else v) for k, v in st.items()})
    with torch.no_grad():
        p = prepare_recipe(tiny_random, recipe, calibration=path, engine="brevitas")
        assert not torch.equal(p.taps(x).embedding, ref.embedding)  # the factors come from the file
    rewrite({k: v for k, v in st.items() if k not in sq_keys})
    with pytest.raises(InputError) as e:
        prepare_recipe(tiny_random, recipe, calibration=path)
    assert "no fitted state" in str(e.value) and "\n" not in str(e.value)
