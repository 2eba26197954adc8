"""AdaViT baseline at matched FLOPs (paper Table 2): train per seed on the train split, evaluate on the eval
split, write ``adavit.json``.

:func:`run_adavit` takes the loaded encoder, the prepared static INT8 recipe (fast path), the train and eval
image sources (disjoint; :mod:`analysis.data.sources`), the class text embeddings and logit scale (as the
feature stores hold them: :func:`analysis.zeroshot.text_embeddings`, ``exp(model.logit_scale)``), the target
FLOPs saving (LRA-EE's), the seeds and an output folder. The method is :mod:`exitlogic.adavit` on
:class:`quant.masked.MaskedTower`; the FLOP model's tower MACs come from :func:`hwsim.workload.layer_macs`.

Data flow (memory bounded by the training slice): the first ``config.train_n`` train images are decoded once
and kept as block-1 inputs z_0 [n, T, d] for every seed; the eval source is decoded once, batch by batch, and
every seed's policy runs on each batch. ``adavit.json`` (written atomically):

- ``method``, ``model``, ``precision`` (recipe descriptor incl. calibration hash), ``engine``, ``device``;
- ``target_saving`` (fraction), ``train`` / ``eval`` (data name, n), ``config`` (:class:`AdaViTConfig`);
- ``flop_model``: total, per-block, fixed (patch embedding + projection) and decision-network MACs;
- ``per_seed``: per seed ``seed``, ``flops_saving`` (decision networks included: what was matched),
  ``flops_saving_backbone`` (without them), ``top1``, ``offset``,
  ``match`` (the offset search on the training images), ``epochs`` (training losses), ``blocks_run_mean``,
  ``tokens_kept_mean`` / ``heads_kept_mean`` per block;
- ``flops_saving``, ``flops_saving_backbone``, ``top1``: {mean, std, values} over seeds, ``std`` being the
  sample standard deviation (ddof = 1; 0 for one seed), as every other row of the baselines table;
- ``paper``: the paper's row (59.84 % top-1 at 13.50 % FLOPs saving, ImageNet ViT-B/32).

Wall times (the whole call, and per seed train / eval seconds) go to ``adavit.timings.json`` beside it
(they differ between runs; ``adavit.json`` is byte-identical on a rerun). The returned dict holds both.

All fractions are in [0, 1] (not percent).
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from common import atomic
from common.errors import InputError


def _check_seeds(seeds) -> list[int]:
    if isinstance(seeds, bool):
        seeds = None
    if isinstance(seeds, int):
        if seeds < 1:
            raise InputError(f"seeds {seeds}: allowed: a positive number of seeds or a list of seeds >= 0")
        return list(range(seeds))
    try:
        out = [int(s) for s in seeds]
        ok = len(out) > 0 and all(not isinstance(s, bool) and int(s) == s and s >= 0 for s in seeds) \
            and len(set(out)) == len(out)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"seeds {seeds!r}: allowed: a positive number of seeds or a list of distinct seeds >= 0")
    return out


def _check_inputs(enc, prepared, train_source, eval_source, text, logit_scale) -> np.ndarray:
    from quant.masked import is_fast_tower

    recipe = getattr(prepared, "recipe", None)
    if recipe is None or not recipe.is_static or not is_fast_tower(prepared.visual):
        name = getattr(recipe, "name", type(prepared).__name__)
        raise InputError(f"precision {name} (engine {getattr(prepared, 'engine', '?')}): AdaViT runs on the static "
                         "INT8 fast path; allowed: a calibrated w8a8 / wXaY recipe with engine fast")
    for field, src in (("train_source", train_source), ("eval_source", eval_source)):
        if src is None or len(src) == 0:
            raise InputError(f"{field}: no images; allowed: an image source with at least one image")
    if train_source.overlaps(eval_source):
        raise InputError(f"train_source {train_source.name}: shares images with the eval source {eval_source.name}; "
                         "allowed: train images disjoint from eval (the procedural train split)")
    text = np.asarray(text, dtype=np.float32)
    K = len(eval_source.classes)
    E = enc.geometry.embed_dim
    if text.ndim != 2 or text.shape != (K, E) or not np.isfinite(text).all():
        raise InputError(f"text_embeddings: shape {list(text.shape)}, expected finite [{K}, {E}] (one per class of "
                         f"{eval_source.name}); allowed: analysis.zeroshot.text_embeddings of the eval classes")
    if list(train_source.classes) != list(eval_source.classes):
        raise InputError(f"train_source {train_source.name}: classes differ from the eval source's; allowed: the "
                         "eval source's classes in the same order")
    if isinstance(logit_scale, bool) or not isinstance(logit_scale, (int, float)) \
            or not math.isfinite(float(logit_scale)) or float(logit_scale) <= 0:
        raise InputError(f"logit_scale {logit_scale!r}: allowed: a positive number (exp of CLIP's logit_scale)")
    return text


def _train_tokens(tower, enc, source, n: int, batch_size: int, workers, device: str) -> tuple[torch.Tensor, np.ndarray]:
    """z_0 [n, T, d] of the first n images of ``source`` (decoded once) and their labels [n]."""
    from analysis.data.loader import image_batches

    parts, got = [], 0
    for _, x in image_batches(enc, source, batch_size, workers=workers, device=device):
        x = x[: n - got]
        parts.append(tower.embed(x.to(tower.device)))
        got += len(x)
        if got >= n:
            break
    return torch.cat(parts), np.asarray(source.labels[:got], np.int64)


def run_adavit(enc, prepared, train_source, eval_source, text_embeddings, logit_scale: float, target_saving: float,
               out: str | Path, seeds: int | Sequence[int] = 3, config=None, batch_size: int = 250,
               workers: int | None = None, progress: bool = True) -> dict:
    """Train AdaViT on the frozen INT8 tower toward ``target_saving`` per seed, evaluate each on the eval split,
    write ``out/adavit.json`` (see the module docstring) and return its dict.

    Args:
        enc: :class:`quant.encoder.LoadedEncoder`. prepared: its :class:`quant.prepare.PreparedRecipe`, a
            static INT8 recipe on the fast path (its tower is frozen in place; forward values unchanged).
        train_source, eval_source: :class:`analysis.data.sources.ImageSource` (train: e.g. the train role;
            the first ``config.train_n`` images are used; must not overlap eval).
        text_embeddings: L2-normalised class embeddings [K, E] of the eval classes. logit_scale: exp of
            CLIP's logit scale.
        target_saving: FLOPs-saving fraction in [0, 1) (LRA-EE's measured saving, e.g. 0.1338).
        out: output folder. seeds: a number of seeds (0..n-1) or a list of seeds.
        config: :class:`exitlogic.adavit.AdaViTConfig` (None: defaults).
        batch_size: images per decoding batch (eval batches too). workers: decoding processes (None: default).
        progress: tqdm bars.
    """
    from exitlogic.adavit import (PAPER_ROW, AdaViTConfig, AdaViTEval, FlopModel, check_target, evaluate_adavit,
                                  train_adavit)
    from exitlogic.analyses import mean_std
    from hwsim.workload import layer_macs
    from quant.masked import MaskedTower
    from analysis.data.loader import image_batches

    t_start = time.perf_counter()
    target = check_target(target_saving)
    seed_list = _check_seeds(seeds)
    out = atomic.check_out_dir(out, "out")
    config = AdaViTConfig() if config is None else config
    if not isinstance(config, AdaViTConfig):
        raise InputError(f"config {type(config).__name__}: allowed: an exitlogic.adavit.AdaViTConfig")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size {batch_size!r}: allowed: a positive integer")
    text = _check_inputs(enc, prepared, train_source, eval_source, text_embeddings, logit_scale)
    logit_scale = float(logit_scale)

    tower = MaskedTower(prepared.visual)
    flops = FlopModel(enc.geometry, tuple(layer_macs(enc.geometry)))
    device = str(tower.device)
    n_train = min(config.train_n, len(train_source))
    z_train, y_train = _train_tokens(tower, enc, train_source, n_train, batch_size, workers, device)
    teacher = None
    if config.distill_weight > 0:
        teacher = _fp32_embeddings(enc, train_source, n_train, batch_size, workers, device)

    models = []
    for seed in seed_list:
        models.append(train_adavit(tower, z_train, y_train, text, logit_scale, target, flops, config, seed=seed,
                                   teacher=teacher, progress=progress))
    del z_train, teacher

    parts: list[list] = [[] for _ in models]
    eval_s = [0.0] * len(models)
    from tqdm import tqdm

    bar = tqdm(total=len(eval_source), desc=f"adavit eval ({len(models)} seeds)", unit="img", disable=not progress)
    labels = eval_source.labels
    for start, x in image_batches(enc, eval_source, batch_size, workers=workers, device=device):
        z0 = tower.embed(x.to(tower.device))
        y = labels[start:start + len(x)]
        for i, m in enumerate(models):
            t0 = time.perf_counter()
            parts[i].append(evaluate_adavit(tower, m, [(z0, y)], text, logit_scale, flops, progress=False))
            eval_s[i] += time.perf_counter() - t0
        bar.update(len(x))
    bar.close()
    evals = [AdaViTEval.concat(p) for p in parts]

    per_seed = []
    for m, e, es in zip(models, evals, eval_s):
        s = e.summary()
        r = m.record
        per_seed.append({"seed": r["seed"], "flops_saving": e.flops_saving,
                         "flops_saving_backbone": e.flops_saving_backbone, "top1": e.top1,
                         "train_seconds": r["train_seconds"], "eval_seconds": es, "offset": m.offset,
                         "match": r["match"], "epochs": r["epochs"], "blocks_run_mean": s["blocks_run_mean"],
                         "tokens_kept_mean": s["tokens_kept_mean"], "heads_kept_mean": s["heads_kept_mean"]})
    g = enc.geometry
    result = {
        "method": "AdaViT",
        "model": enc.name,
        "precision": prepared.descriptor(),
        "engine": prepared.engine,
        "device": device,
        "target_saving": target,
        "train": {"data": train_source.name, "n": int(n_train), "split_role": "train"},
        "eval": {"data": eval_source.name, "n": int(len(eval_source))},
        "config": config.to_dict(),
        "flop_model": {"total_macs": flops.total_macs, "block_macs_full": flops.full_block_macs,
                       "fixed_macs": flops.fixed_macs, "decision_macs": flops.decision_macs,
                       "depth": g.depth, "tokens": g.tokens, "heads": g.heads,
                       "source": "hwsim.workload.layer_macs (tower); block MACs generalised to kept tokens/heads"},
        "per_seed": per_seed,
        "flops_saving": mean_std([p["flops_saving"] for p in per_seed]),
        "flops_saving_backbone": mean_std([p["flops_saving_backbone"] for p in per_seed]),
        "top1": mean_std([p["top1"] for p in per_seed]),
        "std": "sample standard deviation over seeds (ddof=1; 0 for a single seed)",
        "units": "fractions in [0, 1]",
        "paper": dict(PAPER_ROW),
    }
    # wall times differ between runs: beside the result (adavit.timings.json), not in it, so that a rerun's
    # adavit.json is byte-identical
    timings = {"seconds": time.perf_counter() - t_start,
               "per_seed": [{"seed": p["seed"], "train_seconds": p.pop("train_seconds"),
                             "eval_seconds": p.pop("eval_seconds")} for p in per_seed]}
    atomic.write_json(Path(out) / "adavit.json", result)
    atomic.write_json(Path(out) / "adavit.timings.json", timings)
    return {**result, "timings": timings}


@torch.no_grad()
def _fp32_embeddings(enc, source, n: int, batch_size: int, workers, device: str) -> torch.Tensor:
    """The FP32 model's final image embeddings [n, E] of the first n images (the distillation teacher)."""
    from analysis.data.loader import image_batches

    visual = enc.model.visual
    dev = next(visual.parameters()).device
    parts, got = [], 0
    for _, x in image_batches(enc, source, batch_size, workers=workers, device=device):
        x = x[: n - got]
        parts.append(visual(x.to(dev)).float())
        got += len(x)
        if got >= n:
            break
    return torch.cat(parts)
