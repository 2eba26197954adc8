"""Zero-shot classification: class embeddings from prompt ensembles, and accuracy metrics."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from common import atomic
from common.hashing import json_sha256
from common.timing import PassTimer


TEXT_FORMAT_VERSION = 1
DEFAULT_TEXT_CACHE = Path(".lraee-cache") / "features" / "text"
TEXT_PASS = "text tower"  # the timing log's name of the text tower's pass (kind "text", images = prompts)


@torch.no_grad()
def class_embeddings(model, tokenizer, classnames: list[str], templates: list[str], device: str = "cpu",
                     batch_size: int = 256, progress: bool = False) -> torch.Tensor:
    """L2-normalised mean over templates of the L2-normalised text embeddings: float32 [K, embed_dim].

    All K x T prompts go through the text tower in batches of ``batch_size`` (class-major order),
    whatever the class boundaries; the per-class mean is taken afterwards."""
    prompts = [t.format(name) for name in classnames for t in templates]
    T = len(templates)
    feats = []
    bar = tqdm(total=len(prompts), desc="text tower", unit="prompt", disable=not progress)
    for i in range(0, len(prompts), batch_size):
        toks = tokenizer(prompts[i:i + batch_size]).to(device)
        feats.append(F.normalize(encode_text(model, toks).float(), dim=-1).cpu())
        bar.update(len(toks))
    bar.close()
    per = torch.cat(feats).reshape(len(classnames), T, -1)
    return F.normalize(per.mean(1), dim=-1)


def encode_text(model, text: torch.Tensor) -> torch.Tensor:
    """``model.encode_text(text)`` [B, embed_dim], computed on the shortest prefix of the context that holds
    every prompt's pooled (end-of-text) token.

    The text tower's attention is causal, so the pooled token's output depends only on the tokens up to it:
    the positions after the batch's last end-of-text token (padding) are dropped, with the positional
    embedding and the causal mask cut to the same length. ImageNet prompts with the 80 OpenAI templates
    end by token 12-14 of ViT-B/32's 77: 7.1x faster (``benchmarks/bench_text.py``). The result equals
    ``encode_text``'s up to float rounding (tested; largest difference 4e-6 in that benchmark). Models
    whose text side is not open_clip's causal CLIP text tower pooled at the end-of-text token, or whose
    ``encode_text`` is overridden, go through ``encode_text``."""
    from open_clip.model import CLIP
    from open_clip.transformer import text_global_pool

    pool = getattr(model, "text_pool_type", None)
    mask = getattr(model, "attn_mask", None)
    if (type(model).encode_text is not CLIP.encode_text or "encode_text" in vars(model) or mask is None
            or pool not in ("argmax", "eos")):
        return model.encode_text(text)
    eos = getattr(model, "text_eos_id", None)
    end = text.argmax(dim=-1) if pool == "argmax" else (text == eos).int().argmax(dim=-1)
    n = int(end.max()) + 1
    text = text[:, :n]
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(text).to(cast) + model.positional_embedding[:n].to(cast)
    x = model.ln_final(model.transformer(x, attn_mask=mask[:n, :n]))
    x = text_global_pool(x, text, pool, eos_token_id=eos)
    proj = model.text_projection
    return x if proj is None else (proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj)


def text_cache_key(enc, classnames: list[str], templates: list[str]) -> dict:
    """What identifies a set of class embeddings: the text side's weights, the class names, the templates."""
    return {"format_version": TEXT_FORMAT_VERSION, "model": enc.name, "text_weights_sha256": enc.text_sha256(),
            "classes_sha256": json_sha256(list(classnames)), "templates_sha256": json_sha256(list(templates))}


def text_embeddings(enc, classnames: list[str], templates: list[str], cache_dir: str | Path = DEFAULT_TEXT_CACHE,
                    device: str = "cpu", batch_size: int = 256, progress: bool = False) -> tuple[np.ndarray, bool]:
    """Class embeddings float32 [K, embed_dim] for (text weights, class names, templates), computed once.

    Cached in ``cache_dir/<model>-<hash16>.npy`` (+ ``.json`` with the key); the text tower is never
    quantized, so every precision, split and stage shares one entry. Returns (embeddings, cache hit)."""
    key = text_cache_key(enc, classnames, templates)
    stem = Path(cache_dir) / f"{enc.name}-{json_sha256(key)[:16]}"
    npy, js = stem.with_suffix(".npy"), stem.with_suffix(".json")
    if npy.is_file() and js.is_file():
        try:
            if json.loads(js.read_text(encoding="utf-8")).get("key") == key:
                arr = np.load(npy)
                if arr.shape == (len(classnames), arr.shape[1]) and arr.dtype == np.float32:
                    return arr, True
        except (OSError, ValueError, UnicodeDecodeError):
            pass
    enc.model.to(device)
    timer = PassTimer(TEXT_PASS, kind="text")  # a miss: the text tower's one pass over the K x T prompts, timed
    timer.start()
    emb = class_embeddings(enc.model, enc.tokenizer, classnames, templates, device=device, batch_size=batch_size,
                           progress=progress).numpy().astype(np.float32)
    timer.stop(len(classnames) * len(templates))
    timer.close()
    with atomic.atomic_path(npy) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, emb)
    atomic.write_json(js, {"key": key, "classes": len(classnames), "templates": len(templates),
                           "prompts": len(classnames) * len(templates), "shape": list(emb.shape)})
    return emb, False


def metrics(top5: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """top1, top5 and mean per-class recall (fractions in [0, 1]) from ranked predictions [n, k>=1]."""
    hit1 = top5[:, 0] == labels
    hit5 = (top5 == labels[:, None]).any(1)
    present = np.unique(labels)
    recall = [float(hit1[labels == c].mean()) for c in present]
    return {"n": int(len(labels)), "top1": float(hit1.mean()), "top5": float(hit5.mean()),
            "mean_per_class_recall": float(np.mean(recall)), "num_classes": int(num_classes)}
