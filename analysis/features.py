"""Feature cache: one backbone pass per (weights, precision recipe, data, templates).

For every image and every block L = 1..depth it stores what the exit logic needs:

- ``ssa_mean``  float32 [n, depth, d]: mean of the N patch tokens of z_L (SSA input, before LayerNorm)
- ``cls``       float32 [n, depth, d]: the [CLS] token of z_L
- ``sav``       float32 [n, depth]:    SAV(z_L) = mean_i ||z_i - mean(z)||^2 over patch tokens
- ``final_embedding`` float32 [n, embed_dim]: the model's image embedding (un-normalised)
- ``top5``      int64 [n, min(5, K)]:  classes ranked by cosine to the class embeddings
- ``labels``    int64 [n]
- ``text_embeddings`` float32 [K, embed_dim]: L2-normalised class embeddings

Files: ``<cache>/<model>-<precision>-<data>.safetensors`` and a ``.json`` sidecar with the
content hashes (weights, recipe incl. the calibration state's hash, data, templates). INT8
recipes store the quantized tower's block outputs (see :mod:`quant.prepare`). A file is reused only when all hashes
match (the safetensors header carries the same key, so a stale pair is never mixed);
otherwise it is rebuilt and replaced atomically.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file, save_file
from tqdm import tqdm

from analysis import atomic
from analysis.data.sources import ImageSource
from analysis.errors import InputError
from analysis.zeroshot import class_embeddings
from quant.encoder import LoadedEncoder
from quant.prepare import PreparedRecipe, prepare_recipe

FEATURE_FORMAT_VERSION = 1
DEFAULT_CACHE_DIR = Path(".lraee-cache") / "features"


def state_dict_sha256(model: torch.nn.Module) -> str:
    """Content hash of a model's parameters and buffers (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def image_batches(enc: LoadedEncoder, source: ImageSource, batch_size: int):
    """Yield (start, images float32 [B, 3, H, W]) normalised for ``enc``."""
    size = enc.geometry.image_size
    mean = torch.tensor(enc.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(enc.std, dtype=torch.float32).view(1, 3, 1, 1)
    for start in range(0, len(source), batch_size):
        stop = min(start + batch_size, len(source))
        if source.is_pil():
            x = torch.stack([enc.preprocess(source.open(i)) for i in range(start, stop)])
        else:
            arr = source.render(start, stop)
            if arr.shape[1] == size:
                x = (torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0) - mean) / std
            else:
                from PIL import Image

                x = torch.stack([enc.preprocess(Image.fromarray(a)) for a in arr])
        yield start, x


@dataclass
class FeatureSet:
    """Arrays of one cached split (see module docstring) and its metadata."""

    arrays: dict[str, np.ndarray]
    meta: dict
    path: Path
    hit: bool

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]


def _prepared(enc: LoadedEncoder, precision: str | PreparedRecipe) -> PreparedRecipe:
    return precision if isinstance(precision, PreparedRecipe) else prepare_recipe(enc, precision)


def cache_paths(cache_dir: Path, enc: LoadedEncoder, precision: str | PreparedRecipe,
                source: ImageSource) -> tuple[Path, Path]:
    tag = precision.tag if isinstance(precision, PreparedRecipe) else precision
    stem = f"{enc.name}-{tag}-{source.name}"
    return cache_dir / f"{stem}.safetensors", cache_dir / f"{stem}.json"


def cache_key(enc: LoadedEncoder, precision: str | PreparedRecipe, source: ImageSource, templates: list[str]) -> dict:
    """The hashes that identify a cache entry (the recipe's includes its calibration state's hash)."""
    prepared = _prepared(enc, precision)
    return {
        "format_version": FEATURE_FORMAT_VERSION,
        "weights_sha256": state_dict_sha256(enc.model),
        "recipe_sha256": _sha(prepared.descriptor()),
        "data_sha256": source.digest(),
        "templates_sha256": _sha(templates),
    }


def _load_if_valid(st_path: Path, js_path: Path, key: dict) -> FeatureSet | None:
    if not (st_path.is_file() and js_path.is_file()):
        return None
    try:
        meta = json.loads(js_path.read_text())
        from safetensors import safe_open

        with safe_open(str(st_path), framework="numpy") as f:
            header = f.metadata() or {}
        if meta.get("key") != key or header.get("key_sha256") != _sha(key):
            return None
        return FeatureSet(load_file(str(st_path)), meta, st_path, hit=True)
    except Exception:  # unreadable or half-replaced entry: rebuild
        return None


@torch.no_grad()
def extract(enc: LoadedEncoder, source: ImageSource, text_emb: torch.Tensor, batch_size: int = 64,
            device: str = "cpu", progress: bool = True,
            prepared: PreparedRecipe | None = None) -> dict[str, np.ndarray]:
    """Run the tapped backbone of ``prepared``'s recipe (default FP32) over ``source``; return the cache arrays."""
    g = enc.geometry
    n, D, d = len(source), g.depth, g.width
    out = {
        "ssa_mean": np.empty((n, D, d), np.float32),
        "cls": np.empty((n, D, d), np.float32),
        "sav": np.empty((n, D), np.float32),
        "final_embedding": np.empty((n, g.embed_dim), np.float32),
    }
    if prepared is None:
        prepared = prepare_recipe(enc, "fp32")
    tf = text_emb.to(device)
    k = min(5, tf.shape[0])
    top5 = np.empty((n, k), np.int64)
    bar = tqdm(total=n, desc=f"features {prepared.tag} {source.name}", unit="img", disable=not progress)
    for start, x in image_batches(enc, source, batch_size):
        taps = prepared.taps(x.to(device))
        stop = start + x.shape[0]
        for L in range(1, D + 1):
            z = taps.tokens[L].float()
            patches = z[:, 1:]
            mean = patches.mean(1)
            out["ssa_mean"][start:stop, L - 1] = mean.cpu().numpy()
            out["cls"][start:stop, L - 1] = z[:, 0].cpu().numpy()
            out["sav"][start:stop, L - 1] = ((patches - mean[:, None]) ** 2).sum(-1).mean(1).cpu().numpy()
        emb = taps.embedding.float()
        out["final_embedding"][start:stop] = emb.cpu().numpy()
        sims = F.normalize(emb, dim=-1) @ tf.T
        top5[start:stop] = sims.topk(k, dim=1).indices.cpu().numpy()
        bar.update(x.shape[0])
    bar.close()
    out["top5"] = top5
    out["labels"] = source.labels.astype(np.int64)
    out["text_embeddings"] = text_emb.float().cpu().numpy()
    return out


def get_features(enc: LoadedEncoder, source: ImageSource, precision: str | PreparedRecipe, templates_name: str,
                 templates: list[str], cache_dir: Path = DEFAULT_CACHE_DIR, batch_size: int = 64,
                 device: str = "cpu", progress: bool = True) -> FeatureSet:
    """Return the cached features for (weights, recipe, data, templates), building them if needed.

    ``precision`` is a ``--precision`` string (INT8 recipes then use the default calibration,
    see :func:`quant.prepare.prepare_recipe`) or a :class:`quant.prepare.PreparedRecipe`.
    """
    if batch_size <= 0:
        raise InputError(f"--batch-size {batch_size}: must be a positive integer")
    cache_dir = Path(cache_dir)
    prepared = _prepared(enc, precision)
    key = cache_key(enc, prepared, source, templates)
    st_path, js_path = cache_paths(cache_dir, enc, prepared, source)
    hit = _load_if_valid(st_path, js_path, key)
    if hit is not None:
        return hit
    t0 = time.time()
    enc.model.to(device)
    text_emb = class_embeddings(enc.model, enc.tokenizer, source.classes, templates, device=device)
    arrays = extract(enc, source, text_emb, batch_size=batch_size, device=device, progress=progress,
                     prepared=prepared)
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
        "seconds": round(time.time() - t0, 2),
        "arrays": {k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in arrays.items()},
    }
    cache_dir.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(st_path) as tmp:
        save_file(arrays, str(tmp), metadata={"key_sha256": _sha(key)})
    atomic.write_json(js_path, meta)
    return FeatureSet(arrays, meta, st_path, hit=False)
