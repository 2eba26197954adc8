"""Head training: the stacked training step computes the plain loss and gradients, in float32 or bfloat16.

``train_heads`` evaluates the heads head-major ([H, b, d]), writes the fc weight gradients into buffers kept
across steps (:class:`exitlogic.heads._StackedLinear`) and steps ``torch.optim.Adam(fused=True)``; the trained
parameters must match the straightforward loop (nn-style forward, autograd, the same Adam) to float32
rounding, and the bfloat16 mixed-precision path must learn as well as float32.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from exitlogic.heads import HeadTrainConfig, StackedHeads, _linear, _StackedLinear, head_outputs, train_heads
from quant.geometry import ExitHeadGeometry


def _reference(sources, groups, labels, text, logit_scale, layers, cfg, seed, teacher):
    """The straightforward loop: [n, D, d] forward through autograd, one read per group, Adam on all params."""
    n, D, d = sources[groups[0][0]].shape
    G = len(groups)
    torch.manual_seed(seed)
    heads = StackedHeads(list(range(G * D)), ExitHeadGeometry.lraee(d, text.shape[1]), seed=seed)
    opt = torch.optim.Adam(heads.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
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


def _problem(n=70, D=3, d=32, e=16, K=10, seed=0):
    rng = np.random.default_rng(seed)
    sources = {"ssa_mean": rng.standard_normal((n, D, d)).astype(np.float32),
               "cls": rng.standard_normal((n, D, d)).astype(np.float32)}
    return sources, rng.integers(0, K, n), rng.standard_normal((K, e)).astype(np.float32), \
        rng.standard_normal((n, e)).astype(np.float32)


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_train_heads_matches_the_plain_loop(weight_decay):
    sources, labels, text, teacher = _problem()
    groups = [("ssa_mean", "distill"), ("ssa_mean", "hard"), ("cls", "distill")]
    cfg = HeadTrainConfig(epochs=3, lr=3e-3, batch_size=16, weight_decay=weight_decay)
    fast = train_heads(sources, groups, labels, text, 50.0, [1, 2, 3], cfg, seed=4, teacher=teacher, progress=False)
    ref = _reference(sources, groups, labels, text, 50.0, [1, 2, 3], cfg, 4, teacher)
    init = StackedHeads([1, 2, 3], ExitHeadGeometry.lraee(32, 16), seed=4)
    for a, b in zip(fast, ref):
        assert a.layers == b.layers == [1, 2, 3]
        for (k, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
            assert p.is_contiguous() and p.grad is None, k
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=k)
        assert (a.fc1_weight - init.fc1_weight).abs().max() > 1e-3  # it trained (3 epochs of lr 3e-3)


def test_stacked_linear_gradients_are_the_plain_ones():
    """float64: input, bias and weight gradients of _StackedLinear == autograd of the plain formula (to
    rounding: the weight gradient is computed in the parameter's layout, autograd computes its transpose);
    the weight gradient lands in the kept buffer and from there in the master gradient."""
    g = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(*s, generator=g, dtype=torch.float64) for s in ((4, 9, 7), (4, 5, 7), (4, 5)))
    gy = torch.randn(4, 9, 5, generator=g, dtype=torch.float64)
    x1, b1, w1 = (t.clone().requires_grad_(True) for t in (x, b, w))
    _linear(x1, b1, w1).backward(gy)
    x2, b2 = x.clone().requires_grad_(True), b.clone().requires_grad_(True)
    wgrad, master = torch.empty_like(w), torch.zeros_like(w, dtype=torch.float32)
    y = _StackedLinear.apply(x2, b2, w, wgrad, master)
    torch.testing.assert_close(y, _linear(x, b, w), rtol=0, atol=0)
    y.backward(gy)
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(b2.grad, b1.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(wgrad, w1.grad, rtol=1e-12, atol=1e-12)
    assert torch.equal(master, w1.grad.float())


def test_bfloat16_heads_learn_like_float32():
    """A separable problem: the bfloat16 mixed-precision heads reach the float32 heads' accuracy, keep
    float32 parameters, and are not the float32 heads (the matmuls did run in bfloat16)."""
    rng = np.random.default_rng(3)
    n, D, d, e, K = 600, 2, 48, 24, 6
    centers = rng.standard_normal((K, d)).astype(np.float32)
    labels = rng.integers(0, K, n)
    x = centers[labels][:, None, :] + 0.8 * rng.standard_normal((n, D, d)).astype(np.float32)
    text = rng.standard_normal((K, e)).astype(np.float32)
    accs = {}
    for dtype in ("float32", "bfloat16"):
        cfg = HeadTrainConfig(epochs=4, lr=3e-3, batch_size=32, dtype=dtype)
        heads = train_heads({"ssa_mean": x[:400]}, [("ssa_mean", "hard")], labels[:400], text, 20.0, [1, 2], cfg,
                            seed=0, progress=False)[0]
        assert all(p.dtype == torch.float32 for p in heads.parameters())
        accs[dtype] = (heads, head_outputs(heads, x[400:], labels[400:], text, 20.0).correct.mean(0))
    (h32, a32), (h16, a16) = accs["float32"], accs["bfloat16"]
    assert a32.min() > 0.9 and np.abs(a16 - a32).max() <= 0.03, (a32, a16)
    assert not torch.equal(h32.fc1_weight, h16.fc1_weight)
    torch.testing.assert_close(h16.fc1_weight, h32.fc1_weight, rtol=0, atol=0.05)


def test_unknown_head_dtype_is_refused():
    sources, labels, text, _ = _problem()
    with pytest.raises(ValueError, match="head dtype 'float16'; allowed: float32, bfloat16"):
        train_heads(sources, [("ssa_mean", "hard")], labels, text, 10.0, [1, 2, 3],
                    HeadTrainConfig(epochs=1, dtype="float16"), seed=0, progress=False)


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
