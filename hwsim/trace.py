"""Per-sample exit trace: the schema, a validating reader and a writer.

A trace is two files (schema version 1):

``trace.csv`` (one row per sample, header required, extra columns ignored)
    ``sample_id``  unique id (string);
    ``exit_layer`` block after which the sample leaves, 1..depth (``depth`` = no early exit);
    ``correct``    optional, 0/1: the prediction at the exit was right;
    ``candidate_layers_evaluated`` optional, ``;``-separated candidate layers whose exit
    head + gate ran for this sample (e.g. ``8;10``); default: every candidate layer below
    ``exit_layer`` plus ``exit_layer`` itself when it is a candidate.

``trace.meta.json`` (beside it: the CSV path with ``.csv`` replaced by ``.meta.json``)
    ``schema_version`` (1), ``depth`` (blocks), ``candidate_layers`` (sorted ints in
    1..depth-1), ``num_classes`` (K, the class embeddings the heads compare against),
    optional ``geometry`` (an :class:`EncoderGeometry` dict), ``model``, ``policy``.

Rules: ``exit_layer`` is ``depth`` or a candidate layer; when given, the evaluated list is
made of candidate layers <= exit_layer and contains exit_layer (if < depth).
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from analysis.atomic import atomic_path, write_json
from analysis.errors import InputError
from quant.geometry import EncoderGeometry

TRACE_SCHEMA_VERSION = 1
REQUIRED_COLUMNS = ("sample_id", "exit_layer")
OPTIONAL_COLUMNS = ("correct", "candidate_layers_evaluated")


@dataclass
class ExitTrace:
    """A validated trace.

    Attributes:
        sample_ids: list of n ids.
        exit_layer: int64 array (n,), values in 1..depth.
        evaluated: bool array (n, len(candidate_layers)): head ran at that candidate layer.
        correct: int8 array (n,) or None.
        candidate_layers: sorted tuple of ints in 1..depth-1.
        depth, num_classes: ints.
        geometry: EncoderGeometry or None (from the meta file).
        meta: the meta dict as read.
    """

    sample_ids: list
    exit_layer: np.ndarray
    evaluated: np.ndarray
    correct: np.ndarray | None
    candidate_layers: tuple
    depth: int
    num_classes: int
    geometry: EncoderGeometry | None = None
    meta: dict | None = None

    def __len__(self) -> int:
        return len(self.exit_layer)

    @property
    def accuracy(self) -> float | None:
        return None if self.correct is None else float(self.correct.mean())

    def full_depth(self) -> "ExitTrace":
        """The same samples with no early exit and no exit heads evaluated."""
        return ExitTrace(self.sample_ids, np.full(len(self), self.depth, np.int64),
                         np.zeros_like(self.evaluated), None, self.candidate_layers, self.depth,
                         self.num_classes, self.geometry, self.meta)


def meta_path_for(csv_path: str | Path) -> Path:
    p = Path(csv_path)
    return p.with_name(p.name[:-4] + ".meta.json") if p.name.endswith(".csv") else p.with_name(p.name + ".meta.json")


def default_evaluated(exit_layer: np.ndarray, candidates: Sequence[int]) -> np.ndarray:
    """(n, c) bool: candidate layers <= exit layer (heads run until the one that exits)."""
    cand = np.asarray(candidates, dtype=np.int64)
    return cand[None, :] <= np.asarray(exit_layer)[:, None]


def _read_meta(path: Path) -> dict:
    src = str(path)
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{src}: file not found (trace metadata: depth, candidate_layers, num_classes); "
                         "allowed: a JSON file beside the trace CSV") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{src}: <root>: not valid JSON ({e.msg} at line {e.lineno}); allowed: a JSON object") from None
    if not isinstance(d, dict):
        raise InputError(f"{src}: <root>: expected an object; allowed: schema_version, depth, candidate_layers, num_classes, geometry")
    for key in ("depth", "num_classes"):
        v = d.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise InputError(f"{src}: {key}: {'missing' if v is None else repr(v)}; allowed: an integer >= 1")
    c = d.get("candidate_layers")
    if not isinstance(c, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in c):
        raise InputError(f"{src}: candidate_layers: {'missing' if c is None else repr(c)}; allowed: a list of integers in 1..{d['depth'] - 1}")
    bad = [x for x in c if not 1 <= x < d["depth"]]
    if bad or len(set(c)) != len(c):
        raise InputError(f"{src}: candidate_layers: {bad or 'duplicates'}; allowed: distinct integers in 1..{d['depth'] - 1}")
    sv = d.get("schema_version", TRACE_SCHEMA_VERSION)
    if sv != TRACE_SCHEMA_VERSION:
        raise InputError(f"{src}: schema_version: {sv!r}; allowed: {TRACE_SCHEMA_VERSION}")
    if d.get("geometry") is not None:
        try:
            d["_geometry"] = EncoderGeometry.from_dict(d["geometry"], source=src)
        except (ValueError, TypeError) as e:
            raise InputError(f"{src}: geometry: {e}; allowed: the JSON of lraee info --json") from None
        if d["_geometry"].depth != d["depth"]:
            raise InputError(f"{src}: depth: {d['depth']} differs from geometry.depth {d['_geometry'].depth}; allowed: {d['_geometry'].depth}")
    return d


def read_trace(path: str | Path, meta_path: str | Path | None = None) -> ExitTrace:
    """Read and validate a trace CSV and its meta JSON; InputError names file, field, rule."""
    path = Path(path)
    src = str(path)
    if not path.is_file():  # name the CSV itself before its sidecar
        raise InputError(f"{src}: file not found; allowed: a CSV with columns {', '.join(REQUIRED_COLUMNS)}")
    meta = _read_meta(Path(meta_path) if meta_path else meta_path_for(path))
    depth, cands = meta["depth"], tuple(sorted(meta["candidate_layers"]))
    try:
        fh = path.open(newline="")
    except FileNotFoundError:
        raise InputError(f"{src}: file not found; allowed: a CSV with columns {', '.join(REQUIRED_COLUMNS)}") from None
    with fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise InputError(f"{src}: <header>: empty trace; allowed: a header with {', '.join(REQUIRED_COLUMNS)} and >= 1 row")
        header = [h.strip() for h in header]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise InputError(f"{src}: {', '.join(missing)}: missing column; allowed columns: "
                             f"{', '.join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)}")
        rows = [r for r in reader if r and any(x.strip() for x in r)]
    if not rows:
        raise InputError(f"{src}: <rows>: empty trace (no samples); allowed: >= 1 row")
    idx = {c: header.index(c) for c in header}
    ncol = len(header)
    for i, r in enumerate(rows):
        if len(r) < ncol:
            raise InputError(f"{src}: line {i + 2}: {len(r)} fields, header has {ncol}; allowed: {ncol} fields per row")
    ids = [r[idx["sample_id"]].strip() for r in rows]
    if len(set(ids)) != len(ids):
        raise InputError(f"{src}: sample_id: duplicate ids; allowed: unique ids")
    try:
        exit_layer = np.array([int(r[idx["exit_layer"]]) for r in rows], dtype=np.int64)
    except ValueError:
        raise InputError(f"{src}: exit_layer: not an integer; allowed: integers in 1..{depth}") from None
    allowed_exit = set(cands) | {depth}
    bad = ~np.isin(exit_layer, list(allowed_exit))
    if bad.any():
        i = int(np.argmax(bad))
        what = "beyond depth" if exit_layer[i] > depth else "not a candidate layer"
        raise InputError(f"{src}: exit_layer: {exit_layer[i]} on line {i + 2} is {what}; "
                         f"allowed: {', '.join(map(str, sorted(allowed_exit)))}")
    correct = None
    if "correct" in idx:
        vals = [r[idx["correct"]].strip() for r in rows]
        if any(v not in ("0", "1") for v in vals):
            raise InputError(f"{src}: correct: values must be 0 or 1; allowed: 0, 1")
        correct = np.array([v == "1" for v in vals], dtype=np.int8)
    if "candidate_layers_evaluated" in idx:
        pos = {c: j for j, c in enumerate(cands)}
        ev = np.zeros((len(rows), len(cands)), dtype=bool)
        for i, r in enumerate(rows):
            cell = r[idx["candidate_layers_evaluated"]].strip()
            try:
                layers = [int(x) for x in cell.split(";") if x.strip()]
            except ValueError:
                raise InputError(f"{src}: candidate_layers_evaluated: {cell!r} on line {i + 2}; "
                                 "allowed: ';'-separated candidate layers") from None
            e = int(exit_layer[i])
            for L in layers:
                if L not in pos or L > e:
                    raise InputError(f"{src}: candidate_layers_evaluated: {L} on line {i + 2}; allowed: "
                                     f"candidate layers <= exit_layer {e} ({', '.join(map(str, cands))})")
                ev[i, pos[L]] = True
            if e < depth and not ev[i, pos[e]]:
                raise InputError(f"{src}: candidate_layers_evaluated: line {i + 2} exits at {e} without "
                                 f"evaluating it; allowed: a list that contains {e}")
    else:
        ev = default_evaluated(exit_layer, cands)
    return ExitTrace(ids, exit_layer, ev, correct, cands, depth, meta["num_classes"], meta.get("_geometry"),
                     {k: v for k, v in meta.items() if not k.startswith("_")})


def write_trace(path: str | Path, exit_layer, candidate_layers: Sequence[int], depth: int, num_classes: int,
                correct=None, sample_ids=None, geometry: EncoderGeometry | None = None,
                evaluated: np.ndarray | None = None, extra_meta: dict | None = None) -> Path:
    """Write ``path`` (CSV) and its meta JSON atomically; returns the meta path."""
    path = Path(path)
    exit_layer = np.asarray(exit_layer, dtype=np.int64)
    n = len(exit_layer)
    ids = sample_ids if sample_ids is not None else [str(i) for i in range(n)]
    cands = sorted(candidate_layers)
    cols = ["sample_id", "exit_layer"] + (["correct"] if correct is not None else []) + (
        ["candidate_layers_evaluated"] if evaluated is not None else [])
    with atomic_path(path) as tmp:
        with tmp.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(cols)
            for i in range(n):
                row = [ids[i], int(exit_layer[i])]
                if correct is not None:
                    row.append(int(correct[i]))
                if evaluated is not None:
                    row.append(";".join(str(c) for c, on in zip(cands, evaluated[i]) if on))
                w.writerow(row)
    meta = {"schema_version": TRACE_SCHEMA_VERSION, "depth": int(depth), "candidate_layers": cands,
            "num_classes": int(num_classes)}
    if geometry is not None:
        meta["geometry"] = geometry.to_dict()
        meta["model"] = geometry.model
    meta.update(extra_meta or {})
    mp = meta_path_for(path)
    write_json(mp, meta)
    return mp


def synthetic_trace(n: int, depth: int, candidate_layers: Sequence[int], seed: int = 0,
                    exit_probs: Sequence[float] | None = None, accuracy: float = 0.6):
    """Random exits (and correctness) for tests, benchmarks and examples.

    Returns (exit_layer int64 (n,), correct int8 (n,)). ``exit_probs`` gives the probability
    of exiting at each candidate layer and (last entry) at full depth; default uniform.
    """
    rng = np.random.default_rng(seed)
    choices = list(candidate_layers) + [depth]
    p = np.asarray(exit_probs if exit_probs is not None else [1.0] * len(choices), dtype=float)
    exit_layer = rng.choice(choices, size=n, p=p / p.sum()).astype(np.int64)
    correct = (rng.random(n) < accuracy).astype(np.int8)
    return exit_layer, correct
