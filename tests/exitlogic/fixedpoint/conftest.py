"""Fixtures for the fixed-point exit unit tests (helpers in fxp_helpers.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fxp_helpers import E, K, LAYERS, LOGIT_SCALE, SCALES, make_params, make_tokens  # noqa: E402


@pytest.fixture(scope="session")
def world():
    """params per layer, text embeddings, logit scale, samples {layer: (q, scale)}."""
    from exitlogic.fixedpoint import float_reference

    rng = np.random.default_rng(1234)
    params = {L: make_params(rng) for L in LAYERS}
    t = rng.standard_normal((K, E))
    t = (t / np.linalg.norm(t, axis=1, keepdims=True)).astype(np.float32)
    samples = {L: (make_tokens(rng, 400), SCALES[L]) for L in LAYERS}
    for L, (q, s) in samples.items():  # centre the gate: about half the samples exit
        g = float_reference(params[L], t, LOGIT_SCALE, q, s)["gate_logit"]
        params[L]["gate.b"] = np.array([-np.median(g)], np.float32)
    return {"params": params, "text": t, "logit_scale": LOGIT_SCALE, "samples": samples}


@pytest.fixture(scope="session")
def generous(world):
    """The generous default spec sized on the world's samples."""
    from exitlogic.fixedpoint import default_spec

    return default_spec(world["params"], world["text"], world["logit_scale"], world["samples"],
                        policy_sha256="a" * 64)


@pytest.fixture(scope="session")
def unit(world, generous):
    from exitlogic.fixedpoint import ExitUnit

    return ExitUnit(generous, world["params"], world["text"], world["logit_scale"])
