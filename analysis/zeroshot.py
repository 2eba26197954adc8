"""Zero-shot classification: class embeddings from prompt ensembles, and accuracy metrics."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


@torch.no_grad()
def class_embeddings(model, tokenizer, classnames: list[str], templates: list[str], device: str = "cpu",
                     batch_size: int = 256) -> torch.Tensor:
    """L2-normalised mean over templates of the L2-normalised text embeddings: float32 [K, embed_dim]."""
    out = []
    for name in classnames:
        prompts = [t.format(name) for t in templates]
        feats = []
        for i in range(0, len(prompts), batch_size):
            toks = tokenizer(prompts[i:i + batch_size]).to(device)
            feats.append(F.normalize(model.encode_text(toks).float(), dim=-1))
        out.append(F.normalize(torch.cat(feats).mean(0), dim=-1))
    return torch.stack(out).cpu()


def metrics(top5: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """top1, top5 and mean per-class recall (fractions in [0, 1]) from ranked predictions [n, k>=1]."""
    hit1 = top5[:, 0] == labels
    hit5 = (top5 == labels[:, None]).any(1)
    present = np.unique(labels)
    recall = [float(hit1[labels == c].mean()) for c in present]
    return {"n": int(len(labels)), "top1": float(hit1.mean()), "top5": float(hit5.mean()),
            "mean_per_class_recall": float(np.mean(recall)), "num_classes": int(num_classes)}
