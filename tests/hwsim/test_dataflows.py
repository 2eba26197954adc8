"""Issue 14: the dataflow registry (hwsim/dataflows.py) is the one statement of each dataflow."""
import typing

import numpy as np
import pytest

from hwsim import dataflows
from hwsim.config import ArrayCfg
from hwsim.cycles import gemm_cycles
from hwsim.memory import gemm_memory

from hwsim_helpers import arch


def test_registry_mappings_and_access_patterns():
    assert dataflows.NAMES == ("os", "ws", "is")
    m, k, n = 20, 9, 12
    facts = {  # DESIGN.md: OS Sr=M, Sc=N, T=K; WS Sr=K, Sc=N, T=M; IS Sr=K, Sc=M, T=N
        "os": ((m, n, k), "ofmap", False),
        "ws": ((k, n, m), "filter", True),
        "is": ((k, m, n), "ifmap", True),
    }
    for name, (srsct, stationary, psums) in facts.items():
        f = dataflows.get(name)
        assert tuple(int(x) for x in f.spatio_temporal(m, k, n)) == srsct
        assert f.stationary == stationary
        assert set(f.streamed) == {"ifmap", "filter", "ofmap"} - {stationary}
        assert f.spatial_reduction == psums


def test_fold_cycles_formulae():
    R, C, T = 8, 4, 30
    assert dataflows.get("os").fold_cycles(R, C, T, "scalesim") == R + C + T - 2
    assert dataflows.get("os").fold_cycles(R, C, T, "paper") == 2 * R + C + T - 2
    for name in ("ws", "is"):
        assert dataflows.get(name).fold_cycles(R, C, T) == 2 * R + C + T - 2
        assert dataflows.get(name).util_fold_cycles(R, C, T) == 2 * R + 2 * C + T - 3


def test_config_allowed_values_come_from_the_registry():
    assert typing.get_args(ArrayCfg.model_fields["dataflow"].annotation) == dataflows.NAMES
    with pytest.raises(ValueError, match="allowed: os, ws, is"):
        dataflows.get("xs")


def test_a_new_dataflow_is_one_class(monkeypatch):
    """Registering a class is all the models need: a copy of ws under another name gives
    ws's cycles and memory traffic."""
    class WsCopy(dataflows.WeightStationary):
        name = "ws2"

    monkeypatch.setitem(dataflows.REGISTRY, "ws2", WsCopy())
    m, k, n = np.array([20, 64, 1]), np.array([9, 50, 128]), np.array([12, 40, 25])
    a, b = gemm_cycles(m, k, n, 8, 4, "ws2"), gemm_cycles(m, k, n, 8, 4, "ws")
    assert a.cycles.tolist() == b.cycles.tolist() and a.folds.tolist() == b.folds.tolist()
    ws = arch(array__dataflow="ws", sram__ofmap_kb=1)
    ws2 = ws.model_copy(update={"array": ws.array.model_copy(update={"dataflow": "ws2"})})
    x, y = gemm_memory(m, k, n, 1, True, ws2), gemm_memory(m, k, n, 1, True, ws)
    assert x.stall_cycles.tolist() == y.stall_cycles.tolist() and x.dram_bytes.tolist() == y.dram_bytes.tolist()
    assert x.spill_bytes.tolist() == y.spill_bytes.tolist() and y.spill_bytes.sum() > 0
