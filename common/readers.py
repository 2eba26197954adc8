"""Strict readers of user files (torch-free): every failure is one :class:`InputError` line.

- :func:`read_text`: UTF-8 text; a missing file, a folder, an unreadable file or bytes that are
  not UTF-8 are refused naming the file (and the byte offset of the first bad byte).
- :func:`read_yaml`: :func:`read_text` + ``yaml.safe_load`` with a nesting limit
  (:data:`MAX_YAML_DEPTH`), checked on the event stream before anything is built, so a deeply
  nested file is refused instead of raising RecursionError.
- :func:`read_json`: :func:`read_text` + ``json.loads`` (nesting limit too).
- :func:`read_csv`: :func:`read_text` + ``csv.reader``: the list of rows.

``what`` prefixes the message with the flag or field the path came from (``--templates``,
``hwsim.arch``); the file itself is always named. ``allowed`` says what the file should be.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from common.errors import InputError

MAX_YAML_DEPTH = 64  # nested mappings/sequences; the project's own files use fewer than 6
MAX_JSON_DEPTH = 256


def _src(path, what: str | None) -> str:
    return f"{what} {path}" if what else str(path)


def _tail(allowed: str | None) -> str:
    return f"; allowed: {allowed}" if allowed else ""


def read_bytes(path: str | Path, what: str | None = None, allowed: str | None = None) -> bytes:
    """The bytes of ``path``; one-line InputError when it is missing, a folder or unreadable."""
    p = Path(path)
    src = _src(path, what)
    if str(path) == "":
        raise InputError(f"{what or 'path'} '': empty path{_tail(allowed or 'a file path')}")
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{src}: file not found{_tail(allowed)}") from None
    except IsADirectoryError:
        raise InputError(f"{src}: is a folder, not a file{_tail(allowed)}") from None
    except NotADirectoryError:
        raise InputError(f"{src}: a parent of the path is a file, not a folder{_tail(allowed)}") from None
    except PermissionError:
        raise InputError(f"{src}: permission denied (cannot read the file){_tail(allowed)}") from None
    except OSError as e:
        raise InputError(f"{src}: cannot read ({e.strerror or type(e).__name__}){_tail(allowed)}") from None


def decode_utf8(data: bytes, src: str, allowed: str | None = None) -> str:
    """``data`` decoded as UTF-8 (a BOM is dropped); one-line InputError naming ``src`` otherwise."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{src}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})"
                         f"{_tail(allowed or 'a UTF-8 text file')}") from None
    return text[1:] if text.startswith("\ufeff") else text


def read_text(path: str | Path, what: str | None = None, allowed: str | None = None) -> str:
    """The UTF-8 text of ``path`` (see module docstring)."""
    return decode_utf8(read_bytes(path, what, allowed), _src(path, what), allowed)


def _yaml_depth_ok(text: str, limit: int) -> bool:
    import yaml

    depth = 0
    for ev in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > limit:
                return False
        elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
    return True


def parse_yaml(text: str, src: str, allowed: str | None = None, max_depth: int = MAX_YAML_DEPTH) -> Any:
    """``yaml.safe_load(text)`` with the nesting limit; one-line InputError naming ``src``."""
    import yaml

    try:
        if not _yaml_depth_ok(text, max_depth):
            raise InputError(f"{src}: <root>: nested more than {max_depth} levels deep"
                             f"{_tail(allowed or f'YAML nested at most {max_depth} levels')}")
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise InputError(f"{src}: <root>: not valid YAML ({' '.join(str(problem).split())}{where})"
                         f"{_tail(allowed)}") from None
    except RecursionError:
        raise InputError(f"{src}: <root>: nested too deeply{_tail(allowed)}") from None


def read_yaml(path: str | Path, what: str | None = None, allowed: str | None = None,
              max_depth: int = MAX_YAML_DEPTH) -> Any:
    """The YAML document in ``path`` (``safe_load``; ``None`` for an empty file)."""
    return parse_yaml(read_text(path, what, allowed), _src(path, what), allowed, max_depth)


def read_json(path: str | Path, what: str | None = None, allowed: str | None = None) -> Any:
    """The JSON document in ``path``; one-line InputError on bad text or syntax."""
    src = _src(path, what)
    text = read_text(path, what, allowed)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{src}: <root>: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})"
                         f"{_tail(allowed)}") from None
    except RecursionError:
        raise InputError(f"{src}: <root>: nested too deeply{_tail(allowed)}") from None


def read_csv(path: str | Path, what: str | None = None, allowed: str | None = None) -> list[list[str]]:
    """The rows of the CSV file ``path`` (UTF-8); one-line InputError on bad text or quoting."""
    src = _src(path, what)
    text = read_text(path, what, allowed)
    if "\x00" in text:
        raise InputError(f"{src}: contains NUL bytes, not a text CSV{_tail(allowed)}")
    try:
        return list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as e:
        raise InputError(f"{src}: not a valid CSV ({e}){_tail(allowed)}") from None
