"""Fixtures of the RTL tests: the small policy's first candidate layer, its exit unit and derived vectors."""
from __future__ import annotations

import pytest

FAST_VECTORS = 64


@pytest.fixture(scope="session")
def rtl_world(small_policy):
    """{policy, layer, vectors (64 derived int8 token vectors), unit (ExitUnit, default spec), ref (unit.run keep)}."""
    from exitlogic.artifacts import load_policy
    from exitlogic.fixedpoint import ExitUnit
    from hls.flow import build_spec
    from hls.vectors import derived_vectors

    pol_dir, cache = small_policy
    policy = load_policy(pol_dir)
    layer = policy.candidate_layers[0]
    vec = derived_vectors(policy, cache, [layer], FAST_VECTORS)
    spec, _ = build_spec(policy, vec, None, log=lambda *a: None)
    unit = ExitUnit(spec, {layer: policy.layer_params(layer)}, policy.tensors["text_embeddings"],
                    float(policy.meta["logit_scale"]), policy_sha256=policy.meta["policy_sha256"])
    ref = unit.run(layer, vec.tokens[layer], vec.scale(layer), keep=True)
    return {"policy": policy, "policy_dir": pol_dir, "cache": cache, "layer": layer, "vectors": vec, "unit": unit,
            "ref": ref}

