"""The real path at two sizes: per stage wall time, images/s, peak RSS, disk, backbone share; extrapolation.

Builds a randomly initialised ViT-B-32 (QuickGELU) checkpoint file and three synthetic ImageNet-layout
folders (1000 WordNet-id class folders each; train, gating and eval images, JPEG 256 x 320), then runs
``lraee run`` on them stage by stage (``--until STAGE``, one process per stage, so each stage's peak
RSS is its own, read with ``os.wait4``) at a small size and at ``--scale`` times that size. Backbone
time is measured inside the passes (``LRAEE_TIMING_LOG``, :mod:`common.timing`). Baselines in the
same run: the plain ``encode_image`` throughput of the FP32 tower and the INT8 fast path at the same
batch size.

Targets (issue 12): peak RSS flat in n and under 8 GB; all non-backbone work together under 20 % of
the backbone passes' time at the larger size; feature extraction >= 0.9x the plain forward
throughput; the text tower run once.

    .venv/bin/python benchmarks/bench_scale.py [--sizes 300,150,150] [--scale 4] [--work DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("model", "calibration", "profile", "features", "exits", "trace", "fixedpoint", "hls", "rtl", "hwsim",
          "report")
GiB = 1 << 30


def make_checkpoint(path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from quant.encoder import load_encoder

    torch.manual_seed(0)
    enc = load_encoder("ViT-B-32-quickgelu", random_init=True)
    save_file({k: v.contiguous() for k, v in enc.model.state_dict().items()}, str(path))


def make_imagenet_layout(root: Path, n: int, seed: int) -> None:
    """``n`` JPEGs spread round-robin over 1000 WordNet-id folders (every folder exists)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    wnids = [f"n{10_000_000 + 37 * k:08d}" for k in range(1000)]
    for w in wnids:
        (root / w).mkdir(parents=True, exist_ok=True)
    base = (rng.random((64, 80, 3)) * 255).astype(np.uint8)
    for i in range(n):
        img = np.roll(base, (i * 7) % 64, axis=0) ^ rng.integers(0, 64, base.shape, dtype=np.uint8)
        Image.fromarray(img).resize((320, 256)).save(root / wnids[i % 1000] / f"img{seed}_{i:06d}.jpg", quality=85)


def run_config(work: Path, ckpt: Path, data: dict[str, Path], sizes: tuple[int, int, int], cache: Path) -> dict:
    n_train, n_gate, n_eval = sizes
    (work / "one_template.txt").write_text("a photo of a {}.\n")
    return {
        "model": {"name": "ViT-B-32-quickgelu", "pretrained": str(ckpt)},
        "precision": {"calib_n": 64},
        "data": {"source": f"imagenet:{data['eval']}", "train_source": f"imagenet:{data['train']}",
                 "gating_source": f"imagenet:{data['gating']}", "templates": str(work / "one_template.txt"),
                 "train_n": n_train, "gating_n": n_gate, "eval_n": n_eval, "profile_n": 64},
        "runtime": {"cache_dir": str(cache), "batch_size": 32},
        "exits": {"seeds": 3, "epochs": 3, "lr": 5e-4, "head_batch_size": 128},  # the paper's 3 epochs
        "hls": {"vectors": 100},
    }


def run_stage(cfg_path: Path, out: Path, stage: str, timing_log: Path) -> dict:
    env = dict(os.environ, LRAEE_TIMING_LOG=str(timing_log))
    cmd = [sys.executable, "-c", "import sys; from analysis.cli import main; sys.exit(main())",  # module or package
           "run", "--config", str(cfg_path), "--out", str(out), "--until", stage, "--no-progress"]
    t0 = time.perf_counter()
    with open(out.parent / f"{out.name}-{stage}.log", "w") as log:
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        sys.exit(f"bench_scale: stage {stage} failed (see {out.parent / f'{out.name}-{stage}.log'})")
    return {"wall_s": wall, "maxrss": ru.ru_maxrss * 1024}


def backbone_of(log: Path) -> dict:
    recs = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    return {"forward_s": sum(r["forward_s"] for r in recs), "images": sum(r["images"] for r in recs),
            "passes": [r["pass"] for r in recs]}


def disk(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def plain_throughput(ckpt: Path, work: Path, cache: Path, batch: int, repeats: int = 3) -> dict:
    """img/s of encode_image (FP32) and of the INT8 fast path's forward, same batch size, same machine."""
    import torch

    from quant.encoder import load_encoder
    from quant.prepare import prepare_recipe

    enc = load_encoder("ViT-B-32-quickgelu", pretrained=ckpt)
    x = torch.randn(batch, 3, 224, 224)
    out = {}
    recipes = {"fp32": prepare_recipe(enc, "fp32")}
    cal = work / "small" / "calibration" / "calibration.safetensors"
    if cal.is_file():
        recipes["w8a8"] = prepare_recipe(enc, "w8a8", calibration=cal)
    with torch.no_grad():
        for name, prep in recipes.items():
            prep.visual(x[:2])
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                prep.visual(x)
                best = min(best, time.perf_counter() - t0)
            out[name] = batch / best
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="300,150,150", help="train,gating,eval images at the small size")
    ap.add_argument("--scale", type=int, default=4, help="the larger size is SCALE x the small one (default 4)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/lraee-bench-scale"))
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    a = ap.parse_args()
    small = tuple(int(v) for v in a.sizes.split(","))
    large = tuple(a.scale * v for v in small)
    work = a.work
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    ckpt = work / "vitb32-random.safetensors"
    t0 = time.time()
    make_checkpoint(ckpt)
    data = {}
    for seed, role in enumerate(("train", "gating", "eval")):
        data[role] = work / "imagenet" / role
        make_imagenet_layout(data[role], {"train": large[0], "gating": large[1], "eval": large[2]}[role], seed)
    print(f"checkpoint and synthetic ImageNet layout in {time.time() - t0:.0f} s "
          f"(train {large[0]}, gating {large[1]}, eval {large[2]} images in 1000 folders each)")
    cache = work / "cache" / "features"
    results = {}
    for label, sizes in (("small", small), ("large", large)):
        import yaml

        cfg = run_config(work, ckpt, data, sizes, cache)
        cfg_path = work / f"{label}.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg))
        out = work / label
        rows = []
        for st in STAGES:
            log = work / f"{label}-{st}.timing.jsonl"
            before = disk(cache.parent)
            r = run_stage(cfg_path, out, st, log)
            bb = backbone_of(log)
            rows.append({"stage": st, **r, "backbone_s": bb["forward_s"], "images": bb["images"],
                         "passes": bb["passes"], "disk_added": disk(cache.parent) - before,
                         "outputs": disk(out / st)})
        results[label] = {"sizes": sizes, "rows": rows}
        _print(label, sizes, rows)
    thr = plain_throughput(ckpt, work, cache, 32)
    _summary(results, thr, large, cache)
    if a.json:
        a.json.write_text(json.dumps({"results": results, "plain_img_per_s": thr}, indent=1))
    return 0


def _print(label, sizes, rows) -> None:
    print(f"\n{label}: train {sizes[0]}, gating {sizes[1]}, eval {sizes[2]}")
    print(f"{'stage':<12} {'wall s':>8} {'img/s':>7} {'peak RSS GB':>12} {'disk MB':>8} {'backbone s':>11} "
          f"{'backbone %':>10}")
    for r in rows:
        ips = r["images"] / r["wall_s"] if r["images"] else float("nan")
        share = 100 * r["backbone_s"] / r["wall_s"] if r["wall_s"] else 0
        print(f"{r['stage']:<12} {r['wall_s']:>8.1f} {ips:>7.1f} {r['maxrss'] / GiB:>12.2f} "
              f"{(r['disk_added'] + r['outputs']) / 1e6:>8.1f} {r['backbone_s']:>11.1f} {share:>9.0f}%")


def _summary(results, thr, large, cache: Path) -> None:
    S, L = results["small"]["rows"], results["large"]["rows"]
    peak = {k: max(r["maxrss"] for r in v["rows"]) for k, v in results.items()}
    print(f"\npeak RSS over stages: small {peak['small'] / GiB:.2f} GB, large {peak['large'] / GiB:.2f} GB "
          f"(ratio {peak['large'] / peak['small']:.2f}; target: flat in n, < 8 GB)")
    # per stage, what grows with n
    growth = {s["stage"]: (l["maxrss"] - s["maxrss"]) / 1e6 for s, l in zip(S, L)}
    print("peak RSS growth small -> large per stage (MB): " + ", ".join(f"{k} {v:+.0f}" for k, v in growth.items()))
    bb = sum(r["backbone_s"] for r in L)
    non = sum(r["wall_s"] for r in L) - bb
    const = {r["stage"] for r in L if r["stage"] in ("model", "hls", "rtl", "hwsim", "report")}
    non_n = sum(r["wall_s"] - r["backbone_s"] for r in L if r["stage"] not in const)
    print(f"large: backbone passes {bb:.0f} s; everything else {non:.0f} s = {100 * non / bb:.0f} % of it "
          f"(without the n-independent stages {', '.join(sorted(const))}: {non_n:.0f} s = {100 * non_n / bb:.0f} %; "
          "target < 20 %)")
    f = next(r for r in L if r["stage"] == "features")
    n_imgs = {"w8a8": large[0] + large[1] + large[2], "fp32": large[0] + large[2]}
    ideal = sum(n_imgs[k] / thr[k] for k in n_imgs if k in thr)
    print(f"features stage: {f['wall_s']:.0f} s for {f['images']} images; plain forward at batch 32 "
          + ", ".join(f"{k} {v:.1f} img/s" for k, v in thr.items())
          + f" -> {ideal:.0f} s; throughput ratio {ideal / f['wall_s']:.2f} (target >= 0.9)")
    entries = sorted((cache / "text").glob("*.json"))
    prompts = [json.loads(e.read_text())["prompts"] for e in entries]
    print(f"text tower: {len(entries)} cache entr{'y' if len(entries) == 1 else 'ies'} ({prompts} prompts), computed "
          "once for both sizes, every split and precision")
    # extrapolation to the paper's scale: per-image costs of the n-dependent parts at the larger size
    Ls = {r["stage"]: r for r in L}
    Ss = {r["stage"]: r for r in S}
    paper = (128_000, 5_000, 50_000)
    print("\nextrapolated to the paper's scale (train 128k, gating 5k, eval 50k) on this machine:")
    for st in ("features", "exits", "trace", "fixedpoint"):
        dl, ds = Ls[st]["wall_s"], Ss[st]["wall_s"]
        per = (dl - ds) / max(1, sum(large) - sum(results["small"]["sizes"]))  # marginal s per image (all splits)
        print(f"  {st:<11} {per * 1e3:7.1f} ms per image -> {per * sum(paper) / 3600:7.1f} h")


if __name__ == "__main__":
    sys.exit(main())
