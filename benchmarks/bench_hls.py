"""hls4ml exit-block benchmark: generate + compile time per block, and a C-simulation check.

Target (issue 6): generate + compile (g++, hls4ml's build_lib.sh) in at most 60 s per block on
this machine. Blocks: the SSA head (patch mean, LayerNorm, fc1, GELU, fc2) and the gate
(3 -> 1 linear + comparator) of one exit layer, at the tiny default's width (d = 128) and, with
``--width 768``, at ViT-B/32's (Resource strategy, default ReuseFactors). Parameters and tokens
are random (seeded) unless ``--policy DIR --cache-dir DIR`` names a real policy; the C-simulation
of ``--vectors`` vectors must equal the fixed-point model bit for bit.

Run: ``python benchmarks/bench_hls.py [--width 128 768] [--vectors 64] [--policy DIR --cache-dir DIR]``
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exitlogic.fixedpoint import ExitUnit, default_spec, float_reference  # noqa: E402
from hls.blocks import BlockOptions, convert, gate_block, head_block  # noqa: E402
from hls.flow import csim_block  # noqa: E402

N_TOK, K, LAYER, SCALE_EXP = 49, 25, 6, -4


def random_world(d: int, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    p = {"ln.weight": f32(1 + 0.1 * rng.standard_normal(d)), "ln.bias": f32(0.1 * rng.standard_normal(d)),
         "fc1.weight": f32(rng.standard_normal((d, d)) / np.sqrt(d)), "fc1.bias": f32(0.1 * rng.standard_normal(d)),
         "fc2.weight": f32(rng.standard_normal((d, d)) / np.sqrt(d)), "fc2.bias": f32(0.1 * rng.standard_normal(d)),
         "gate.w": f32([3.0, 2.0, -0.5]), "gate.b": f32([0.0]), "gate.mu": f32([0.3, 0.2, 10.0]),
         "gate.sigma": f32([0.2, 0.15, 3.0]), "tau": 0.5}
    t = rng.standard_normal((K, d))
    t = (t / np.linalg.norm(t, axis=1, keepdims=True)).astype(np.float32)
    base = rng.standard_normal((n, 1, d)) * rng.uniform(10, 60, (n, 1, 1))
    q = np.clip(np.round(base + rng.standard_normal((n, N_TOK + 1, d)) * rng.uniform(5, 40, (n, 1, 1))),
                -128, 127).astype(np.int8)
    scale = 2.0 ** SCALE_EXP
    g = float_reference(p, t, 100.0, q, scale)["gate_logit"]
    p["gate.b"] = f32([-np.median(g)])
    # act_bits 24 at d = 768: the numpy model's int64 limit (2 * W(ln.diff) + log2 d <= 61) refuses 26
    spec = default_spec({LAYER: p}, t, 100.0, {LAYER: (q, scale)}, act_bits=26 if d <= 256 else 24)
    return ExitUnit(spec, {LAYER: p}, t, 100.0), LAYER, q, SCALE_EXP


def policy_world(policy_dir: str, cache_dir: str, n: int):
    from exitlogic.artifacts import load_policy
    from hls.flow import build_spec
    from hls.vectors import derived_vectors, tap_vectors

    pol = load_policy(policy_dir)
    L = pol.candidate_layers[0]
    v = tap_vectors(pol, Path(cache_dir), [L], n) or derived_vectors(pol, Path(cache_dir), [L], n)
    spec, _ = build_spec(pol, v, None)
    unit = ExitUnit(spec, {L: pol.layer_params(L)}, pol.tensors["text_embeddings"], float(pol.meta["logit_scale"]))
    return unit, L, v.tokens[L], v.scale_exp[L]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--width", type=int, nargs="+", default=[128])
    ap.add_argument("--vectors", type=int, default=64)
    ap.add_argument("--policy", default=None)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--backend", default="Vitis")
    args = ap.parse_args()
    worlds = ([("policy", *policy_world(args.policy, args.cache_dir, args.vectors))] if args.policy else
              [(f"d={d}", *random_world(d, args.vectors)) for d in args.width])
    opts = BlockOptions(backend=args.backend).validate()
    print(f"hls4ml blocks ({args.backend}, io_parallel): generate + compile per block (target <= 60 s), C-sim exactness")
    with tempfile.TemporaryDirectory() as tmp:
        for label, unit, L, q, e in worlds:
            ref = unit.run(L, q, 2.0 ** e, keep=True)
            fref = unit.float_reference(L, q, 2.0 ** e, intermediates=True)
            for kind in ("head", "gate"):
                t0 = time.perf_counter()
                bd = head_block(unit, L, e, opts) if kind == "head" else gate_block(unit, L, opts)
                buf = io.StringIO()
                with contextlib.redirect_stdout(buf):
                    hm = convert(bd, Path(tmp) / f"{label}_{bd.name}", opts, write=False)  # compile() writes
                    t1 = time.perf_counter()
                    hm.compile()
                    t2 = time.perf_counter()
                    c = csim_block(hm, kind, unit, L, q, 2.0 ** e, ref, fref)
                    t3 = time.perf_counter()
                total = t2 - t0
                print(f"  {label:>8} {kind:<4}  generate {t1 - t0:6.2f} s  compile {t2 - t1:6.2f} s  "
                      f"total {total:6.2f} s ({'met' if total <= 60 else 'MISSED'})  C-sim {c['vectors']} vectors "
                      f"{t3 - t2:5.2f} s, exact {c['exact_match']:.4f}")


if __name__ == "__main__":
    main()
