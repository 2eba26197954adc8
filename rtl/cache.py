"""Content-addressed cache of Verilator executables and Yosys statistics.

Key: SHA-256 of everything that determines the product (the Verilog text, the test bench, the tool's
version line and its flags).  Entries live in ``<cache_dir>/rtl/<kind>-<key>/`` and are written to a
temporary folder renamed when complete, so a killed run never leaves a half entry.  A rerun of the
pipeline (or of ``lraee rtl`` on the same policy and spec) then skips the C++ build and the synthesis.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=None)
def tool_version(cmd: tuple) -> str:
    """First line of ``<tool> --version`` (``-V`` for Yosys), part of every key."""
    flag = "-V" if "yosys" in Path(cmd[0]).name else "--version"
    try:
        r = subprocess.run(list(cmd) + [flag], capture_output=True, text=True, timeout=300)
        return (r.stdout or r.stderr).strip().splitlines()[0] if (r.stdout or r.stderr).strip() else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def key(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()


def lookup(cache_dir: Path | None, kind: str, k: str) -> Path | None:
    """The folder of entry ``kind-k`` if it is complete, else None."""
    if cache_dir is None:
        return None
    d = (Path(cache_dir) / "rtl" / f"{kind}-{k}").resolve()  # absolute: callers run tools in other folders
    return d if (d / "COMPLETE").is_file() else None


def store(cache_dir: Path | None, kind: str, k: str, files: dict[str, Path]) -> None:
    """Copy ``{name: source file}`` into entry ``kind-k`` (atomic: temp folder, then rename)."""
    if cache_dir is None:
        return
    root = Path(cache_dir) / "rtl"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{kind}-{k}"
    if (final / "COMPLETE").is_file():
        return
    tmp = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=root))
    try:
        for name, src in files.items():
            shutil.copy2(src, tmp / name)
        (tmp / "COMPLETE").write_text(k + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another process won the race, or no space: not fatal
