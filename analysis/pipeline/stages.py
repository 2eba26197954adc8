"""The stages of ``lraee run`` (see :mod:`analysis.pipeline.runner`), each a thin wrapper around
the ``lraee`` commands a user would type, with the flags derived from the run config."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from common import atomic
from analysis.pipeline.config import RunConfig
from analysis.pipeline.datasets import role_specs
from analysis.pipeline.runner import Context, Stage

HWSIM_CONFIGS = Path(__file__).resolve().parents[2] / "hwsim" / "configs"


# ---- flags shared by the commands ----------------------------------------------------------
def model_flags(cfg: RunConfig) -> list:
    m = cfg.model
    return ["--model", m.name] + (["--pretrained", m.pretrained] if m.pretrained else []) + (
        ["--force-quick-gelu"] if m.force_quick_gelu else [])


def calibration_file(ctx: Context) -> Path:
    return ctx.dir("calibration") / "calibration.safetensors"


def precision_flags(ctx: Context) -> list:
    p = ctx.cfg.precision
    return ["--precision", p.recipe, "--scales", p.scales, "--calib-method", p.calib_method,
            "--calibration", calibration_file(ctx)]


def runtime_flags(ctx: Context, cache: bool = True) -> list:
    r = ctx.cfg.runtime
    return (["--batch-size", r.batch_size, "--device", r.device] + (["--cache-dir", r.cache_dir] if cache else [])
            + ([] if ctx.progress else ["--no-progress"]) + (["--workers", r.workers] if r.workers is not None else [])
            + (["--store-dtype", r.store_dtype] if cache else []))


def data_flags(cfg: RunConfig, split: str = "eval", n: int | None = None) -> list:
    d = cfg.data
    return (["--data", d.source, "--split", split, "--templates", d.templates]
            + (["--classnames", d.classnames] if d.classnames else []) + (["--n", n] if n else []))


def default_dse_workers() -> int:
    """DSE processes when ``runtime.dse_workers`` is unset: the CPUs this process may use."""
    import os

    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def _rel(ctx: Context, *paths: Path) -> list[str]:
    """Result files as paths relative to the run folder (the runner's working directory)."""
    return [str(Path(p)) for p in paths]


# ---- stages --------------------------------------------------------------------------------
def run_model(ctx: Context) -> list[str]:
    """Check (or rebuild) the encoder weights; write model.json (name, weights hash, geometry)."""
    from quant.encoder import TINY_WEIGHTS, load_encoder

    m = ctx.cfg.model
    if m.name in ("tiny", "lraee-tiny") and m.pretrained is None and not TINY_WEIGHTS.is_file():
        ctx.log(f"shipped tiny weights missing at {TINY_WEIGHTS}: retraining them (lraee train-tiny)")
        ctx.cli("train-tiny", "--out", TINY_WEIGHTS, *([] if ctx.progress else ["--no-progress"]))
    enc = load_encoder(m.name, m.pretrained, device=ctx.cfg.runtime.device, force_quick_gelu=m.force_quick_gelu)
    rec = {"model": enc.name, "pretrained": str(enc.pretrained) if enc.pretrained else None,
           "weights_sha256": enc.weights_sha256(), "geometry": enc.geometry.to_dict()}
    path = ctx.dir("model") / "model.json"
    atomic.write_json(path, rec)
    geo = ctx.dir("model") / "geometry.json"
    atomic.write_json(geo, enc.geometry.to_dict())
    return _rel(ctx, path, geo)


def calibration_spec(cfg: RunConfig) -> str:
    """The calibration images' source spec (opened as split ``calibration``; see :mod:`.datasets`)."""
    return role_specs(cfg)["calibration"].spec


def run_calibration(ctx: Context) -> list[str]:
    p = ctx.cfg.precision
    out = calibration_file(ctx)
    ctx.cli("calibrate", *model_flags(ctx.cfg), "--precision", p.recipe, "--scales", p.scales,
            "--calib-method", p.calib_method, "--calib-n", p.calib_n, "--data", calibration_spec(ctx.cfg),
            "--batch-size", ctx.cfg.runtime.batch_size, "--device", ctx.cfg.runtime.device,
            *([] if ctx.progress else ["--no-progress"]), "--out", out)
    return _rel(ctx, out, out.with_suffix(".json"))


def run_profile(ctx: Context) -> list[str]:
    out = ctx.dir("profile")
    d = ctx.cfg.data
    ctx.cli("profile", *model_flags(ctx.cfg), *precision_flags(ctx), "--data", calibration_spec(ctx.cfg),
            "--split", "calibration", "--n", d.profile_n, "--templates", d.templates,
            *(["--classnames", d.classnames] if d.classnames else []), *runtime_flags(ctx), "--out", out)
    return _rel(ctx, out / "profile.json", out / "profile.png")


def run_features(ctx: Context) -> list[str]:
    """Build the store of every split and precision the later stages read, one backbone pass each (one
    encoder, one prepared recipe; exit-tap scales from the profile stage's pass); write a manifest."""
    from analysis.features import calibrate_token_tap, get_features, split_request
    from analysis.pipeline.datasets import check_sources
    from analysis.templates import resolve_templates
    from quant.encoder import load_encoder
    from quant.prepare import prepare_recipe

    cfg = ctx.cfg
    m, p, r = cfg.model, cfg.precision, cfg.runtime
    srcs = check_sources(cfg)
    enc = load_encoder(m.name, m.pretrained, device=r.device, force_quick_gelu=m.force_quick_gelu)
    depth = enc.geometry.depth
    tname, templates = resolve_templates(cfg.data.templates)
    recipe = prepare_recipe(enc, p.recipe, scales=p.scales, calibration=calibration_file(ctx),
                            calib_method=p.calib_method, device=r.device)
    kw = dict(cache_dir=r.cache_dir, batch_size=r.batch_size, device=r.device, progress=ctx.progress,
              workers=r.workers)
    # the exit policy trains and decides on the exit-tap tokens (see lraee train-exits); the scales were
    # counted by the profile stage's INT8 pass over the same calibration images (a cache hit here)
    exit_tap = calibrate_token_tap(enc, recipe, srcs["calibration"], range(1, depth + 1), **kw)
    manifest = []
    plan = [("train", recipe, "train"), ("train", "fp32", "teacher"), ("gating", recipe, "gating"),
            ("eval", recipe, "eval"), ("eval", "fp32", "teacher")]
    for split, prec, role in plan:
        prepared = prec if prec != "fp32" else prepare_recipe(enc, "fp32")
        fs = get_features(enc, srcs[split], prepared, tname, templates, dtype=r.store_dtype,
                          **split_request(role, exit_tap, depth), **kw)
        manifest.append({"split": split, "role": role, "data": srcs[split].name, "precision": prepared.tag,
                         "key": fs.meta["key"]})
        ctx.log(f"  {'reused' if fs.hit else 'built'} {fs.path}")
    path = ctx.dir("features") / "manifest.json"
    atomic.write_json(path, {"entries": manifest})
    return _rel(ctx, path)


def run_exits(ctx: Context) -> list[str]:
    cfg, e, t = ctx.cfg, ctx.cfg.exits, ctx.cfg.thresholds
    out = ctx.dir("exits")
    d = cfg.data
    ctx.cli("train-exits", *model_flags(cfg), *precision_flags(ctx), "--calib-data", calibration_spec(cfg),
            "--tap-calib-n", d.profile_n, "--data", d.source, "--templates", d.templates,
            *(["--classnames", d.classnames] if d.classnames else []),
            *(["--train-data", d.train_source] if d.train_source else []),
            *(["--gating-data", d.gating_source] if d.gating_source else []),
            "--train-n", d.train_n, *(["--gating-n", d.gating_n] if d.gating_n else []),
            "--gating-fraction", e.gating_fraction, "--seeds", e.seeds, "--epochs", e.epochs, "--lr", e.lr,
            "--head-batch-size", e.head_batch_size, "--distill-weight", e.distill_weight, "--gate-l2", e.gate_l2,
            *(["--exit-layers", e.exit_layers] if e.exit_layers else []),
            "--profile", ctx.dir("profile") / "profile.json", "--kappa", e.kappa, "--viability", e.viability,
            "--max-candidates", e.max_candidates, *runtime_flags(ctx), "--out", out)
    ctx.cli("thresholds", "--policy", out, "--budget", t.budget, "--grid", t.grid,
            *(["--with-heads"] if t.with_heads else []))
    return _rel(ctx, out / "policy.json", out / "policy.safetensors", out / "gating.safetensors", out / "pareto.json")


def run_trace(ctx: Context) -> list[str]:
    cfg = ctx.cfg
    out = ctx.dir("trace")
    ctx.cli("exit-report", "--policy", ctx.dir("exits"), *model_flags(cfg), *precision_flags(ctx),
            *data_flags(cfg, "eval", cfg.data.eval_n), *runtime_flags(ctx), "--out", out)
    return _rel(ctx, out / "results.json", out / "trace.csv", out / "trace.meta.json", out / "pareto.png",
                out / "exit_distribution.png", out / "cls_vs_ssa.png")


def run_fixedpoint(ctx: Context) -> list[str]:
    cfg = ctx.cfg
    out = ctx.dir("fixedpoint")
    ctx.cli("validate-exits", "--policy", ctx.dir("exits"), *model_flags(cfg), *precision_flags(ctx),
            *data_flags(cfg, "eval", cfg.data.eval_n), *runtime_flags(ctx), "--target", cfg.fixedpoint.target,
            *(["--gating-data", cfg.data.gating_source] if cfg.data.gating_source else []),
            *(["--gating-n", cfg.data.gating_n] if cfg.data.gating_n else []), "--out", out)
    files = [out / "validate.json", out / "fixedpoint_spec.json"] + sorted(out.glob("*.png"))
    return _rel(ctx, *files)


def run_hls(ctx: Context) -> list[str]:
    cfg, h = ctx.cfg, ctx.cfg.hls
    out = ctx.dir("hls")
    ctx.cli("hls", "--policy", ctx.dir("exits"), "--spec", ctx.dir("fixedpoint") / "fixedpoint_spec.json",
            *model_flags(cfg), *precision_flags(ctx), *data_flags(cfg, "eval", cfg.data.eval_n), *runtime_flags(ctx),
            "--backend", h.backend, "--part", h.part, "--clock-mhz", h.clock_mhz, "--vectors", h.vectors,
            "--out", out)
    return _rel(ctx, out / "hls_report.json")


def rtl_tools() -> list[str]:
    """The open RTL tools installed (part of the rtl stage's key: installing one reruns the stage)."""
    from rtl import tools

    return [t for t in tools.TOOLS if tools.find(t)]


def run_rtl(ctx: Context) -> list[str]:
    """Open RTL of the exit blocks (lraee rtl): Verilator bit-exact check of every block, Yosys counts of the
    gate blocks (the ssa_sav block at d = 128 takes minutes in YoWASP Yosys: `lraee rtl --synth all`); skipped with a
    one-line note (and a small rtl_report.json saying so) when Verilator or Yosys is missing."""
    from rtl import tools
    from rtl.flow import skipped_report

    cfg, h = ctx.cfg, ctx.cfg.hls
    out = ctx.dir("rtl")
    missing = [t for t in tools.TOOLS if not tools.find(t)]
    if missing:
        why = f"{', '.join(missing)} not installed ({tools.INSTALL.format(tool=missing[0])})"
        ctx.log(f"rtl: skipped: {why}")
        skipped_report(out, missing, why)
        return _rel(ctx, out / "rtl_report.json")
    ctx.cli("rtl", "--policy", ctx.dir("exits"), "--spec", ctx.dir("fixedpoint") / "fixedpoint_spec.json",
            *model_flags(cfg), *precision_flags(ctx), *data_flags(cfg, "eval", cfg.data.eval_n), *runtime_flags(ctx),
            "--part", h.part, "--vectors", h.vectors, "--synth", "gate", "--out", out)
    return _rel(ctx, out / "rtl_report.json")


def run_hwsim(ctx: Context) -> list[str]:
    """Replay the trace on the accelerator (exit unit cost from hls_report.json) and sweep the DSE
    space over accelerator configs x the policy's Pareto threshold sets."""
    cfg = ctx.cfg
    out = ctx.dir("hwsim")
    arch_src = Path(cfg.hwsim.arch) if cfg.hwsim.arch else HWSIM_CONFIGS / "arch.yaml"
    from common.readers import read_yaml

    arch = read_yaml(arch_src, "hwsim.arch") or {}
    arch.setdefault("exit_unit", {})["hls_report"] = "../hls/hls_report.json"  # relative to this file
    arch_path = out / "arch.yaml"
    atomic.write_text(arch_path, yaml.safe_dump(arch, sort_keys=False))
    space_src = Path(cfg.hwsim.space) if cfg.hwsim.space else HWSIM_CONFIGS / "space.yaml"
    space = read_yaml(space_src, "hwsim.space") or {}
    space["base"] = "arch.yaml"  # relative to the space file
    space_path = out / "space.yaml"
    atomic.write_text(space_path, yaml.safe_dump(space, sort_keys=False))
    trace = ctx.dir("trace") / "trace.csv"
    ctx.cli("sim", "--arch", arch_path, "--trace", trace, "--out", out / "sim")
    ctx.cli("dse", "--space", space_path, "--trace", trace, "--policies", ctx.dir("exits") / "pareto.json",
            "--max-configs", cfg.hwsim.max_configs, "--workers", cfg.runtime.dse_workers or default_dse_workers(),
            "--out", out / "dse",
            *([] if ctx.progress else ["--no-progress"]))
    # static / regroup / stream / pipelined (equal PEs) side by side, service latency at a stated load
    from hwsim.compare import variants

    meta = json.loads((ctx.dir("trace") / "trace.meta.json").read_text())
    for name, (a, flags) in variants(arch, meta["candidate_layers"], meta["depth"]).items():
        atomic.write_text(out / f"arch_{name}.yaml", yaml.safe_dump(a, sort_keys=False))
        ctx.cli("sim", "--arch", out / f"arch_{name}.yaml", "--trace", trace, "--out", out / "compare" / name,
                "--load", cfg.hwsim.load, "--load-sweep", "none", *flags)
    files = [p for p in sorted((out / "sim").iterdir()) + sorted((out / "dse").iterdir())
             + sorted((out / "compare").glob("*/summary.json")) if p.is_file()]
    return _rel(ctx, *files)


def run_report(ctx: Context) -> list[str]:
    from analysis.pipeline.report import write_report

    return _rel(ctx, *write_report(ctx))


def _s(*sections):
    return lambda cfg: {s: getattr(cfg, s).model_dump() for s in sections}


STAGE_LIST = [
    Stage("model", (), _s("model"), run_model, "encoder weights and geometry"),
    Stage("calibration", ("model",), _s("model", "precision", "data", "runtime"), run_calibration,
          "calibrate the static INT8 recipe"),
    Stage("profile", ("calibration",), _s("data"), run_profile, "QIRC noise profile vs FP32"),
    Stage("features", ("calibration",), _s("data", "runtime"), run_features,
          "feature cache of the train, gating and eval splits"),
    Stage("exits", ("profile", "features"), _s("exits", "thresholds"), run_exits,
          "exit heads, gates, candidate layers, LCT thresholds (every seed)"),
    Stage("trace", ("exits",), lambda cfg: {}, run_trace, "eval split: exit trace, baselines, analyses"),
    Stage("fixedpoint", ("exits",), _s("fixedpoint"), run_fixedpoint,
          "fixed-point exit unit: width search and validation against the float policy"),
    Stage("hls", ("fixedpoint",), _s("hls"), run_hls, "hls4ml exit blocks, C-simulation, resource estimates"),
    Stage("rtl", ("fixedpoint",), lambda cfg: {**_s("hls")(cfg), "tools": rtl_tools()}, run_rtl,
          "open RTL of the exit blocks: Verilator bit-exact check, Yosys synth_xilinx counts"),
    Stage("hwsim", ("trace", "hls"), _s("hwsim"), run_hwsim, "systolic-array replay and DSE sweep"),
    Stage("report", ("profile", "trace", "fixedpoint", "hls", "rtl", "hwsim"), lambda cfg: {}, run_report,
          "report.html and report.md"),
]
