"""``lraee validate-exits`` on the small policy: width search on gating, validation on eval, bad input;
the exit-tap quantizer of the feature cache."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

COMMON = ["--n", "200", "--gating-n", "300", "--tap-calib-n", "64", "--no-progress"]


@pytest.fixture(scope="module")
def searched(small_policy, run_cli_module, tmp_path_factory):
    """One default run (search on 300 gating images, validation on 200 eval images) in its own cache."""
    pol, _ = small_policy
    root = tmp_path_factory.mktemp("validate")
    cache, out = root / "cache", root / "out"
    rc, stdout, err = run_cli_module("validate-exits", "--policy", pol, "--cache-dir", cache, "--out", out, *COMMON)
    assert rc == 0, err
    return pol, cache, out, stdout


@pytest.fixture(scope="module")
def run_cli_module():
    from analysis.cli import main

    def _run(*argv):
        import contextlib
        import io

        o, e = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
            try:
                rc = main([str(a) for a in argv])
            except SystemExit as ex:
                rc = ex.code
        return rc, o.getvalue(), e.getvalue()

    return _run


def test_default_run_writes_spec_report_and_plots(searched):
    from exitlogic.artifacts import load_policy
    from exitlogic.fixedpoint import FixedPointSpec

    pol, cache, out, stdout = searched
    policy = load_policy(pol)
    cand = policy.candidate_layers
    res = json.loads((out / "validate.json").read_text())
    assert res["schema"] == "lraee/validate-exits" and res["candidate_layers"] == cand
    assert res["data"]["n_eval"] == 200 and res["search"]["split"] == "gating" and res["search"]["n"] == 300
    assert res["policy"]["policy_sha256"] == policy.meta["policy_sha256"] and res["policy"]["seed"] == 0
    # the tap quantizer: power-of-two scales fixed before inference, recorded with their rule
    tap = res["tap"]
    assert tap["rule"]["name"] == "po2-percentile" and tap["rule"]["percentile"] == 99.99
    for L in cand:
        s = tap["scales"][str(L)]
        assert s == math.ldexp(1.0, tap["scale_exponents"][str(L)])
    # three comparisons, per layer and end to end, with every requested statistic
    for k in ("arithmetic", "float_policy", "tap_only"):
        c = res["comparisons"][k]
        assert set(c["per_layer"]) == {str(L) for L in cand}
        for r in c["per_layer"].values():
            assert 0 <= r["exit_agreement"] <= 1 and r["n"] == 200
            assert set(r["errors"]) == {"conf", "margin", "sav", "gate_logit"}
            assert all(v["max_abs"] >= v["mean_abs"] >= 0 for v in r["errors"].values())
        e = c["end_to_end"]
        assert {"exit_agreement", "top1_fixed", "top1_ref", "top1_delta_pp", "exit_disagreement_estimate"} <= set(e)
        assert sum(e["exit_distribution_fixed"].values()) == 200
    # targets are met or reported as not met, consistently with the numbers
    for k in ("arithmetic", "float_policy"):
        c = res["comparisons"][k]
        met = c["targets_met"]
        assert met["end_to_end_exit_agreement"] == (c["end_to_end"]["exit_agreement"] >= 0.999)
        assert met["top1_within_tolerance"] == (abs(c["end_to_end"]["top1_delta_pp"]) <= 0.1 + 1e-9)
    # the arithmetic of the searched widths is close to the float64 reference
    a = res["comparisons"]["arithmetic"]["end_to_end"]
    assert a["exit_agreement"] >= 0.99 and abs(a["top1_delta_pp"]) <= 1.0
    assert res["fixed_top1"] == res["comparisons"]["float_policy"]["end_to_end"]["top1_fixed"]
    # the policy decides on the exit-tap tokens, so the tap alone changes no decision
    t = res["comparisons"]["tap_only"]["end_to_end"]
    assert t["exit_agreement"] >= 0.995 and abs(t["top1_delta_pp"]) <= 0.5
    # the float_policy reference is what exit-report computes: top-1 from the same routing rule
    assert 0 <= res["float_policy_top1"] <= 1
    assert set(res["overflow"]) == {str(L) for L in cand}
    assert all("per_stage" in v for v in res["overflow"].values())
    mem = res["memory_bits"]
    assert mem["total_bits"] == mem["weights_bits"] + mem["lut_bits"] + mem["constants_bits"]
    assert res["search"]["memory_bits_start"]["total_bits"] > mem["total_bits"]
    # the spec the HLS stage consumes: this policy's hash, loadable
    spec = FixedPointSpec.load(out / "fixedpoint_spec.json", policy_sha256=policy.meta["policy_sha256"])
    assert spec.policy_sha256 == policy.meta["policy_sha256"]
    for png in ("errors_arithmetic.png", "errors_float_policy.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert "arithmetic" in stdout and "float_policy" in stdout


def test_token_cache_is_separate_and_keyed(searched, small_policy):
    """Gating and eval stores hold the exit-tap sums (and eval the first vectors' codes) from the same pass."""
    from common.store import Store
    from exitlogic.artifacts import load_policy

    pol, cache, out, _ = searched
    cand = load_policy(pol).candidate_layers
    tok = sorted(p for p in cache.glob("*-tok-*.store"))
    assert len(tok) == 2  # gating and eval, each with tap sums
    for path in tok:
        st = Store(path)
        meta = st.meta
        layers = meta["key"]["tokens"]["layers"]
        assert set(cand) <= set(layers) and st.load("tap_layers").tolist() == layers
        assert meta["key"]["tokens"]["rule"]["name"] == "po2-percentile"
        n, d = st["labels"].shape[0], meta["geometry"]["width"]
        assert st["tap_sum"].shape == (n, len(layers), d) and st["tap_sum"].dtype == np.int32
        assert st["tap_sumsq"].shape == (n, len(layers)) and st["tap_sumsq"].dtype == np.int64
        assert "block output" in meta["tokens"]["quantization_point"]
        if meta["data"]["split"] == "eval":
            q = st["tap_tokens"][:]  # [V, T, N+1, d] int8, V = min(1000, n)
            assert q.dtype == np.int8 and q.shape == (min(1000, n), len(layers), meta["geometry"]["tokens"], d)
            qp = q[:, :, 1:].astype(np.int64)
            assert np.array_equal(qp.sum(2), st["tap_sum"][:len(q)])  # S1 of the stored codes, exactly
            assert np.array_equal((qp * qp).sum((2, 3)), st.load("tap_sumsq")[:len(q)])
        else:
            assert "tap_tokens" not in st
    assert not [p for p in cache.glob("*.store") if "-tok-" not in p.name]  # no sum-less entry was written


def test_cache_paths_and_keys_unchanged_without_tokens(tiny_random, tmp_path):
    from analysis.data.sources import open_source
    from analysis.features import cache_key, cache_paths
    from quant.tap import TokenTap

    src = open_source("procedural", "eval", 4)
    st = cache_paths(tmp_path, tiny_random, "fp32", src)
    assert st.name == f"{tiny_random.name}-fp32-{src.name}.store"
    key = cache_key(tiny_random, "fp32", src, ["a {}"])
    assert set(key) == {"format_version", "weights_sha256", "recipe_sha256", "data_sha256", "templates_sha256"}
    a = TokenTap([9, 10], {9: -2, 10: -2}, {"name": "po2-percentile", "percentile": 99.99})
    b = TokenTap([9, 11], {9: -2, 11: -2}, {"name": "po2-percentile", "percentile": 99.99})
    c = TokenTap([9, 10], {9: -2, 10: -2}, {"name": "po2-percentile", "percentile": 99.9})
    names = {cache_paths(tmp_path, tiny_random, "fp32", src, t).name for t in (a, b, c)}
    assert len(names) == 3 and all("-tok-" in n for n in names)
    assert cache_key(tiny_random, "fp32", src, ["a {}"], a)["tokens"]["layers"] == [9, 10]
    # other fields or vector counts are other stores
    assert cache_paths(tmp_path, tiny_random, "fp32", src, fields="embedding") != st
    assert cache_paths(tmp_path, tiny_random, "fp32", src, a, token_vectors=10) != cache_paths(
        tmp_path, tiny_random, "fp32", src, a)


def test_tap_quantizer_rule():
    from quant.tap import po2_percentile_exponent, tap_quantize

    z = torch.tensor([[0.125, 0.375, -0.375, 100.0, -100.0, 0.3]])
    q = tap_quantize(z, -2)  # s = 0.25: half-to-even, saturating
    assert q.dtype == torch.int8 and q.tolist() == [[0, 2, -2, 127, -128, 1]]
    rng = np.random.default_rng(0)
    a = np.abs(rng.standard_normal(100_000)) * 3.0
    exps = np.arange(-40, 41)
    above = np.array([(a > 127 * 2.0 ** e).sum() for e in exps])
    for p in (99.0, 99.99, 100.0):
        e = po2_percentile_exponent(above, a.size, p, exps)
        # the smallest power of two whose int8 range covers at least p % of |z|
        assert np.mean(a <= 127 * 2.0 ** e) >= p / 100 - 1e-12
        assert np.mean(a <= 127 * 2.0 ** (e - 1)) < p / 100
    assert po2_percentile_exponent(above, a.size, 100.0, exps) == math.ceil(math.log2(a.max() / 127))


def test_given_spec_validates_without_search(searched, run_cli_module, tmp_path):
    pol, cache, out, _ = searched
    out2 = tmp_path / "v2"
    rc, _, err = run_cli_module("validate-exits", "--policy", pol, "--cache-dir", cache, "--out", out2,
                                "--spec", out / "fixedpoint_spec.json", *COMMON)
    assert rc == 0, err
    r1 = json.loads((out / "validate.json").read_text())
    r2 = json.loads((out2 / "validate.json").read_text())
    assert r2["search"] is None and not (out2 / "fixedpoint_spec.json").exists()
    assert r2["comparisons"] == r1["comparisons"] and r2["memory_bits"] == r1["memory_bits"]


def test_bad_spec_is_refused_and_nothing_written(searched, run_cli_module, tmp_path):
    pol, cache, out, _ = searched
    spec = json.loads((out / "fixedpoint_spec.json").read_text())

    def run(obj, name):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(obj))
        dest = tmp_path / f"out-{name}"
        rc, stdout, err = run_cli_module("validate-exits", "--policy", pol, "--cache-dir", cache, "--out", dest,
                                         "--spec", path, *COMMON)
        assert rc == 2 and not dest.exists() and stdout == ""
        lines = [ln for ln in err.splitlines() if ln.startswith("lraee validate-exits: error:")]
        assert len(lines) == 1
        return lines[0]

    other = dict(spec, policy_sha256="0" * 64)  # a spec sized for another policy
    msg = run(other, "hash")
    assert "sized for policy sha256 0000000000000000" in msg and "re-run the width search" in msg
    small = json.loads(json.dumps(spec))  # integer part of fc1.out too small for its calibrated range
    f = small["formats"]["fc1.out"]
    f["I"] -= 3
    f.pop("ap")
    msg = run(small, "narrow")
    assert "stage 'fc1.out'" in msg and "needs I >=" in msg
    small = json.loads(json.dumps(spec))  # fc1 weights do not fit their format
    f = small["formats"]["fc1.weight"]
    f["I"] = -4
    f.pop("ap")
    msg = run(small, "weights")
    assert "stage 'fc1.weight'" in msg and "needs I >=" in msg


def test_flag_errors(small_policy, run_cli_module, tmp_path):
    pol, _ = small_policy
    for flags, text in ((["--target", "1.5"], "--target 1.5"), (["--search-safety", "0.5"], "--search-safety"),
                        (["--tap-percentile", "0"], "--tap-percentile 0")):
        rc, _, err = run_cli_module("validate-exits", "--policy", pol, "--out", tmp_path / "o", *flags)
        assert rc == 2 and text in err and not (tmp_path / "o").exists()
