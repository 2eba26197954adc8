"""QIRC profile: layer-wise quantization noise of a recipe against FP32 (paper Sec. 3, Eq. 1 and 5).

For every image x and block L = 1..depth, with z_L [N+1, d] the block output (all tokens,
[CLS] first) of the FP32 tower (``fp``) and of the recipe's tower (``q``), over n images:

- ``d_nat``   mean_x ||z_L^fp - z_{L-1}^fp||_2 (Frobenius norm over tokens and channels; z_0 after ln_pre)
- ``d_quant`` mean_x ||z_L^q - z_L^fp||_2
- ``ratio``   d_quant / d_nat (ratio of the two means; the paper's noise-to-signal ratio)
- ``cos_int8_fp32_pooled``      mean_x cos(mean_i z^q_{L,i}, mean_i z^fp_{L,i}), i over the N patch tokens
- ``cos_int8_fp32_token_mean``  mean_x mean_t cos(z^q_{L,t}, z^fp_{L,t}), t over all N+1 tokens
- ``mse``     mean over x, tokens and channels of (z^q_L - z^fp_L)^2
- ``inr``     Eq. 5: ||E_x[z_L^fp]||^2 / sum_j Var_x[eps_{L,j}], eps = z^q_L - z^fp_L, j over all (N+1) d entries
- ``act_absmax``    max over x, tokens, channels of |z^q_L|
- ``act_kurtosis``  Pearson kurtosis E[(v - mu)^4] / sigma^4 of all entries v of z^q_L (3 for a Gaussian)

Top level: ``cos_embedding`` (mean_x cosine of the final embeddings), the split, n, model and recipe.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from common.timing import PassTimer
from quant.taps import tapped_forward

PROFILE_KEYS = ("block", "d_nat", "d_quant", "ratio", "cos_int8_fp32_pooled", "cos_int8_fp32_token_mean",
                "mse", "inr", "act_absmax", "act_kurtosis")


class _Acc:
    """Running sums for one block (float64)."""

    def __init__(self, shape):
        self.d_nat = self.d_quant = self.cos_p = self.cos_t = self.sq = 0.0
        self.z_sum = np.zeros(shape)
        self.e_sum = np.zeros(shape)
        self.e_sq = np.zeros(shape)
        self.absmax = 0.0
        self.m = np.zeros(5)  # count, sum v, v^2, v^3, v^4 (for kurtosis)


@torch.no_grad()
def qirc_profile(visual_fp, prepared, batches, depth: int, progress_bar=None, observe=None) -> dict:
    """Accumulate the profile over ``batches`` (normalised images [B, 3, H, W]).

    ``visual_fp`` is the FP32 image tower, ``prepared`` a :class:`quant.prepare.PreparedRecipe`.
    ``observe(tokens, B)``, if given, sees the recipe's block outputs of every batch (e.g. a
    :class:`quant.tap.TapScaleCounter`'s ``update_taps``), so other statistics of the same images
    need no pass of their own.
    Returns ``{"n", "cos_embedding", "blocks": [record per block]}`` (keys: :data:`PROFILE_KEYS`).
    """
    acc = None
    n = 0
    cos_emb = 0.0
    timer = PassTimer(f"profile {getattr(prepared, 'tag', 'int8')} + fp32")
    for x in batches:
        timer.start()
        fp = tapped_forward(visual_fp, x)
        q = prepared.taps(x)
        B = x.shape[0]
        timer.stop(2 * B)  # two towers
        if observe is not None:
            observe(q.tokens, B)
        if acc is None:
            acc = [_Acc(tuple(fp.tokens[1].shape[1:])) for _ in range(depth)]
        for L in range(1, depth + 1):
            a = acc[L - 1]
            zf = fp.tokens[L].double()
            zp = fp.tokens[L - 1].double()
            zq = q.tokens[L].double()
            e = zq - zf
            a.d_nat += float((zf - zp).flatten(1).norm(dim=1).sum())
            a.d_quant += float(e.flatten(1).norm(dim=1).sum())
            a.cos_p += float(F.cosine_similarity(zq[:, 1:].mean(1), zf[:, 1:].mean(1), dim=-1).sum())
            a.cos_t += float(F.cosine_similarity(zq, zf, dim=-1).mean(1).sum())
            a.sq += float((e ** 2).mean(dim=(1, 2)).sum())
            a.z_sum += zf.sum(0).cpu().numpy()
            a.e_sum += e.sum(0).cpu().numpy()
            a.e_sq += (e ** 2).sum(0).cpu().numpy()
            a.absmax = max(a.absmax, float(zq.abs().max()))
            v = zq.flatten()
            a.m += np.array([v.numel(), float(v.sum()), float((v ** 2).sum()), float((v ** 3).sum()),
                             float((v ** 4).sum())])
        cos_emb += float(F.cosine_similarity(q.embedding.double(), fp.embedding.double(), dim=-1).sum())
        n += B
        if progress_bar is not None:
            progress_bar.update(B)
    timer.close()
    if n == 0:
        raise ValueError("no images")
    blocks = []
    for L, a in enumerate(acc, start=1):
        mean_z = a.z_sum / n
        var_e = a.e_sq / n - (a.e_sum / n) ** 2
        var_total = float(np.maximum(var_e, 0.0).sum())
        c, s1, s2, s3, s4 = a.m
        mu = s1 / c
        m2 = s2 / c - mu**2
        m4 = s4 / c - 4 * mu * s3 / c + 6 * mu**2 * s2 / c - 3 * mu**4
        d_nat, d_quant = a.d_nat / n, a.d_quant / n
        blocks.append({
            "block": L,
            "d_nat": d_nat,
            "d_quant": d_quant,
            "ratio": d_quant / d_nat if d_nat > 0 else math.inf,
            "cos_int8_fp32_pooled": a.cos_p / n,
            "cos_int8_fp32_token_mean": a.cos_t / n,
            "mse": a.sq / n,
            "inr": float((mean_z ** 2).sum()) / var_total if var_total > 0 else math.inf,
            "act_absmax": a.absmax,
            "act_kurtosis": m4 / m2**2 if m2 > 0 else math.nan,
        })
    return {"n": n, "cos_embedding": cos_emb / n, "blocks": blocks}


def plot_profile(prof: dict, path, title: str) -> None:
    """Write the paper-style figure (Fig. 1: noise dynamics; Fig. 4: cosine drift, activation max, INR)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b = prof["blocks"]
    L = [r["block"] for r in b]
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    ax[0].plot(L, [r["d_nat"] for r in b], "o-", label="d_nat = ||z_L - z_{L-1}||")
    ax[0].plot(L, [r["d_quant"] for r in b], "s-", label="d_quant = ||z_L^q - z_L^fp||")
    ax[0].set_xlabel("block L"), ax[0].set_ylabel("L2 norm (mean over images)")
    t = ax[0].twinx()
    t.plot(L, [100 * r["ratio"] for r in b], "^--", color="tab:red", label="ratio (%)")
    t.set_ylabel("d_quant / d_nat (%)", color="tab:red")
    ax[0].legend(loc="upper left", fontsize=8), ax[0].set_title("(a) layer-wise noise (Fig. 1 style)")
    ax[1].plot(L, [r["cos_int8_fp32_pooled"] for r in b], "o-", label="pooled (patch mean)")
    ax[1].plot(L, [r["cos_int8_fp32_token_mean"] for r in b], "s-", label="token mean")
    ax[1].set_xlabel("block L"), ax[1].set_ylabel("cosine(quantized, FP32)"), ax[1].legend(fontsize=8)
    ax[1].set_title("(b) semantic drift")
    ax[2].bar(L, [r["act_absmax"] for r in b], color="tab:gray", label="act |max|")
    ax[2].set_xlabel("block L"), ax[2].set_ylabel("activation |max|")
    t2 = ax[2].twinx()
    t2.plot(L, [r["inr"] for r in b], "o-", color="tab:green", label="INR (Eq. 5)")
    t2.set_yscale("log"), t2.set_ylabel("INR", color="tab:green")
    ax[2].set_title("(c) outliers and INR (Fig. 4 style)")
    for a in ax:
        a.set_xticks(L)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
