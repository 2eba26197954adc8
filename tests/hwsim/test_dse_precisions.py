"""Issue 13 item 4 (DSE half): one sweep over traces of several recipes, each trace paired with
its own Pareto file (own candidate layers), gives one front across precisions, policies and arrays."""
import csv
import json

import numpy as np
import pytest

from common.errors import InputError
from hwsim.cli import dse_sweep
from hwsim.dse import PRECISION_COLUMNS, trace_recipe
from hwsim.pareto import pareto_mask
from hwsim.trace import read_trace, write_trace

from hwsim_helpers import TINY, run_cli

SPACE = "parameters:\n  array.rows: [8, 16]\n  array.dataflow: [ws]\n  batch.size: [1, 4]\n"   # 4 configs
LABEL = np.array([0, 1, 2, 3, 4])


def _trace(tmp_path, name, cands, pred_at, full_pred, meta):
    """5 samples, gates rising with the layer (a sample exits at the first layer whose tau <= gate)."""
    gate = np.tile(np.linspace(0.3, 0.9, len(cands)), (5, 1))
    p = tmp_path / f"{name}.csv"
    write_trace(p, [12] * 5, cands, 12, 10, correct=(full_pred == LABEL).astype(int), geometry=TINY, label=LABEL,
                pred=full_pred, full_pred=full_pred, full_correct=(full_pred == LABEL).astype(int), gate=gate,
                pred_at=pred_at, thresholds={L: 1.0 for L in cands}, extra_meta=meta)
    return p


def _pareto(tmp_path, name, cands, taus):
    p = tmp_path / f"{name}_pareto.json"
    p.write_text(json.dumps({"schema_version": 1, "depth": 12, "candidate_layers": cands,
                             "points": [{"id": i, "thresholds": {str(L): t for L in cands}} for i, t in taus]}))
    return p


@pytest.fixture
def two_recipes(tmp_path):
    """A: W8A8, exits at 4/8/10, every head and the full model right: accuracy 1.0 at every point.
    B: W4A8, exits at 2/6, at most 3 of 5 right: accuracy <= 0.6, and its all-exit-at-2 point
    costs less energy than anything of A on every config (2 of 12 blocks, 4-bit weights). So the
    front must hold A rows (the only accuracy 1.0) and B rows (the least energy)."""
    a = _trace(tmp_path, "a", [4, 8, 10], np.tile(LABEL[:, None], (1, 3)), LABEL.copy(),
               {"precision": "w8a8", "weight_bits": 8, "act_bits": 8})
    b = _trace(tmp_path, "b", [2, 6], np.array([[0, 0], [1, 0], [0, 2], [0, 0], [0, 0]]),
               np.array([0, 1, 2, 0, 0]), {"weight_bits": 4, "act_bits": 8})
    pa = _pareto(tmp_path, "a", [4, 8, 10], [(0, 1.0), (5, 0.5)])
    pb = _pareto(tmp_path, "b", [2, 6], [(0, 1.0), (1, 0.5), (2, 0.0)])
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    return space, a, pa, b, pb


def _csv(path):
    return list(csv.DictReader(open(path)))


def test_one_front_spans_two_recipes_with_their_own_policies(tmp_path, two_recipes):
    space, a, pa, b, pb = two_recipes
    out = tmp_path / "out"
    rc, stdout, err = run_cli(["dse", "--space", str(space), "--trace", str(a), "--policies", str(pa),
                               "--trace", str(b), "--policies", str(pb), "--out", str(out), "--workers", "1",
                               "--no-progress"])
    assert rc == 0, err
    rows = _csv(out / "results.csv")
    assert len(rows) == 4 * (2 + 3) and json.loads(stdout.splitlines()[0])["evaluations"] == 20
    header = list(rows[0])
    assert header[-3:] == PRECISION_COLUMNS and header[:3] == ["config_id", "trace_id", "policy_id"]
    assert [c for c in header if c.startswith("threshold_")] == [f"threshold_{L}" for L in (2, 4, 6, 8, 10)]
    for r in rows:   # each trace with its own file's points and candidate layers
        if r["trace_id"] == "0":
            assert (r["recipe"], r["weight_bits"], r["act_bits"]) == ("w8a8", "8", "8")
            assert r["policy_id"] in ("0", "5") and r["threshold_2"] == r["threshold_6"] == ""
            assert float(r["accuracy"]) == 1.0
        else:
            assert (r["recipe"], r["weight_bits"], r["act_bits"]) == ("w4a8", "4", "8")
            assert r["policy_id"] in ("0", "1", "2") and r["threshold_4"] == r["threshold_8"] == ""
            assert float(r["accuracy"]) <= 0.6
    # the front is the joint one: recompute it over every row
    obj = np.array([[-float(r["accuracy"]), float(r["service_latency_p95_us"]), float(r["energy_per_image_uj"]),
                     float(r["area_proxy"])] for r in rows])
    want = {(r["config_id"], r["trace_id"], r["policy_id"]) for r, m in zip(rows, pareto_mask(obj)) if m}
    front = _csv(out / "pareto.csv")
    assert {(r["config_id"], r["trace_id"], r["policy_id"]) for r in front} == want
    assert list(front[0])[-3:] == PRECISION_COLUMNS
    assert {r["recipe"] for r in front} == {"w8a8", "w4a8"}
    least = min(rows, key=lambda r: float(r["energy_per_image_uj"]))
    assert (least["recipe"], least["policy_id"]) == ("w4a8", "2")
    s = json.loads((out / "dse.json").read_text())
    prec = s["precisions"]
    assert list(prec) == ["w8a8", "w4a8"]
    assert prec["w8a8"]["evaluations"] == 8 and prec["w4a8"]["evaluations"] == 12
    assert prec["w4a8"]["weight_bits"] == [4] and prec["w8a8"]["traces"] == [0]
    assert prec["w8a8"]["pareto_points"] >= 1 and prec["w4a8"]["pareto_points"] >= 1
    assert prec["w8a8"]["pareto_points"] + prec["w4a8"]["pareto_points"] == s["pareto_points"] == len(front)
    assert s["policies"]["files"] == [str(pa), str(pb)] and s["policies"]["count"] == 5
    assert [(p["trace_id"], p["policy_id"]) for p in s["policies"]["points"]] == [(0, 0), (0, 5), (1, 0), (1, 1),
                                                                                  (1, 2)]
    assert (out / "pareto.png").stat().st_size > 0


def test_policies_count_must_be_one_or_one_per_trace(tmp_path, two_recipes):
    space, a, pa, b, pb = two_recipes
    out = tmp_path / "out"
    rc, _, err = run_cli(["dse", "--space", str(space), "--trace", str(a), "--trace", str(b), "--policies", str(pa),
                          "--policies", str(pb), "--policies", str(pa), "--out", str(out)])
    assert rc == 2 and err.count("\n") == 1
    assert "--policies: 3 Pareto files for 2 traces; allowed: 1 (every trace) or 2 (one per trace" in err
    assert not out.exists()
    # one file for two traces keeps its meaning: every trace must match it (B's layers do not)
    rc, _, err = run_cli(["dse", "--space", str(space), "--trace", str(a), "--trace", str(b), "--policies", str(pa),
                          "--out", str(out)])
    assert rc == 2 and "candidate_layers: [4, 8, 10] differ from" in err and not out.exists()
    # paired sweeps count every trace's own points against --max-configs
    rc, _, err = run_cli(["dse", "--space", str(space), "--trace", str(a), "--policies", str(pa), "--trace", str(b),
                          "--policies", str(pb), "--out", str(out), "--max-configs", "19"])
    assert rc == 2 and "20 evaluations (4 configs x 5 operating points of 2 traces) exceed --max-configs 19" in err
    assert not out.exists()


def test_none_entry_sweeps_that_trace_as_written(tmp_path, two_recipes):
    space, a, pa, b, pb = two_recipes
    s = dse_sweep(space, tmp_path / "o", traces=[a, b], policies=[pa, None], workers=1, log=lambda *_: None)
    rows = _csv(tmp_path / "o" / "results.csv")
    assert s["evaluations"] == len(rows) == 4 * (2 + 1)
    assert {r["policy_id"] for r in rows if r["trace_id"] == "1"} == {""}
    assert [c for c in rows[0] if c.startswith("threshold_")] == ["threshold_4", "threshold_8", "threshold_10"]
    assert s["policies"]["files"] == [str(pa), None]
    rc, _, err = run_cli(["dse", "--space", str(space), "--trace", str(a), "--policies", "none", "--trace", str(b),
                          "--policies", str(pb), "--out", str(tmp_path / "c"), "--workers", "1", "--no-progress"])
    assert rc == 0, err
    assert {r["policy_id"] for r in _csv(tmp_path / "c" / "results.csv") if r["trace_id"] == "0"} == {""}


def test_single_policies_file_unchanged(tmp_path, two_recipes):
    """One file (a path or a list of one) for every trace: today's columns, rows and dse.json;
    the same file paired with each trace gives the same rows."""
    space, a, pa, *_ = two_recipes
    quiet = dict(workers=1, log=lambda *_: None)
    s1 = dse_sweep(space, tmp_path / "one", traces=[a, a], policies=pa, **quiet)
    s2 = dse_sweep(space, tmp_path / "list", traces=[a, a], policies=[pa], **quiet)
    s3 = dse_sweep(space, tmp_path / "pair", traces=[a, a], policies=[pa, pa], **quiet)
    for f in ("results.csv", "pareto.csv", "dse.json"):
        assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "list" / f).read_bytes()
    for f in ("results.csv", "pareto.csv"):
        assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "pair" / f).read_bytes()
    header = list(_csv(tmp_path / "one" / "results.csv")[0])
    assert header[:6] == ["config_id", "trace_id", "policy_id", "threshold_4", "threshold_8", "threshold_10"]
    assert header[-5:] == ["bound", "evaluator"] + PRECISION_COLUMNS
    assert s1["policies"] == {**s2["policies"]} and set(s1["policies"]) == {"file", "count", "points"}
    assert s1["policies"]["file"] == str(pa) and s1["policies"]["count"] == 2
    assert s3["policies"]["files"] == [str(pa), str(pa)] and s3["policies"]["points"] == s1["policies"]["points"]
    assert s1["precisions"] == {"w8a8": {"traces": [0, 1], "weight_bits": [8], "act_bits": [8], "evaluations": 16,
                                         "pareto_points": s1["pareto_points"]}}
    with pytest.raises(InputError, match=r"--policies: 2 Pareto files for 1 trace; allowed: 1 \(every trace\)"):
        dse_sweep(space, tmp_path / "bad", traces=[a], policies=[pa, pa], **quiet)
    assert not (tmp_path / "bad").exists()


def test_recipe_label_from_the_meta(tmp_path, two_recipes):
    _, a, _, b, _ = two_recipes
    assert trace_recipe(read_trace(a)) == "w8a8"          # meta precision (the recipe name)
    assert trace_recipe(read_trace(b)) == "w4a8"          # from weight_bits / act_bits
    p = tmp_path / "c.csv"
    write_trace(p, [12, 4], [4], 12, 10, extra_meta={"recipe": {"precision": "int8", "dtype": "qint8"}})
    assert trace_recipe(read_trace(p)) == "int8"
    write_trace(p, [12, 4], [4], 12, 10)
    assert trace_recipe(read_trace(p)) == "unspecified"


def test_policy_points_thin_each_file_evenly_in_saving(tmp_path):
    """--policy-points N keeps N sets per Pareto file, spread over its FLOPs-saving range (ends kept)."""
    from hwsim.trace import read_policies

    p = tmp_path / "p.json"
    p.write_text(json.dumps({"schema_version": 1, "depth": 12, "candidate_layers": [10, 11],
                             "points": [{"id": i, "thresholds": {"10": 0.5, "11": 0.5}, "flops_saving": s}
                                        for i, s in enumerate([0.3, 0.0, 0.2, 0.1, 0.05, 0.25])]}))
    pol = read_policies(p)
    assert pol.thinned(None) is pol and pol.thinned(6) is pol
    assert sorted(pt.flops_saving for pt in pol.thinned(3).points) == [0.0, 0.1, 0.3]
    assert [pt.flops_saving for pt in pol.thinned(2).points] == [0.3, 0.0]  # file order of the kept points
    with pytest.raises(InputError, match="--policy-points"):
        pol.thinned(0)
