"""Input vectors for the C-simulation: int8 exit-tap tokens ``[n, N+1, d]`` and their scale ``2**e`` per layer.

Two sources, both tied to the policy by the feature-cache key (model weights, recipe, templates):

* ``tap``: the exit-tap codes a feature store keeps for its first V images (``tap_tokens`` int8
  [V, T, N+1, d] with ``tap_layers`` and ``tap_scale_exp``, see :mod:`analysis.features`), found in a
  cache folder or built on demand by the caller; a slice is read, never the whole store;
* ``derived``: int8 tokens derived deterministically from a cached float split of the policy's
  model (``ssa_mean``, ``cls``, ``sav`` per block): token 0 is the quantised [CLS] token, the N
  patch tokens are the real SSA mean plus Gaussian noise whose sample mean over the tokens is
  exactly zero and whose spread matches the real SAV (``||z_i - mean||^2`` averages ``SAV``),
  then ``q = clamp(round_half_even(z / s), -128, 127)`` with ``s = 2**e`` the smallest power of two
  with ``127 * s >= max |z|``.  Samples are reused with fresh noise (seeded by layer and sample)
  when more vectors than cached samples are asked for.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import InputError
from common.store import Store


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


def _stores(cache_dir: Path):
    for d in sorted(Path(cache_dir).glob("*.store")):
        try:
            st = Store(d)
        except InputError:
            continue
        if isinstance(st.meta.get("key"), dict):
            yield d, st


def tap_vectors(policy, cache_dir: Path, layers: list[int], n: int | None = None,
                split: str | None = None) -> Vectors | None:
    """Exit-tap codes of ``layers`` from the cache folder, or None: a store of ``split`` if given, else
    the eval split's if there is one, else the store with the most stored vectors."""
    best = None
    for path, st in _stores(cache_dir):
        if "tap_tokens" not in st:
            continue
        have = [int(L) for L in st.load("tap_layers")]
        if not all(L in have for L in layers):
            continue
        if split is not None and st.meta.get("data", {}).get("split") != split:
            continue
        if not _matches(policy, st.meta["key"]):
            continue
        count = st["tap_tokens"].shape[0]
        rank = (st.meta.get("data", {}).get("split") == "eval", count)  # the eval split first, then the most vectors
        if best is None or rank > best[0]:
            best = (rank, path)
    if best is None:
        return None
    return vectors_from_store(best[1], layers, n)


def vectors_from_store(path: Path, layers: list[int], n: int | None = None) -> Vectors:
    """The first ``n`` stored exit-tap code vectors of ``layers`` ([n, N+1, d] int8 each) from a store."""
    st = Store(path)
    if "tap_tokens" not in st:
        raise InputError(f"{path}: tap_tokens missing; allowed: a feature store built with exit-tap tokens")
    have = [int(L) for L in st.load("tap_layers")]
    exps_all = [int(e) for e in st.load("tap_scale_exp")]
    toks, exps = {}, {}
    for L in layers:
        if L not in have:
            raise InputError(f"{path}: tap_tokens: no codes of layer {L}; allowed: layers {have}")
        j = have.index(L)
        rows = slice(0, n) if n else slice(None)
        toks[L] = np.ascontiguousarray(st["tap_tokens"][rows, j])
        exps[L] = exps_all[j]
    return Vectors(toks, exps, "tap", [str(path)])


def derived_vectors(policy, cache_dir: Path, layers: list[int], n: int, seed: int = 0) -> Vectors:
    """Deterministic int8 tokens from the cached float features of the policy's model (see module doc)."""
    found = []
    for path, st in _stores(cache_dir):
        if not all(k in st for k in ("ssa_mean", "cls", "sav")):
            continue
        if st.meta.get("precision") != policy.meta.get("precision") or not _matches(policy, st.meta["key"]):
            continue
        found.append((path, st))
    if not found:
        raise InputError(f"--cache-dir {cache_dir}: no cached features of the policy's model and recipe "
                         f"({policy.meta.get('model')}, {policy.meta.get('precision')}); allowed: the feature cache "
                         "`lraee train-exits` / `lraee exit-report` wrote for this policy")
    # eval split first, then gating, then anything else (deterministic order); only the first n rows are read
    rank = {"eval": 0, "gating": 1, "train": 2}
    found.sort(key=lambda t: (rank.get(t[1].meta.get("data", {}).get("split", ""), 3), t[0].name))
    feats = {"ssa_mean": [], "cls": [], "sav": []}
    blocks, got = None, 0
    for _, st in found:
        if got >= n:
            break
        blocks = st.meta.get("blocks", list(range(1, st["ssa_mean"].shape[1] + 1)))
        take = min(n - got, st["ssa_mean"].shape[0])
        for k in feats:
            feats[k].append(st[k][:take])
        got += take
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
