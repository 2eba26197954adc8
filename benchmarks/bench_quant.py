"""Speed of the static INT8 recipe: FP32 vs Brevitas fake-quant vs the bit-identical fast path, in one run.

For the tiny default and a randomly initialised ViT-B-32 (CPU, no grad, w8a8 with
power-of-two scales, calibrated on a few random images; speed does not depend on the
weights) this times, interleaved and repeated, (a) the FP32 tapped forward, (b) the Brevitas
model and (c) the fast path (:mod:`quant.fastpath`), checks that (b) and (c) give identical
outputs, and prints images/s and the throughput ratios to FP32. Target: fast path >= 0.5x FP32.

Run: ``.venv/bin/python benchmarks/bench_quant.py [--repeats 5] [--threads N]``
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quant.brevitas_model import build_quant_visual, quant_tapped_forward  # noqa: E402
from quant.calibration import calibrate  # noqa: E402
from quant.encoder import load_encoder  # noqa: E402
from quant.fastpath import build_fast_visual  # noqa: E402
from quant.recipes import parse_precision  # noqa: E402
from quant.taps import tapped_forward  # noqa: E402


def bench(model_name: str, batch: int, repeats: int, precision: str = "w8a8") -> dict:
    torch.manual_seed(0)
    enc = load_encoder(model_name, random_init=True)
    s = enc.geometry.image_size
    qv = build_quant_visual(enc.model.visual, parse_precision(precision))
    calibrate(qv, [torch.randn(4, 3, s, s)])
    fv = build_fast_visual(qv)
    x = torch.randn(batch, 3, s, s)
    runs = {
        "fp32": lambda: tapped_forward(enc.model.visual, x),
        "brevitas": lambda: quant_tapped_forward(qv, x),
        "fast path": lambda: quant_tapped_forward(fv, x),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    outs = {}
    with torch.no_grad():
        for k, f in runs.items():  # warm-up
            outs[k] = f()
        for _ in range(repeats):
            for k, f in runs.items():
                t = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t)
    same = all(torch.equal(a, b) for a, b in zip(outs["brevitas"].tokens, outs["fast path"].tokens)) and \
        torch.equal(outs["brevitas"].embedding, outs["fast path"].embedding)
    base = statistics.median(times["fp32"])
    print(f"\n{enc.name} {precision} po2 (batch {batch}, {repeats} interleaved repeats, median, "
          f"{torch.get_num_threads()} threads); fast path == Brevitas: {same}")
    res = {}
    for k, ts in times.items():
        med = statistics.median(ts)
        res[k] = batch / med
        print(f"  {k:<10} {batch / med:9.1f} img/s   throughput vs fp32 {base / med:6.3f}x")
    print(f"  fast path vs Brevitas: {res['fast path'] / res['brevitas']:.2f}x")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bench("tiny", 256, args.repeats)
    bench("ViT-B-32", 16, args.repeats)


if __name__ == "__main__":
    main()
