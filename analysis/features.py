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

**Exit-tap tokens (optional).** A caller that passes ``tokens=`` (a :class:`TokenTap`) also gets,
for the requested blocks L only, the int8 codes of the block output that the fixed-point exit
unit reads (a quantization point the hardware implements: block output z_L -> int8 for the
exit unit; in the Brevitas recipes z_L itself is float, the residual stream):

- ``tokens_int8_L{L}`` int8 [n, N+1, d]: ``q = clamp(round_half_even(z_L / s_L), -128, 127)``
  (saturating), [CLS] at index 0
- ``token_scale_L{L}`` float64 [1]: ``s_L``, a power of two fixed before inference

``s_L`` comes from :func:`calibrate_token_tap` (rule ``po2-percentile``: the smallest power of
two with ``127 * s_L >= P``-th percentile of |z_L| over all N+1 tokens of the calibration
split, P = 99.99 by default). Such entries live in their own file
``<model>-<precision>-<data>-tok-<hash8>.safetensors``, whose key adds ``tokens`` (the layers,
the rule and the exponents), so different requests never collide; calls without ``tokens``
read and write exactly the files and keys they did before.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file, save_file
from tqdm import tqdm

from common import atomic
from analysis.data.sources import ImageSource
from common.errors import InputError
from analysis.zeroshot import class_embeddings
from quant.encoder import LoadedEncoder
from quant.prepare import PreparedRecipe, prepare_recipe

FEATURE_FORMAT_VERSION = 1
DEFAULT_CACHE_DIR = Path(".lraee-cache") / "features"
TAP_RULE = "po2-percentile"
TAP_PERCENTILE = 99.99
TAP_CALIB_N = 512
_TAP_EXP_RANGE = (-40, 40)  # exponents searched by the tap calibration (2**-40 .. 2**40)


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
                source: ImageSource, tokens: "TokenTap | None" = None,
                exit_tap: "TokenTap | None" = None) -> tuple[Path, Path]:
    tag = precision.tag if isinstance(precision, PreparedRecipe) else precision
    stem = f"{enc.name}-{tag}-{source.name}"
    if exit_tap is not None:
        stem += f"-tap-{_sha(exit_tap.descriptor())[:8]}"
    if tokens is not None:
        stem += f"-tok-{_sha(tokens.descriptor())[:8]}"
    return cache_dir / f"{stem}.safetensors", cache_dir / f"{stem}.json"


def cache_key(enc: LoadedEncoder, precision: str | PreparedRecipe, source: ImageSource, templates: list[str],
              tokens: "TokenTap | None" = None, exit_tap: "TokenTap | None" = None) -> dict:
    """The hashes that identify a cache entry (the recipe's includes its calibration state's hash).

    With ``tokens`` the key also holds the tap request (layers, scale rule, exponents)."""
    prepared = _prepared(enc, precision)
    key = {
        "format_version": FEATURE_FORMAT_VERSION,
        "weights_sha256": state_dict_sha256(enc.model),
        "recipe_sha256": _sha(prepared.descriptor()),
        "data_sha256": source.digest(),
        "templates_sha256": _sha(templates),
    }
    if exit_tap is not None:
        key["exit_tap"] = exit_tap.descriptor()
    if tokens is not None:
        key["tokens"] = tokens.descriptor()
    return key


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
            prepared: PreparedRecipe | None = None, tokens: "TokenTap | None" = None,
            exit_tap: "TokenTap | None" = None) -> dict[str, np.ndarray]:
    """Run the tapped backbone of ``prepared``'s recipe (default FP32) over ``source``; return the cache arrays.

    ``tokens``: also quantize z_L of ``tokens.layers`` with the tap quantizer (see module docstring).
    ``exit_tap``: compute ssa_mean, cls and sav of its blocks from the dequantized exit-tap tokens
    (what the exit unit sees) instead of the float block output."""
    g = enc.geometry
    n, D, d = len(source), g.depth, g.width
    out = {
        "ssa_mean": np.empty((n, D, d), np.float32),
        "cls": np.empty((n, D, d), np.float32),
        "sav": np.empty((n, D), np.float32),
        "final_embedding": np.empty((n, g.embed_dim), np.float32),
    }
    if tokens is not None:
        for L in tokens.layers:
            out[f"tokens_int8_L{L}"] = np.empty((n, g.tokens, d), np.int8)
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
            q = None
            if exit_tap is not None and L in exit_tap.exponents:
                q = tap_quantize(z, exit_tap.exponents[L])
                z = q.float() * math.ldexp(1.0, exit_tap.exponents[L])  # exact: int8 x power of two
            patches = z[:, 1:]
            mean = patches.mean(1)
            out["ssa_mean"][start:stop, L - 1] = mean.cpu().numpy()
            out["cls"][start:stop, L - 1] = z[:, 0].cpu().numpy()
            out["sav"][start:stop, L - 1] = ((patches - mean[:, None]) ** 2).sum(-1).mean(1).cpu().numpy()
            if tokens is not None and L in tokens.exponents:
                if q is None or exit_tap.exponents[L] != tokens.exponents[L]:
                    q = tap_quantize(taps.tokens[L].float(), tokens.exponents[L])
                out[f"tokens_int8_L{L}"][start:stop] = q.cpu().numpy()
        emb = taps.embedding.float()
        out["final_embedding"][start:stop] = emb.cpu().numpy()
        sims = F.normalize(emb, dim=-1) @ tf.T
        top5[start:stop] = sims.topk(k, dim=1).indices.cpu().numpy()
        bar.update(x.shape[0])
    bar.close()
    out["top5"] = top5
    out["labels"] = source.labels.astype(np.int64)
    out["text_embeddings"] = text_emb.float().cpu().numpy()
    if tokens is not None:
        for L in tokens.layers:
            out[f"token_scale_L{L}"] = np.array([math.ldexp(1.0, tokens.exponents[L])], np.float64)
    return out


def get_features(enc: LoadedEncoder, source: ImageSource, precision: str | PreparedRecipe, templates_name: str,
                 templates: list[str], cache_dir: Path = DEFAULT_CACHE_DIR, batch_size: int = 64,
                 device: str = "cpu", progress: bool = True, tokens: "TokenTap | None" = None,
                 exit_tap: "TokenTap | None" = None) -> FeatureSet:
    """Return the cached features for (weights, recipe, data, templates), building them if needed.

    ``precision`` is a ``--precision`` string (INT8 recipes then use the default calibration,
    see :func:`quant.prepare.prepare_recipe`) or a :class:`quant.prepare.PreparedRecipe`.
    ``tokens`` (a :class:`TokenTap` from :func:`calibrate_token_tap`) adds the exit-tap int8
    tokens of its layers, in a file of their own (see module docstring).
    """
    if batch_size <= 0:
        raise InputError(f"--batch-size {batch_size}: must be a positive integer")
    cache_dir = Path(cache_dir)
    prepared = _prepared(enc, precision)
    if tokens is not None:
        tokens.check(enc.geometry.depth)
    if exit_tap is not None:
        exit_tap.check(enc.geometry.depth)
    key = cache_key(enc, prepared, source, templates, tokens, exit_tap)
    st_path, js_path = cache_paths(cache_dir, enc, prepared, source, tokens, exit_tap)
    hit = _load_if_valid(st_path, js_path, key)
    if hit is not None:
        return hit
    t0 = time.time()
    enc.model.to(device)
    text_emb = class_embeddings(enc.model, enc.tokenizer, source.classes, templates, device=device)
    arrays = extract(enc, source, text_emb, batch_size=batch_size, device=device, progress=progress,
                     prepared=prepared, tokens=tokens, exit_tap=exit_tap)
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
    if tokens is not None:
        meta["tokens"] = {**tokens.descriptor(), "quantization_point": TokenTap.QUANTIZATION_POINT,
                          "saturated_fraction": {str(L): float(np.mean(np.abs(
                              arrays[f"tokens_int8_L{L}"].astype(np.int16)) >= 127)) for L in tokens.layers}}
    cache_dir.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(st_path) as tmp:
        save_file(arrays, str(tmp), metadata={"key_sha256": _sha(key)})
    atomic.write_json(js_path, meta)
    return FeatureSet(arrays, meta, st_path, hit=False)


# ---- exit-tap quantizer (block output -> int8 for the exit unit) ------------------------------------------
@dataclass
class TokenTap:
    """A request for exit-tap int8 tokens: blocks ``layers``, scale ``2**exponents[L]`` per block,
    and the ``rule`` that chose the exponents (recorded in the cache key)."""

    layers: tuple[int, ...]
    exponents: dict[int, int]
    rule: dict = field(default_factory=dict)

    QUANTIZATION_POINT = ("block output z_L -> int8 for the exit unit: per-tensor power-of-two scale s_L fixed "
                          "before inference, q = clamp(round_half_even(z_L / s_L), -128, 127) (saturating)")

    def __post_init__(self):
        self.layers = tuple(sorted(int(L) for L in self.layers))
        self.exponents = {int(L): int(e) for L, e in self.exponents.items()}

    def scale(self, layer: int) -> float:
        return math.ldexp(1.0, self.exponents[int(layer)])

    def check(self, depth: int) -> None:
        if not self.layers:
            raise InputError("exit-tap tokens: no layers requested; allowed: blocks in 1..depth")
        bad = [L for L in self.layers if not 1 <= L <= depth]
        if bad:
            raise InputError(f"exit-tap tokens: layers {bad}; allowed: blocks in 1..{depth}")
        missing = [L for L in self.layers if L not in self.exponents]
        if missing:
            raise InputError(f"exit-tap tokens: no scale for layers {missing}")

    def descriptor(self) -> dict:
        return {"layers": list(self.layers), "rule": dict(self.rule),
                "scale_exponents": {str(L): self.exponents[L] for L in self.layers}}

    @classmethod
    def from_descriptor(cls, d: dict, layers=None) -> "TokenTap":
        """The tap of a :meth:`descriptor` (e.g. a policy's ``exit_tap``), optionally restricted to ``layers``."""
        exps = {int(k): int(v) for k, v in d["scale_exponents"].items()}
        layers = list(d["layers"]) if layers is None else [int(L) for L in layers]
        return cls(layers, {L: exps[L] for L in layers}, dict(d.get("rule", {})))


def tap_quantize(z: torch.Tensor, exponent: int) -> torch.Tensor:
    """int8 codes ``clamp(round_half_even(z * 2**-exponent), -128, 127)`` (exact: a power-of-two scaling)."""
    v = z.double() * math.ldexp(1.0, -int(exponent))  # exact in float64
    return torch.clamp(torch.round(v), -128, 127).to(torch.int8)


def po2_percentile_exponent(counts_above: np.ndarray, total: int, percentile: float,
                            exps: np.ndarray) -> int:
    """Smallest exponent e (of ``exps``, ascending) with ``#{|z| > 127 * 2**e} <= (1 - P/100) * total``."""
    allowed = (1.0 - percentile / 100.0) * total
    ok = np.flatnonzero(counts_above <= allowed + 1e-9)
    return int(exps[ok[0]]) if len(ok) else int(exps[-1])


def calibrate_token_tap(enc: LoadedEncoder, precision: str | PreparedRecipe, source: ImageSource,
                        layers, percentile: float = TAP_PERCENTILE, batch_size: int = 64, device: str = "cpu",
                        progress: bool = True, cache_dir: Path = DEFAULT_CACHE_DIR) -> TokenTap:
    """The exit-tap scales ``s_L = 2**e_L`` of ``layers`` (rule ``po2-percentile``), fixed before inference.

    ``e_L`` is the smallest integer with ``#{|z_L| > 127 * 2**e_L} <= (1 - P/100) * count`` over every
    element of every token (N+1) of z_L on ``source`` (the calibration split): the smallest power of
    two whose int8 range covers the P-th percentile of |z_L|. Counted exactly with one pass and no
    stored activations. The result is cached in ``<cache_dir>/taps/`` under the model weights, the
    recipe, the data and the rule.
    """
    if not 0.0 < float(percentile) <= 100.0:
        raise InputError(f"--tap-percentile {percentile}: allowed: a number in (0, 100]")
    layers = sorted(int(L) for L in layers)
    prepared = _prepared(enc, precision)
    rule = {"name": TAP_RULE, "percentile": float(percentile), "over": "all N+1 tokens, all elements",
            "calibration_data": source.name, "calibration_data_sha256": source.digest(), "n": len(source)}
    ident = {"weights_sha256": state_dict_sha256(enc.model), "recipe_sha256": _sha(prepared.descriptor()),
             "rule": rule, "layers": layers}
    path = Path(cache_dir) / "taps" / f"{enc.name}-{prepared.tag}-{_sha(ident)[:16]}.json"
    if path.is_file():
        try:
            rec = json.loads(path.read_text())
            if rec.get("ident") == ident:
                return TokenTap(layers, {int(k): int(v) for k, v in rec["exponents"].items()}, rule)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            pass
    if len(source) == 0:
        raise InputError(f"exit-tap calibration: {source.name} has no images")
    exps = np.arange(_TAP_EXP_RANGE[0], _TAP_EXP_RANGE[1] + 1)
    bounds = torch.tensor([127.0 * math.ldexp(1.0, int(e)) for e in exps], dtype=torch.float64)
    above = {L: np.zeros(len(exps), np.int64) for L in layers}
    total = {L: 0 for L in layers}
    absmax = {L: 0.0 for L in layers}
    enc.model.to(device)
    bar = tqdm(total=len(source), desc=f"exit-tap scales {prepared.tag} {source.name}", unit="img",
               disable=not progress)
    with torch.no_grad():
        for _, x in image_batches(enc, source, batch_size):
            taps = prepared.taps(x.to(device), depth=max(layers), keep=set(layers))
            for L in layers:
                a = taps.tokens[L].detach().double().abs().reshape(-1).cpu()
                srt, _ = torch.sort(a)
                # elements > bound: numel - (index of the first element > bound)
                idx = torch.searchsorted(srt, bounds, right=True)
                above[L] += (a.numel() - idx).numpy().astype(np.int64)
                total[L] += a.numel()
                absmax[L] = max(absmax[L], float(srt[-1]) if a.numel() else 0.0)
            bar.update(x.shape[0])
    bar.close()
    expo = {L: po2_percentile_exponent(above[L], total[L], float(percentile), exps) for L in layers}
    rec = {"ident": ident, "exponents": {str(L): expo[L] for L in layers},
           "scales": {str(L): math.ldexp(1.0, expo[L]) for L in layers},
           "absmax": {str(L): absmax[L] for L in layers},
           "fraction_above_127s": {str(L): float(above[L][list(exps).index(expo[L])] / total[L]) for L in layers}}
    atomic.write_json(path, rec)
    return TokenTap(layers, expo, rule)
