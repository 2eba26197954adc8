"""Head training is bit for bit the plain loop: torch.optim.Adam on the stacked module in its own layout.

``train_heads`` keeps Adam's denominator in a buffer (:class:`exitlogic.heads._Adam`), stores the fc
weights in a transposed memory layout while training and reads each source key's rows once per
minibatch; the trained parameters must equal (``torch.equal``) those of the straightforward loop.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from exitlogic.heads import HeadTrainConfig, StackedHeads, _Adam, train_heads
from quant.geometry import ExitHeadGeometry


def _reference(sources, groups, labels, text, logit_scale, layers, cfg, seed, teacher):
    """The loop before the speed-ups (torch.optim.Adam, contiguous weights, a read per group)."""
    n, D, d = sources[groups[0][0]].shape
    G = len(groups)
    torch.manual_seed(seed)
    heads = StackedHeads(list(range(G * D)), ExitHeadGeometry.lraee(d, text.shape[1]), seed=seed)
    opt = torch.optim.Adam(heads.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    Y = torch.from_numpy(np.asarray(labels, np.int64))
    T = F.normalize(torch.from_numpy(np.asarray(text, np.float32)), dim=-1)
    distill = torch.tensor([sup == "distill" for _, sup in groups for _ in range(D)], dtype=torch.float32)
    g = torch.Generator().manual_seed(seed + 1)
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=g)
        for start in range(0, n, cfg.batch_size):
            rows = order[start:start + cfg.batch_size].numpy()
            idx = torch.from_numpy(rows)
            xb = torch.cat([torch.from_numpy(np.ascontiguousarray(sources[k][rows], np.float32)) for k, _ in groups], 1)
            u = F.normalize(heads(xb), dim=-1)
            logits = logit_scale * torch.einsum("nle,ke->nlk", u, T)
            loss = F.cross_entropy(logits.reshape(-1, T.shape[0]), Y[idx].repeat_interleave(G * D),
                                   reduction="sum") / len(idx)
            tb = F.normalize(torch.from_numpy(np.ascontiguousarray(teacher[rows], np.float32)), dim=-1)
            cos = torch.einsum("nle,ne->nl", u, tb)
            loss = loss + cfg.distill_weight * ((1.0 - cos) * distill).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return [heads.select(list(range(i * D, (i + 1) * D)), layers) for i in range(G)]


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_train_heads_equals_the_plain_loop(weight_decay):
    rng = np.random.default_rng(0)
    n, D, d, e, K = 70, 3, 32, 16, 10
    sources = {"ssa_mean": rng.standard_normal((n, D, d)).astype(np.float32),
               "cls": rng.standard_normal((n, D, d)).astype(np.float32)}
    labels = rng.integers(0, K, n)
    text = rng.standard_normal((K, e)).astype(np.float32)
    teacher = rng.standard_normal((n, e)).astype(np.float32)
    groups = [("ssa_mean", "distill"), ("ssa_mean", "hard"), ("cls", "distill")]
    cfg = HeadTrainConfig(epochs=3, lr=3e-3, batch_size=16, weight_decay=weight_decay)
    fast = train_heads(sources, groups, labels, text, 50.0, [1, 2, 3], cfg, seed=4, teacher=teacher, progress=False)
    ref = _reference(sources, groups, labels, text, 50.0, [1, 2, 3], cfg, 4, teacher)
    for a, b in zip(fast, ref):
        assert a.layers == b.layers == [1, 2, 3]
        for (k, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
            assert p.is_contiguous() and torch.equal(p, q), k
        assert not torch.equal(a.fc1_weight, StackedHeads([1, 2, 3], ExitHeadGeometry.lraee(d, e), seed=4).fc1_weight)  # it trained


def test_adam_buffer_equals_torch_adam():
    torch.manual_seed(0)
    shapes = [(4, 33, 17), (4, 17), (5,)]
    p1 = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    p2 = [torch.nn.Parameter(p.detach().clone()) for p in p1]
    p2[0] = torch.nn.Parameter(torch.empty(4, 17, 33).transpose(1, 2).copy_(p1[0].detach()))  # strided layout
    ref, mine = torch.optim.Adam(p1, lr=1e-3, weight_decay=0.02), _Adam(p2, lr=1e-3, weight_decay=0.02)
    for i in range(25):
        for a, b in zip(p1, p2):
            grad = torch.randn(a.shape) * 10.0 ** (i % 7 - 4)
            a.grad, b.grad = grad.clone(), grad.clone()
        ref.step()
        mine.step()
        assert all(torch.equal(a, b) for a, b in zip(p1, p2)), i


def test_stacked_heads_init_and_select():
    h = StackedHeads([1, 2, 3, 4], ExitHeadGeometry.lraee(8, 6), seed=9)
    g = torch.Generator().manual_seed(9)
    w = (torch.rand((4, 8, 8), generator=g) * 2 - 1) * (1.0 / math.sqrt(8))  # nn.Linear's default, seeded
    assert torch.equal(h.fc1_weight, w)
    for rows in ([1, 2], [3, 0]):
        s = h.select(rows, [7, 8])
        assert s.layers == [7, 8] and torch.equal(s.fc2_weight, h.fc2_weight[rows])


def test_heads_take_their_shapes_from_the_exit_head_geometry():
    """The trained heads allocate what ExitHeadGeometry.param_shapes states (hidden != d here), train with it,
    refuse inputs that do not fit it, and round-trip it through their tensors."""
    odd = ExitHeadGeometry(width=8, hidden=5, embed_dim=6)
    h = StackedHeads([1, 2], odd, seed=0)
    got = {k.replace("_", ".", 1).replace("weight", "weight").replace("bias", "bias"): tuple(p.shape[1:])
           for k, p in h.named_parameters()}
    assert got == odd.param_shapes()
    assert StackedHeads.from_tensors(h.tensors("x"), "x", [1, 2]).head == odd
    rng = np.random.default_rng(1)
    n, K = 20, 4
    src = {"ssa_mean": rng.standard_normal((n, 2, 8)).astype(np.float32)}
    cfg = HeadTrainConfig(epochs=1, batch_size=8)
    trained = train_heads(src, [("ssa_mean", "hard")], rng.integers(0, K, n), rng.standard_normal((K, 6)), 10.0,
                          [1, 2], cfg, seed=0, progress=False, head=odd)
    assert trained[0].head == odd and tuple(trained[0].fc1_weight.shape) == (2, 5, 8)
    with pytest.raises(ValueError, match="do not fit the exit head"):
        train_heads(src, [("ssa_mean", "hard")], rng.integers(0, K, n), rng.standard_normal((K, 7)), 10.0,
                    [1, 2], cfg, seed=0, progress=False, head=odd)
