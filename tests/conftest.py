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
