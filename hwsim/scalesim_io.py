"""SCALE-Sim interoperability: read ``.cfg`` files and topology CSVs, write COMPUTE_REPORT.csv.

* ``.cfg``: SCALE-Sim v2 (and v3) INI files; we read ``[general] run_name``,
  ``[architecture_presets]`` ArrayHeight, ArrayWidth, IfmapSramSzkB, FilterSramSzkB,
  OfmapSramSzkB, Dataflow, Bandwidth, and ``[run_presets] InterfaceBandwidth`` (CALC or USER).
  Other keys are ignored.
* topology CSV, conv format: ``Layer name, IFMAP Height, IFMAP Width, Filter Height,
  Filter Width, Channels, Num Filter, Strides,`` (one row per layer, trailing comma; a name
  containing ``DP`` is a depthwise layer that SCALE-Sim splits into one layer per channel,
  and so do we). GEMM format: ``Layer, M, N, K,``. An optional trailing ``N:M`` sparsity
  column is ignored. Conv layers map to GEMMs as SCALE-Sim does: M = ofmap pixels
  (ofmap_h = ceil((H - Fh + S) / S)), K = Fh*Fw*C, N = filters.
* ``COMPUTE_REPORT.csv``: SCALE-Sim v2's columns ``LayerID, Total Cycles, Stall Cycles,
  Overall Util %, Mapping Efficiency %, Compute Util %,``. With ``InterfaceBandwidth: CALC``
  the numbers equal SCALE-Sim v2's (stalls are 0 there); with USER bandwidth the stalls come
  from :mod:`hwsim.scalesim_memory` (SCALE-Sim's memory system: a closed form where no operand
  is refetched, a replay of its demand trace elsewhere) or, with ``--memory analytical``, from
  our memory model.
* ``BANDWIDTH_REPORT.csv`` and ``DETAILED_ACCESS_REPORT.csv`` (USER bandwidth): SCALE-Sim v2's
  columns, from :mod:`hwsim.scalesim_memory`.
"""
from __future__ import annotations

import configparser
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.atomic import atomic_path
from common.errors import InputError

from . import dataflows
from .cycles import gemm_cycles
from .dataflows import NAMES as DATAFLOWS

COMPUTE_REPORT_HEADER = ("LayerID, Total Cycles, Stall Cycles, Overall Util %, Mapping Efficiency %, "
                         "Compute Util %,")


@dataclass(frozen=True)
class ScaleSimConfig:
    run_name: str
    rows: int
    cols: int
    ifmap_kb: int
    filter_kb: int
    ofmap_kb: int
    dataflow: str
    bandwidth_mode: str       # CALC or USER
    bandwidth_words: int      # USER: words per cycle (first entry of Bandwidth)


@dataclass(frozen=True)
class TopoLayer:
    """One layer as a GEMM M x K x N. ``distinct``: SCALE-Sim's operand addresses are all
    distinct (GEMM layers; conv layers whose windows do not overlap), which its exact
    memory replay (:mod:`hwsim.scalesim_trace`) needs."""

    name: str
    m: int
    k: int
    n: int
    distinct: bool = True


def read_cfg(path: str | Path) -> ScaleSimConfig:
    """Parse a SCALE-Sim .cfg; InputError names the section.key that is missing or bad."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found; allowed: a SCALE-Sim .cfg file")
    from common.readers import read_text

    cp = configparser.ConfigParser()
    try:
        cp.read_string(read_text(path, allowed="a SCALE-Sim .cfg file (UTF-8 INI sections)"), source=str(path))
    except configparser.Error as e:
        raise InputError(f"{path}: <root>: not a valid .cfg ({type(e).__name__}); allowed: INI sections") from None

    def get(section, key, conv=str, allowed="a value"):
        try:
            raw = cp.get(section, key).strip()
        except (configparser.NoSectionError, configparser.NoOptionError):
            raise InputError(f"{path}: {section}.{key}: missing; allowed: {allowed}") from None
        try:
            v = conv(raw)
        except ValueError:
            raise InputError(f"{path}: {section}.{key}: {raw!r}; allowed: {allowed}") from None
        if conv is int and v <= 0:
            raise InputError(f"{path}: {section}.{key}: {v}; allowed: {allowed}")
        return v

    pos = "a positive integer"
    ap = "architecture_presets"
    df = get(ap, "Dataflow", allowed=", ".join(DATAFLOWS)).lower()
    if df not in DATAFLOWS:
        raise InputError(f"{path}: {ap}.Dataflow: {df!r}; allowed: {', '.join(DATAFLOWS)}")
    mode = "CALC"
    if cp.has_option("run_presets", "InterfaceBandwidth"):
        mode = cp.get("run_presets", "InterfaceBandwidth").strip().upper()
        if mode not in ("CALC", "USER"):
            raise InputError(f"{path}: run_presets.InterfaceBandwidth: {mode!r}; allowed: CALC, USER")
    bw = 0
    if mode == "USER":
        bw = get(ap, "Bandwidth", lambda s: int(s.split(",")[0]), allowed="a positive integer (words/cycle)")
    name = cp.get("general", "run_name", fallback=path.stem).strip().strip('"')
    return ScaleSimConfig(name, get(ap, "ArrayHeight", int, pos), get(ap, "ArrayWidth", int, pos),
                          get(ap, "IfmapSramSzkB", int, pos), get(ap, "FilterSramSzkB", int, pos),
                          get(ap, "OfmapSramSzkB", int, pos), df, mode, bw)


def read_topology(path: str | Path, fmt: str = "auto") -> list[TopoLayer]:
    """Parse a SCALE-Sim topology CSV (``conv``, ``gemm`` or ``auto``-detected) into GEMMs."""
    path = Path(path)
    if fmt not in ("auto", "conv", "gemm"):
        raise InputError(f"--topology-format: {fmt!r}; allowed: auto, conv, gemm")
    from common.readers import read_text

    lines = [ln.strip() for ln in read_text(path, allowed="a SCALE-Sim topology CSV").splitlines()]
    if not lines or not lines[0]:
        raise InputError(f"{path}: <header>: empty topology; allowed: a header line and >= 1 layer")
    header = [h.strip().lower() for h in lines[0].split(",")]
    if fmt == "auto":
        fmt = "gemm" if len(header) > 1 and header[1] == "m" else "conv"
    layers: list[TopoLayer] = []
    for lineno, ln in enumerate(lines[1:], start=2):
        if not ln:
            continue
        elems = [e.strip() for e in ln.split(",")]
        if elems and elems[-1] == "":
            elems = elems[:-1]
        need = 4 if fmt == "gemm" else 8
        if len(elems) < need:
            raise InputError(f"{path}: line {lineno}: {len(elems)} fields; allowed: {need} for the {fmt} format")
        try:
            nums = [int(x) for x in elems[1:need]]
        except ValueError:
            raise InputError(f"{path}: line {lineno}: non-integer size; allowed: positive integers") from None
        if any(x <= 0 for x in nums):
            raise InputError(f"{path}: line {lineno}: size <= 0; allowed: positive integers")
        name = elems[0]
        if fmt == "gemm":
            m, n, k = nums
            layers.append(TopoLayer(name, m, k, n))
            continue
        ih, iw, fh, fw, ch, nf, st = nums
        if fh > ih or fw > iw:
            raise InputError(f"{path}: line {lineno}: filter larger than ifmap; allowed: filter <= ifmap")
        oh = int(math.ceil((ih - fh + st) / st))
        ow = int(math.ceil((iw - fw + st) / st))
        # im2col repeats an input pixel in several windows when they overlap
        distinct = (oh == 1 or fh <= st) and (ow == 1 or fw <= st)
        if "DP" in name:
            for c in range(ch):
                layers.append(TopoLayer(f"{name}Channel_{c}", oh * ow, fh * fw, nf, distinct))
        else:
            layers.append(TopoLayer(name, oh * ow, fh * fw * ch, nf, distinct))
    if not layers:
        raise InputError(f"{path}: <rows>: no layers; allowed: >= 1 layer row")
    return layers


def compute_report_rows(layers: list[TopoLayer], cfg: ScaleSimConfig, stall_cycles=None,
                        total_cycles=None) -> list[tuple]:
    """(LayerID, total, stall, overall %, mapping %, compute %) per layer, SCALE-Sim v2 arithmetic.

    ``total_cycles`` (per layer; default compute + stall cycles) comes from the memory model
    when it knows the last output's cycle.

    Averages are summed fold by fold in SCALE-Sim's order (column folds outer) so the floats
    print identically.
    """
    R, C = cfg.rows, cfg.cols
    rows = []
    for i, L in enumerate(layers):
        g = gemm_cycles(L.m, L.k, L.n, R, C, cfg.dataflow)
        sr, sc, t = int(g.sr), int(g.sc), int(g.t)
        rf, cf = int(g.row_folds), int(g.col_folds)
        r_used = np.minimum(R, sr - np.arange(rf) * R)
        c_used = np.minimum(C, sc - np.arange(cf) * C)
        used = (c_used[:, None] * r_used[None, :]).ravel().tolist()  # fc outer, fr inner
        fold_cyc = int(dataflows.get(cfg.dataflow).util_fold_cycles(R, C, t))
        mapping = [u / (R * C) for u in used]
        comp = [(u * t) / (R * C * fold_cyc) for u in used]
        stall = int(stall_cycles[i]) if stall_cycles is not None else 0
        total = int(total_cycles[i]) if total_cycles is not None else int(g.cycles) + stall
        overall = (L.m * L.n * L.k * 100) / (total * R * C)
        rows.append((i, total, stall, overall, sum(mapping) / len(mapping) * 100,
                     sum(comp) / len(comp) * 100))
    return rows


def write_compute_report(path: str | Path, rows: list[tuple]) -> None:
    """Write COMPUTE_REPORT.csv atomically in SCALE-Sim v2's format."""
    text = COMPUTE_REPORT_HEADER + "\n" + "".join(", ".join(str(x) for x in r) + ",\n" for r in rows)
    with atomic_path(path) as tmp:
        tmp.write_text(text)


BANDWIDTH_REPORT_HEADER = ("LayerID, Avg IFMAP SRAM BW, Avg FILTER SRAM BW, Avg OFMAP SRAM BW, Avg IFMAP DRAM BW, "
                           "Avg FILTER DRAM BW, Avg OFMAP DRAM BW,")
DETAILED_REPORT_HEADER = ("LayerID, SRAM IFMAP Start Cycle, SRAM IFMAP Stop Cycle, SRAM IFMAP Reads, "
                          "SRAM Filter Start Cycle, SRAM Filter Stop Cycle, SRAM Filter Reads, "
                          "SRAM OFMAP Start Cycle, SRAM OFMAP Stop Cycle, SRAM OFMAP Writes, "
                          "DRAM IFMAP Start Cycle, DRAM IFMAP Stop Cycle, DRAM IFMAP Reads, "
                          "DRAM Filter Start Cycle, DRAM Filter Stop Cycle, DRAM Filter Reads, "
                          "DRAM OFMAP Start Cycle, DRAM OFMAP Stop Cycle, DRAM OFMAP Writes,")


def scalesim_memory_for(layers: list[TopoLayer], cfg: ScaleSimConfig):
    """:func:`hwsim.scalesim_memory.scalesim_memory` of the topology's layers (USER bandwidth)."""
    from .scalesim_memory import scalesim_memory
    m = np.array([x.m for x in layers]); k = np.array([x.k for x in layers]); n = np.array([x.n for x in layers])
    return scalesim_memory(m, k, n, cfg.rows, cfg.cols, cfg.dataflow, cfg.ifmap_kb, cfg.filter_kb, cfg.ofmap_kb,
                           cfg.bandwidth_words, distinct=np.array([x.distinct for x in layers]))


def access_report_rows(mem) -> tuple[list[tuple], list[tuple]]:
    """(BANDWIDTH_REPORT rows, DETAILED_ACCESS_REPORT rows) in SCALE-Sim v2's column order:
    average SRAM bandwidth = accesses / total cycles, DRAM bandwidth = accesses / (stop - start
    + 1), words per cycle; start/stop cycles printed as floats, counts as integers."""
    bw_rows, det_rows = [], []
    sram, dram = mem.detail["sram"], mem.detail["dram"]
    for i in range(len(mem.compute_cycles)):
        total = int(mem.total_cycles[i])
        s_counts = (int(mem.ifmap_sram_reads[i]), int(mem.filter_sram_reads[i]), int(mem.ofmap_sram_writes[i]))
        d_counts = (int(mem.ifmap_dram_reads[i]), int(mem.filter_dram_reads[i]), int(mem.ofmap_dram_writes[i]))
        det, bws = [i], [i]
        for op, cnt in zip(("ifmap", "filter", "ofmap"), s_counts):
            det += [float(sram[op][0][i]), float(sram[op][1][i]), cnt]
            bws.append(cnt / total)
        d_bw = []
        for op, cnt in zip(("ifmap", "filter", "ofmap"), d_counts):
            a, b = float(dram[op][0][i]), float(dram[op][1][i])
            det += [a, b, cnt]
            d_bw.append(cnt / (b - a + 1))
        bw_rows.append(tuple(bws + d_bw))
        det_rows.append(tuple(det))
    return bw_rows, det_rows


def write_report(path: str | Path, header: str, rows: list[tuple]) -> None:
    """Write a SCALE-Sim style report CSV (``header`` line, ``", "``-joined rows) atomically."""
    text = header + "\n" + "".join(", ".join(str(x) for x in r) + ",\n" for r in rows)
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def stall_estimate(layers: list[TopoLayer], cfg: ScaleSimConfig) -> np.ndarray:
    """Our memory model's stall cycles for USER bandwidth (words/cycle, 1-byte words)."""
    from .config import ArchConfig
    arch = ArchConfig.model_validate({
        "clock_mhz": 1000.0, "array": {"rows": cfg.rows, "cols": cfg.cols, "dataflow": cfg.dataflow},
        "sram": {"ifmap_kb": cfg.ifmap_kb, "filter_kb": cfg.filter_kb, "ofmap_kb": cfg.ofmap_kb},
        "dram": {"bandwidth_gbps": float(cfg.bandwidth_words)}, "precision": {"operand_bits": 8}})
    from .memory import gemm_memory
    m = np.array([x.m for x in layers]); k = np.array([x.k for x in layers]); n = np.array([x.n for x in layers])
    return gemm_memory(m, k, n, 1, True, arch).stall_cycles


def geometry_topology_rows(geometry) -> list[TopoLayer]:
    """The GEMMs of one image through patch embedding, ONE transformer block (every block is
    identical; attention GEMMs one row per head) and the final projection, as topology rows."""
    from . import workload as W
    out = []
    for gm in W.patch_gemms(geometry) + W.block_gemms(geometry) + W.final_gemms(geometry):
        if gm.count == 1:
            out.append(TopoLayer(gm.name, gm.m, gm.k, gm.n))
        else:
            out.extend(TopoLayer(f"{gm.name}_h{h}", gm.m, gm.k, gm.n) for h in range(gm.count))
    return out


def write_gemm_topology(path: str | Path, layers: list[TopoLayer]) -> None:
    """Write a SCALE-Sim GEMM topology CSV (``Layer, M, N, K,``) atomically."""
    text = "Layer, M, N, K,\n" + "".join(f"{L.name}, {L.m}, {L.n}, {L.k},\n" for L in layers)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
