"""Content hashes used as cache and stage keys (torch-free)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path


def json_sha256(obj) -> str:
    """SHA-256 (hex) of ``obj`` as canonical JSON (sorted keys; ``default=str`` for paths)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
