"""Cost of the block taps: tapped forward vs plain ``encode_image``, in one run.

For the tiny default and a randomly initialised ViT-B-32 (CPU, FP32, no grad) this
times, interleaved and repeated, (a) ``model.encode_image``, (b) ``tapped_forward`` keeping
every block's tokens, and (c) the feature-cache reductions on top (patch mean, CLS, SAV per
block). It prints images/s and the ratio to (a); the taps should cost under 5 %.

Run: ``.venv/bin/python benchmarks/bench_taps.py [--repeats 5]``
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quant.encoder import load_encoder  # noqa: E402
from quant.taps import tapped_forward  # noqa: E402


def _reduce(taps) -> None:
    for z in taps.tokens[1:]:
        p = z[:, 1:]
        m = p.mean(1)
        _ = z[:, 0].clone(), ((p - m[:, None]) ** 2).sum(-1).mean(1)


def bench(model_name: str, batch: int, repeats: int) -> None:
    torch.manual_seed(0)
    enc = load_encoder(model_name, random_init=True)
    visual = enc.model.visual
    s = enc.geometry.image_size
    x = torch.randn(batch, 3, s, s)
    runs = {
        "encode_image": lambda: enc.model.encode_image(x),
        "tapped_forward": lambda: tapped_forward(visual, x),
        "tapped+reductions": lambda: _reduce(tapped_forward(visual, x)),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    with torch.no_grad():
        for f in runs.values():  # warm-up
            f()
        for _ in range(repeats):
            for k, f in runs.items():
                t = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t)
    base = statistics.median(times["encode_image"])
    print(f"\n{enc.name} (batch {batch}, {repeats} interleaved repeats, median, {torch.get_num_threads()} threads)")
    for k, ts in times.items():
        med = statistics.median(ts)
        print(f"  {k:<18} {batch / med:9.1f} img/s   time ratio vs encode_image {med / base:6.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    bench("tiny", 256, args.repeats)
    bench("ViT-B-32", 16, args.repeats)


if __name__ == "__main__":
    main()
