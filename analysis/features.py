"""Feature stores: one backbone pass per (weights, precision recipe, data, templates, tap request).

For every image and every block L = 1..depth a store holds what the later stages need, on disk
(:mod:`common.store`: one ``.npy`` per array, written in a stream, read by key and row slice, so
no stage holds a split in memory):

- ``ssa_mean``  float32 [n, depth, d]: mean of the N patch tokens of z_L (SSA input, before LayerNorm)
- ``cls``       float32 [n, depth, d]: the [CLS] token of z_L
- ``sav``       float32 [n, depth]:    SAV(z_L) = mean_i ||z_i - mean(z)||^2 over patch tokens
- ``final_embedding`` float32 [n, embed_dim]: the model's image embedding (un-normalised)
- ``top5``      int64 [n, min(5, K)]:  classes ranked by cosine to the class embeddings
- ``labels``    int64 [n]
- ``text_embeddings`` float32 [K, embed_dim]: L2-normalised class embeddings (from the text cache,
  :func:`analysis.zeroshot.text_embeddings`: the text tower runs once per weights, classes, templates)

``fields="embedding"`` stores only ``final_embedding``, ``top5``, ``labels`` and ``text_embeddings``
(what the FP32 teacher and the FP32 baseline need). ``dtype="float16"`` stores ``ssa_mean``, ``cls``
and ``final_embedding`` as float16 (half the disk; readers get float16 rows).

**Exit tap** (:mod:`quant.tap`). ``exit_tap=`` computes ssa_mean, cls and sav of its blocks from the
dequantised int8 exit-tap codes (what the exit unit sees) instead of the float block output.
``tokens=`` (a :class:`quant.tap.TokenTap`) adds, for its blocks, what the fixed-point exit unit
reads, taken from the same pass:

- ``tap_layers`` int64 [T], ``tap_scale_exp`` int64 [T]: the blocks and their scale exponents e_L
- ``tap_sum``   int32 [n, T, d]: S1 = sum of the int8 codes over the N patch tokens
- ``tap_sumsq`` int64 [n, T]:    S2 = sum over the N patch tokens of ||q_i||^2
- ``tap_tokens`` int8 [V, T, N+1, d]: the codes of the first V = ``token_vectors`` images ([CLS] at
  token 0), the C-simulation and RTL vectors

(SSA and SAV are exact functions of S1 and S2, so the fixed-point unit never needs all tokens.)

Folder: ``<cache>/<model>-<precision>-<data>[-tap-<h>][-tok-<h>].store``; ``meta.json`` holds the
key (content hashes of weights, recipe incl. calibration state, data, templates, the tap request,
fields) and provenance. A store is reused only when its key matches and every file is intact;
otherwise it is rebuilt and replaced atomically.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from analysis.data.loader import image_batches
from analysis.data.sources import ImageSource
from analysis.zeroshot import text_embeddings
from common import atomic
from common.errors import InputError
from common.hashing import json_sha256 as _sha
from common.store import Store, StoreWriter
from common.timing import PassTimer
from quant.encoder import LoadedEncoder
from quant.prepare import PreparedRecipe, prepare_recipe
from quant.tap import TAP_PERCENTILE, TAP_RULE, TapScaleCounter, TokenTap, check_percentile, tap_codes

FEATURE_FORMAT_VERSION = 2
DEFAULT_CACHE_DIR = Path(".lraee-cache") / "features"
FIELDS = ("all", "embedding")
STORE_DTYPES = ("float32", "float16")
SMALL_KEYS = ("sav", "top5", "labels", "text_embeddings", "tap_layers", "tap_scale_exp", "tap_sumsq")


@dataclass
class FeatureSet:
    """One split's store (see module docstring) and its metadata.

    ``fs[key]`` gives small per-sample arrays (:data:`SMALL_KEYS`) in memory and everything else
    (``ssa_mean``, ``cls``, ``final_embedding``, ``tap_sum``, ``tap_tokens``) as a
    :class:`common.store.StoredArray` read by row slice.
    """

    store: Store
    meta: dict
    path: Path
    hit: bool

    def __post_init__(self):
        self._small: dict[str, np.ndarray] = {}

    @property
    def arrays(self):
        """The stored keys (``key in fs.arrays``)."""
        return self.store.arrays

    def __getitem__(self, key: str):
        if key in SMALL_KEYS:
            if key not in self._small:
                self._small[key] = self.store.load(key)
            return self._small[key]
        return self.store[key]

    def __len__(self) -> int:
        return int(self.store["labels"].shape[0])

    def tap_layers(self) -> list[int]:
        return [int(L) for L in self["tap_layers"]] if "tap_layers" in self.arrays else []

    def tap_sums(self, layer: int, rows=slice(None)):
        """(S1 int64 [n', d], S2 int64 [n'], scale exponent) of the exit-tap codes of ``layer``."""
        layers = self.tap_layers()
        if layer not in layers:
            raise InputError(f"{self.path}: tap_sum: no exit-tap sums of layer {layer}; allowed: a store built with "
                             f"exit-tap tokens of that layer (has {layers or 'none'})")
        j = layers.index(layer)
        s1 = self.store["tap_sum"][rows, j].astype(np.int64)
        s2 = np.asarray(self["tap_sumsq"][rows, j], np.int64)
        return s1, s2, int(self["tap_scale_exp"][j])


def _prepared(enc: LoadedEncoder, precision: str | PreparedRecipe) -> PreparedRecipe:
    """A prepared recipe; a ``--precision`` string gets the default calibration (512 procedural images)."""
    if isinstance(precision, PreparedRecipe):
        return precision
    from analysis.data.loader import calibration_images
    from quant.recipes import parse_precision

    needs = parse_precision(precision).needs_calibration
    return prepare_recipe(enc, precision, calib_images=calibration_images(enc) if needs else None)


def _request(tokens, fields, dtype, token_vectors) -> dict:
    req = {}
    if fields != "all":
        req["fields"] = fields
    if dtype != "float32":
        req["dtype"] = dtype
    if tokens is not None and token_vectors:
        req["token_vectors"] = int(token_vectors)
    return req


def cache_paths(cache_dir: Path, enc: LoadedEncoder, precision: str | PreparedRecipe, source: ImageSource,
                tokens: "TokenTap | None" = None, exit_tap: "TokenTap | None" = None, fields: str = "all",
                dtype: str = "float32", token_vectors: int = 0) -> Path:
    """The store folder of a request (names carry short hashes of the tap request and options)."""
    tag = precision.tag if isinstance(precision, PreparedRecipe) else precision
    stem = f"{enc.name}-{tag}-{source.name}"
    if exit_tap is not None:
        stem += f"-tap-{_sha(exit_tap.descriptor())[:8]}"
    if tokens is not None:
        stem += f"-tok-{_sha(tokens.descriptor())[:8]}"
    req = _request(tokens, fields, dtype, token_vectors)
    if req:
        stem += f"-{_sha(req)[:8]}"
    return Path(cache_dir) / f"{stem}.store"


def cache_key(enc: LoadedEncoder, precision: str | PreparedRecipe, source: ImageSource, templates: list[str],
              tokens: "TokenTap | None" = None, exit_tap: "TokenTap | None" = None, fields: str = "all",
              dtype: str = "float32", token_vectors: int = 0) -> dict:
    """The hashes that identify a store (the recipe's includes its calibration state's hash)."""
    prepared = _prepared(enc, precision)
    key = {
        "format_version": FEATURE_FORMAT_VERSION,
        "weights_sha256": enc.weights_sha256(),
        "recipe_sha256": _sha(prepared.descriptor()),
        "data_sha256": source.digest(),
        "templates_sha256": _sha(templates),
    }
    if exit_tap is not None:
        key["exit_tap"] = exit_tap.descriptor()
    if tokens is not None:
        key["tokens"] = tokens.descriptor()
    key.update(_request(tokens, fields, dtype, token_vectors))
    return key


def open_store(path: Path, key: dict) -> FeatureSet | None:
    """The store at ``path`` if its key is ``key`` and its files are intact, else None."""
    try:
        st = Store(path)
    except InputError:
        return None
    if st.meta.get("key") != key or not st.intact():
        return None
    return FeatureSet(st, st.meta, path, hit=True)


def _array_specs(g, n: int, fields: str, dtype: str, tokens, V: int, K: int) -> dict:
    D, d = g.depth, g.width
    specs = {"final_embedding": ((n, g.embed_dim), dtype), "top5": ((n, min(5, K)), "int64"),
             "labels": ((n,), "int64"), "text_embeddings": ((K, g.embed_dim), "float32")}
    if fields == "all":
        specs.update({"ssa_mean": ((n, D, d), dtype), "cls": ((n, D, d), dtype), "sav": ((n, D), "float32")})
    if tokens is not None:
        T = len(tokens.layers)
        specs.update({"tap_layers": ((T,), "int64"), "tap_scale_exp": ((T,), "int64"),
                      "tap_sum": ((n, T, d), "int32"), "tap_sumsq": ((n, T), "int64")})
        if V:
            specs["tap_tokens"] = ((V, T, g.tokens, d), "int8")
    return specs


def _summary_threads(threads: int) -> int:
    """Threads for the per-batch reductions on the CPU: one per 8 of the forward's (at least one). They are
    a dozen memory-bound passes over [B, N+1, d] per block, which one thread streams about as fast as two,
    and a parallel region's barrier stalls for a scheduler tick whenever another process (the image
    decoding workers) holds a core: measured on 2 cores shared with decoding, 0.3-0.5 ms per pass on one
    thread against 5-12 ms on two (``benchmarks/bench_nonbackbone.py``)."""
    return max(1, int(threads) // 8)


class _threads:
    """``torch.set_num_threads(n)`` inside the block (None: unchanged); the previous count restored after.
    The reductions here split over output elements, never within one, so the results do not depend on it."""

    def __init__(self, n: int | None):
        self.n = n

    def __enter__(self):
        self.prev = torch.get_num_threads()
        if self.n is not None and self.n != self.prev:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        if self.n is not None and self.n != self.prev:
            torch.set_num_threads(self.prev)


def _batch_summaries(tokens: list, depth: int, exit_tap: "TokenTap | None", tok, features: bool) -> dict:
    """What the store keeps of one batch's block outputs ``tokens[L]`` [B, N+1, d] (see the module docstring).

    ``features``: ``ssa_mean``, ``cls`` [B, depth, d] and ``sav`` [B, depth] (from the exit-tap codes of the
    blocks ``exit_tap`` covers); ``tok`` = (layers, exponents, V): ``tap_sum`` int32 [B, T, d], ``tap_sumsq``
    int64 [B, T], ``saturated`` {L: codes with |q| >= 127} and, for the batch's first V images,
    ``tap_tokens`` int8 [V, T, N+1, d].

    The codes are float integers (:func:`quant.tap.tap_codes`), used without dequantising the tokens and
    bit for bit what the definitions give (tested): the float32 sum of the N patch codes is exact (|S1| <=
    128 N < 2**24), so ``S1 * s`` is exactly the float32 sum of the dequantised patches z = q s, and
    ``ssa_mean = S1 * s / N`` is the float32 mean (``torch.mean`` on the CPU: the sum, then a division);
    SAV's ``z_i - mean`` is ``-mean + s q_i`` (one rounding either way); ``||q_i||**2`` is exact in float32
    (<= 128**2 d < 2**24) and S2 sums the N of them in int64. Where a negative value rounds to code 0
    (-0.0), ``+ 0.0`` makes the SSA mean and [CLS] of all-zero codes +0.0 like the dequantised int8 codes.
    """
    t_layers, t_exps, V = tok if tok is not None else ((), {}, 0)
    codes, out = {}, {}
    means, clss, savs = [], [], []
    for L in range(1, depth + 1) if features else ():
        if exit_tap is not None and L in exit_tap.exponents:
            e = exit_tap.exponents[L]
            v = codes[(L, e)] = tap_codes(tokens[L].float(), e)
            s = math.ldexp(1.0, e)
            n_p = v.shape[1] - 1
            s1 = v[:, 1:].sum(1)
            codes[("s1", L, e)] = s1
            mean = (s1 * s).div_(n_p).add_(0.0)  # == patches.mean(1) of z = q s (exact float32 sum, then / N)
            means.append(mean)
            clss.append((v[:, 0] * s).add_(0.0))
            diff = torch.add(-mean[:, None], v[:, 1:], alpha=s)  # == z_patches - mean
            savs.append(diff.pow_(2).sum(-1).mean(1))
        else:
            z = tokens[L].float()
            patches = z[:, 1:]
            mean = patches.mean(1)
            means.append(mean)
            clss.append(z[:, 0])
            savs.append(((patches - mean[:, None]) ** 2).sum(-1).mean(1))
    if features:
        out["ssa_mean"], out["cls"], out["sav"] = torch.stack(means, 1), torch.stack(clss, 1), torch.stack(savs, 1)
    if tok is not None:
        s1s, s2s, vecs, sat = [], [], [], {}
        for L in t_layers:
            e = t_exps[L]
            v = codes.get((L, e))
            if v is None:
                v = tap_codes(tokens[L].float(), e)
            s1 = codes.get(("s1", L, e))
            s1s.append(s1 if s1 is not None else v[:, 1:].sum(1))
            sq = v * v
            s2s.append(sq[:, 1:].sum(-1).to(torch.int64).sum(1))  # ||q_i||**2 exact in float32, summed in int64
            sat[L] = int(torch.count_nonzero(sq >= 127 * 127))  # |q| >= 127
            if V:
                vecs.append(v[:V].to(torch.int8))
        out["tap_sum"] = torch.stack(s1s, 1).to(torch.int32)
        out["tap_sumsq"] = torch.stack(s2s, 1)
        out["saturated"] = sat
        if V:
            out["tap_tokens"] = torch.stack(vecs, 1)
    return out


class _StoreJob:
    """One store being built: the tapped backbone of ``prepared`` over each batch, its summaries written
    through ``writer`` (see :func:`extract`)."""

    def __init__(self, enc: LoadedEncoder, source: ImageSource, text_emb: np.ndarray, writer: StoreWriter,
                 device: str, prepared: PreparedRecipe, tokens: "TokenTap | None", exit_tap: "TokenTap | None",
                 fields: str, token_vectors: int):
        self.enc, self.source, self.writer, self.device = enc, source, writer, device
        self.prepared, self.tokens, self.exit_tap, self.fields = prepared, tokens, exit_tap, fields
        self.text_emb = np.asarray(text_emb, np.float32)
        self.tf = torch.from_numpy(self.text_emb).to(device)
        self.k = min(5, self.tf.shape[0])
        self.V = min(int(token_vectors), len(source)) if tokens is not None else 0
        self.t_layers = list(tokens.layers) if tokens is not None else []
        self.saturated = {L: 0 for L in self.t_layers}
        self.elements = 0
        self.summary_threads = _summary_threads(torch.get_num_threads()) if str(device) == "cpu" else None
        self.timer = PassTimer(f"features {prepared.tag}")

    def step(self, start: int, x: torch.Tensor) -> None:
        """The pass over one batch x [B, 3, H, W] (rows start..start+B of the split) and its writes."""
        g, D, w = self.enc.geometry, self.enc.geometry.depth, self.writer
        stop = start + x.shape[0]
        keep = None if self.fields == "all" else set(self.t_layers)
        self.timer.start()
        taps = self.prepared.taps(x, depth=D, keep=keep)  # the embedding needs the full depth
        self.timer.stop(x.shape[0])
        tok = (self.t_layers, self.tokens.exponents, max(0, min(stop, self.V) - start)) \
            if self.tokens is not None else None
        with _threads(self.summary_threads):
            out = _batch_summaries(taps.tokens, D, self.exit_tap, tok, self.fields == "all")
        if self.fields == "all":
            w.write("ssa_mean", start, out["ssa_mean"].cpu().numpy())
            w.write("cls", start, out["cls"].cpu().numpy())
            w.write("sav", start, out["sav"].cpu().numpy())
        if self.tokens is not None:
            for L, c in out["saturated"].items():
                self.saturated[L] += c
            self.elements += int(x.shape[0]) * g.tokens * g.width
            w.write("tap_sum", start, out["tap_sum"].cpu().numpy())
            w.write("tap_sumsq", start, out["tap_sumsq"].cpu().numpy())
            if "tap_tokens" in out:
                w.write("tap_tokens", start, out["tap_tokens"].cpu().numpy())
        emb = taps.embedding.float()
        w.write("final_embedding", start, emb.cpu().numpy())
        sims = F.normalize(emb, dim=-1) @ self.tf.T
        w.write("top5", start, sims.topk(self.k, dim=1).indices.cpu().numpy())

    def finish(self) -> dict:
        """The small arrays after the last batch; returns the tap-code saturation counts."""
        self.timer.close()
        w = self.writer
        w.put("labels", self.source.labels.astype(np.int64))
        w.put("text_embeddings", self.text_emb)
        if self.tokens is not None:
            w.put("tap_layers", np.array(self.t_layers, np.int64))
            w.put("tap_scale_exp", np.array([self.tokens.exponents[L] for L in self.t_layers], np.int64))
        return {"saturated": self.saturated, "elements": self.elements}


@torch.no_grad()
def _run_jobs(enc: LoadedEncoder, source: ImageSource, jobs: list[_StoreJob], batch_size: int, device: str,
              progress: bool, workers: int | None) -> list[dict]:
    """Decode ``source`` once and run every job's pass on each batch (the INT8 and FP32 stores of a split
    share one decoding)."""
    tags = "+".join(j.prepared.tag for j in jobs)
    bar = tqdm(total=len(source), desc=f"features {tags} {source.name}", unit="img", disable=not progress)
    for start, x in image_batches(enc, source, batch_size, workers=workers, device=device):
        x = x.to(device, non_blocking=True)
        for j in jobs:
            j.step(start, x)
        bar.update(x.shape[0])
    bar.close()
    return [j.finish() for j in jobs]


def extract(enc: LoadedEncoder, source: ImageSource, text_emb: np.ndarray, writer: StoreWriter, batch_size: int = 64,
            device: str = "cpu", progress: bool = True, prepared: PreparedRecipe | None = None,
            tokens: "TokenTap | None" = None, exit_tap: "TokenTap | None" = None, fields: str = "all",
            token_vectors: int = 0, workers: int | None = None) -> dict:
    """Run the tapped backbone of ``prepared``'s recipe (default FP32) over ``source`` into ``writer``.

    Batches stream to disk as they are computed; nothing of size n is kept. Returns per-layer
    saturation counts of the tap codes (``{L: codes with |q| >= 127}``) and the element count.
    """
    if prepared is None:
        prepared = prepare_recipe(enc, "fp32")
    job = _StoreJob(enc, source, text_emb, writer, device, prepared, tokens, exit_tap, fields, token_vectors)
    return _run_jobs(enc, source, [job], batch_size, device, progress, workers)[0]


def get_features(enc: LoadedEncoder, source: ImageSource, precision: str | PreparedRecipe, templates_name: str,
                 templates: list[str], cache_dir: Path = DEFAULT_CACHE_DIR, batch_size: int = 64,
                 device: str = "cpu", progress: bool = True, tokens: "TokenTap | None" = None,
                 exit_tap: "TokenTap | None" = None, fields: str = "all", dtype: str = "float32",
                 token_vectors: int = 0, workers: int | None = None) -> FeatureSet:
    """Return the store for (weights, recipe, data, templates, tap request), building it if needed.

    ``precision`` is a ``--precision`` string (INT8 recipes then use the default calibration,
    see :func:`quant.prepare.prepare_recipe`) or a :class:`quant.prepare.PreparedRecipe`.
    ``tokens`` adds the exit-tap sums of its layers (and the codes of the first ``token_vectors``
    images); ``exit_tap`` computes the exit features from the tap codes (see module docstring).
    The class embeddings come from the text cache (``cache_dir/text``), computed once.
    """
    request = {"precision": precision, "tokens": tokens, "exit_tap": exit_tap, "fields": fields,
               "token_vectors": token_vectors}
    return get_feature_sets(enc, source, [request], templates_name, templates, cache_dir=cache_dir,
                            batch_size=batch_size, device=device, progress=progress, dtype=dtype,
                            workers=workers)[0]


def get_feature_sets(enc: LoadedEncoder, source: ImageSource, requests: list[dict], templates_name: str,
                     templates: list[str], cache_dir: Path = DEFAULT_CACHE_DIR, batch_size: int = 64,
                     device: str = "cpu", progress: bool = True, dtype: str = "float32",
                     workers: int | None = None) -> list[FeatureSet]:
    """:func:`get_features` for several stores of one split (e.g. the INT8 store and the FP32 teacher's):
    each request a dict of ``precision`` and optionally ``tokens``, ``exit_tap``, ``fields``,
    ``token_vectors``. The stores missing from the cache are built in one pass over the images (decoded
    once, each backbone run on every batch); each store is the one :func:`get_features` builds alone."""
    if batch_size <= 0:
        raise InputError(f"--batch-size {batch_size}: must be a positive integer")
    if dtype not in STORE_DTYPES:
        raise InputError(f"--store-dtype {dtype!r}: allowed: {', '.join(STORE_DTYPES)}")
    cache_dir = Path(cache_dir)
    plans, sets = [], []
    for r in requests:
        fields, tokens, exit_tap = r.get("fields", "all"), r.get("tokens"), r.get("exit_tap")
        token_vectors = r.get("token_vectors", 0)
        if fields not in FIELDS:
            raise InputError(f"fields {fields!r}: allowed: {', '.join(FIELDS)}")
        prepared = _prepared(enc, r["precision"])
        for t in (tokens, exit_tap):
            if t is not None:
                t.check(enc.geometry.depth)
        key = cache_key(enc, prepared, source, templates, tokens, exit_tap, fields, dtype, token_vectors)
        path = cache_paths(cache_dir, enc, prepared, source, tokens, exit_tap, fields, dtype, token_vectors)
        plans.append({"prepared": prepared, "tokens": tokens, "exit_tap": exit_tap, "fields": fields,
                      "token_vectors": token_vectors, "key": key, "path": path})
        sets.append(open_store(path, key))
    missing = [i for i, fs in enumerate(sets) if fs is None]
    if not missing:
        return sets
    t0 = time.time()
    enc.model.to(device)
    text_emb, _ = text_embeddings(enc, source.classes, templates, cache_dir / "text", device=device,
                                  progress=progress)
    with contextlib.ExitStack() as stack:
        jobs = []
        for i in missing:
            pl = plans[i]
            V = min(int(pl["token_vectors"]), len(source)) if pl["tokens"] is not None else 0
            specs = _array_specs(enc.geometry, len(source), pl["fields"], dtype, pl["tokens"], V, len(source.classes))
            writer = stack.enter_context(StoreWriter(pl["path"], specs))
            jobs.append(_StoreJob(enc, source, text_emb, writer, device, pl["prepared"], pl["tokens"], pl["exit_tap"],
                                  pl["fields"], V))
        counts = _run_jobs(enc, source, jobs, batch_size, device, progress, workers)
        for i, job, c in zip(missing, jobs, counts):
            sets[i] = _commit(job, plans[i]["key"], dtype, templates_name, templates, c, time.time() - t0)
    return sets


def _commit(job: _StoreJob, key: dict, dtype: str, templates_name: str, templates: list[str], counts: dict,
            seconds: float) -> FeatureSet:
    """Write the store's metadata and move it into place."""
    enc, prepared, source, tokens = job.enc, job.prepared, job.source, job.tokens
    meta = {
        "key": key,
        "model": enc.name,
        "pretrained": enc.pretrained,
        "precision": prepared.recipe.name,
        "recipe": prepared.descriptor(),
        "engine": prepared.engine,
        "calibration_file": prepared.calibration_path,
        "dataset": source.name,
        "data": source.descriptor,
        "classes": source.classes,
        "templates": templates_name,
        "num_templates": len(templates),
        "logit_scale": float(enc.model.logit_scale.detach().exp()),
        "geometry": enc.geometry.to_dict(),
        "blocks": list(range(1, enc.geometry.depth + 1)),
        "fields": job.fields,
        "dtype": dtype,
        "seconds": round(seconds, 2),
    }
    if tokens is not None:
        meta["tokens"] = {**tokens.descriptor(), "quantization_point": TokenTap.QUANTIZATION_POINT,
                          "token_vectors": job.V,
                          "saturated_fraction": {str(L): counts["saturated"][L] / max(1, counts["elements"])
                                                 for L in tokens.layers}}
    st = job.writer.commit(meta)
    return FeatureSet(st, st.meta, job.writer.path, hit=False)


TOKEN_VECTORS = 1000  # eval images whose exit-tap codes are stored whole (C-simulation and RTL vectors)
ROLES = ("train", "gating", "eval", "teacher")


def split_request(role: str, exit_tap: "TokenTap | None", depth: int, token_vectors: int = TOKEN_VECTORS) -> dict:
    """The store request (``get_features`` keywords) of a split in its ``role``; every command and the
    pipeline ask for the same, so each split and precision has one backbone pass.

    - ``train``: exit features (from the exit tap when the policy uses one);
    - ``gating``: the same plus the exit-tap sums of blocks 1..depth-1 (the width search);
    - ``eval``: the same plus the codes of the first ``token_vectors`` images (C-sim / RTL vectors);
    - ``teacher``: the FP32 pass, final embeddings and top-5 only (distillation teacher, FP32 baseline).
    """
    if role not in ROLES:
        raise ValueError(f"role {role!r}; allowed: {', '.join(ROLES)}")
    if role == "teacher":
        return {"fields": "embedding"}
    req = {"exit_tap": exit_tap}
    if role in ("gating", "eval") and exit_tap is not None:
        req["tokens"] = exit_tap.restricted([L for L in exit_tap.layers if L < depth])
        if role == "eval":
            req["token_vectors"] = int(token_vectors)
    return req


def tap_record_path(cache_dir: Path, enc: LoadedEncoder, prepared: PreparedRecipe, ident: dict) -> Path:
    return Path(cache_dir) / "taps" / f"{enc.name}-{prepared.tag}-{_sha(ident)[:16]}.json"


def tap_ident(enc: LoadedEncoder, prepared: PreparedRecipe, source: ImageSource, layers, percentile: float) -> tuple:
    rule = {"name": TAP_RULE, "percentile": float(percentile), "over": "all N+1 tokens, all elements",
            "calibration_data": source.name, "calibration_data_sha256": source.digest(), "n": len(source)}
    ident = {"weights_sha256": enc.weights_sha256(), "recipe_sha256": _sha(prepared.descriptor()),
             "rule": rule, "layers": sorted(int(L) for L in layers)}
    return rule, ident


def cached_token_tap(enc, prepared, source, layers, percentile, cache_dir) -> "TokenTap | None":
    rule, ident = tap_ident(enc, prepared, source, layers, percentile)
    path = tap_record_path(cache_dir, enc, prepared, ident)
    if path.is_file():
        try:
            rec = json.loads(path.read_text())
            if rec.get("ident") == ident:
                return TokenTap(ident["layers"], {int(k): int(v) for k, v in rec["exponents"].items()}, rule)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError):
            pass
    return None


def save_token_tap(enc, prepared, source, counter: TapScaleCounter, cache_dir) -> TokenTap:
    """Record the scales ``counter`` found on ``source`` in the tap cache; return the tap."""
    rule, ident = tap_ident(enc, prepared, source, counter.layers, counter.percentile)
    atomic.write_json(tap_record_path(cache_dir, enc, prepared, ident), {"ident": ident, **counter.record()})
    return TokenTap(ident["layers"], counter.exponents(), rule)


def calibrate_token_tap(enc: LoadedEncoder, precision: str | PreparedRecipe, source: ImageSource,
                        layers, percentile: float = TAP_PERCENTILE, batch_size: int = 64, device: str = "cpu",
                        progress: bool = True, cache_dir: Path = DEFAULT_CACHE_DIR,
                        workers: int | None = None) -> TokenTap:
    """The exit-tap scales ``s_L = 2**e_L`` of ``layers`` (rule ``po2-percentile``, :mod:`quant.tap`) on
    ``source`` (the calibration images), fixed before inference. Cached in ``<cache_dir>/taps/`` under
    the weights, the recipe, the data and the rule; the QIRC profile of ``lraee run`` fills the same
    entry from its own INT8 pass, so the pipeline never runs a pass for this alone."""
    check_percentile(percentile)
    prepared = _prepared(enc, precision)
    hit = cached_token_tap(enc, prepared, source, layers, percentile, cache_dir)
    if hit is not None:
        return hit
    if len(source) == 0:
        raise InputError(f"exit-tap calibration: {source.name} has no images")
    counter = TapScaleCounter(layers, percentile)
    enc.model.to(device)
    bar = tqdm(total=len(source), desc=f"exit-tap scales {prepared.tag} {source.name}", unit="img",
               disable=not progress)
    timer = PassTimer(f"exit-tap scales {prepared.tag}")
    with torch.no_grad():
        for _, x in image_batches(enc, source, batch_size, workers=workers, device=device):
            timer.start()
            taps = prepared.taps(x.to(device), depth=max(counter.layers), keep=set(counter.layers))
            timer.stop(x.shape[0])
            counter.update_taps(taps.tokens, x.shape[0])
            bar.update(x.shape[0])
    bar.close()
    timer.close()
    return save_token_tap(enc, prepared, source, counter, cache_dir)
