"""Energy per action (pJ). Default: Horowitz, ISSCC 2014, 45 nm.

M. Horowitz, "1.1 Computing's energy problem (and what we can do about it)", IEEE ISSCC
2014, pp. 10-14, doi:10.1109/ISSCC.2014.6757323. Table (45 nm, 0.9 V):

=====================  ===========
int8 add / mult        0.03 / 0.2 pJ
int32 add / mult       0.1 / 3.1 pJ
fp32 add / mult        0.9 / 3.7 pJ
SRAM read, 64 bit      10 pJ (8 KB), 20 pJ (32 KB), 100 pJ (1 MB)
DRAM access, 64 bit    1.3-2.6 nJ (we use the midpoint, 1950 pJ)
=====================  ===========

A MAC is a weight x activation multiply plus an accumulator-width add. Other widths scale
from Horowitz's int8 multiply and int32 add (:data:`MAC_SCALING`): multiplier energy in
proportion to weight bits x activation bits (the partial-product cells of an array
multiplier), adder energy in proportion to the accumulator bits (its full-adder cells), so an
INT8 MAC with a 32-bit accumulator is 0.2 + 0.1 = 0.3 pJ and W4A8 0.1 + 0.1 = 0.2 pJ.
SRAM energy per 64-bit access for a bank of S KiB is interpolated log-log through the three
points above (and extrapolated with the end slopes). Vector-unit elements are costed in
fp32 adds and multiplies (counts per kind below, our assumption). Replace the table with a
YAML file (same keys, missing keys keep the default) or an Accelergy ERT summary.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from common.errors import InputError

CITATION = ("M. Horowitz, 'Computing's energy problem (and what we can do about it)', "
            "IEEE ISSCC 2014, pp. 10-14, doi:10.1109/ISSCC.2014.6757323 (45 nm)")

MAC_SCALING = ("multiplier energy proportional to weight bits x activation bits (an array multiplier's "
               "partial-product cells) and adder energy to the accumulator bits (its full-adder cells): N. Weste, "
               "D. Harris, 'CMOS VLSI Design: A Circuits and Systems Perspective', 4th ed., Addison-Wesley 2011, "
               "ch. 11; anchored at Horowitz's int8 multiply (0.2 pJ) and int32 add (0.1 pJ), whose int32 multiply "
               "(3.1 pJ) is within 3% of the law's 3.2 pJ and int8 add (0.03 pJ) 17% above its 0.025 pJ")

# fp32 (adds, mults) per element of each vector-op kind (assumption; see docs/hwsim.md)
VECTOR_OPS = {
    "layernorm": (3, 2),
    "softmax": (3, 3),
    "gelu": (4, 5),
    "add": (1, 0),
    "mean": (1, 0),
    "scale": (0, 1),
}


@dataclass(frozen=True)
class EnergyTable:
    """Energy per action in pJ. ``sram_64b`` maps bank size (KiB) -> pJ per 64-bit access."""

    int8_add: float = 0.03
    int8_mult: float = 0.2
    int32_add: float = 0.1
    int32_mult: float = 3.1
    fp32_add: float = 0.9
    fp32_mult: float = 3.7
    sram_64b: dict = field(default_factory=lambda: {8: 10.0, 32: 20.0, 1024: 100.0})
    dram_64b: float = 1950.0
    mac: float | None = None          # overrides mult+add (e.g. from Accelergy)
    vector_elem: dict | None = None   # kind -> pJ per element, overrides VECTOR_OPS
    exit_eval: float | None = None    # pJ per exit-unit evaluation
    citation: str = CITATION
    mac_scaling: str = MAC_SCALING    # how mac_pj scales with the widths (its source)

    def mac_pj(self, weight_bits: int = 8, act_bits: int = 8, accumulator_bits: int = 32) -> float:
        """pJ per MAC (or ``mac`` if given): a ``weight_bits`` x ``act_bits`` multiply,
        ``int8_mult * weight_bits * act_bits / 64``, plus an ``accumulator_bits`` add,
        ``int32_add * accumulator_bits / 32`` (:data:`MAC_SCALING`)."""
        if self.mac is not None:
            return self.mac
        return self.int8_mult * (weight_bits * act_bits) / 64.0 + self.int32_add * accumulator_bits / 32.0

    def sram_pj_per_64b(self, bank_kb: float) -> float:
        """pJ per 64-bit SRAM access for a bank of ``bank_kb`` KiB (log-log interpolation)."""
        pts = sorted((float(k), float(v)) for k, v in self.sram_64b.items())
        if len(pts) == 1:
            return pts[0][1]
        xs = np.log([p[0] for p in pts])
        ys = np.log([p[1] for p in pts])
        x = math.log(max(bank_kb, 1e-6))
        if x <= xs[0]:
            i = 0
        elif x >= xs[-1]:
            i = len(xs) - 2
        else:
            i = int(np.searchsorted(xs, x)) - 1
        slope = (ys[i + 1] - ys[i]) / (xs[i + 1] - xs[i])
        return float(math.exp(ys[i] + slope * (x - xs[i])))

    def vector_pj(self, kind: str) -> float:
        """pJ per element of a vector op of ``kind``."""
        if self.vector_elem and kind in self.vector_elem:
            return float(self.vector_elem[kind])
        a, m = VECTOR_OPS[kind]
        return a * self.fp32_add + m * self.fp32_mult

    def exit_eval_pj(self, num_classes: int) -> float:
        """pJ per gate evaluation: softmax over K, top-2, 3-feature gate, comparison (fp32 ops)."""
        if self.exit_eval is not None:
            return self.exit_eval
        n = 3 * num_classes + 10
        return n * (self.fp32_add + self.fp32_mult)


HOROWITZ45 = EnergyTable()

_NUMERIC = ("int8_add", "int8_mult", "int32_add", "int32_mult", "fp32_add", "fp32_mult", "dram_64b",
            "mac", "exit_eval")


def table_from_yaml(path: str | Path) -> EnergyTable:
    """Energy table from YAML: keys of :class:`EnergyTable` (pJ); missing keys keep Horowitz."""
    from .config import load_yaml
    d = load_yaml(path)
    if not isinstance(d, dict):
        raise InputError(f"{path}: <root>: expected a mapping; allowed: {', '.join(f.name for f in fields(EnergyTable))}")
    allowed = {f.name for f in fields(EnergyTable)}
    upd = {}
    for k, v in d.items():
        if k not in allowed:
            raise InputError(f"{path}: {k}: unknown field; allowed: {', '.join(sorted(allowed))}")
        if k in _NUMERIC:
            if not isinstance(v, (int, float)) or v < 0:
                raise InputError(f"{path}: {k}: must be a number >= 0 (pJ); allowed: non-negative numbers")
            upd[k] = float(v)
        elif k in ("sram_64b", "vector_elem"):
            if not isinstance(v, dict) or not v or any(not isinstance(x, (int, float)) or x < 0 for x in v.values()):
                raise InputError(f"{path}: {k}: must map size/kind -> pJ >= 0; allowed: non-empty mapping")
            if k == "vector_elem" and set(v) - set(VECTOR_OPS):
                raise InputError(f"{path}: vector_elem: unknown kind {sorted(set(v) - set(VECTOR_OPS))}; allowed: {', '.join(VECTOR_OPS)}")
            if k == "sram_64b" and any(float(s) <= 0 for s in v):
                raise InputError(f"{path}: sram_64b: bank sizes must be > 0 KiB; allowed: positive sizes")
            upd[k] = {(float(a) if k == "sram_64b" else a): float(b) for a, b in v.items()}
        else:
            upd[k] = str(v)
    return replace(HOROWITZ45, **upd)


ACCELERGY_TARGETS = ("mac", "sram_64b", "dram_64b", "exit_eval", "fp32_add", "fp32_mult")


def table_from_accelergy(path: str | Path, mapping: dict[str, str]) -> EnergyTable:
    """Energy table from an Accelergy ``ERT_summary.yaml``.

    ``mapping`` maps our actions (``mac``, ``sram_64b``, ``dram_64b``, ``exit_eval``,
    ``fp32_add``, ``fp32_mult``) to ``"<component name>:<action name>"`` of the ERT summary;
    each action's ``energy`` (or ``average_energy``) in pJ is used per access. ``sram_64b``
    then applies to every bank size. Unmapped actions keep Horowitz.
    """
    from .config import load_yaml
    d = load_yaml(path)
    try:
        rows = d["ERT_summary"]["table_summary"]
    except (KeyError, TypeError):
        raise InputError(f"{path}: ERT_summary.table_summary: missing; allowed: an Accelergy ERT summary") from None
    found: dict[str, float] = {}
    for comp in rows or []:
        for act in comp.get("actions", []) or []:
            e = act.get("energy", act.get("average_energy"))
            if isinstance(e, (int, float)):
                found[f"{comp.get('name')}:{act.get('name')}"] = float(e)
    upd = {}
    for ours, theirs in mapping.items():
        if ours not in ACCELERGY_TARGETS:
            raise InputError(f"{path}: accelergy_map.{ours}: unknown action; allowed: {', '.join(ACCELERGY_TARGETS)}")
        if theirs not in found:
            raise InputError(f"{path}: accelergy_map.{ours}: {theirs!r} not in the ERT summary; allowed: {', '.join(sorted(found)[:8])}")
        upd[ours] = {1.0: found[theirs]} if ours == "sram_64b" else found[theirs]
    return replace(HOROWITZ45, citation=f"Accelergy ERT summary {path}", **upd)


def table_for(energy_cfg) -> EnergyTable:
    """The table an :class:`~hwsim.config.EnergyCfg` asks for."""
    if energy_cfg.accelergy_ert:
        return table_from_accelergy(energy_cfg.accelergy_ert, energy_cfg.accelergy_map)
    if energy_cfg.table == "horowitz45":
        return HOROWITZ45
    return table_from_yaml(energy_cfg.table)


def static_power_mw(arch) -> float:
    """Leakage/idle power of the accelerator, mW (array + SRAM + the rest)."""
    lk = arch.energy.leakage
    pes = arch.array.rows * arch.array.cols
    sram_kb = arch.sram.ifmap_kb + arch.sram.filter_kb + arch.sram.ofmap_kb
    return pes * lk.pe_uw / 1000.0 + sram_kb * lk.sram_uw_per_kb / 1000.0 + lk.other_mw
