"""On-disk array stores: written in a stream, read by key and slice, memory independent of n.

A store is a folder::

    <name>/meta.json        {"schema": "lraee/store", "version": 1, "arrays": {key: {dtype, shape}}, "meta": {...}}
    <name>/<key>.npy        one numpy .npy file per array (C order)

:class:`StoreWriter` pre-allocates every array as a ``.npy`` file in a temporary folder beside
the final one, takes rows as they are produced (``write(key, start, rows)``, written with
``pwrite``, so no page of a store stays mapped in the writer), and renames
the folder onto its final name only when every array is complete (a killed writer leaves no
store under the final name; an existing store is replaced atomically enough: renamed away first,
removed after). :class:`Store` reads them back: ``store[key]`` is a :class:`StoredArray` whose
indexing maps the file, copies the requested rows in chunks of at most :data:`CHUNK_BYTES` and
unmaps it again, so reading never keeps more than one chunk of a file resident, however large.
Small arrays are read whole with :meth:`Store.load`.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from common.errors import InputError

SCHEMA = "lraee/store"
VERSION = 1
META = "meta.json"
CHUNK_BYTES = 64 << 20  # rows copied per mapping (bytes)


def _safe_key(key: str) -> str:
    if not key or not all(c.isalnum() or c in "_-." for c in key) or key.startswith("."):
        raise ValueError(f"store key {key!r}: allowed: letters, digits, '_', '-', '.'")
    return key


class StoreWriter:
    """Write a store folder in a stream (see module docstring).

    ``arrays`` maps key -> (shape, dtype). Use as a context manager; :meth:`commit` publishes.
    """

    def __init__(self, path: str | Path, arrays: dict[str, tuple[tuple[int, ...], str | np.dtype]]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent))
        self.specs = {_safe_key(k): (tuple(int(s) for s in shape), np.dtype(dt)) for k, (shape, dt) in arrays.items()}
        self._files: dict[str, tuple[int, int]] = {}  # key -> (fd, byte offset of the data)
        for k, (shape, dt) in self.specs.items():
            f = self.tmp / f"{k}.npy"
            mm = np.lib.format.open_memmap(f, mode="w+", dtype=dt, shape=shape)  # header + sized (sparse) file
            del mm
            size = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
            self._files[k] = (os.open(f, os.O_WRONLY), f.stat().st_size - size)
        self.done = False

    def write(self, key: str, start: int, rows: np.ndarray) -> None:
        """Rows ``start .. start + len(rows)`` of ``key`` (written with pwrite: nothing stays mapped)."""
        shape, dt = self.specs[key]
        rows = np.ascontiguousarray(rows, dtype=dt)
        if rows.shape[1:] != shape[1:] or start < 0 or start + len(rows) > shape[0]:
            raise ValueError(f"store {key}: rows {list(rows.shape)} at {start} do not fit {list(shape)}")
        fd, off = self._files[key]
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dt.itemsize
        buf = memoryview(rows.reshape(-1).view(np.uint8))
        pos = off + start * row_bytes
        while len(buf):
            k = os.pwrite(fd, buf, pos)
            buf, pos = buf[k:], pos + k

    def put(self, key: str, array: np.ndarray) -> None:
        """The whole of ``key`` at once (small arrays)."""
        self.write(key, 0, np.asarray(array).reshape(self.specs[key][0]))

    def _close(self) -> None:
        for fd, _ in self._files.values():
            os.close(fd)
        self._files.clear()

    def commit(self, meta: dict) -> "Store":
        for fd, _ in self._files.values():
            os.fsync(fd)
        self._close()
        rec = {"schema": SCHEMA, "version": VERSION,
               "arrays": {k: {"dtype": str(dt), "shape": list(shape)} for k, (shape, dt) in self.specs.items()},
               "meta": meta}
        (self.tmp / META).write_text(json.dumps(rec, indent=1) + "\n", encoding="utf-8")
        os.chmod(self.tmp, 0o755)
        old = None
        if self.path.exists():
            old = self.path.with_name(f".{self.path.name}.old-{os.getpid()}")
            if old.exists():
                shutil.rmtree(old)
            os.replace(self.path, old)
        os.replace(self.tmp, self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self.done = True
        return Store(self.path)

    def abort(self) -> None:
        self._close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.done:
            self.abort()


class StoredArray:
    """A read-only view of one array of a store; indexing returns numpy arrays (copies).

    The first index selects rows (int, slice, integer or boolean array); the rest applies to
    each row. Rows are copied chunk by chunk from a fresh memory map, which is closed after.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype):
        self.path = path
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def _open(self) -> np.ndarray:
        return np.load(self.path, mmap_mode="r")

    def __getitem__(self, idx) -> np.ndarray:
        if not isinstance(idx, tuple):
            idx = (idx,)
        first, rest = idx[0], idx[1:]
        n = self.shape[0]
        scalar = isinstance(first, (int, np.integer))
        if scalar:
            first = slice(int(first) % n if n else 0, (int(first) % n) + 1 if n else 0)
        chunk = max(1, CHUNK_BYTES // max(1, self.row_bytes))
        parts = []
        if isinstance(first, slice) and first.step in (None, 1):
            a, b, _ = first.indices(n)
            for s in range(a, max(a, b), chunk):
                mm = self._open()
                parts.append(np.array(mm[(slice(s, min(b, s + chunk)),) + rest]))
                del mm
        else:
            rows = np.arange(n)[first]
            for s in range(0, len(rows), chunk):
                mm = self._open()
                parts.append(np.array(mm[rows[s:s + chunk]][(slice(None),) + rest]))
                del mm
        if not parts:
            mm = self._open()
            out = np.array(mm[(slice(0, 0),) + rest])
            del mm
        else:
            out = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return out[0] if scalar else out

    def chunks(self, rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, array[start:start + rows])`` over the whole array."""
        rows = rows or max(1, CHUNK_BYTES // max(1, self.row_bytes))
        for s in range(0, self.shape[0], rows):
            yield s, self[s:s + rows]

    def __array__(self, dtype=None, copy=None):
        a = self[:]
        return a if dtype is None else a.astype(dtype)


class Store:
    """A store folder opened for reading (see module docstring)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            rec = json.loads((self.path / META).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"{self.path}: not a store ({META} missing)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"{self.path / META}: unreadable ({type(e).__name__})") from None
        if not isinstance(rec, dict) or rec.get("schema") != SCHEMA:
            raise InputError(f"{self.path / META}: schema: expected {SCHEMA!r}")
        self.arrays = {k: StoredArray(self.path / f"{_safe_key(k)}.npy", tuple(v["shape"]), np.dtype(v["dtype"]))
                       for k, v in rec["arrays"].items()}
        self.meta = rec.get("meta", {})

    def __contains__(self, key: str) -> bool:
        return key in self.arrays

    def __getitem__(self, key: str) -> StoredArray:
        return self.arrays[key]

    def keys(self):
        return self.arrays.keys()

    def load(self, key: str) -> np.ndarray:
        """The whole array ``key`` in memory (for per-sample scalars and other small arrays)."""
        return self.arrays[key][:]

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())

    def intact(self) -> bool:
        """Every array file is present with the header the meta file records."""
        for a in self.arrays.values():
            try:
                mm = np.load(a.path, mmap_mode="r")
            except (OSError, ValueError):
                return False
            ok = tuple(mm.shape) == a.shape and mm.dtype == a.dtype
            del mm
            if not ok:
                return False
        return True
