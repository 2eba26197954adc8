"""``lraee hls`` after bad input or a kill (issue 17): nothing at --out, no staging folder left, and
projects appear at their final path only when complete."""
from __future__ import annotations

import json

import pytest


def _base(hls_world, out):
    return ["hls", "--policy", hls_world["policy_dir"], "--out", out, "--tokens", "derived",
            "--cache-dir", hls_world["cache"], "--vectors", 4, "--layers", hls_world["layer"], "--no-compile"]


@pytest.mark.parametrize("extra, needle", [
    (["--reuse", "fc1=7"], "not valid"),
    (["--blocks", "head,evil"], "allowed: head, gate"),
    (["--strategy", "fc1=Fast"], "allowed: Latency, Resource"),
    (["--clock-mhz", "inf"], "--clock-mhz"),
    (["--spec", "BAD"], "fixed-point spec"),
])
def test_failed_hls_leaves_nothing(run_cli, hls_world, tmp_path, extra, needle):
    if extra[-1] == "BAD":
        (tmp_path / "spec.json").write_bytes(b"\xff{not json")
        extra = ["--spec", tmp_path / "spec.json"]
    before = {p.name for p in tmp_path.iterdir()}
    rc, _, err = run_cli(*_base(hls_world, tmp_path / "new" / "o"), *extra)
    assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert {p.name for p in tmp_path.iterdir()} == before  # no --out, no parent, no .o.partial-*


def test_killed_hls_leaves_no_partial_project(hls_world, tmp_path, monkeypatch):
    """A run stopped in the middle of the second project: --out does not exist and no staging folder is left;
    with an existing --out its old contents are untouched."""
    import hls.flow as flow

    real, calls = flow.convert, []

    def convert(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(flow, "convert", convert)
    w = hls_world
    for out in (tmp_path / "fresh", tmp_path / "existing"):
        if out.name == "existing":
            out.mkdir()
            (out / "hls_report.json").write_text("{}")
        calls.clear()
        with pytest.raises(KeyboardInterrupt):
            flow.run(w["policy"], w["vectors"], out, layers=[w["layer"]], compile=False, log=lambda *a: None)
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert not (tmp_path / "fresh").exists()
    assert sorted(p.name for p in (tmp_path / "existing").iterdir()) == ["hls_report.json"]


def test_rerun_into_existing_out_replaces_projects(run_cli, hls_world, tmp_path):
    out = tmp_path / "o"
    for _ in range(2):
        rc, _, err = run_cli(*_base(hls_world, out))
        assert rc == 0, err
    rep = json.loads((out / "hls_report.json").read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]
    for b in rep["blocks"].values():
        cfg = (out / b["project_dir"] / "hls4ml_config.yml")
        if cfg.is_file():
            assert ".partial-" not in cfg.read_text()
