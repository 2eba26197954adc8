"""Input vectors for the C-simulation: int8 exit-tap tokens ``[n, N+1, d]`` and their scale ``2**e`` per layer.

Two sources, both tied to the policy by the feature-cache key (model weights, recipe, templates):

* ``tap``: the exit-tap tokens the feature cache stores (``tokens_int8_L{L}``, ``token_scale_L{L}``,
  see :mod:`analysis.features`), found in a cache folder or extracted on demand by the caller;
* ``derived``: int8 tokens derived deterministically from a cached float split of the policy's
  model (``ssa_mean``, ``cls``, ``sav`` per block): token 0 is the quantised [CLS] token, the N
  patch tokens are the real SSA mean plus Gaussian noise whose sample mean over the tokens is
  exactly zero and whose spread matches the real SAV (``||z_i - mean||^2`` averages ``SAV``),
  then ``q = clamp(round_half_even(z / s), -128, 127)`` with ``s = 2**e`` the smallest power of two
  with ``127 * s >= max |z|``.  Samples are reused with fresh noise (seeded by layer and sample)
  when more vectors than cached samples are asked for.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from common.errors import InputError


@dataclass
class Vectors:
    """Tokens and scale exponent per layer, and where they came from."""

    tokens: dict[int, np.ndarray]
    scale_exp: dict[int, int]
    source: str
    files: list[str]

    def scale(self, layer: int) -> float:
        return math.ldexp(1.0, self.scale_exp[layer])


def _matches(policy, key: dict) -> bool:
    from exitlogic.artifacts import check_key

    try:
        check_key(policy, key, "cache")
    except InputError:
        return False
    return True


def _sidecars(cache_dir: Path):
    for js in sorted(Path(cache_dir).glob("*.json")):
        st = js.with_suffix(".safetensors")
        if not st.is_file():
            continue
        try:
            meta = json.loads(js.read_text())
        except (json.JSONDecodeError, OSError):
            continue
        if isinstance(meta, dict) and isinstance(meta.get("key"), dict):
            yield js, st, meta


def tap_vectors(policy, cache_dir: Path, layers: list[int], n: int | None = None,
                split: str | None = None) -> Vectors | None:
    """Exit-tap tokens of ``layers`` from the cache folder, or None: a file of ``split`` if given, else
    the eval split's if there is one, else the file with the most samples."""
    best = None
    for js, st, meta in _sidecars(cache_dir):
        arrays = meta.get("arrays", {})
        if not all(f"tokens_int8_L{L}" in arrays and f"token_scale_L{L}" in arrays for L in layers):
            continue
        if split is not None and meta.get("data", {}).get("split") != split:
            continue
        if not _matches(policy, meta["key"]):
            continue
        count = arrays[f"tokens_int8_L{layers[0]}"]["shape"][0]
        rank = (meta.get("data", {}).get("split") == "eval", count)  # the eval split first, then the most samples
        if best is None or rank > best[0]:
            best = (rank, st)
    if best is None:
        return None
    return vectors_from_file(best[1], layers, n)


def vectors_from_file(path: Path, layers: list[int], n: int | None = None) -> Vectors:
    arr = load_file(str(path))
    toks, exps = {}, {}
    for L in layers:
        if f"tokens_int8_L{L}" not in arr:
            raise InputError(f"{path}: tokens_int8_L{L} missing; allowed: a feature file with exit-tap tokens of "
                             f"layers {layers}")
        q = arr[f"tokens_int8_L{L}"]
        toks[L] = np.ascontiguousarray(q[:n] if n else q)
        s = float(np.asarray(arr[f"token_scale_L{L}"]).reshape(-1)[0])
        m, e = math.frexp(s)
        if m != 0.5:
            raise InputError(f"{path}: token_scale_L{L} = {s}; allowed: a power of two")
        exps[L] = e - 1
    return Vectors(toks, exps, "tap", [str(path)])


def derived_vectors(policy, cache_dir: Path, layers: list[int], n: int, seed: int = 0) -> Vectors:
    """Deterministic int8 tokens from the cached float features of the policy's model (see module doc)."""
    found = []
    for js, st, meta in _sidecars(cache_dir):
        arrays = meta.get("arrays", {})
        if not all(k in arrays for k in ("ssa_mean", "cls", "sav")):
            continue
        if meta.get("precision") != policy.meta.get("precision") or not _matches(policy, meta["key"]):
            continue
        found.append((js, st, meta))
    if not found:
        raise InputError(f"--cache-dir {cache_dir}: no cached features of the policy's model and recipe "
                         f"({policy.meta.get('model')}, {policy.meta.get('precision')}); allowed: the feature cache "
                         "`lraee train-exits` / `lraee exit-report` wrote for this policy")
    # eval split first, then gating, then anything else (deterministic order)
    rank = {"eval": 0, "gating": 1, "train": 2}
    found.sort(key=lambda t: (rank.get(t[2].get("data", {}).get("split", ""), 3), t[1].name))
    feats = {"ssa_mean": [], "cls": [], "sav": []}
    blocks = None
    for _, st, meta in found:
        arr = load_file(str(st))
        blocks = meta.get("blocks", list(range(1, arr["ssa_mean"].shape[1] + 1)))
        for k in feats:
            feats[k].append(arr[k])
    ssa_mean = np.concatenate(feats["ssa_mean"])
    cls = np.concatenate(feats["cls"])
    sav = np.concatenate(feats["sav"])
    n_cached = ssa_mean.shape[0]
    n_tok = int(policy.meta["geometry"]["patch_tokens"])
    toks, exps = {}, {}
    for L in layers:
        li = blocks.index(L)
        mu = ssa_mean[:, li, :].astype(np.float64)
        c = cls[:, li, :].astype(np.float64)
        rms = np.sqrt(np.maximum(sav[:, li].astype(np.float64), 0.0))  # target sqrt(mean_i ||z_i - mean||^2)
        idx = np.arange(n) % n_cached
        rep = np.arange(n) // n_cached
        z = np.empty((n, n_tok + 1, mu.shape[1]), np.float64)
        for i in range(n):
            rng = np.random.default_rng([seed, L, int(idx[i]), int(rep[i])])
            g = rng.standard_normal((n_tok, mu.shape[1]))
            g -= g.mean(axis=0, keepdims=True)
            nrm = np.sqrt(np.mean(np.sum(g * g, axis=1)))
            g *= rms[idx[i]] / nrm if nrm > 0 else 0.0
            z[i, 0] = c[idx[i]]
            z[i, 1:] = mu[idx[i]] + g
        amax = float(np.max(np.abs(z)))
        e = math.ceil(math.log2(amax / 127.0)) if amax > 0 else 0
        q = np.clip(np.round(np.ldexp(z, -e)), -128, 127).astype(np.int8)
        toks[L], exps[L] = np.ascontiguousarray(q), int(e)
    return Vectors(toks, exps, "derived", [str(t[1]) for t in found])
