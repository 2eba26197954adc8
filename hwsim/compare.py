"""Side-by-side architectures for one trace: the batch policies on one array and a layer-pipelined
design at the same PEs (used by ``lraee run``'s hwsim stage; every variant is an arch YAML
that ``lraee sim`` runs, so a user can rerun any of them)."""
from __future__ import annotations

import copy

VARIANTS = ("static", "regroup", "stream", "pipelined")


def split_layer(candidate_layers, depth: int) -> int:
    """The stage boundary of the two-stage pipeline: the candidate layer nearest depth / 2
    (an exit point, as ATHEENA places its stages), or depth // 2 without candidates."""
    if not candidate_layers:
        return max(1, depth // 2)
    return min(candidate_layers, key=lambda L: (abs(L - depth / 2), L))


def variants(arch: dict, candidate_layers, depth: int) -> dict[str, tuple[dict, dict]]:
    """{name: (arch dict, extra keywords of :func:`hwsim.cli.simulate_trace`)} for :data:`VARIANTS`.

    The monolithic variants keep ``arch`` and set ``batch.policy``; ``pipelined`` splits the
    blocks at :func:`split_layer` into two stages with the arch's array and buffers, and asks
    ``size_stages=PEs`` (``lraee sim --size-stages``; PEs of the monolithic array) to size both stages for the
    trace's exit profile: equal PEs."""
    out = {}
    base = copy.deepcopy(arch)
    base.pop("architecture", None)
    base.pop("stages", None)
    for pol in ("static", "regroup", "stream"):
        a = copy.deepcopy(base)
        a.setdefault("batch", {})["policy"] = pol
        out[pol] = (a, {})
    arr = base.get("array", {})
    pes = int(arr.get("rows", 32)) * int(arr.get("cols", 32))
    cut = split_layer(list(candidate_layers), depth)
    p = copy.deepcopy(base)
    p.pop("array", None)
    p.pop("overlap", None)
    p["architecture"] = "pipelined"
    p["stages"] = [{"blocks": [1, cut], "array": dict(arr)}, {"blocks": [cut + 1, depth], "array": dict(arr)}]
    out["pipelined"] = (p, {"size_stages": pes})
    return out
