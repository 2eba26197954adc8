"""The non-backbone work of the real path at ViT-B/32 sizes, against the backbone pass of the same run.

Per image, on a random ViT-B-32 (QuickGELU) checkpoint and synthetic ImageNet-layout folders (1000
WordNet-id classes, K = 1000, one template, ``w8a8``), in one process:

- **backbone**: the plain forward of the INT8 fast path (``PreparedRecipe.visual``) at batch 32, and the
  tapped forward alone (``PreparedRecipe.taps``);
- **features**: the feature pass (:func:`analysis.features.extract`: tapped forward, exit-tap codes, SSA
  means, [CLS], SAV, the integer sums S1 / S2, the top-5, the store writes) on the same preloaded
  batches (decoding excluded; it runs in DataLoader workers), each of the train / gating / eval
  requests;
- **heads**: :func:`exitlogic.heads.train_heads` of one seed (3 variants x 12 blocks of d = 768 -> 768
  -> 512, 3 epochs, batch 128, lr 5e-4: ``bench_scale``'s settings) per train image, and
  :func:`exitlogic.heads.head_outputs` per gating image; this tree's heads both in float32 and in
  bfloat16 mixed precision (``HeadTrainConfig.dtype``);
- **fixedpoint**: the width search (:func:`analysis.validate_exits.run_search`) per gating image and the
  validation (:func:`analysis.validate_exits.validate`) per eval image (needs >= 256 gating images);
- **decoding** (not in the default parts): the feature pass of the eval split with its image decoding,
  one decoding worker (the loader's default on 2 cores) and in-process, against the plain forward.

Each part runs the code of this tree and the code of a baseline commit (``--baseline``, loaded from git
into separate modules), interleaved, on the same inputs; the results are compared (``==`` on the
integers and the same spec; for the heads, the largest parameter difference to this tree's float32 heads,
which the baseline's and the bfloat16 heads differ from by rounding) and the per-image times are given
as the median over ``--repeats`` with ratios to the plain forward of the same run.

    .venv/bin/python benchmarks/bench_nonbackbone.py [--parts features,heads,fixedpoint,decoding] [--repeats 3]
        [--sizes 256,256,256] [--baseline 7534c68] [--work /tmp/lraee-bench-nonbackbone]

The first run builds the checkpoint, folders, calibration, feature stores, text embeddings and a one-seed
policy in ``--work`` (minutes); later runs reuse them.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

BASELINE = "7534c68"  # the tree before the non-backbone speed-ups (issue 12)
MODEL = "ViT-B-32-quickgelu"
BATCH = 32
TEMPLATES = ["a photo of a {}."]
HEAD_CFG = {"epochs": 3, "lr": 5e-4, "batch_size": 128}  # bench_scale's exits settings
EXIT_LAYERS = [9, 10, 11]


# ---- the baseline commit's modules ------------------------------------------------------------------
def _git_show(rev: str, path: str) -> str:
    return subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout


def _module(name: str, source: str, package: str | None = None, path: str | None = None):
    mod = types.ModuleType(name)
    mod.__file__ = path or f"<{name}>"
    if package is not None:
        mod.__package__ = package
    sys.modules[name] = mod
    exec(compile(source, mod.__file__, "exec"), mod.__dict__)
    return mod


def baseline_modules(rev: str, tmp: Path) -> dict:
    """The baseline's heads, fixed-point package, validate_exits and features modules, importable side by side
    with this tree's (the fixed-point package as ``lraee_base_fixedpoint``; the rest by exec)."""
    pkg = tmp / "lraee_base_fixedpoint"
    pkg.mkdir(parents=True, exist_ok=True)
    names = subprocess.run(["git", "ls-tree", "--name-only", rev, "exitlogic/fixedpoint/"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    for f in names:
        if f.endswith(".py"):
            (pkg / Path(f).name).write_text(_git_show(rev, f))
    sys.path.insert(0, str(tmp))
    import lraee_base_fixedpoint as bfxp  # noqa: F401

    heads = _module("lraee_base_heads", _git_show(rev, "exitlogic/heads.py"))
    vsrc = _git_show(rev, "analysis/validate_exits.py").replace("exitlogic.fixedpoint", "lraee_base_fixedpoint")
    vsrc = vsrc.replace("from exitlogic.heads import head_outputs", "from lraee_base_heads import head_outputs")
    validate_exits = _module("lraee_base_validate_exits", vsrc)
    features = _module("lraee_base_features", _git_show(rev, "analysis/features.py"))
    return {"heads": heads, "fixedpoint": bfxp, "validate_exits": validate_exits, "features": features}


# ---- the inputs ---------------------------------------------------------------------------------------
class Setup:
    """Checkpoint, folders, recipes, exit tap, feature stores and a one-seed policy (cached in ``work``)."""

    def __init__(self, work: Path, sizes: tuple[int, int, int], log=print):
        import torch  # noqa: F401

        import bench_scale as B
        from analysis.data.loader import SourceImages
        from analysis.data.sources import open_source
        from analysis.features import calibrate_token_tap, get_features, split_request
        from quant.encoder import load_encoder
        from quant.prepare import prepare_recipe

        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        ckpt = work / "vitb32-random.safetensors"
        t0 = time.time()
        if not ckpt.is_file():
            B.make_checkpoint(ckpt)
        roots = {}
        for seed, (role, n) in enumerate(zip(("train", "gating", "eval"), sizes)):
            roots[role] = work / f"imagenet-{n}" / role
            if not (roots[role] / ".done").is_file():
                B.make_imagenet_layout(roots[role], n, seed)
                (roots[role] / ".done").write_text("")
        self.enc = enc = load_encoder(MODEL, pretrained=ckpt)
        self.depth = depth = enc.geometry.depth
        ref = open_source(f"imagenet:{roots['eval']}", "eval")
        self.sources = {"eval": ref, "train": open_source(f"imagenet:{roots['train']}", "train", like=ref),
                        "gating": open_source(f"imagenet:{roots['gating']}", "gating", like=ref)}
        cal = open_source(f"imagenet:{roots['train']}", "calibration", 64)
        self.cache = work / "cache"
        self.prepared = prepare_recipe(enc, "w8a8", calib_images=SourceImages(enc, cal), cache_dir=self.cache / "calib")
        self.fp32 = prepare_recipe(enc, "fp32")
        self.tap = calibrate_token_tap(enc, self.prepared, cal, range(1, depth + 1), batch_size=BATCH, progress=False,
                                       cache_dir=self.cache / "features")
        kw = {"cache_dir": self.cache / "features", "batch_size": BATCH, "progress": False}
        self.requests = {r: split_request(r, self.tap, depth) for r in ("train", "gating", "eval")}
        self.fs = {r: get_features(enc, self.sources[r], self.prepared, "one", TEMPLATES, **self.requests[r], **kw)
                   for r in ("train", "gating", "eval")}
        self.fs["teacher"] = get_features(enc, self.sources["train"], self.fp32, "one", TEMPLATES,
                                          **split_request("teacher", None, depth), **kw)
        self.text = self.fs["gating"]["text_embeddings"]
        self.policy_dir = work / f"policy-{sizes[0]}-{sizes[1]}"
        if not (self.policy_dir / "pareto.json").is_file():
            self._policy()
        from exitlogic.artifacts import load_policy

        self.policy = load_policy(self.policy_dir)
        log(f"inputs ready in {time.time() - t0:.0f} s ({work})")

    def _policy(self) -> None:
        from analysis.exits import choose_thresholds, train_exits
        from exitlogic.artifacts import load_policy
        from exitlogic.heads import HeadTrainConfig
        from exitlogic.policy import default_grid

        tap = self.tap
        prov = {"model": self.enc.name, "pretrained": self.enc.pretrained, "precision": self.prepared.recipe.name,
                "recipe": self.prepared.descriptor(), "calibration_file": self.prepared.calibration_path,
                "templates": "one", "exit_tap": {**tap.descriptor(), "quantization_point": tap.QUANTIZATION_POINT}}
        train_exits(self.fs["train"], self.fs["teacher"], self.fs["gating"], self.enc.geometry, self.policy_dir, [0],
                    HeadTrainConfig(**HEAD_CFG), None, EXIT_LAYERS, 0.5, 0.9, 3, 0.8, 1e-3, prov, progress=False,
                    log=lambda m: None)
        choose_thresholds(load_policy(self.policy_dir), 0.9, default_grid(), log=lambda m: None)

    def batches(self, role: str):
        """The preloaded normalised image batches of a split (decoded once)."""
        from analysis.data.loader import image_batches

        return [(s, x) for s, x in image_batches(self.enc, self.sources[role], BATCH, workers=0)]


# ---- timing helpers ---------------------------------------------------------------------------------
def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _median(xs):
    return statistics.median(xs) if xs else float("nan")


# ---- features -----------------------------------------------------------------------------------------
class _Sized:
    def __init__(self, n):
        self.n, self.name, self.labels = n, "preloaded", np.zeros(n, np.int64)

    def __len__(self):
        return self.n


def _extract_timed(mod, setup, prepared, request: dict, batch, tmp: Path) -> tuple[float, dict]:
    """Time ``mod.extract`` on one preloaded batch into a scratch store (store files created before the
    clock starts); returns (seconds, the arrays written)."""
    from common.store import StoreWriter

    n = batch[1].shape[0]
    tokens, exit_tap = request.get("tokens"), request.get("exit_tap")
    fields = request.get("fields", "all")
    V = min(int(request.get("token_vectors", 0)), n) if tokens is not None else 0
    specs = mod._array_specs(setup.enc.geometry, n, fields, "float32", tokens, V, len(setup.text))
    saved = mod.image_batches
    mod.image_batches = lambda *a, **k: iter([(0, batch[1])])  # a store of this one batch
    w = StoreWriter(tmp / f"scratch-{time.perf_counter_ns()}.store", specs)
    try:
        t0 = time.perf_counter()
        mod.extract(setup.enc, _Sized(n), setup.text, w, batch_size=BATCH, progress=False, prepared=prepared,
                    tokens=tokens, exit_tap=exit_tap, fields=fields, token_vectors=V)
        dt = time.perf_counter() - t0
        out = {k: np.load(w.tmp / f"{k}.npy") for k in specs}
    finally:
        mod.image_batches = saved
        w.abort()
    return dt, out


def bench_features(setup, base, repeats: int, log=print) -> dict:
    """Per batch, back to back (so the load of a shared machine hits every variant alike): the plain forward,
    the tapped forward and the feature pass of each request, this tree's and the baseline's."""
    import torch

    import analysis.features as NF
    from analysis.features import split_request

    BF = base["features"] if base else None
    batches = setup.batches("eval")
    depth = setup.depth
    cases = {"train": (setup.prepared, split_request("train", setup.tap, depth)),
             "gating": (setup.prepared, split_request("gating", setup.tap, depth)),
             "eval": (setup.prepared, split_request("eval", setup.tap, depth)),
             "teacher": (setup.fp32, split_request("teacher", None, depth))}
    impls = [("new", NF)] + ([("base", BF)] if BF else [])
    times: dict[str, list] = {}
    ratios: dict[str, list] = {}
    checked = set()
    with torch.no_grad(), tempfile.TemporaryDirectory(dir=setup.work) as td:
        tmp = Path(td)
        for prep in (setup.prepared, setup.fp32):
            prep.visual(batches[0][1][:2])
        for r in range(repeats):
            for b, batch in enumerate(batches):
                x = batch[1]
                row = {}
                row["forward w8a8"] = _timed(lambda: setup.prepared.visual(x))[0]
                row["forward fp32"] = _timed(lambda: setup.fp32.visual(x))[0]
                row["taps w8a8"] = _timed(lambda: setup.prepared.taps(x, depth=depth))[0]
                for name, (prep, req) in cases.items():
                    outs = {}
                    for which, mod in (impls if (r + b) % 2 == 0 else impls[::-1]):
                        row[f"features {name} {which}"], outs[which] = _extract_timed(mod, setup, prep, req, batch, tmp)
                    if "base" in outs and name not in checked:
                        for k in outs["base"]:
                            assert np.array_equal(outs["base"][k], outs["new"][k]), f"features {name}: {k} differs"
                            assert outs["base"][k].tobytes() == outs["new"][k].tobytes(), f"features {name}: {k} bytes"
                        checked.add(name)
                for k, v in row.items():
                    times.setdefault(k, []).append(v / x.shape[0])
                    ref = row["forward fp32"] if ("teacher" in k or "fp32" in k) else row["forward w8a8"]
                    ratios.setdefault(k, []).append(v / ref)
    res = {k: {"ms": 1e3 * _median(v), "ratio": _median(ratios[k])} for k, v in times.items()}
    n = sum(x.shape[0] for _, x in batches)
    log(f"\nfeatures ({n} eval images x {repeats}, batch {BATCH}, decoding excluded; each batch through every "
        "variant back to back): ms per image (median) and the median per-batch time ratio to the plain forward "
        "of the same precision (throughput ratio = 1 / it)")
    for k, v in res.items():
        log(f"  {k:<24} {v['ms']:8.2f} ms  {v['ratio']:.3f}x time  ({1 / v['ratio']:.3f}x throughput)")
    if checked:
        log(f"features: every array of {', '.join(sorted(checked))} byte-identical to the baseline's")
    return res


def bench_decoding(setup, base, repeats: int, log=print) -> dict:
    """The feature pass with its image decoding (one eval split through :func:`analysis.features.extract`, a
    scratch store; this tree's with decoding workers (the default) and in-process, the baseline's with the
    default workers) against the plain forward of the preloaded batches and the decoding alone, interleaved
    per repeat."""
    import torch

    import analysis.features as NF
    from analysis.data.loader import default_workers, image_batches
    from analysis.features import split_request
    from common.store import StoreWriter

    src, prep = setup.sources["eval"], setup.prepared
    req = split_request("eval", setup.tap, setup.depth)
    batches = setup.batches("eval")
    n = len(src)
    V = min(int(req.get("token_vectors", 0)), n)
    specs = NF._array_specs(setup.enc.geometry, n, "all", "float32", req["tokens"], V, len(setup.text))
    runs = [("new", NF, w) for w in sorted({0, default_workers()})]
    if base:
        runs.append(("base", base["features"], default_workers()))
    times: dict[str, list] = {}
    with torch.no_grad(), tempfile.TemporaryDirectory(dir=setup.work) as td:
        for r in range(repeats):
            times.setdefault("plain forward (preloaded)", []).append(
                _timed(lambda: [prep.visual(x) for _, x in batches])[0])
            times.setdefault("decoding alone (in-process)", []).append(
                _timed(lambda: [x for _, x in image_batches(setup.enc, src, BATCH, workers=0)])[0])
            for which, mod, w in (runs if r % 2 == 0 else runs[::-1]):
                wr = StoreWriter(Path(td) / f"s{r}{w}{which}.store", specs)
                try:
                    times.setdefault(f"feature pass {which}, workers={w}", []).append(_timed(lambda: mod.extract(
                        setup.enc, src, setup.text, wr, batch_size=BATCH, progress=False, prepared=prep,
                        tokens=req["tokens"], exit_tap=req["exit_tap"], token_vectors=V, workers=w))[0])
                finally:
                    wr.abort()
    res = {k: 1e3 * _median(v) / n for k, v in times.items()}
    ref = res["plain forward (preloaded)"]
    log(f"\nfeature pass with decoding ({n} eval images, w8a8, batch {BATCH}, {repeats} repeats): ms per image "
        "(throughput ratio to the plain forward of preloaded batches)")
    for k, v in res.items():
        log(f"  {k:<30} {v:8.2f} ms  ({ref / v:.3f}x)")
    return res


# ---- heads --------------------------------------------------------------------------------------------
def bench_heads(setup, base, repeats: int, log=print) -> dict:
    import torch

    import exitlogic.heads as NH
    from analysis.exits import HEAD_SOURCE
    from exitlogic.artifacts import VARIANTS

    BH = base["heads"] if base else None
    fs, gfs, tfs = setup.fs["train"], setup.fs["gating"], setup.fs["teacher"]
    n, n_g = len(fs), len(gfs)
    ls = float(gfs.meta["logit_scale"])
    layers = list(range(1, setup.depth + 1))
    sources = {"ssa_mean": fs["ssa_mean"], "cls": fs["cls"]}
    groups = [HEAD_SOURCE[v] for v in VARIANTS]
    times: dict[str, list] = {}
    impls = (("new", NH, {}), ("new bfloat16", NH, {"dtype": "bfloat16"})) + ((("base", BH, {}),) if BH else ())
    res = {}
    for r in range(repeats):
        trained = {}
        for which, mod, extra in (impls if r % 2 == 0 else impls[::-1]):
            cfg = mod.HeadTrainConfig(**HEAD_CFG, **extra)
            dt, trained[which] = _timed(lambda: mod.train_heads(
                sources, groups, fs["labels"], setup.text, ls, layers, cfg, seed=0,
                teacher=tfs["final_embedding"], progress=False))
            times.setdefault(f"train {which}", []).append(dt)
            dt, outs = _timed(lambda: [mod.head_outputs(h, gfs[src], gfs["labels"], setup.text, ls)
                                       for h, (src, _) in zip(trained[which], groups)])
            times.setdefault(f"gating outputs {which}", []).append(dt)
        if r == 0:  # how far the trained parameters are from the float32 ones of this tree
            ref = [p for h in trained["new"] for p in h.parameters()]
            scale = max(float(p.detach().abs().max()) for p in ref)
            for which in trained:
                if which != "new":
                    diff = max(float((a - b).detach().abs().max()) for a, b in
                               zip(ref, [p for h in trained[which] for p in h.parameters()]))
                    res[f"max_abs_diff {which}"] = diff
                    log(f"heads: parameters of {which} vs new (float32): max |diff| {diff:.3g} (max |p| {scale:.3g})")
    for k, v in times.items():
        per = n if k.startswith("train") else n_g
        res[k] = 1e3 * _median(v) / per
    log(f"\nheads (one seed: {len(groups)} variants x {len(layers)} blocks, d = {fs['ssa_mean'].shape[2]}, "
        f"{HEAD_CFG['epochs']} epochs, batch {HEAD_CFG['batch_size']}; train {n}, gating {n_g}): ms per image")
    for k, v in res.items():
        if k.startswith(("train", "gating")):
            log(f"  {k:<28} {v:8.2f} ms" + ("  (per train image, one seed)" if k.startswith("train") else
                                             "  (per gating image, 3 variants)"))
    return res


# ---- fixed point --------------------------------------------------------------------------------------
def bench_fixedpoint(setup, base, repeats: int, log=print) -> dict:
    import analysis.validate_exits as NV

    BV = base["validate_exits"] if base else None
    policy = setup.policy
    gfs, efs = setup.fs["gating"], setup.fs["eval"]
    layers = policy.candidate_layers
    rows = NV.search_rows(len(gfs))
    times: dict[str, list] = {}
    impls = (("new", NV),) + ((("base", BV),) if BV else ())
    results = {}
    for r in range(repeats):
        for which, mod in (impls if r % 2 == 0 else impls[::-1]):
            params = mod.policy_unit_params(policy)
            toks = mod.tap_tokens(gfs, layers, rows)
            dt, (spec, rec) = _timed(lambda: mod.run_search(policy, params, toks, gfs["top5"][rows, 0], 0.999, None,
                                                            progress=False, log=lambda m: None))
            times.setdefault(f"search {which}", []).append(dt)
            dt, (val, _) = _timed(lambda: mod.validate(policy, spec, efs, 0.999, {}, rec, "bench", log=lambda m: None))
            times.setdefault(f"validate {which}", []).append(dt)
            results[which] = (spec.to_json(), rec, val)
    if "base" in results:
        sb, rb, vb = results["base"]
        sn, rn, vn = results["new"]
        same = (sb == sn and rb["steps"] == rn["steps"] and rb["evaluations"] == rn["evaluations"]
                and json.dumps(vb["comparisons"], sort_keys=True) == json.dumps(vn["comparisons"], sort_keys=True)
                and vb["overflow"] == vn["overflow"])
        log(f"fixed point: spec, search steps, comparisons and overflow counts {'identical' if same else 'DIFFER'}")
        assert same, "the fixed-point results differ from the baseline"
    ev = results["new"][1]["evaluations"]
    res = {k: 1e3 * _median(v) / (len(rows) if k.startswith("search") else len(efs)) for k, v in times.items()}
    log(f"\nfixed point (K = {len(setup.text)}, candidate layers {layers}; search on {len(rows)} gating images, "
        f"{ev} evaluations; validation on {len(efs)} eval images): ms per image")
    for k, v in res.items():
        log(f"  {k:<24} {v:8.2f} ms  (total {_median(times[k]):.1f} s)")
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="features,heads,fixedpoint")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", default="256,256,256", help="train,gating,eval images (default 256,256,256)")
    ap.add_argument("--baseline", default=BASELINE, help="git revision to compare with ('' for none)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/lraee-bench-nonbackbone"))
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    sizes = tuple(int(v) for v in a.sizes.split(","))
    if "fixedpoint" in a.parts.split(",") and sizes[1] < 256:
        sys.exit("bench_nonbackbone: the fixedpoint part needs >= 256 gating images (the search's estimated "
                 "disagreement rate keeps a generous start below its target only with a few hundred)")
    setup = Setup(a.work, sizes)
    out = {"sizes": sizes, "baseline": a.baseline, "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as td:
        base = baseline_modules(a.baseline, Path(td)) if a.baseline else None
        parts = a.parts.split(",")
        if "features" in parts:
            out["features"] = bench_features(setup, base, a.repeats)
        if "decoding" in parts:
            out["decoding"] = bench_decoding(setup, base, a.repeats)
        if "heads" in parts:
            out["heads"] = bench_heads(setup, base, a.repeats)
        if "fixedpoint" in parts:
            out["fixedpoint"] = bench_fixedpoint(setup, base, a.repeats)
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
