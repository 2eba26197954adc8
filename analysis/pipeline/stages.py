"""The stages of ``lraee run`` (see :mod:`analysis.pipeline.runner`), each a thin wrapper around the
workflow functions (:mod:`analysis.workflows`) with the run config's sections; files where
:class:`analysis.pipeline.artifacts.RunFiles` says."""
from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from common import atomic
from common.errors import InputError
from analysis.pipeline.config import RunConfig
from analysis.pipeline.datasets import role_specs
from analysis import workflows as wf
from analysis.pipeline.runner import Context, Stage

HWSIM_CONFIGS = Path(__file__).resolve().parents[2] / "hwsim" / "configs"


# ---- helpers ---------------------------------------------------------------------------------
def calibration_file(ctx: Context) -> Path:
    return ctx.files.calibration


def default_dse_workers() -> int:
    """DSE processes when ``runtime.dse_workers`` is unset: the CPUs this process may use."""
    from common.threads import cpu_count

    return cpu_count()


def _rel(ctx: Context, *paths: Path) -> list[str]:
    """Result files as paths relative to the run folder (the runner's working directory)."""
    return [str(Path(p)) for p in paths]


# ---- stages --------------------------------------------------------------------------------
def run_model(ctx: Context) -> list[str]:
    """Check (or rebuild) the encoder weights; write model.json (name, weights hash, geometry)."""
    from quant.encoder import TINY_WEIGHTS

    m = ctx.cfg.model
    if m.name in ("tiny", "lraee-tiny") and m.pretrained is None and not TINY_WEIGHTS.is_file():
        from analysis.train_tiny import SHIPPED_RECIPE, train_recipe

        ctx.log(f"shipped tiny weights missing at {TINY_WEIGHTS}: retraining them (lraee train-tiny)")
        train_recipe(SHIPPED_RECIPE, TINY_WEIGHTS)
    enc = wf.backbone(ctx.session, m)
    rec = {"model": enc.name, "pretrained": str(enc.pretrained) if enc.pretrained else None,
           "weights_sha256": enc.weights_sha256(), "geometry": enc.geometry.to_dict()}
    path = ctx.files.model_json
    atomic.write_json(path, rec)
    geo = ctx.files.geometry_json
    atomic.write_json(geo, enc.geometry.to_dict())
    return _rel(ctx, path, geo)


def calibration_spec(cfg: RunConfig) -> str:
    """The calibration images' source spec (opened as split ``calibration``; see :mod:`.datasets`)."""
    return role_specs(cfg)["calibration"].spec


def run_calibration(ctx: Context) -> list[str]:
    out = ctx.files.calibration
    wf.calibrate(ctx.session, ctx.cfg.model, ctx.cfg.precision, ctx.cfg.data, out)
    return _rel(ctx, out, ctx.files.calibration_json)


def run_profile(ctx: Context) -> list[str]:
    cfg = ctx.cfg
    wf.profile(ctx.session, cfg.model, cfg.precision, cfg.data, ctx.dir("profile"), ctx.files.calibration)
    return _rel(ctx, ctx.files.profile_json, ctx.files.profile_png)


def run_features(ctx: Context) -> list[str]:
    """Build the store of every split and precision the later stages read, one backbone pass each (one
    encoder, one prepared recipe; exit-tap scales from the profile stage's pass); write a manifest."""
    from analysis.pipeline.datasets import check_sources

    cfg = ctx.cfg
    manifest = wf.features(ctx.session, cfg.model, cfg.precision, cfg.data, calibration_file(ctx),
                           sources=check_sources(cfg))
    path = ctx.files.features_manifest
    atomic.write_json(path, {"entries": manifest})
    return _rel(ctx, path)


def run_exits(ctx: Context) -> list[str]:
    cfg, f = ctx.cfg, ctx.files
    wf.train_exits(ctx.session, cfg.model, cfg.precision, cfg.data, cfg.exits, f.policy, calibration=f.calibration,
                   profile_json=f.profile_json)
    wf.thresholds(f.policy, cfg.thresholds, log=ctx.log)
    return _rel(ctx, *f.policy_files)


def run_trace(ctx: Context) -> list[str]:
    f = ctx.files
    wf.exit_report(ctx.session, f.policy, ctx.dir("trace"))
    return _rel(ctx, f.results_json, f.trace_csv, f.trace_meta, *(f.trace_plot(n) for n in f.TRACE_PLOTS))


def run_sweep(ctx: Context) -> list[str]:
    """The precision x exit sweep (``precision.sweep``): every recipe but the run's own gets its calibration,
    profile, policy and eval trace under sweep/<recipe>/; the run's own recipe reuses the main stages' files."""
    cfg, f = ctx.cfg, ctx.files
    if not cfg.precision.sweep:
        ctx.log("sweep: off (precision.sweep is empty)")
        return []
    from quant.recipes import parse_precision

    main = parse_precision(cfg.precision.recipe, cfg.precision.scales).name
    reuse = {main: {"results": f.results_json, "profile": f.profile_json, "trace": f.trace_csv,
                    "pareto": f.pareto_json}}
    wf.precision_sweep(ctx.session, cfg.model, cfg.precision, cfg.data, cfg.exits, cfg.thresholds,
                       cfg.precision.sweep, f.sweep, reuse=reuse)
    files = [p for p in sorted(f.sweep.rglob("*")) if p.is_file() and p.suffix in (".json", ".csv", ".png")]
    return _rel(ctx, *files)


def run_adavit(ctx: Context) -> list[str]:
    """The AdaViT baseline at LRA-EE's measured FLOPs saving (the trace stage's results), on the policy's frozen
    INT8 backbone; off with ``adavit.enabled: false``."""
    f = ctx.files
    if not ctx.cfg.adavit.enabled:
        ctx.log("adavit: off (adavit.enabled is false)")
        return []
    wf.adavit(ctx.session, f.policy, ctx.dir("adavit"), ctx.cfg.adavit, results_json=f.results_json)
    return _rel(ctx, f.adavit_json)


def run_fixedpoint(ctx: Context) -> list[str]:
    f = ctx.files
    wf.validate_exits(ctx.session, f.policy, ctx.dir("fixedpoint"), ctx.cfg.fixedpoint)
    return _rel(ctx, f.validate_json, f.fixedpoint_spec, *f.fixedpoint_plots())


def run_hls(ctx: Context) -> list[str]:
    """hls4ml blocks, C-simulated on the eval exit-tap vectors; the rtl stage's Yosys counts merged in when it ran."""
    f = ctx.files
    rtl = f.rtl_report if _rtl_ran(f.rtl_report) else None
    rep = wf.hls_blocks(ctx.session, f.policy, ctx.dir("hls"), ctx.cfg.hls, spec=f.fixedpoint_spec, rtl_report=rtl)
    _exact("hls: C-simulation", rep, f.hls_report)
    return _rel(ctx, f.hls_report)


def _exact(what: str, report: dict, path: Path) -> None:
    """Stop the pipeline when a simulated block differs from the fixed-point unit (or misses its latency)."""
    if (report.get("exact_match") is not None and report["exact_match"] < 1.0) or report.get("latency_ok") is False:
        raise InputError(f"{what} differs from the fixed-point model (exact-match {report.get('exact_match')}, "
                         f"latency as stated: {report.get('latency_ok', True)}); see {path}")


def _rtl_ran(path: Path) -> bool:
    """True when the rtl stage wrote a full report (not the one saying it was skipped)."""
    return path.is_file() and json.loads(path.read_text()).get("status") == "done"


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

    h = ctx.cfg.hls
    out = ctx.dir("rtl")
    missing = [t for t in tools.TOOLS if not tools.find(t)]
    if missing:
        why = f"{', '.join(missing)} not installed ({tools.INSTALL.format(tool=missing[0])})"
        ctx.log(f"rtl: skipped: {why}")
        skipped_report(out, missing, why)
        return _rel(ctx, out / "rtl_report.json")
    rep = wf.rtl_blocks(ctx.session, ctx.files.policy, out, h, spec=ctx.files.fixedpoint_spec, synth="gate")
    _exact("rtl: Verilator simulation", rep, ctx.files.rtl_report)
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
    f = ctx.files
    wf.simulate(f.trace_csv, f.sim, arch_path, log=ctx.log)
    traces, pareto = dse_traces(ctx)
    wf.dse(space_path, traces, f.dse, policies=pareto, max_configs=cfg.hwsim.max_configs,
           workers=cfg.runtime.dse_workers or default_dse_workers(), progress=ctx.progress, log=ctx.log,
           policy_points=cfg.hwsim.policy_points)
    # static / regroup / stream / pipelined (equal PEs) side by side, service latency at a stated load
    from hwsim.compare import variants

    meta = json.loads(f.trace_meta.read_text())
    for name, (a, flags) in variants(arch, meta["candidate_layers"], meta["depth"]).items():
        atomic.write_text(out / f"arch_{name}.yaml", yaml.safe_dump(a, sort_keys=False))
        wf.simulate(f.trace_csv, f.compare(name), out / f"arch_{name}.yaml", load=cfg.hwsim.load, loads=(),
                    flags=flags, log=ctx.log)
    files = [p for p in sorted(f.sim.iterdir()) + sorted(f.dse.iterdir())
             + sorted((out / "compare").glob("*/summary.json")) if p.is_file()]
    return _rel(ctx, *files)


def dse_traces(ctx: Context) -> tuple[list[Path], list[Path]]:
    """The DSE's traces and their Pareto files: the run's own, then every other recipe of the sweep (one front
    across precisions)."""
    f = ctx.files
    traces, pareto = [f.trace_csv], [f.pareto_json]
    if ctx.cfg.precision.sweep and f.sweep_json.is_file():
        for row in json.loads(f.sweep_json.read_text())["rows"]:
            t, p = (f.sweep / row["files"]["trace"]).resolve(), (f.sweep / row["files"]["pareto"]).resolve()
            if t != f.trace_csv.resolve():
                traces.append(Path(os.path.relpath(t)))
                pareto.append(Path(os.path.relpath(p)))
    return traces, pareto


def run_report(ctx: Context) -> list[str]:
    from analysis.pipeline.report import write_report

    return _rel(ctx, *write_report(ctx))


def _dump(cfg: RunConfig, section: str) -> dict:
    """A section as a stage key reads it (``precision.sweep`` keys the sweep stage only, not the backbone's)."""
    sec = getattr(cfg, section)
    return sec.backbone_dump() if section == "precision" else sec.model_dump()


def _s(*sections):
    return lambda cfg: {s: _dump(cfg, s) for s in sections}


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
    Stage("sweep", ("profile", "features", "trace"),
          lambda cfg: {"sweep": cfg.precision.sweep, **_s("model", "precision", "data", "runtime", "exits",
                                                             "thresholds")(cfg)},
          run_sweep, "precision x exit sweep: calibration, profile, policy and trace per recipe"),
    Stage("adavit", ("exits", "trace"), _s("adavit", "runtime"), run_adavit,
          "AdaViT baseline at LRA-EE's FLOPs saving (Gumbel-softmax decision networks, INT8 backbone frozen)"),
    Stage("fixedpoint", ("exits",), _s("fixedpoint"), run_fixedpoint,
          "fixed-point exit unit: width search and validation against the float policy"),
    Stage("rtl", ("fixedpoint",), lambda cfg: {**_s("hls")(cfg), "tools": rtl_tools()}, run_rtl,
          "open RTL of the exit blocks: Verilator bit-exact check, Yosys synth_xilinx counts"),
    Stage("hls", ("fixedpoint", "rtl"), _s("hls"), run_hls,
          "hls4ml exit blocks, C-simulation, resource estimates beside the Yosys counts"),
    Stage("hwsim", ("trace", "hls", "sweep"), lambda cfg: {**_s("hwsim")(cfg), "sweep": cfg.precision.sweep},
          run_hwsim, "systolic-array replay and DSE sweep (one front across the sweep's precisions)"),
    Stage("report", ("profile", "trace", "sweep", "adavit", "fixedpoint", "hls", "rtl", "hwsim"), lambda cfg: {},
          run_report,
          "report.html and report.md"),
]
