"""Atomic file output: write to a temporary file in the target folder, then rename.

A killed or failing writer never leaves a half-written file under the final name.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from common.errors import InputError

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the body succeeds.

    The temporary file is removed when the body raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def _writable_parent(path: Path, flag: str, kind: str) -> None:
    """Refuse ``path`` unless its nearest existing ancestor is a folder this process may write in."""
    anc = path.parent if str(path.parent) else Path(".")
    while not anc.exists():
        if anc.is_symlink() or anc == anc.parent:
            break
        anc = anc.parent
    if anc.exists() and not anc.is_dir():
        raise InputError(f"{flag} {path}: {anc} is a file, not a folder; allowed: a {kind} path under a folder")
    if anc.is_dir() and not os.access(anc, os.W_OK | os.X_OK):
        raise InputError(f"{flag} {path}: {anc} is not writable (permission denied); allowed: a {kind} path in a "
                         "writable folder")


def check_out_dir(path: str | Path, flag: str = "--out") -> Path:
    """Validate an output folder before any work is done (it may not exist yet): one-line
    InputError for an empty path, an existing file, a path under a file or in a read-only folder."""
    if path is None or str(path).strip() == "":
        raise InputError(f"{flag} '': empty path; allowed: an output folder path")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{flag} {path}: exists and is not a folder; allowed: a folder path (new or existing)")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise InputError(f"{flag} {path}: the folder is not writable (permission denied); allowed: a writable "
                             "folder")
    else:
        _writable_parent(path, flag, "folder")
    return path


def check_out_file(path: str | Path, flag: str = "--out", suffix: str | None = None) -> Path:
    """Validate an output file path before any work is done (see :func:`check_out_dir`)."""
    if path is None or str(path).strip() == "":
        raise InputError(f"{flag} '': empty path; allowed: an output file path")
    path = Path(path)
    if suffix is not None and path.suffix.lower() != suffix:
        raise InputError(f"{flag} {path}: expected a {suffix} file; allowed: a path ending in {suffix}")
    if path.is_dir():
        raise InputError(f"{flag} {path}: is a folder; allowed: a file path")
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"{flag} {path}: the file is not writable (permission denied)")
    _writable_parent(path, flag, "file")
    return path


class removed_on_error:  # noqa: N801 - used like a function: ``with removed_on_error(out): ...``
    """Context manager: remove each of ``paths`` that did not exist on entry (its outermost new
    folder) when the body raises, so a failed command leaves no output behind. ``keep()`` turns
    this off (e.g. once a pipeline stage has finished and is worth keeping for a resume)."""

    def __init__(self, *paths: str | Path | None):
        self.fresh: list[Path] = []
        for p in paths:
            if p is None or str(p) == "" or os.path.lexists(p):
                continue
            top = Path(os.path.abspath(p))
            while top.parent != top and not os.path.lexists(top.parent):
                top = top.parent  # the outermost folder the command would create
            self.fresh.append(top)

    def keep(self) -> None:
        self.fresh = []

    def __enter__(self) -> "removed_on_error":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        import shutil

        if exc_type is not None:
            for p in self.fresh:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                elif os.path.lexists(p):
                    with contextlib.suppress(OSError):
                        p.unlink()
        return False
