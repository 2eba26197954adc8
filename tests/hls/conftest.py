"""Fixtures of the HLS tests: every block is compiled once per session (g++ is slow on 2 cores)."""
from __future__ import annotations

import pytest

FAST_VECTORS = 48


@pytest.fixture(scope="session")
def hls_world(small_policy):
    """The small policy, its first candidate layer and derived int8 tokens of that layer."""
    from exitlogic.artifacts import load_policy
    from hls.vectors import derived_vectors

    pol_dir, cache = small_policy
    policy = load_policy(pol_dir)
    layer = policy.candidate_layers[0]
    vec = derived_vectors(policy, cache, [layer], FAST_VECTORS)
    return {"policy": policy, "policy_dir": pol_dir, "cache": cache, "layer": layer, "vectors": vec}


@pytest.fixture(scope="session")
def compiled(hls_world, tmp_path_factory):
    """``hls.flow.run`` on both blocks of the first candidate layer (default spec, Vitis, io_parallel):
    {"report", "out", "unit", "head_L{L}": model, "gate_L{L}": model}."""
    from hls.flow import run

    w = hls_world
    out = tmp_path_factory.mktemp("hls_compiled")
    keep: dict = {}
    report = run(w["policy"], w["vectors"], out, layers=[w["layer"]], keep=keep, log=lambda *a: None)
    return {"report": report, "out": out, **keep}
