"""User-given names that reach generated identifiers and file names (C++, Verilog): sanitised, never raw."""
from __future__ import annotations

import re

from common.errors import InputError

_BAD = re.compile(r"[^A-Za-z0-9_]")


def identifier(name: str, what: str, max_len: int, keywords: set[str]) -> str:
    """An identifier (and file-name stem) from user input: ``[A-Za-z0-9_]`` only (runs of ``_`` folded),
    starting with a letter (``p_`` prefixed otherwise), at most ``max_len`` characters, never one of
    ``keywords`` (lower case; ``_prj`` appended); InputError if nothing usable is left."""
    s = re.sub(r"_+", "_", _BAD.sub("_", str(name))).strip("_")
    if s and not s[0].isalpha():
        s = "p_" + s
    s = s[:max_len].rstrip("_")
    if not s:
        raise InputError(f"{what} {name!r}: nothing usable left after sanitising; allowed: letters, digits, '_'")
    if s.lower() in keywords:
        s += "_prj"
    return s
