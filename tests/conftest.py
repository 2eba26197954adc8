"""Shared fixtures: small encoders built once per session."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_random():
    """The tiny CLIP architecture with random weights (seeded)."""
    from quant.encoder import load_encoder

    torch.manual_seed(0)
    return load_encoder("tiny", random_init=True)


@pytest.fixture(scope="session")
def vitb32_random():
    """A randomly initialised ViT-B-32 (the real geometry; no pretrained weights here)."""
    from quant.encoder import load_encoder

    torch.manual_seed(0)
    return load_encoder("ViT-B-32", random_init=True)


@pytest.fixture()
def run_cli(capsys):
    """Run ``lraee`` in-process; returns (exit code, stdout, stderr)."""
    from analysis.cli import main

    def _run(*argv):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as e:  # argparse errors
            rc = e.code
        out = capsys.readouterr()
        return rc, out.out, out.err

    return _run


@pytest.fixture()
def broken_tools(tmp_path, monkeypatch):
    """``broken_tools("g++", ...)`` puts executables of those names first on PATH: each prints
    ``fake NAME: error: deliberately broken`` to stderr and exits 1 (a tool that runs and fails)."""
    import os

    def _install(*names: str) -> None:
        b = tmp_path / "fakebin"
        b.mkdir(exist_ok=True)
        for n in names:
            f = b / n
            f.write_text(f"#!/bin/sh\necho 'fake {n}: error: deliberately broken' >&2\nexit 1\n")
            f.chmod(0o755)
        monkeypatch.setenv("PATH", f"{b}{os.pathsep}{os.environ['PATH']}")

    return _install


SMALL_POLICY_ARGS = ["--train-n", "400", "--gating-n", "300", "--epochs", "2", "--seeds", "2", "--no-progress"]


@pytest.fixture(scope="session")
def small_policy_args():
    """The train-exits flags of :func:`small_policy`."""
    return list(SMALL_POLICY_ARGS)


@pytest.fixture(scope="session")
def small_policy(tmp_path_factory):
    """A float LRA-EE policy on the embedded default with small splits (train 400, gating 300,
    2 epochs, 2 seeds), thresholds chosen. Returns (policy_dir, feature_cache_dir).

    Shared by the policy, fixed-point, HLS and pipeline tests; treat it as read-only.
    """
    from analysis.cli import main

    root = tmp_path_factory.mktemp("small_policy")
    pol, cache = root / "policy", root / "cache"
    assert main(["train-exits", "--out", str(pol), "--cache-dir", str(cache), *SMALL_POLICY_ARGS]) == 0
    assert main(["thresholds", "--policy", str(pol)]) == 0
    return pol, cache
