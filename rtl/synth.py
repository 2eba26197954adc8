"""Open synthesis of an emitted block with Yosys ``synth_xilinx``; cell counts by resource class.

The Yosys family comes from the FPGA part (:func:`family_of`).  The block is synthesised out
of context: ``synth_xilinx -family F -top M -flatten -noiopad`` (no I/O buffers: the block sits
inside a larger design), then ``stat -json``.  Counts are Yosys's technology-mapped cells, not a
vendor's post-place numbers (no Xilinx place and route is open: nextpnr has no UltraScale+ arch).
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from common.atomic import write_text
from common.errors import InputError

from . import cache
from .tools import ToolFailed, last_error, require, run_logged

SYNTH_TIMEOUT_S = 1800

#: part-name prefix (lower case, regex) -> Yosys synth_xilinx family, first match wins
FAMILIES = (
    (r"xc(vu|ku)\d+p", "xcup"),        # Virtex / Kintex UltraScale+ (xcvu13p, xcku5p)
    (r"xc(zu|au)\d+", "xcup"),         # Zynq UltraScale+ MPSoC / RFSoC, Artix UltraScale+
    (r"xcvu\d+", "xcu"),               # Virtex UltraScale (xcvu095)
    (r"xcku\d+", "xcu"),               # Kintex UltraScale (xcku040)
    (r"xc7[aksvz]\d+", "xc7"),         # 7 series (xc7a35t, xc7z020, xc7k325t, xc7v...)
    (r"xc6s", "xc6s"),                 # Spartan-6
    (r"xc6v", "xc6v"),                 # Virtex-6
)
_PART = re.compile(r"^[a-z0-9][a-z0-9-]{1,47}$")

#: cell types per resource class (UltraScale+ / 7 series primitives Yosys maps to)
CLASSES = {
    "lut": re.compile(r"^LUT[1-6]$"),
    "ff": re.compile(r"^FD[RSCP]E(_1)?$|^FD[RSCP]$|^LDCE$|^LDPE$"),
    "carry": re.compile(r"^CARRY(4|8)$|^MUXCY$|^XORCY$"),
    "dsp": re.compile(r"^DSP48E[12]?$|^DSP48A1?$"),
    "bram_18k": re.compile(r"^RAMB18E[12]$"),
    "bram_36k": re.compile(r"^RAMB36E[12]$"),
    "lutram": re.compile(r"^RAM(16|32|64|128|256)[XMSD].*$"),
    "srl": re.compile(r"^SRL(16E|C32E|C16E)$"),
    "mux": re.compile(r"^MUXF[789]$"),
}


def check_part(part: str) -> str:
    """The part name, lower-cased, refused unless it is a plain Xilinx part string."""
    p = str(part).strip().lower()
    if not _PART.match(p) or not p.startswith("xc"):
        raise InputError(f"--part {part!r}: not a Xilinx part name; allowed: letters, digits and '-', starting with "
                         f"'xc' (e.g. xcvu13p-flga2577-2-e)")
    return p


def family_of(part: str) -> str:
    """Yosys ``synth_xilinx -family`` of a Xilinx part (see :data:`FAMILIES`)."""
    p = check_part(part)
    for pat, fam in FAMILIES:
        if re.match(pat, p):
            return fam
    raise InputError(f"--part {part!r}: no Yosys synth_xilinx family for this part; allowed: UltraScale+ "
                     f"(xcvu*p, xcku*p, xczu*, xcau*: xcup), UltraScale (xcvu*, xcku*: xcu), 7 series (xc7*: xc7), "
                     f"Spartan-6 (xc6s*), Virtex-6 (xc6v*); Versal has no Yosys support")


def classify(cells: dict) -> dict:
    """Resource-class totals from Yosys ``num_cells_by_type`` (unknown types under ``other``)."""
    out = {k: 0 for k in CLASSES}
    other = {}
    for typ, cnt in cells.items():
        t = typ.lstrip("\\$")
        for k, rx in CLASSES.items():
            if rx.match(t):
                out[k] += int(cnt)
                break
        else:
            other[t] = int(cnt)
    out["bram_18k_equiv"] = out["bram_18k"] + 2 * out["bram_36k"]
    out["other"] = other
    return out


def synthesize(vfile: Path, module: str, family: str, work: Path, cache_dir: Path | None = None) -> dict:
    """Run Yosys on ``vfile`` in ``work``; returns {family, script, cells, counts, log}.

    With ``cache_dir``, the statistics of an earlier run on the same Verilog, script and Yosys version
    are reused (see :mod:`rtl.cache`)."""
    cmd = require("yosys")
    work.mkdir(parents=True, exist_ok=True)
    script_key = f"synth_xilinx -family {family} -top {module} -flatten -noiopad"
    k = cache.key(vfile.read_text(), script_key, cache.tool_version(tuple(cmd)))
    hit = cache.lookup(cache_dir, "yosys", k)
    if hit is not None:
        shutil.copy2(hit / "stat.json", work / "stat.json")
        write_text(work / "yosys.log", f"reused {hit / 'stat.json'} (cache key {k})\n")
        return _result(json.loads((work / "stat.json").read_text()), family, module)
    tmp = work / "tmp"
    tmp.mkdir(exist_ok=True)
    local = work / vfile.name
    if local.resolve() != vfile.resolve():
        write_text(local, vfile.read_text())
    script = (f"read_verilog {local.name}; synth_xilinx -family {family} -top {module} -flatten -noiopad; "
              f"tee -q -o stat.json stat -json")
    env = dict(os.environ, TMPDIR=str(tmp.resolve()))  # YoWASP's sandbox sees only the working folder
    log = work / "yosys.log"  # yosys writes its own log (-l); its console output goes to yosys.out
    r = run_logged(cmd + ["-q", "-l", log.name, "-p", script], work, work / "yosys.out", SYNTH_TIMEOUT_S, "yosys",
                    f"synth_xilinx of {module}", env=env)
    stat = work / "stat.json"
    if r.returncode != 0 or not stat.is_file():
        raise ToolFailed("yosys", f"synth_xilinx of {module}, exit status {r.returncode}",
                         log if log.is_file() and log.stat().st_size else work / "yosys.out",
                         last_error(r.stderr + r.stdout))
    d = json.loads(stat.read_text())
    shutil.rmtree(tmp, ignore_errors=True)
    cache.store(cache_dir, "yosys", k, {"stat.json": stat})
    return _result(d, family, module)


def _result(d: dict, family: str, module: str) -> dict:
    cells = d.get("design", {}).get("num_cells_by_type") or {}
    if not cells:
        mods = d.get("modules", {})
        cells = next(iter(mods.values()), {}).get("num_cells_by_type", {}) if mods else {}
    return {"family": family, "script": f"synth_xilinx -family {family} -top {module} -flatten -noiopad",
            "cells": {k.lstrip('\\$'): int(v) for k, v in sorted(cells.items())}, "counts": classify(cells),
            "log": "yosys.log"}
