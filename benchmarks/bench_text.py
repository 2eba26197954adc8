"""The text tower on the shortest context prefix against open_clip's ``encode_text``, ViT-B/32 sizes.

A randomly initialised ViT-B-32 (QuickGELU), the ImageNet prompts a user runs: open_clip's 1,000 ImageNet
class names with its 80 OpenAI templates (``analysis.templates``: ``openai``), the first ``--prompts`` of
them in lraee's class-major order, in batches of 256 (``analysis.zeroshot.class_embeddings``' default).
Per batch, in the same process and interleaved: ``model.encode_text`` (every one of the 77 context
positions) and :func:`analysis.zeroshot.encode_text` (the context cut after the batch's last end-of-text
token). Prints the median seconds per prompt of each over ``--repeats``, their ratio, the extrapolation
to the 80,000 prompts of ImageNet x 80 templates, and the largest difference between the two embeddings
(0 when bit-identical).

    .venv/bin/python benchmarks/bench_text.py [--prompts 1024] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()

    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    from analysis.templates import resolve_templates
    from analysis.zeroshot import encode_text
    from quant.encoder import load_encoder

    torch.manual_seed(0)
    enc = load_encoder("ViT-B-32-quickgelu", random_init=True)
    model = enc.model.eval()
    _, templates = resolve_templates("openai")
    prompts = [t.format(c) for c in IMAGENET_CLASSNAMES for t in templates][:a.prompts]
    batches = [enc.tokenizer(prompts[i:i + 256]) for i in range(0, len(prompts), 256)]
    lengths = [int(b.argmax(-1).max()) + 1 for b in batches]
    times = {"encode_text": [], "shortest prefix": []}
    diff, identical = 0.0, True
    with torch.no_grad():
        encode_text(model, batches[0][:8]), model.encode_text(batches[0][:8])  # warm-up
        for _ in range(a.repeats):
            for name, f in (("encode_text", model.encode_text), ("shortest prefix", lambda t: encode_text(model, t))):
                t0 = time.perf_counter()
                outs = [f(b) for b in batches]
                times[name].append(time.perf_counter() - t0)
                if name == "encode_text":
                    ref = outs
                else:
                    for x, y in zip(outs, ref):
                        diff = max(diff, float((x - y).abs().max()))
                        identical &= torch.equal(x, y)
    per = {k: statistics.median(v) / len(prompts) for k, v in times.items()}
    print(f"random ViT-B-32, {len(prompts)} prompts (ImageNet classes x OpenAI templates, class-major), batches of "
          f"256; context cut at {min(lengths)}-{max(lengths)} of 77 tokens; median of {a.repeats}:")
    for k, v in per.items():
        print(f"  {k:<16} {v * 1e3:6.2f} ms per prompt -> 80,000 prompts in {v * 80_000 / 60:5.1f} min")
    print(f"  speed-up {per['encode_text'] / per['shortest prefix']:.2f}x; largest difference {diff:.3g} "
          f"({'bit-identical' if identical else 'float rounding'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
