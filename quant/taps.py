"""Tapped forward of an open_clip VisionTransformer.

``tapped_forward`` runs the same modules, in the same order, as
``VisionTransformer.forward`` and yields the token tensor after ``ln_pre`` (z_0) and after
every block (z_1 .. z_depth), each [B, N+1, d] with the [CLS] token at index 0. At full
depth the returned embedding is bit-identical to ``CLIP.encode_image`` (FP32, same device).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Taps:
    """Block outputs of one forward pass.

    tokens: list of depth+1 tensors [B, N+1, d]: tokens[0] = z_0 (after ln_pre),
        tokens[L] = z_L (after block L). Truncated at ``depth`` when the pass stopped early.
    embedding: final image embedding [B, embed_dim] (un-normalised), or None when the pass
        stopped before the last block.
    """

    tokens: list[torch.Tensor]
    embedding: torch.Tensor | None


def tapped_forward(visual: nn.Module, images: torch.Tensor, depth: int | None = None,
                   keep: set[int] | None = None) -> Taps:
    """Run the image tower and keep the block outputs.

    Args:
        visual: open_clip ``VisionTransformer`` (``model.visual``).
        images: normalised images [B, 3, H, W].
        depth: stop after this many blocks (None = all; the embedding is only computed at full depth).
        keep: indices L (0..depth) whose z_L is kept; None keeps all. Others are returned as None
            placeholders... not kept, to bound memory: ``tokens[L]`` is then an empty tensor.
    """
    blocks = visual.transformer.resblocks
    full = len(blocks)
    depth = full if depth is None else int(depth)
    if not 0 <= depth <= full:
        raise ValueError(f"depth {depth} outside 0..{full}")
    batch_first = getattr(visual.transformer, "batch_first", True)
    empty = images.new_empty(0)

    x = visual._embeds(images)
    tokens = [x if keep is None or 0 in keep else empty]
    h = x if batch_first else x.transpose(0, 1).contiguous()
    for i in range(depth):
        h = blocks[i](h)
        z = h if batch_first else h.transpose(0, 1)
        tokens.append(z if keep is None or (i + 1) in keep else empty)
    embedding = None
    if depth == full:
        z = h if batch_first else h.transpose(0, 1)
        pooled, _ = visual._pool(z)
        if visual.proj is not None:
            pooled = pooled @ visual.proj
        embedding = pooled
    return Taps(tokens=tokens, embedding=embedding)
