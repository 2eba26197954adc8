"""The workflow API: one settings schema for flags and YAML, policies that carry their backbone, pipeline
stages that call the workflow functions (no argv rebuilding)."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_train_exits_flag_defaults_are_the_schema_defaults():
    """argparse fills the settings sections; with no flags given they equal the schema's defaults (one place)."""
    from analysis.cli import build_parser
    from analysis.cli.cmd_train_exits import EXITS_FLAGS
    from analysis.settings import ExitsCfg, from_args
    from exitlogic.head_config import HeadTrainConfig

    args = build_parser().parse_args(["train-exits", "--out", "x"])
    assert from_args(ExitsCfg, args, EXITS_FLAGS) == ExitsCfg()
    h = HeadTrainConfig()
    assert (ExitsCfg().epochs, ExitsCfg().lr, ExitsCfg().head_batch_size, ExitsCfg().head_dtype) == \
        (h.epochs, h.lr, h.batch_size, h.dtype)


def test_flag_errors_name_the_flag():
    from analysis.cli.cmd_train_exits import EXITS_FLAGS
    from analysis.settings import ExitsCfg, from_args
    from common.errors import InputError
    import argparse

    with pytest.raises(InputError, match=r"^--max-candidates 7: .*4"):
        from_args(ExitsCfg, argparse.Namespace(max_candidates=7), EXITS_FLAGS)


def test_pipeline_stages_call_workflows_not_the_cli():
    """No stage builds an argv: the runner's Context has no command runner, stages.py calls no ``ctx.cli``."""
    from analysis.pipeline.runner import Context

    assert not hasattr(Context, "cli")
    tree = ast.parse((ROOT / "analysis" / "pipeline" / "stages.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "cli"]
    assert not calls


def test_policy_carries_its_backbone(small_policy, run_cli, tmp_path):
    """A policy records model, precision and data; a downstream command needs only --policy, and an override
    of the backbone that differs from the policy's is refused before any work, naming both."""
    pol, cache = small_policy
    meta = json.loads((pol / "policy.json").read_text())
    st = meta["settings"]
    assert st["model"]["name"] == "tiny" and st["precision"]["recipe"] == "w8a8"
    assert st["data"]["train_n"] == 400 and st["data"]["gating_n"] == 300
    rc, out, err = run_cli("exit-report", "--policy", pol, "--precision", "w4a8", "--cache-dir", cache,
                           "--out", tmp_path / "r")
    assert rc == 2 and "differs from the policy's" in err and "w4a8" in err and "w8a8" in err
    assert not (tmp_path / "r").exists()
    rc, out, err = run_cli("validate-exits", "--policy", pol, "--model", "ViT-B-32", "--cache-dir", cache,
                           "--out", tmp_path / "v")
    assert rc == 2 and "--model" in err and "ViT-B-32" in err and not (tmp_path / "v").exists()


def test_backbone_of_without_settings_needs_the_flags(small_policy, tmp_path):
    """A policy written before settings were recorded: the downstream step asks for them in one line."""
    import shutil

    from analysis.workflows import backbone_of
    from common.errors import InputError
    from exitlogic.artifacts import load_policy

    pol, _ = small_policy
    old = tmp_path / "old"
    shutil.copytree(pol, old)
    meta = json.loads((old / "policy.json").read_text())
    del meta["settings"]
    (old / "policy.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="settings: missing"):
        backbone_of(load_policy(old))


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    sec = text[text.index("## Workflow API"):]
    return sec[sec.index("```python") + len("```python"):sec.index("```", sec.index("```python") + 9)]


@pytest.mark.slow
def test_readme_workflow_example_runs(tmp_path, monkeypatch):
    """The README's notebook-style example runs as written (in an empty folder) and returns real results."""
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(_readme_example(), "README.md", "exec"), ns)  # noqa: S102 - our own README
    res = ns["results"]
    assert 0.0 <= res["lra_ee"]["top1"]["mean"] <= 1.0 and res["n_eval"] == 300
    assert (tmp_path / "out" / "fixedpoint" / "fixedpoint_spec.json").is_file()
    assert json.loads((tmp_path / "out" / "sim" / "summary.json").read_text())["trace"]["samples"] == 300
