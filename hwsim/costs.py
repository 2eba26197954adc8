"""Per-stage cost tables of one accelerator on one workload, indexed by group size.

For a group (batch) of b samples, ``StageCosts`` gives the cycles and energy of each stage
type: ``patch`` (patch embedding, before block 1), ``block`` (one transformer block; all
blocks have the same shape), ``head`` (one exit-head evaluation at a candidate layer),
``final`` (projection + classifier after the last block) and the exit unit. Every table is a
numpy array of length ``max_batch + 1`` (index 0 costs nothing), so a replay or a sweep only
does table look-ups. Units: cycles of the accelerator clock; energy in pJ.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from quant.geometry import EncoderGeometry

from . import workload as W
from .config import ArchConfig
from .energy import EnergyTable, table_for
from .memory import gemm_memory

STAGES = ("patch", "block", "head", "final")
COMPONENTS = ("mac", "sram", "dram", "vector", "exit", "leakage")


@dataclass
class StageCosts:
    """Tables over group size b = 0..max_batch.

    Attributes:
        array_cycles[stage]: array busy cycles (compute + memory stalls), int64.
        compute_cycles[stage], stall_cycles[stage], dram_cycles[stage]: int64.
        vector_cycles[stage]: vector-unit cycles, int64.
        exit_cycles: exit-unit cycles for b gate evaluations, int64.
        energy[stage][component]: dynamic energy, pJ (component in mac, sram, dram, vector, exit).
        macs[stage]: MACs, int64.
        static_mw: leakage power, mW.
        clock_mhz: accelerator clock.
    """

    max_batch: int
    array_cycles: dict = field(default_factory=dict)
    compute_cycles: dict = field(default_factory=dict)
    stall_cycles: dict = field(default_factory=dict)
    dram_cycles: dict = field(default_factory=dict)
    spill_cycles: dict = field(default_factory=dict)
    vector_cycles: dict = field(default_factory=dict)
    exit_cycles: np.ndarray | None = None
    energy: dict = field(default_factory=dict)
    macs: dict = field(default_factory=dict)
    static_mw: float = 0.0
    pes: int = 1
    clock_mhz: float = 1.0


def _stage_lists(g: EncoderGeometry, k: int):
    return {
        "patch": (W.patch_gemms(g), W.patch_vector_ops(g)),
        "block": (W.block_gemms(g), W.block_vector_ops(g)),
        "head": (W.head_gemms(g, k), W.head_vector_ops(g)),
        "final": (W.final_gemms(g, k), W.final_vector_ops(g)),
    }


def build_costs(arch: ArchConfig, geometry: EncoderGeometry, num_classes: int, max_batch: int,
                table: EnergyTable | None = None) -> StageCosts:
    """Cost tables for group sizes 0..max_batch (vectorised over sizes and GEMMs)."""
    from .energy import static_power_mw
    table = table or table_for(arch.energy)
    b = np.arange(0, max_batch + 1, dtype=np.int64)
    out = StageCosts(max_batch=max_batch, static_mw=static_power_mw(arch), clock_mhz=arch.clock_mhz,
                     pes=arch.array.rows * arch.array.cols)
    pr = arch.precision
    # a Linear layer multiplies weights by activations; attention GEMMs activations by activations
    e_mac = {"rows": table.mac_pj(pr.weights, pr.activations, pr.accumulator_bits),
             "count": table.mac_pj(pr.activations, pr.activations, pr.accumulator_bits)}
    s = arch.sram
    e_i = table.sram_pj_per_64b(s.ifmap_kb / s.banks) / 64.0
    e_f = table.sram_pj_per_64b(s.filter_kb / s.banks) / 64.0
    e_o = table.sram_pj_per_64b(s.ofmap_kb / s.banks) / 64.0
    e_dram_byte = table.dram_64b / 8.0
    lanes = arch.vector_unit.lanes
    cpe = arch.vector_unit.cycles_per_elem
    for stage, (gemms, vops) in _stage_lists(geometry, num_classes).items():
        cyc = np.zeros(b.shape, np.int64)
        comp = np.zeros(b.shape, np.int64)
        stall = np.zeros(b.shape, np.int64)
        dcyc = np.zeros(b.shape, np.int64)
        spill = np.zeros(b.shape)
        e = {c: np.zeros(b.shape) for c in ("mac", "sram", "dram", "vector", "exit")}
        macs = np.zeros(b.shape, np.int64)
        bb = b[1:]
        for gm in gemms:
            if gm.batching == "rows":
                mm, cnt = gm.m * bb, np.ones_like(bb)
            else:
                mm, cnt = np.full_like(bb, gm.m), gm.count * bb
            mem = gemm_memory(mm, gm.k, gm.n, cnt, gm.batching == "rows", arch)
            cyc[1:] += mem.cycles
            comp[1:] += mem.compute_cycles
            stall[1:] += mem.stall_cycles
            dcyc[1:] += mem.dram_cycles
            spill[1:] += np.broadcast_to(mem.spill_bytes, bb.shape) / arch.dram_bytes_per_cycle
            mac = mm * gm.k * gm.n * cnt
            macs[1:] += mac
            e["mac"][1:] += mac * e_mac[gm.batching]
            e["sram"][1:] += (mem.sram_ifmap_bits * e_i + mem.sram_filter_bits * e_f
                              + mem.sram_ofmap_bits * e_o + mem.sram_fill_bits * e_f)
            e["dram"][1:] += mem.dram_bytes * e_dram_byte
        vcyc = np.zeros(b.shape, np.int64)
        for op in vops:
            vcyc[1:] += np.ceil(op.elems * bb * cpe.get(op.kind, 1.0) / lanes).astype(np.int64)
            e["vector"][1:] += op.elems * bb * table.vector_pj(op.kind)
        out.array_cycles[stage] = cyc
        out.compute_cycles[stage] = comp
        out.stall_cycles[stage] = stall
        out.dram_cycles[stage] = dcyc
        out.spill_cycles[stage] = np.ceil(spill).astype(np.int64)
        out.vector_cycles[stage] = vcyc
        out.energy[stage] = e
        out.macs[stage] = macs
    lat, ii = exit_unit_timing(arch)
    out.exit_cycles = np.where(b > 0, lat + (b - 1) * ii, 0).astype(np.int64)
    e_eval = arch.exit_unit.energy_pj if arch.exit_unit.energy_pj is not None else table.exit_eval_pj(num_classes)
    out.energy["exit"] = b * e_eval
    return out


BOUNDS = ("compute", "dram_bandwidth", "psum_spill", "vector_unit", "exit_unit")


def bound_of(costs: StageCosts, batch: int) -> dict:
    """What bounds one transformer block at group size ``batch`` (cycles of the block stage).

    The array's time is split into compute cycles and memory stalls; the stalls are split
    between psum spills and the other DRAM traffic in proportion to their DRAM cycles. Per
    resource time: ``compute`` (array compute), ``dram_bandwidth`` (stalls of weight,
    activation and output traffic), ``psum_spill`` (stalls of ws/is partial-sum spills),
    ``vector_unit``, ``exit_unit`` (one candidate layer's gate evaluations, if any).
    Returns ``{"bound": name, "cycles": {name: cycles}}`` with the largest share as the bound.
    """
    b = min(max(int(batch), 1), costs.max_batch)
    comp = float(costs.compute_cycles["block"][b])
    stall = float(costs.stall_cycles["block"][b])
    d = float(costs.dram_cycles["block"][b])
    sp = float(min(costs.spill_cycles["block"][b], d)) if costs.spill_cycles else 0.0
    frac = sp / d if d else 0.0
    cyc = {"compute": comp, "dram_bandwidth": stall * (1 - frac), "psum_spill": stall * frac,
           "vector_unit": float(costs.vector_cycles["block"][b]), "exit_unit": float(costs.exit_cycles[b])}
    return {"bound": max(cyc, key=cyc.get), "cycles": cyc}


def exit_unit_timing(arch: ArchConfig) -> tuple[int, int]:
    """(latency, initiation interval) of the exit unit in cycles; from ``hls_report`` if present.

    The report is JSON with ``latency_cycles`` and ``interval_cycles`` (or hls4ml/Vitis
    names ``BestLatency``/``WorstLatency`` and ``IntervalMax``; the worst case is used).
    """
    import json
    from pathlib import Path
    from common.errors import InputError

    x = arch.exit_unit
    if x.hls_report and Path(x.hls_report).is_file():
        from common.readers import read_json

        d = read_json(x.hls_report, allowed="a JSON object (hls_report.json of lraee hls)")
        if not isinstance(d, dict):
            raise InputError(f"{x.hls_report}: <root>: expected a JSON object; allowed: hls_report.json of lraee hls")
        lat = d.get("latency_cycles", d.get("WorstLatency", d.get("BestLatency")))
        ii = d.get("interval_cycles", d.get("IntervalMax", d.get("IntervalMin")))
        if not isinstance(lat, int) or not isinstance(ii, int) or lat <= 0 or ii <= 0:
            raise InputError(f"{x.hls_report}: latency_cycles/interval_cycles: missing or not positive integers; "
                             "allowed: positive integers")
        return lat, ii
    return x.latency_cycles, x.interval_cycles
