"""Workload of a CLIP ViT image tower with early exits, from an :class:`EncoderGeometry`.

All sizes come from the geometry (tokens, width, heads, MLP width, embed dim); nothing is
hard-coded. A GEMM is ``M x K`` times ``K x N``. Two batching modes:

* ``rows``: a Linear layer; a batch of b samples stacks its rows, ``M = b * m``, one weight
  (filter) matrix ``K x N`` is shared and fetched once per batch.
* ``count``: per-sample, per-head attention products (QK^T, AV); ``b * count`` independent
  GEMMs of the listed size, both operands are activations.

Stages: ``patch`` (patch embedding, run before block 1), ``block`` (transformer block L),
``head`` (the SSA exit head at candidate layer L: d -> d -> embed_dim MLP and the
similarity GEMV against K class embeddings), ``final`` (final projection and classifier).
Vector ops are counted in elements per sample, by kind (``layernorm``, ``softmax``,
``gelu``, ``add``, ``mean``, ``scale``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from quant.geometry import EncoderGeometry, ExitHeadGeometry

IN_CHANNELS = 3  # RGB input of the patch embedding (CLIP)


@dataclass(frozen=True)
class Gemm:
    """One GEMM of the workload for one sample.

    Attributes:
        name: e.g. ``qkv``, ``qk``, ``fc1``.
        stage: ``patch``, ``block``, ``head`` or ``final``.
        m, k, n: sizes for one sample (one head for ``count`` GEMMs).
        count: instances per sample (heads for attention, else 1).
        batching: ``rows`` (M scales with batch, weights shared) or ``count``.
    """

    name: str
    stage: str
    m: int
    k: int
    n: int
    count: int = 1
    batching: str = "rows"

    @property
    def macs(self) -> int:
        """MACs for one sample."""
        return self.m * self.k * self.n * self.count

    def weight_elems(self) -> int:
        """Elements of the shared weight matrix (0 for activation-activation GEMMs)."""
        return self.k * self.n if self.batching == "rows" else 0


@dataclass(frozen=True)
class VectorOp:
    """Element-wise or reduction work for the vector unit, per sample (elements)."""

    name: str
    stage: str
    kind: str
    elems: int


VECTOR_KINDS = ("layernorm", "softmax", "gelu", "add", "mean", "scale")


def patch_gemms(g: EncoderGeometry) -> list[Gemm]:
    """Patch embedding as a GEMM: N patches x (3 p^2) x width."""
    return [Gemm("patch_embed", "patch", g.patch_tokens, IN_CHANNELS * g.patch_size ** 2, g.width)]


def block_gemms(g: EncoderGeometry) -> list[Gemm]:
    """GEMMs of one transformer block (tokens include [CLS])."""
    t, d, hw = g.tokens, g.width, g.head_width
    return [
        Gemm("qkv", "block", t, d, 3 * d),
        Gemm("qk", "block", t, hw, t, count=g.heads, batching="count"),
        Gemm("av", "block", t, t, hw, count=g.heads, batching="count"),
        Gemm("out_proj", "block", t, d, d),
        Gemm("fc1", "block", t, d, g.mlp_width),
        Gemm("fc2", "block", t, g.mlp_width, d),
    ]


def block_vector_ops(g: EncoderGeometry) -> list[VectorOp]:
    """Vector-unit work of one block: 2 LayerNorms, softmax, QK scaling, GELU, 2 residual adds."""
    t, d = g.tokens, g.width
    return [
        VectorOp("ln1", "block", "layernorm", t * d),
        VectorOp("attn_scale", "block", "scale", g.heads * t * t),
        VectorOp("softmax", "block", "softmax", g.heads * t * t),
        VectorOp("residual1", "block", "add", t * d),
        VectorOp("ln2", "block", "layernorm", t * d),
        VectorOp("gelu", "block", "gelu", t * g.mlp_width),
        VectorOp("residual2", "block", "add", t * d),
    ]


def head_gemms(g: EncoderGeometry, num_classes: int) -> list[Gemm]:
    """SSA exit head at one candidate layer, sized by :class:`quant.geometry.ExitHeadGeometry`:
    fc1 width -> hidden (GELU), fc2 hidden -> embed_dim, then the similarity GEMV against the
    K class embeddings (embed_dim x K). One sample: M = 1 row per GEMM."""
    h = ExitHeadGeometry.of(g)
    return [
        Gemm("head_fc1", "head", 1, h.width, h.hidden),
        Gemm("head_fc2", "head", 1, h.hidden, h.embed_dim),
        Gemm("head_sim", "head", 1, h.embed_dim, num_classes),
    ]


def head_vector_ops(g: EncoderGeometry) -> list[VectorOp]:
    """SSA head vector work (elements per sample): mean of the N patch tokens, LayerNorm over
    the head's input width, GELU over its hidden width, L2 normalisation of its embedding."""
    h = ExitHeadGeometry.of(g)
    return [
        VectorOp("ssa_mean", "head", "mean", g.patch_tokens * h.width),
        VectorOp("ssa_ln", "head", "layernorm", h.width),
        VectorOp("head_gelu", "head", "gelu", h.hidden),
        VectorOp("head_norm", "head", "layernorm", h.embed_dim),
    ]


def final_gemms(g: EncoderGeometry, num_classes: int | None = None) -> list[Gemm]:
    """Final projection of the [CLS] token (width -> embed_dim) and, if K is given, the classifier."""
    out = [Gemm("proj", "final", 1, g.width, g.embed_dim)]
    if num_classes:
        out.append(Gemm("classifier", "final", 1, g.embed_dim, num_classes))
    return out


def final_vector_ops(g: EncoderGeometry) -> list[VectorOp]:
    """Pre-LayerNorm before the tower (on all tokens), post-LayerNorm on [CLS], embedding L2 norm."""
    return [
        VectorOp("ln_post", "final", "layernorm", g.width),
        VectorOp("embed_norm", "final", "layernorm", g.embed_dim),
    ]


def patch_vector_ops(g: EncoderGeometry) -> list[VectorOp]:
    """Positional-embedding add and ln_pre on all tokens."""
    return [
        VectorOp("pos_embed", "patch", "add", g.tokens * g.width),
        VectorOp("ln_pre", "patch", "layernorm", g.tokens * g.width),
    ]


def vision_macs(geometry: EncoderGeometry) -> int:
    """MACs of one image through the image tower (no exit heads, no classifier).

    Patch embedding, per block QKV, QK^T, AV, out-projection, FC1, FC2, and the final
    projection. ViT-B-32 gives 4,408,811,520 MACs (open_clip's profile: 4.41 GMACs).
    """
    g = geometry
    total = sum(x.macs for x in patch_gemms(g))
    total += g.depth * sum(x.macs for x in block_gemms(g))
    total += sum(x.macs for x in final_gemms(g))
    return int(total)


def head_macs(geometry: EncoderGeometry, num_classes: int) -> int:
    """MACs of one exit-head evaluation for one sample (MLP and similarity GEMV):
    :meth:`quant.geometry.ExitHeadGeometry.macs`, which :func:`head_gemms` sums to (tested)."""
    return int(ExitHeadGeometry.of(geometry).macs(num_classes))


def layer_macs(geometry: EncoderGeometry) -> list[int]:
    """Backbone MACs per block, index 0..depth-1, patch embedding added to block 1 and the
    final projection to the last block (the weights of the FLOPs saving)."""
    g = geometry
    per = sum(x.macs for x in block_gemms(g))
    out = [per] * g.depth
    out[0] += sum(x.macs for x in patch_gemms(g))
    out[-1] += sum(x.macs for x in final_gemms(g))
    return out


# ---- compute fractions of early-exit inference (the FLOPs saving of the paper, Sec. 5.1) -----
# FLOPs saving = 1 - E_x[compute up to the exit of x] / compute(full depth). "Without heads" counts
# the backbone only (the paper's definition); "with heads" adds one exit-head evaluation (MLP +
# similarity against K classes) for every candidate layer a sample passes through, including the
# one it exits at.
def cumulative_fraction(geometry: EncoderGeometry) -> np.ndarray:
    """float64 [depth]: backbone compute of blocks 1..L as a fraction of the full tower (last = 1)."""
    cum = np.cumsum(np.asarray(layer_macs(geometry), np.float64))
    return cum / cum[-1]


def head_fraction(geometry: EncoderGeometry, num_classes: int) -> float:
    """One exit-head evaluation's MACs as a fraction of the full tower's."""
    return head_macs(geometry, num_classes) / float(sum(layer_macs(geometry)))


def flops_saving(geometry: EncoderGeometry, exit_layer: np.ndarray, num_classes: int | None = None,
                 heads_evaluated: np.ndarray | None = None) -> float:
    """1 - mean compute fraction of samples exiting after block ``exit_layer`` [n] (1..depth).

    With ``num_classes`` and ``heads_evaluated`` (int [n]: exit heads each sample ran), the
    heads' compute is added.
    """
    frac = cumulative_fraction(geometry)[np.asarray(exit_layer, np.int64) - 1]
    if heads_evaluated is not None:
        frac = frac + head_fraction(geometry, num_classes) * np.asarray(heads_evaluated, np.float64)
    return float(1.0 - frac.mean())
