import csv
import json

import numpy as np
import pytest

from hwsim.dse import Space, run_dse
from hwsim.trace import read_trace, synthetic_trace, write_trace

from hwsim_helpers import CANDS, TINY, run_cli

SPACE = """base: {base}
mode: grid
parameters:
  array.rows: [8, 16]
  array.cols: [16]
  array.dataflow: [os, ws, is]
  batch.size: [1, 4]
"""


@pytest.fixture
def trace_path(tmp_path):
    el, cor = synthetic_trace(300, 12, CANDS, seed=3)
    p = tmp_path / "trace.csv"
    write_trace(p, el, CANDS, 12, 25, correct=cor, geometry=TINY)
    return p


@pytest.fixture
def space_path(tmp_path):
    from hwsim.cli import DEFAULT_ARCH
    p = tmp_path / "space.yaml"
    p.write_text(SPACE.format(base=DEFAULT_ARCH))
    return p


def test_sim_cli_writes_summary(tmp_path, trace_path):
    out = tmp_path / "out"
    rc, stdout, err = run_cli(["sim", "--trace", str(trace_path), "--out", str(out)])
    assert rc == 0, err
    s = json.loads((out / "summary.json").read_text())
    assert set(s["savings"]) >= {"flops_saving", "cycles_saving", "energy_saving", "latency_p95_saving"}
    assert s["early_exit"]["n"] == 300 and s["full_depth"]["macs_per_image"] > s["early_exit"]["macs_per_image"]
    rows = list(csv.DictReader((out / "samples.csv").open()))
    assert len(rows) == 300 and float(rows[0]["latency_us"]) > 0
    assert "FLOPs saving" in stdout


def _rows(path):
    rows = list(csv.DictReader(open(path)))
    return sorted((r for r in rows), key=lambda r: (int(r["config_id"]), int(r["trace_id"])))


def test_dse_local_pool_and_outputs(tmp_path, trace_path, space_path):
    tr = read_trace(trace_path)
    s1 = run_dse(Space(space_path), [tr], TINY, tmp_path / "a", workers=1, progress=False)
    s2 = run_dse(Space(space_path), [tr], TINY, tmp_path / "b", workers=2, progress=False, chunk_size=2)
    assert s1["evaluations"] == s2["evaluations"] == 12
    assert _rows(tmp_path / "a" / "results.csv") == _rows(tmp_path / "b" / "results.csv")
    for f in ("results.csv", "pareto.csv", "pareto.png", "dse.json"):
        assert (tmp_path / "a" / f).stat().st_size > 0
    front = list(csv.DictReader(open(tmp_path / "a" / "pareto.csv")))
    assert 1 <= len(front) <= 12


def test_dse_dask_localcluster_equals_local(tmp_path, trace_path, space_path):
    distributed = pytest.importorskip("distributed")
    tr = read_trace(trace_path)
    run_dse(Space(space_path), [tr], TINY, tmp_path / "local", workers=1, progress=False)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster:
        run_dse(Space(space_path), [tr], TINY, tmp_path / "dask", scheduler=cluster.scheduler_address,
                progress=False, chunk_size=3)
    assert _rows(tmp_path / "local" / "results.csv") == _rows(tmp_path / "dask" / "results.csv")


def test_dse_cli_max_configs_guard(tmp_path, trace_path, space_path):
    out = tmp_path / "out"
    rc, _, err = run_cli(["dse", "--space", str(space_path), "--trace", str(trace_path), "--out", str(out),
                          "--max-configs", "5"])
    assert rc == 2 and "exceed --max-configs 5" in err and err.count("\n") == 1
    assert not out.exists()
    rc, stdout, err = run_cli(["dse", "--space", str(space_path), "--trace", str(trace_path), "--out", str(out),
                               "--workers", "1", "--no-progress"])
    assert rc == 0, err
    assert json.loads(stdout.splitlines()[0])["evaluations"] == 12


def test_dse_bad_space(tmp_path, trace_path):
    p = tmp_path / "space.yaml"
    p.write_text("parameters:\n  array.dataflow: [os, xs]\n")
    rc, _, err = run_cli(["dse", "--space", str(p), "--trace", str(trace_path), "--out", str(tmp_path / "o")])
    assert rc == 2 and "array.dataflow" in err and "allowed: os, ws, is" in err
    p.write_text("parameters:\n  array.depth: [1]\n")
    rc, _, err = run_cli(["dse", "--space", str(p), "--trace", str(trace_path), "--out", str(tmp_path / "o")])
    assert rc == 2 and "unknown accelerator field" in err
    assert not (tmp_path / "o").exists()


def test_dse_random_and_replay_evaluator(tmp_path, trace_path):
    p = tmp_path / "space.yaml"
    p.write_text("mode: random\nsamples: 3\nseed: 1\nparameters:\n  batch.policy: [regroup]\n  array.rows: [8, 16, 32]\n")
    s = run_dse(Space(p), [read_trace(trace_path)], TINY, tmp_path / "o", workers=1, progress=False)
    rows = _rows(tmp_path / "o" / "results.csv")
    assert s["evaluations"] == 3 and all(r["evaluator"] == "replay" for r in rows)


def test_pareto_mask():
    from hwsim.pareto import pareto_mask
    pts = np.array([[1, 5], [2, 2], [3, 1], [3, 3], [1, 5]])
    assert pareto_mask(pts).tolist() == [True, True, True, False, True]
