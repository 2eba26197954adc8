"""Running external tools from the block flows, and the one-line error when one fails.

``lraee hls`` runs g++ (through hls4ml's ``compile()``), ``lraee rtl`` runs Verilator, the Verilator-built
bench and Yosys (:mod:`rtl.tools` finds those).  A tool that runs and fails raises :class:`ToolFailed`, an
:class:`~common.errors.InputError`: the command line prints its one line (tool, what it was doing, the log
file holding the tool's output) and exits with status 2.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

from common.atomic import write_text
from common.errors import InputError


class ToolFailed(InputError):
    """An external tool (g++ under hls4ml, verilator, yosys, a Verilator bench) failed: ``str(err)`` is one line
    naming the tool, what it was doing and the log file that holds its output; ``lraee hls`` / ``lraee rtl``
    print it and exit 2.  ``.log`` is that file (moved with :meth:`moved` when its folder is kept elsewhere)."""

    def __init__(self, tool: str, what: str, log: Path, detail: str = ""):
        self.tool, self.what, self.log, self.detail = tool, what, Path(log), " ".join(str(detail).split())
        super().__init__(f"{tool} failed ({what}{'; ' + self.detail if self.detail else ''}); its output: {self.log}")

    def moved(self, old_root: Path, new_root: Path) -> "ToolFailed":
        """The same failure with the log path under ``new_root`` where it was under ``old_root``."""
        try:
            log = Path(new_root) / self.log.resolve().relative_to(Path(old_root).resolve())
        except ValueError:
            log = self.log
        return ToolFailed(self.tool, self.what, log, self.detail)


def run_logged(argv: list[str], cwd: Path, log: Path, timeout_s: float, tool: str, what: str,
               env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``argv`` in ``cwd`` with its stdout and stderr written to ``log``; a missing program or a run past
    ``timeout_s`` seconds raises :class:`ToolFailed` naming ``tool`` and the log."""
    try:
        r = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        write_text(log, out + err + f"\n[lraee] killed after {timeout_s:g} s\n")
        raise ToolFailed(tool, f"{what}, timed out after {timeout_s:g} s", log) from None
    except OSError as exc:
        write_text(log, f"[lraee] could not start {argv[0]}: {exc}\n")
        raise ToolFailed(tool, f"{what}, could not start: {exc.strerror or exc}", log) from None
    write_text(log, r.stdout + r.stderr)
    return r


def last_error(text: str) -> str:
    """The last line of a tool's output that reads like an error (else its last line), at most 160 characters."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errs = [ln for ln in lines if "error" in ln.lower()]
    pick = (errs or lines or [""])[-1]
    return pick if len(pick) <= 160 else pick[:157] + "..."
