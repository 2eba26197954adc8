"""Per-sample exit trace: the schema, a validating reader and a writer.

A trace is two files (schema version 1):

``trace.csv`` (one row per sample, header required, extra columns ignored)
    ``sample_id``  unique id (string);
    ``exit_layer`` block after which the sample leaves, 1..depth (``depth`` = no early exit);
    ``correct``    optional, 0/1: the prediction at the exit was right;
    ``candidate_layers_evaluated`` optional, ``;``-separated candidate layers whose exit
    head + gate ran for this sample (e.g. ``8;10``); default: every candidate layer below
    ``exit_layer`` plus ``exit_layer`` itself when it is a candidate.
    Optional policy columns (written by the float exit policy; needed to re-threshold a
    trace, see :func:`apply_thresholds`): ``label``, ``pred``, ``full_pred`` (class indices
    in 0..num_classes-1), ``full_correct`` (0/1), and per candidate layer L ``gate_L`` (the
    gate's score in [0, 1]) and ``pred_L`` (the exit head's class index); ``conf_L``,
    ``margin_L``, ``sav_L`` and per-layer columns of non-candidate layers are ignored.

``trace.meta.json`` (beside it: the CSV path with ``.csv`` replaced by ``.meta.json``)
    ``schema_version`` (1), ``depth`` (blocks), ``candidate_layers`` (sorted ints in
    1..depth-1), ``num_classes`` (K, the class embeddings the heads compare against),
    optional ``geometry`` (an :class:`EncoderGeometry` dict), ``model``, ``policy``, ``precision``
    (the recipe name, e.g. ``w4a8``; the DSE's ``recipe`` column, :func:`hwsim.dse.trace_recipe`),
    ``thresholds`` ({"L": tau} for every candidate layer, tau in [0, 1]), ``weight_bits`` and
    ``act_bits`` (the quantization recipe's widths, integers in 1..64; the accelerator's operand
    widths follow them unless its YAML sets them, :func:`hwsim.config.with_trace_precision`).

Rules: ``exit_layer`` is ``depth`` or a candidate layer; when given, the evaluated list is
made of candidate layers <= exit_layer and contains exit_layer (if < depth).

The policy's rule: a sample exits at the first candidate layer L (ascending) with
``gate_L >= tau_L``, else at ``depth`` with ``full_pred``; ``correct = (pred == label)``.

A Pareto file (JSON, written by the policy; :func:`read_policies`)::

    {"schema_version": 1, "depth": 12, "candidate_layers": [4, 8, 10],
     "points": [{"id": 0, "thresholds": {"4": 0.92, "8": 0.6, "10": 0.2},
                 "accuracy": 0.71, "flops_saving": 0.31}, ...]}
"""
from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from common.atomic import atomic_path, write_json
from common.errors import InputError
from exitlogic.routing import route
from quant.geometry import EncoderGeometry

TRACE_SCHEMA_VERSION = 1
REQUIRED_COLUMNS = ("sample_id", "exit_layer")
OPTIONAL_COLUMNS = ("correct", "candidate_layers_evaluated", "label", "pred", "full_pred", "full_correct")
PER_LAYER = re.compile(r"^(gate|pred)_(\d+)$")   # gate_L, pred_L (conf_L, margin_L, sav_L: ignored)
PARETO_SCHEMA_VERSION = 1


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
        label, pred, full_pred: int64 (n,) class indices or None; full_correct: int8 (n,) or None.
        gate: float64 (n, len(candidate_layers)) gate scores in [0, 1] or None.
        pred_at: int64 (n, len(candidate_layers)) exit-head predictions or None.
        thresholds: {layer: tau} from the meta file (or :func:`apply_thresholds`) or None.
        source: the CSV path it was read from (for messages) or None.
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
    label: np.ndarray | None = None
    pred: np.ndarray | None = None
    full_pred: np.ndarray | None = None
    full_correct: np.ndarray | None = None
    gate: np.ndarray | None = None
    pred_at: np.ndarray | None = None
    thresholds: dict | None = None
    source: str | None = None

    def __len__(self) -> int:
        return len(self.exit_layer)

    def missing_policy_columns(self) -> list[str]:
        """Columns a re-thresholding needs that this trace lacks (empty: it can be re-thresholded)."""
        miss = []
        if self.gate is None:
            miss += [f"gate_{L}" for L in self.candidate_layers]
        if self.pred_at is None:
            miss += [f"pred_{L}" for L in self.candidate_layers]
        return miss + [c for c, v in (("full_pred", self.full_pred), ("label", self.label)) if v is None]

    @property
    def accuracy(self) -> float | None:
        return None if self.correct is None else float(self.correct.mean())

    def full_depth(self) -> "ExitTrace":
        """The same samples with no early exit and no exit heads evaluated."""
        return ExitTrace(self.sample_ids, np.full(len(self), self.depth, np.int64),
                         np.zeros_like(self.evaluated), None, self.candidate_layers, self.depth,
                         self.num_classes, self.geometry, self.meta, source=self.source)


def apply_thresholds(trace: ExitTrace, thresholds: dict) -> ExitTrace:
    """Re-apply the policy's rule with ``thresholds`` ({layer: tau}, one per candidate layer):
    a sample exits at the first candidate layer L with ``gate_L >= tau_L``, else at depth with
    ``full_pred``. Returns a new trace (exit layers, evaluated = candidate layers <= exit
    layer, pred, correct = pred == label); the other arrays are shared, not copied."""
    miss = trace.missing_policy_columns()
    if miss:
        raise InputError(f"{trace.source or '<trace>'}: {', '.join(miss)}: missing column (needed to re-threshold); "
                         "allowed: a trace with gate_L and pred_L for every candidate layer, full_pred and label")
    th = {int(k): float(v) for k, v in thresholds.items()}
    cands = trace.candidate_layers
    if sorted(th) != list(cands):
        raise InputError(f"{trace.source or '<trace>'}: thresholds: layers {sorted(th)} differ from the "
                         f"candidate layers; allowed: {list(cands)}")
    tau = np.array([th[L] for L in cands], np.float64)
    first = route(trace.gate, tau)
    exits = first < len(cands)
    first = np.minimum(first, max(len(cands) - 1, 0))
    rows = np.arange(len(trace))
    exit_layer = np.where(exits, np.asarray(cands, np.int64)[first] if cands else trace.depth, trace.depth)
    pred = np.where(exits, trace.pred_at[rows, first] if cands else 0, trace.full_pred).astype(np.int64)
    correct = (pred == trace.label).astype(np.int8)
    return replace(trace, exit_layer=exit_layer.astype(np.int64), evaluated=default_evaluated(exit_layer, cands),
                   correct=correct, pred=pred, thresholds=th)


def meta_path_for(csv_path: str | Path) -> Path:
    p = Path(csv_path)
    return p.with_name(p.name[:-4] + ".meta.json") if p.name.endswith(".csv") else p.with_name(p.name + ".meta.json")


def default_evaluated(exit_layer: np.ndarray, candidates: Sequence[int]) -> np.ndarray:
    """(n, c) bool: candidate layers <= exit layer (heads run until the one that exits)."""
    cand = np.asarray(candidates, dtype=np.int64)
    return cand[None, :] <= np.asarray(exit_layer)[:, None]


def _json_object(path: Path, missing: str, fields: str) -> dict:
    """The JSON object in ``path``; one-line InputError when it is missing, not JSON or not an object."""
    from common.readers import read_json

    src = str(path)
    d = read_json(path, allowed=missing)
    if not isinstance(d, dict):
        raise InputError(f"{src}: <root>: expected an object; allowed: {fields}")
    return d


def _read_meta(path: Path) -> dict:
    src = str(path)
    d = _json_object(path, "a JSON file beside the trace CSV (trace metadata: depth, candidate_layers, num_classes)",
                     "schema_version, depth, candidate_layers, num_classes, geometry")
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
    for key in ("weight_bits", "act_bits"):
        v = d.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 64):
            raise InputError(f"{src}: {key}: {v!r}; allowed: an integer in 1..64 (the recipe's bits), or absent")
    if d.get("thresholds") is not None:
        d["_thresholds"] = _check_thresholds(src, "thresholds", d["thresholds"], sorted(c))
    if d.get("geometry") is not None:
        try:
            d["_geometry"] = EncoderGeometry.from_dict(d["geometry"], source=src)
        except (ValueError, TypeError) as e:
            raise InputError(f"{src}: geometry: {e}; allowed: the JSON of lraee info --json") from None
        if d["_geometry"].depth != d["depth"]:
            raise InputError(f"{src}: depth: {d['depth']} differs from geometry.depth {d['_geometry'].depth}; allowed: {d['_geometry'].depth}")
    return d


def _check_thresholds(src: str, field: str, th, cands: list) -> dict:
    """{"L": tau} with keys = the candidate layers and tau in [0, 1] -> {L: tau}."""
    want = ", ".join(map(str, cands))
    if not isinstance(th, dict):
        raise InputError(f"{src}: {field}: {th!r}; allowed: an object {{layer: threshold}} with keys {want}")
    try:
        keys = sorted(int(k) for k in th)
    except (TypeError, ValueError):
        keys = None
    if keys != cands or len(set(map(str, th))) != len(th):
        raise InputError(f"{src}: {field}: keys {', '.join(map(str, th)) or '(none)'} differ from the candidate "
                         f"layers; allowed: exactly {want}")
    out = {}
    for k, v in th.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:  # NaN fails too
            raise InputError(f"{src}: {field}.{k}: {v!r}; allowed: a number in [0, 1]")
        out[int(k)] = float(v)
    return dict(sorted(out.items()))


def _int_column(src: str, rows: list, j: int, name: str, hi: int) -> np.ndarray:
    """Column j as int64 in 0..hi-1; InputError names the column, line and allowed values."""
    out = np.empty(len(rows), np.int64)
    for i, r in enumerate(rows):
        cell = r[j].strip()
        try:
            v = int(cell)
        except ValueError:
            v = None
        if v is None or not 0 <= v < hi:
            raise InputError(f"{src}: {name}: {cell!r} on line {i + 2}; allowed: an integer class index in 0..{hi - 1}")
        out[i] = v
    return out


def _gate_column(src: str, rows: list, j: int, name: str) -> np.ndarray:
    """Column j as float64 in [0, 1] (no NaN)."""
    cells = [r[j].strip() for r in rows]
    try:
        out = np.array(cells, dtype=np.float64)
    except ValueError:
        out = None
    ok = np.zeros(len(cells), bool) if out is None else (out >= 0.0) & (out <= 1.0)   # NaN fails
    if not ok.all():
        i = int(np.argmin(ok))
        if out is None:   # find the first cell that is not a number
            for i, c in enumerate(cells):
                try:
                    float(c)
                except ValueError:
                    break
        raise InputError(f"{src}: {name}: {cells[i]!r} on line {i + 2}; allowed: a number in [0, 1] (the gate's "
                         "sigmoid score; no NaN)")
    return out


def _policy_columns(src: str, header: list, idx: dict, rows: list, cands: tuple, k: int) -> dict:
    """The optional policy columns (label, pred, full_pred, full_correct, gate_L, pred_L), validated."""
    out: dict = {}
    for name in ("label", "pred", "full_pred"):
        if name in idx:
            out[name] = _int_column(src, rows, idx[name], name, k)
    if "full_correct" in idx:
        vals = [r[idx["full_correct"]].strip() for r in rows]
        bad = [i for i, v in enumerate(vals) if v not in ("0", "1")]
        if bad:
            raise InputError(f"{src}: full_correct: {vals[bad[0]]!r} on line {bad[0] + 2}; allowed: 0, 1")
        out["full_correct"] = np.array([v == "1" for v in vals], dtype=np.int8)
    per = {"gate": {}, "pred": {}}
    for h in header:
        m = PER_LAYER.match(h)
        if m and int(m.group(2)) in cands:      # per-layer columns of other layers are ignored
            per[m.group(1)][int(m.group(2))] = idx[h]
    for kind, cols in per.items():
        if not cols:
            continue
        missing = [f"{kind}_{L}" for L in cands if L not in cols]
        if missing:
            raise InputError(f"{src}: {', '.join(missing)}: missing column ({kind}_L is given for some candidate "
                             f"layers only); allowed: {', '.join(f'{kind}_{L}' for L in cands)}")
        if kind == "gate":
            out["gate"] = np.stack([_gate_column(src, rows, cols[L], f"gate_{L}") for L in cands], axis=1)
        else:
            out["pred_at"] = np.stack([_int_column(src, rows, cols[L], f"pred_{L}", k) for L in cands], axis=1)
    return out


def read_trace(path: str | Path, meta_path: str | Path | None = None) -> ExitTrace:
    """Read and validate a trace CSV and its meta JSON; InputError names file, field, rule."""
    path = Path(path)
    src = str(path)
    if not path.is_file():  # name the CSV itself before its sidecar
        raise InputError(f"{src}: file not found; allowed: a CSV with columns {', '.join(REQUIRED_COLUMNS)}")
    meta = _read_meta(Path(meta_path) if meta_path else meta_path_for(path))
    depth, cands = meta["depth"], tuple(sorted(meta["candidate_layers"]))
    from common.readers import read_csv

    reader = iter(read_csv(path, allowed=f"a UTF-8 CSV with columns {', '.join(REQUIRED_COLUMNS)}"))
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
    dup = sorted({h for h in header if header.count(h) > 1 and (h in REQUIRED_COLUMNS + OPTIONAL_COLUMNS
                                                                or PER_LAYER.match(h))})
    if dup:
        raise InputError(f"{src}: {', '.join(dup)}: duplicate column; allowed: each column once")
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
    pol = _policy_columns(src, header, idx, rows, cands, meta["num_classes"])
    return ExitTrace(ids, exit_layer, ev, correct, cands, depth, meta["num_classes"], meta.get("_geometry"),
                     {k: v for k, v in meta.items() if not k.startswith("_")}, thresholds=meta.get("_thresholds"),
                     source=src, **pol)


def write_trace(path: str | Path, exit_layer, candidate_layers: Sequence[int], depth: int, num_classes: int,
                correct=None, sample_ids=None, geometry: EncoderGeometry | None = None,
                evaluated: np.ndarray | None = None, extra_meta: dict | None = None,
                label=None, pred=None, full_pred=None, full_correct=None, gate=None, pred_at=None,
                thresholds: dict | None = None, conf=None, margin=None, sav=None) -> Path:
    """Write ``path`` (CSV) and its meta JSON atomically; returns the meta path.

    Optional policy columns: ``label``, ``pred``, ``full_pred``, ``full_correct`` (n,), and
    ``conf``, ``margin``, ``sav``, ``gate``, ``pred_at`` (n, len(candidate_layers)) written as
    ``conf_L``, ``margin_L``, ``sav_L``, ``gate_L``, ``pred_L`` (floats with ``repr``, so a
    re-thresholded trace routes exactly as the policy did); ``thresholds`` ({layer: tau}) goes
    to the meta file.
    """
    path = Path(path)
    exit_layer = np.asarray(exit_layer, dtype=np.int64)
    n = len(exit_layer)
    ids = sample_ids if sample_ids is not None else [str(i) for i in range(n)]
    cands = sorted(candidate_layers)
    named = [(c, v) for c, v in (("label", label), ("pred", pred), ("full_pred", full_pred),
                                 ("full_correct", full_correct)) if v is not None]
    cols = (["sample_id", "exit_layer"] + (["correct"] if correct is not None else [])
            + (["candidate_layers_evaluated"] if evaluated is not None else []) + [c for c, _ in named])
    per_layer = []
    for L_i, L in enumerate(cands):
        for name, arr in (("conf", conf), ("margin", margin), ("sav", sav), ("gate", gate), ("pred", pred_at)):
            if arr is not None:
                cols.append(f"{name}_{L}")
                per_layer.append((name, np.asarray(arr)[:, L_i]))
    named_vals = [np.asarray(v).tolist() for _, v in named]
    per_vals = [(name, a.tolist()) for name, a in per_layer]
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
                row += [int(v[i]) for v in named_vals]
                row += [int(v[i]) if name == "pred" else repr(float(v[i])) for name, v in per_vals]
                w.writerow(row)
    meta = {"schema_version": TRACE_SCHEMA_VERSION, "depth": int(depth), "candidate_layers": cands,
            "num_classes": int(num_classes)}
    if geometry is not None:
        meta["geometry"] = geometry.to_dict()
        meta["model"] = geometry.model
    if thresholds is not None:
        meta["thresholds"] = {str(int(k)): float(v) for k, v in sorted(thresholds.items())}
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


def synthetic_policy_trace(n: int, depth: int, candidate_layers: Sequence[int], num_classes: int, seed: int = 0,
                           thresholds: dict | None = None) -> dict:
    """Random policy columns for tests, benchmarks and examples: heads get more accurate with
    depth and gates score higher when the head is right. Returns the keyword arguments of
    :func:`write_trace` (exit_layer, correct, label, pred, full_pred, full_correct, gate,
    pred_at, thresholds), with exits from ``thresholds`` (default 0.5 everywhere)."""
    rng = np.random.default_rng(seed)
    cands = sorted(candidate_layers)
    label = rng.integers(0, num_classes, n)
    p_right = np.array([0.3 + 0.6 * L / depth for L in cands])
    right = rng.random((n, len(cands))) < p_right[None, :]
    wrong = (label[:, None] + rng.integers(1, max(num_classes, 2), (n, len(cands)))) % num_classes
    pred_at = np.where(right, label[:, None], wrong)
    gate = np.clip(rng.beta(2.0, 2.0, (n, len(cands))) * 0.7 + 0.3 * right, 0.0, 1.0)
    full_right = rng.random(n) < 0.9
    full_pred = np.where(full_right, label, (label + 1) % num_classes)
    th = {L: 0.5 for L in cands} if thresholds is None else {int(k): float(v) for k, v in thresholds.items()}
    t = apply_thresholds(ExitTrace([str(i) for i in range(n)], np.full(n, depth, np.int64),
                                   np.zeros((n, len(cands)), bool), None, tuple(cands), depth, num_classes,
                                   label=label, full_pred=full_pred, gate=gate, pred_at=pred_at), th)
    return {"exit_layer": t.exit_layer, "correct": t.correct, "label": label, "pred": t.pred,
            "full_pred": full_pred, "full_correct": full_right.astype(np.int8), "gate": gate,
            "pred_at": pred_at, "thresholds": th}


@dataclass
class PolicyPoint:
    """One threshold set of the policy's Pareto set."""

    id: int
    thresholds: dict          # {layer: tau}
    accuracy: float | None = None        # as estimated by the policy (the DSE recomputes it)
    flops_saving: float | None = None


@dataclass
class PolicySet:
    depth: int
    candidate_layers: tuple
    points: list
    source: str = ""

    def thinned(self, n: int | None) -> "PolicySet":
        """At most ``n`` of the points, evenly spaced along the FLOPs-saving axis (first and last kept; points
        without a saving keep their file order); ``None`` or ``n >= len(points)``: this set unchanged."""
        if n is None or n >= len(self.points):
            return self
        if n < 1:
            raise InputError(f"--policy-points: {n}; allowed: an integer >= 1")
        order = sorted(range(len(self.points)), key=lambda i: (self.points[i].flops_saving is None,
                                                                self.points[i].flops_saving or 0.0, i))
        pick = sorted({order[round(k * (len(order) - 1) / max(n - 1, 1))] for k in range(n)})
        return PolicySet(self.depth, self.candidate_layers, [self.points[i] for i in pick], self.source)


def read_policies(path: str | Path) -> PolicySet:
    """Read and validate a Pareto file of threshold sets; InputError names file and field."""
    path = Path(path)
    src = str(path)
    d = _json_object(path, "a Pareto JSON (schema_version, depth, candidate_layers, points) written by the exit "
                           "policy", "schema_version, depth, candidate_layers, points")
    sv = d.get("schema_version")
    if sv != PARETO_SCHEMA_VERSION or isinstance(sv, bool):
        raise InputError(f"{src}: schema_version: {'missing' if sv is None else repr(sv)}; "
                         f"allowed: {PARETO_SCHEMA_VERSION}")
    depth = d.get("depth")
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise InputError(f"{src}: depth: {'missing' if depth is None else repr(depth)}; allowed: an integer >= 1")
    c = d.get("candidate_layers")
    if (not isinstance(c, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in c)
            or len(set(c)) != len(c) or any(not 1 <= x < depth for x in c)):
        raise InputError(f"{src}: candidate_layers: {'missing' if c is None else repr(c)}; "
                         f"allowed: distinct integers in 1..{depth - 1}")
    cands = sorted(c)
    pts = d.get("points")
    if not isinstance(pts, list) or not pts:
        raise InputError(f"{src}: points: {'missing' if pts is None else 'empty or not a list'}; "
                         "allowed: a non-empty list of {id, thresholds, accuracy, flops_saving}")
    points, seen = [], set()
    for i, pt in enumerate(pts):
        f = f"points[{i}]"
        if not isinstance(pt, dict):
            raise InputError(f"{src}: {f}: {pt!r}; allowed: an object with id, thresholds")
        pid = pt.get("id", i)
        if not isinstance(pid, int) or isinstance(pid, bool) or pid < 0 or pid in seen:
            raise InputError(f"{src}: {f}.id: {pid!r}{' (duplicate)' if pid in seen else ''}; "
                             "allowed: a unique integer >= 0")
        seen.add(pid)
        if "thresholds" not in pt:
            raise InputError(f"{src}: {f}.thresholds: missing; allowed: an object with keys {', '.join(map(str, cands))}")
        th = _check_thresholds(src, f"{f}.thresholds", pt["thresholds"], cands)
        est = {}
        for key in ("accuracy", "flops_saving"):
            v = pt.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                raise InputError(f"{src}: {f}.{key}: {v!r}; allowed: a number (optional)")
            est[key] = None if v is None else float(v)
        points.append(PolicyPoint(pid, th, **est))
    return PolicySet(depth, tuple(cands), points, src)
