"""Exit-policy sweeps: gate/pred trace columns, re-thresholding, Pareto files, lraee dse --policies."""
import csv
import json

import numpy as np
import pytest

from common.errors import InputError
from hwsim.trace import apply_thresholds, read_policies, read_trace, synthetic_policy_trace, write_trace

from hwsim_helpers import TINY, run_cli

CANDS = [4, 8, 10]
SPACE = "parameters:\n  array.rows: [8, 16]\n  array.dataflow: [ws]\n  batch.size: [1, 4]\n"


def _known_trace(tmp_path):
    """5 samples with hand-picked gates (layers 4, 8, 10), head predictions and labels."""
    gate = np.array([[0.95, 0.10, 0.10],    # exits at 4 with tau_4 <= 0.95
                     [0.30, 0.70, 0.10],    # exits at 8 with tau_8 <= 0.7 (if not at 4)
                     [0.30, 0.40, 0.25],    # exits at 10 with tau_10 <= 0.25
                     [0.10, 0.10, 0.10],    # full depth unless taus <= 0.1
                     [0.50, 0.50, 0.50]])
    label = np.array([1, 2, 3, 4, 0])
    pred_at = np.array([[1, 0, 0],          # right at 4
                        [0, 2, 2],          # right at 8
                        [3, 0, 9],          # right at 4, wrong at 10
                        [0, 0, 0],
                        [0, 1, 0]])
    full_pred = np.array([1, 2, 3, 9, 0])   # full depth: all right but sample 3
    p = tmp_path / "known.csv"
    write_trace(p, [12] * 5, CANDS, 12, 10, correct=(full_pred == label).astype(int), geometry=TINY,
                label=label, pred=full_pred, full_pred=full_pred, full_correct=(full_pred == label).astype(int),
                gate=gate, pred_at=pred_at, thresholds={4: 1.0, 8: 1.0, 10: 1.0})
    return p


@pytest.mark.parametrize("taus,exits,acc", [
    ({4: 1.0, 8: 1.0, 10: 1.0}, [12, 12, 12, 12, 12], 0.8),
    ({4: 0.9, 8: 0.6, 10: 0.2}, [4, 8, 10, 12, 10], 0.6),    # sample 2 exits wrong at 10
    ({4: 0.3, 8: 0.6, 10: 0.2}, [4, 4, 4, 12, 4], 0.6),      # sample 1 wrong at 4, 2 right, 4 right
    ({4: 0.0, 8: 0.0, 10: 0.0}, [4, 4, 4, 4, 4], 0.6),
    ({4: 0.5, 8: 0.5, 10: 0.5}, [4, 8, 12, 12, 4], 0.8),     # gate == tau passes
])
def test_known_gates_give_known_exits_and_accuracy(tmp_path, taus, exits, acc):
    t = read_trace(_known_trace(tmp_path))
    assert t.thresholds == {4: 1.0, 8: 1.0, 10: 1.0} and t.label.tolist() == [1, 2, 3, 4, 0]
    r = apply_thresholds(t, taus)
    assert r.exit_layer.tolist() == exits
    assert r.accuracy == pytest.approx(acc)
    assert r.evaluated.tolist() == [[L <= e for L in CANDS] for e in exits]
    assert r.thresholds == taus and r.gate is t.gate and t.exit_layer.tolist() == [12] * 5


def test_policy_columns_roundtrip_and_synthetic_rule(tmp_path):
    kw = synthetic_policy_trace(400, 12, CANDS, 25, seed=1, thresholds={4: 0.8, 8: 0.6, 10: 0.4})
    p = tmp_path / "t.csv"
    write_trace(p, candidate_layers=CANDS, depth=12, num_classes=25, geometry=TINY, **kw)
    t = read_trace(p)
    np.testing.assert_array_equal(t.gate, kw["gate"])          # written with repr: exact
    np.testing.assert_array_equal(t.pred_at, kw["pred_at"])
    r = apply_thresholds(t, t.thresholds)
    np.testing.assert_array_equal(r.exit_layer, t.exit_layer)   # the written exits follow the rule
    assert r.accuracy == t.accuracy


def _pareto(tmp_path, points=None, **upd):
    d = {"schema_version": 1, "depth": 12, "candidate_layers": CANDS,
         "points": points if points is not None else [
             {"id": 0, "thresholds": {"4": 0.9, "8": 0.6, "10": 0.2}, "accuracy": 0.6, "flops_saving": 0.3},
             {"id": 7, "thresholds": {"4": 1.0, "8": 1.0, "10": 1.0}, "accuracy": 0.8, "flops_saving": 0.0}]}
    d.update(upd)
    p = tmp_path / "pareto.json"
    p.write_text(json.dumps(d))
    return p


def _space(tmp_path):
    p = tmp_path / "space.yaml"
    p.write_text(SPACE)
    return p


def test_dse_two_policies_double_rows(tmp_path):
    trace = _known_trace(tmp_path)
    space = _space(tmp_path)
    rc, _, err = run_cli(["dse", "--space", str(space), "--trace", str(trace), "--out", str(tmp_path / "plain"),
                          "--workers", "1", "--no-progress"])
    assert rc == 0, err
    out = tmp_path / "pol"
    rc, stdout, err = run_cli(["dse", "--space", str(space), "--trace", str(trace), "--out", str(out),
                               "--policies", str(_pareto(tmp_path)), "--workers", "1", "--no-progress"])
    assert rc == 0, err
    plain = list(csv.DictReader(open(tmp_path / "plain" / "results.csv")))
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(plain) == 4 and len(rows) == 8 and json.loads(stdout.splitlines()[0])["evaluations"] == 8
    assert sorted((int(r["config_id"]), int(r["policy_id"])) for r in rows) == [(c, p) for c in range(4) for p in (0, 7)]
    for r in rows:
        tau = (0.9, 0.6, 0.2) if r["policy_id"] == "0" else (1.0, 1.0, 1.0)
        assert tuple(float(r[f"threshold_{L}"]) for L in CANDS) == tau
        assert float(r["accuracy"]) == pytest.approx(0.6 if r["policy_id"] == "0" else 0.8)
        assert r["trace_id"] == "0"
    # policy 7 never exits early: same latency as the trace as written (all at depth)
    by = {(r["config_id"], r["policy_id"]): r for r in rows}
    for r in plain:
        assert by[(r["config_id"], "7")]["latency_p95_us"] == r["latency_p95_us"]
        assert float(by[(r["config_id"], "0")]["flops_saving"]) > 0 == float(r["flops_saving"])
    front = list(csv.DictReader(open(out / "pareto.csv")))
    assert front and "policy_id" in front[0]
    s = json.loads((out / "dse.json").read_text())
    assert [pt["policy_id"] for pt in s["policies"]["points"]] == [0, 7]


def test_dse_max_configs_counts_policies(tmp_path):
    rc, _, err = run_cli(["dse", "--space", str(_space(tmp_path)), "--trace", str(_known_trace(tmp_path)),
                          "--trace", str(_known_trace(tmp_path)), "--out", str(tmp_path / "o"),
                          "--policies", str(_pareto(tmp_path)), "--max-configs", "15"])
    assert rc == 2 and "16 evaluations (4 configs x 2 traces x 2 policies) exceed --max-configs 15" in err
    assert err.count("\n") == 1 and not (tmp_path / "o").exists()


def _bad_trace(tmp_path, cell_gate_8="0.5", cols=None, label="1", pred8="2"):
    cols = cols or ["sample_id", "exit_layer", "label", "full_pred", "gate_4", "pred_4", "gate_8", "pred_8",
                    "gate_10", "pred_10"]
    vals = {"sample_id": "a", "exit_layer": "12", "label": label, "full_pred": "1", "gate_4": "0.1", "pred_4": "1",
            "gate_8": cell_gate_8, "pred_8": pred8, "gate_10": "0.2", "pred_10": "3"}
    p = tmp_path / "bad.csv"
    p.write_text(",".join(cols) + "\n" + ",".join(vals[c] for c in cols) + "\n")
    p.with_name("bad.meta.json").write_text(json.dumps({"schema_version": 1, "depth": 12, "candidate_layers": CANDS,
                                                        "num_classes": 10, "geometry": TINY.to_dict()}))
    return p


@pytest.mark.parametrize("kw,needle", [
    ({"cell_gate_8": "1.5"}, "gate_8: '1.5' on line 2; allowed: a number in [0, 1]"),
    ({"cell_gate_8": "-0.1"}, "gate_8: '-0.1' on line 2"),
    ({"cell_gate_8": "nan"}, "gate_8: 'nan' on line 2"),
    ({"cell_gate_8": "high"}, "gate_8: 'high' on line 2"),
    ({"pred8": "10"}, "pred_8: '10' on line 2; allowed: an integer class index in 0..9"),
    ({"label": "-1"}, "label: '-1' on line 2; allowed: an integer class index in 0..9"),
    ({"label": "1.0"}, "label: '1.0' on line 2"),
    ({"cols": ["sample_id", "exit_layer", "gate_4", "gate_10"]}, "gate_8: missing column"),
])
def test_bad_policy_columns(tmp_path, kw, needle):
    p = _bad_trace(tmp_path, **kw)
    with pytest.raises(InputError) as e:
        read_trace(p)
    msg = str(e.value)
    assert needle in msg and msg.startswith(str(p)) and "\n" not in msg


def test_cli_policies_need_gate_columns(tmp_path):
    from hwsim.trace import synthetic_trace
    el, cor = synthetic_trace(50, 12, CANDS, seed=0)
    plain = tmp_path / "plain.csv"
    write_trace(plain, el, CANDS, 12, 10, correct=cor, geometry=TINY)
    out = tmp_path / "o"
    rc, _, err = run_cli(["dse", "--space", str(_space(tmp_path)), "--trace", str(plain), "--out", str(out),
                          "--policies", str(_pareto(tmp_path)), "--workers", "1"])
    assert rc == 2 and err.count("\n") == 1 and not out.exists()
    assert f"{plain}: gate_4, gate_8, gate_10, pred_4, pred_8, pred_10, full_pred, label: missing column" in err


@pytest.mark.parametrize("upd,needle", [
    ({"points": [{"id": 0, "thresholds": {"4": 0.5, "8": 0.5}}]}, "points[0].thresholds: keys 4, 8 differ from the "
                                                                  "candidate layers; allowed: exactly 4, 8, 10"),
    ({"points": [{"id": 0, "thresholds": {"4": 0.5, "8": 0.5, "10": 0.5, "6": 0.1}}]}, "keys 4, 8, 10, 6 differ"),
    ({"points": [{"id": 0, "thresholds": {"4": 0.5, "8": 1.2, "10": 0.5}}]},
     "points[0].thresholds.8: 1.2; allowed: a number in [0, 1]"),
    ({"points": [{"id": 0, "thresholds": {"4": 0.5, "8": -0.2, "10": 0.5}}]}, "points[0].thresholds.8: -0.2"),
    ({"points": [{"id": 0, "thresholds": {"4": 0.5, "8": "x", "10": 0.5}}]}, "points[0].thresholds.8: 'x'"),
    ({"points": []}, "points: empty or not a list"),
    ({"points": [{"id": 1, "thresholds": {"4": 0, "8": 0, "10": 0}}, {"id": 1, "thresholds": {"4": 0, "8": 0, "10": 0}}]},
     "points[1].id: 1 (duplicate)"),
    ({"schema_version": 2}, "schema_version: 2; allowed: 1"),
    ({"candidate_layers": [4, 12]}, "candidate_layers: [4, 12]; allowed: distinct integers in 1..11"),
])
def test_bad_pareto_file(tmp_path, upd, needle):
    p = _pareto(tmp_path, **upd)
    with pytest.raises(InputError) as e:
        read_policies(p)
    msg = str(e.value)
    assert needle in msg and msg.startswith(str(p)) and "\n" not in msg
    out = tmp_path / "o"
    rc, _, err = run_cli(["dse", "--space", str(_space(tmp_path)), "--trace", str(_known_trace(tmp_path)),
                          "--out", str(out), "--policies", str(p)])
    assert rc == 2 and needle in err and err.count("\n") == 1 and not out.exists()


def test_pareto_nan_and_mismatched_trace(tmp_path):
    p = tmp_path / "pareto.json"
    p.write_text('{"schema_version": 1, "depth": 12, "candidate_layers": [4, 8, 10], '
                 '"points": [{"id": 0, "thresholds": {"4": NaN, "8": 0.5, "10": 0.5}}]}')
    with pytest.raises(InputError, match=r"points\[0\]\.thresholds\.4: nan"):
        read_policies(p)
    rc, _, err = run_cli(["dse", "--space", str(_space(tmp_path)), "--trace", str(_known_trace(tmp_path)),
                          "--out", str(tmp_path / "o"), "--policies",
                          str(_pareto(tmp_path, candidate_layers=[4, 8], points=[{"id": 0, "thresholds": {"4": 0.5, "8": 0.5}}]))])
    assert rc == 2 and "pareto.json: candidate_layers: [4, 8] differ from" in err and not (tmp_path / "o").exists()
    with pytest.raises(InputError, match="thresholds: layers"):
        apply_thresholds(read_trace(_known_trace(tmp_path)), {4: 0.5})


def test_meta_thresholds_validated(tmp_path):
    p = _known_trace(tmp_path)
    m = p.with_name("known.meta.json")
    d = json.loads(m.read_text())
    d["thresholds"] = {"4": 0.5, "8": 2.0, "10": 0.1}
    m.write_text(json.dumps(d))
    with pytest.raises(InputError, match=r"known\.meta\.json: thresholds\.8: 2\.0; allowed: a number in \[0, 1\]"):
        read_trace(p)
