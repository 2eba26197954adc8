"""Masked forward of a static INT8 tower on the fast path: per-block keep decisions for adaptive
inference (AdaViT-style patch, head and block selection), frozen backbone.

Shapes: B images, T = N + 1 tokens ([CLS] at index 0, N patch tokens), d the token width, H the
attention heads, hd = d / H the head width, E the embedding width (all from the tower itself).

:class:`MaskedTower` wraps :attr:`quant.prepare.PreparedRecipe.visual` of a static recipe built with
``engine='fast'`` (:func:`quant.fastpath.build_fast_visual`). :meth:`MaskedTower.embed` gives the
block-1 input z_0 [B, T, d] (patch embedding, [CLS] and positional embeddings, ``ln_pre``: nothing
there is masked); :meth:`MaskedTower.forward_tokens` runs the blocks. Before block l (0-based) the
caller's ``decide(l, x)`` sees the block input x [B, T, d] (batch first) and returns a
:class:`BlockMasks` (or None: the block runs unmasked), all values in [0, 1]:

- ``block`` [B]: 0 skips the block (its input passes through unchanged: identity residual);
- ``heads`` [B, H]: each attention head's output P·V [T, hd] is multiplied by it before
  ``out_proj`` (whose input quantizer sees the masked values; 0 quantizes to 0);
- ``patches`` [B, N]: patch-token keep, the [CLS] token is always kept. A dropped token is left
  unchanged by the block (both residual branches are scaled by its keep) and is no key of the
  kept tokens' attention (its attention logits get ``log(keep)``: -inf at 0, so its softmax
  weight is exactly 0; computed on the detached mask, as AdaViT does).

Block l then computes, with k = block[:, None] * [1, patches] [B, T]:

    a  = MHA(ln_1(x); heads, key bias log k_patch)       [B, T, d]
    x' = x + k[..., None] * ls_1(a)
    y  = x' + k[..., None] * ls_2(mlp(ln_2(x')))

Soft (relaxed, differentiable) masks train the decisions: the gradient reaches them through the
residual scaling and the head scaling, and flows through the INT8 fake-quant ops straight through
(:class:`quant.fastpath.FakeQuant`), so early blocks' decisions get gradients from the loss on the
final embedding. Hard {0, 1} masks at inference give what a pruned execution computes: dropped
tokens, heads and blocks never influence what is kept (every op is per token except attention,
whose dropped keys get exactly zero weight). With every mask 1 each multiplication is by 1.0 and
the key bias is +0.0, so the embedding equals the fast path's bit for bit (``torch.equal``, tested).

The backbone is frozen in place (``requires_grad_(False)``, ``eval()``); this changes no forward
value. Device-agnostic: the masks must be on the tower's device.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


@dataclass
class BlockMasks:
    """Keep decisions of one block, values in [0, 1] (soft while training, {0, 1} at inference);
    None keeps everything of that kind.

    block: [B] whole-block keep. heads: [B, H] attention-head keep. patches: [B, N] patch-token
    keep ([CLS] is always kept and not part of it)."""

    block: torch.Tensor | None = None
    heads: torch.Tensor | None = None
    patches: torch.Tensor | None = None


Decide = Callable[[int, torch.Tensor], "BlockMasks | None"]
"""``decide(l, x)``: the masks of block l (0-based) from its input tokens x [B, T, d] (batch first)."""


@dataclass
class MaskedOutput:
    """One masked pass: ``embedding`` [B, E] (un-normalised, after the quantized ``proj``) and the
    masks each block used (``masks[l]`` None when that block ran unmasked)."""

    embedding: torch.Tensor
    masks: list


def is_fast_tower(visual: nn.Module) -> bool:
    """True for a fast-path static INT8 tower (:func:`quant.fastpath.build_fast_visual`), what :class:`MaskedTower` needs."""
    from quant.fastpath import FastMHA

    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    return (bool(getattr(visual, "lraee_fast", False)) and blocks is not None
            and all(isinstance(getattr(b, "attn", None), FastMHA) for b in blocks))


class MaskedTower(nn.Module):
    """A frozen fast-path INT8 image tower with a masked block forward (see the module docstring).

    Args:
        visual: the fast tower of a calibrated static recipe (``PreparedRecipe.visual`` with
            ``engine='fast'``). Frozen in place (no parameter requires a gradient, eval mode).
    """

    def __init__(self, visual: nn.Module):
        super().__init__()
        if not is_fast_tower(visual):
            raise ValueError("MaskedTower needs the fast path of a calibrated static INT8 recipe "
                             "(prepare_recipe(..., engine='fast') with w8a8 / wXaY)")
        visual.requires_grad_(False)
        visual.eval()
        self.visual = visual
        self.blocks = visual.transformer.resblocks
        self.batch_first = bool(getattr(visual.transformer, "batch_first", True))
        a = self.blocks[0].attn
        self.depth, self.heads, self.width = len(self.blocks), int(a.num_heads), int(a.embed_dim)
        self.head_width = self.width // self.heads

    def train(self, mode: bool = True) -> "MaskedTower":  # the backbone stays in eval mode
        return self

    @property
    def device(self) -> torch.device:
        return self.visual.positional_embedding.device

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Block-1 input z_0 [B, T, d] (batch first) of normalised images [B, 3, H, W]."""
        return self.visual._embeds(images)

    def _attention(self, blk: nn.Module, x: torch.Tensor, heads: torch.Tensor | None,
                   key_bias: torch.Tensor | None) -> torch.Tensor:
        """:class:`quant.fastpath.FastMHA`'s forward (its ``logits`` and ``attend``) with the key bias [B, T]
        added to the attention logits and the head mask [B, h] on P·V. x in the transformer's layout."""
        m = blk.attn
        xs = x.transpose(1, 0) if m.batch_first else x
        s, v = m.logits(xs)  # [B*h, L, L], [B*h, L, hd]
        if key_bias is not None:
            s = s + key_bias.repeat_interleave(m.num_heads, dim=0).unsqueeze(1)  # [B*h, 1, L]
        o = m.attend(s, v, xs.shape, heads)
        return o.transpose(1, 0) if m.batch_first else o

    def block(self, i: int, x: torch.Tensor, masks: BlockMasks | None) -> torch.Tensor:
        """Block ``i`` (0-based) on x [B, T, d] in the transformer's layout, masked by ``masks``."""
        blk = self.blocks[i]
        if masks is None:
            return blk(x)
        B = x.shape[0] if self.batch_first else x.shape[1]
        keep = key_bias = None
        if masks.patches is not None:
            p = masks.patches
            if p.shape[0] != B or p.dim() != 2:
                raise ValueError(f"patches mask: shape {tuple(p.shape)}, expected [{B}, N]")
            keep = torch.cat([p.new_ones(B, 1), p], dim=1)  # [B, T], [CLS] kept
            kd = keep.detach()
            key_bias = torch.where(kd > 0, kd.clamp_min(torch.finfo(kd.dtype).tiny).log(),
                                   torch.full_like(kd, float("-inf")))
        if masks.block is not None:
            b = masks.block.reshape(B, 1)
            keep = b.expand(B, x.shape[1] if self.batch_first else x.shape[0]) if keep is None else b * keep
        if masks.heads is not None and tuple(masks.heads.shape) != (B, self.heads):
            raise ValueError(f"heads mask: shape {tuple(masks.heads.shape)}, expected [{B}, {self.heads}]")
        k3 = None
        if keep is not None:
            k3 = (keep if self.batch_first else keep.transpose(0, 1)).unsqueeze(-1).to(x.dtype)
        a = blk.ls_1(self._attention(blk, blk.ln_1(x), masks.heads, key_bias))
        x = x + (a if k3 is None else k3 * a)
        m = blk.ls_2(blk.mlp(blk.ln_2(x)))
        return x + (m if k3 is None else k3 * m)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Final embedding [B, E] from the last block's output x (the transformer's layout): pooling,
        ``ln_post``, the (quantized) projection, as :func:`quant.brevitas_model.quant_tapped_forward`."""
        z = x if self.batch_first else x.transpose(0, 1)
        pooled, _ = self.visual._pool(z)
        if self.visual.proj is not None:
            pooled = pooled @ self.visual.proj
        head = getattr(self.visual, "proj_q", None)
        return head(pooled) if head is not None else pooled

    def forward_tokens(self, z0: torch.Tensor, decide: Decide | None = None) -> MaskedOutput:
        """Run every block from z_0 [B, T, d] (batch first), asking ``decide(l, x)`` for block l's masks
        (x: the block input, batch first). Returns the embedding [B, E] and the masks used."""
        h = z0 if self.batch_first else z0.transpose(0, 1).contiguous()
        used = []
        for i in range(self.depth):
            masks = None
            if decide is not None:
                masks = decide(i, h if self.batch_first else h.transpose(0, 1))
            used.append(masks)
            h = self.block(i, h, masks)
        return MaskedOutput(self.pool(h), used)

    def forward(self, images: torch.Tensor, decide: Decide | None = None) -> MaskedOutput:
        """:meth:`forward_tokens` of :meth:`embed` (images [B, 3, H, W], normalised)."""
        return self.forward_tokens(self.embed(images), decide)
