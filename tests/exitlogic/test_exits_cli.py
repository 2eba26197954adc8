"""train-exits -> thresholds -> exit-report on the embedded default (small splits), and bad input."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest



@pytest.fixture(scope="module")
def policy_dirs(small_policy, small_policy_args, tmp_path_factory):
    """The shared small policy and a second one trained with the same settings (determinism),
    each with its eval report."""
    from analysis.cli import main as cli_main

    def main(argv):
        return cli_main([str(a) for a in argv])

    pol0, cache = small_policy
    root = tmp_path_factory.mktemp("exits")
    pol1 = root / "policy1"
    assert main(["train-exits", "--out", pol1, "--cache-dir", cache, *small_policy_args]) == 0
    assert main(["thresholds", "--policy", pol1]) == 0
    dirs = []
    for k, pol in enumerate((pol0, pol1)):
        rep = root / f"report{k}"
        assert main(["exit-report", "--policy", pol, "--n", "300", "--cache-dir", cache, "--no-progress",
                     "--out", rep]) == 0
        dirs.append((pol, rep))
    return root, cache, dirs


def test_policy_artifacts(policy_dirs):
    _, _, [(pol, rep), _] = policy_dirs
    meta = json.loads((pol / "policy.json").read_text())
    cand = meta["candidates"]["candidate_layers"]
    assert 1 <= len(cand) <= 3 and all(1 <= L < 12 for L in cand)
    assert meta["candidates"]["source"].startswith("INR pruning")
    assert (pol / "profile.json").is_file()
    assert meta["layers"] == list(range(1, 13)) and meta["seeds"] == [0, 1]
    # the heads and gates saw the exit-tap tokens of every block (power-of-two scales)
    assert meta["exit_tap"]["layers"] == list(range(1, 13))
    assert all(isinstance(e, int) for e in meta["exit_tap"]["scale_exponents"].values())
    for s in ("0", "1"):
        for name, rec in meta["thresholds"]["by_seed"][s].items():
            assert set(rec["thresholds"]) == {str(L) for L in cand}
            assert all(0.2 <= t <= 0.92 for t in rec["thresholds"].values())
    pareto = json.loads((pol / "pareto.json").read_text())
    assert pareto["candidate_layers"] == cand and len(pareto["points"]) >= 1
    from exitlogic.artifacts import load_policy

    p = load_policy(pol)
    unit = p.layer_params(cand[0])
    assert unit["fc1.weight"].shape == (128, 128) and unit["fc2.weight"].shape == (128, 128)
    assert unit["gate.w"].shape == (3,) and 0 <= unit["tau"] <= 1


def test_report_and_trace(policy_dirs):
    _, _, [(pol, rep), _] = policy_dirs
    res = json.loads((rep / "results.json").read_text())
    q = res["quadrants"]
    n = res["n_eval"]
    assert n == 300 and q["both"] + q["rescue"] + q["loss"] + q["neither"] == n
    main = res["per_seed"][0]["policies"]["ssa-distill/learned"]
    assert q["net"] == round(n * (main["top1"] - res["int8_top1"]))
    assert [r["row"] for r in res["ablation"]] == ["i", "ii", "iii", "iv", "v"]
    methods = [b["method"] for b in res["baselines"]]
    assert methods[:4] == ["FP32 full depth", "INT8 full depth", "CLS-EE", "Confidence-only heuristic"]
    assert any(m.startswith("PABEE") for m in methods) and methods[-1] == "LRA-EE (ours)"
    assert len(res["lra_ee"]["top1"]["values"]) == 2
    assert res["lra_ee"]["flops_saving_with_heads"]["mean"] <= res["lra_ee"]["flops_saving"]["mean"]
    assert len(res["static_truncation"]) == 12 and len(res["cls_vs_ssa"]) == 12
    for png in ("pareto.png", "exit_distribution.png", "cls_vs_ssa.png"):
        assert (rep / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the trace: one row per eval sample, hwsim's reader accepts it, and its rows agree with results
    with (rep / "trace.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == n
    cand = res["candidate_layers"]
    for L in cand:
        assert {f"conf_{L}", f"margin_{L}", f"sav_{L}", f"gate_{L}", f"pred_{L}"} <= set(rows[0])
    assert np.mean([int(r["correct"]) for r in rows]) == pytest.approx(main["top1"])
    taus = res["thresholds_by_seed"]["0"]
    for r in rows:  # routing rule, re-applied from the trace's own columns
        e = next((L for L in cand if float(r[f"gate_{L}"]) >= taus[str(L)]), 12)
        assert int(r["exit_layer"]) == e
    from hwsim.trace import read_trace

    tr = read_trace(rep / "trace.csv")
    assert len(tr) == n and tr.candidate_layers == tuple(cand)


def test_same_seed_gives_identical_bytes(policy_dirs):
    _, _, [(p0, r0), (p1, r1)] = policy_dirs
    assert (r0 / "trace.csv").read_bytes() == (r1 / "trace.csv").read_bytes()
    assert (p0 / "policy.safetensors").read_bytes() == (p1 / "policy.safetensors").read_bytes()


def test_exit_layers_override_and_bad_input(policy_dirs, small_policy_args, run_cli, tmp_path):
    root, cache, [(pol, _), _] = policy_dirs
    out = tmp_path / "p"
    rc, _, err = run_cli("train-exits", "--out", out, "--cache-dir", cache, "--exit-layers", "12", *small_policy_args)
    assert rc == 2 and "--exit-layers '12'" in err and "1..11" in err and not out.exists()
    rc, _, err = run_cli("thresholds", "--policy", pol, "--grid", "0.2:1.5:5")
    assert rc == 2 and "--grid" in err
    rc, _, err = run_cli("thresholds", "--policy", pol, "--budget", "0")
    assert rc == 2 and "--budget 0" in err
    # an unreachable budget takes the least-compute thresholds, says so and records it (on a copy)
    far = tmp_path / "far"
    far.mkdir()
    for f in ("policy.json", "policy.safetensors", "gating.safetensors"):
        (far / f).write_bytes((pol / f).read_bytes())
    rc, so, _ = run_cli("thresholds", "--policy", far, "--budget", "0.01")
    meta = json.loads((far / "policy.json").read_text())
    rec = meta["thresholds"]["by_seed"]["0"]["ssa-distill/learned"]
    assert rc == 0 and "warning" in so and rec["budget_met"] is False
    assert rec["flops_saving_gating"] == pytest.approx(max(p["flops_saving"] for p in rec["pareto"]))
    # thresholds outside [0, 1] in a policy file
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in ("policy.safetensors", "gating.safetensors"):
        (bad / f).write_bytes((pol / f).read_bytes())
    meta = json.loads((pol / "policy.json").read_text())
    meta["thresholds"]["by_seed"]["0"]["ssa-distill/learned"]["thresholds"][str(meta["candidates"]["candidate_layers"][0])] = 1.5
    (bad / "policy.json").write_text(json.dumps(meta))
    rc, _, err = run_cli("exit-report", "--policy", bad, "--out", tmp_path / "r", "--cache-dir", cache)
    assert rc == 2 and "1.5" in err and "allowed: a number in [0, 1]" in err and not (tmp_path / "r").exists()
    # a policy used with features of another recipe (hash mismatch): nothing written
    rc, _, err = run_cli("exit-report", "--policy", pol, "--n", "300", "--templates", "simple", "--cache-dir", cache,
                         "--no-progress", "--out", tmp_path / "r2")
    assert rc == 2 and "keys.gating.templates_sha256" in err and not (tmp_path / "r2").exists()
    # a tampered tensors file
    (bad / "policy.json").write_text((pol / "policy.json").read_text())
    (bad / "policy.safetensors").write_bytes(b"x" + (pol / "policy.safetensors").read_bytes()[1:])
    rc, _, err = run_cli("thresholds", "--policy", bad)
    assert rc == 2 and "policy_sha256" in err


def test_nan_features_are_refused(tmp_path):
    from common.errors import InputError
    from analysis.exits import _check_finite

    with pytest.raises(InputError, match="sav: NaN"):
        _check_finite({"sav": np.array([1.0, np.nan])}, "x.safetensors")


def test_no_exit_tap_and_given_exit_layers(small_policy, run_cli, tmp_path):
    _, cache = small_policy
    out = tmp_path / "p"
    rc, so, err = run_cli("train-exits", "--out", out, "--cache-dir", cache, "--train-n", "400", "--gating-n", "300",
                          "--epochs", "1", "--seeds", "1", "--exit-layers", "10,11", "--no-exit-tap", "--no-progress")
    assert rc == 0, err
    meta = json.loads((out / "policy.json").read_text())
    assert meta["exit_tap"] is None
    assert meta["candidates"] == {**meta["candidates"], "candidate_layers": [10, 11], "source": "--exit-layers"}
    assert not (out / "profile.json").exists()  # no INR needed when the layers are given
