"""The workflow API: one typed function per step of the LRA-EE co-design flow.

Each step takes the settings sections of :mod:`analysis.settings` (the same objects ``lraee run``
reads from YAML and every command fills from its flags), writes its files, and returns what a
caller needs next (paths, a policy, a result dict). The ``lraee`` commands and the pipeline stages
are thin wrappers around these functions; a notebook calls them directly::

    from analysis import workflows as wf
    from analysis.settings import DataCfg, ExitsCfg, ModelCfg, PrecisionCfg, RuntimeCfg, ThresholdsCfg

    s = wf.Session(RuntimeCfg(), progress=False)
    model, prec, data = ModelCfg(), PrecisionCfg(recipe="w8a8"), DataCfg(train_n=2000, eval_n=500)
    cal = wf.calibrate(s, model, prec, data, "out/calibration.safetensors")
    policy = wf.train_exits(s, model, prec, data, ExitsCfg(seeds=1, epochs=2), "out/policy", calibration=cal.path)
    wf.thresholds(policy.path, ThresholdsCfg())
    results = wf.exit_report(s, policy.path, "out/trace")          # model, recipe and data come from the policy

A :class:`Session` holds what steps share inside one process: the loaded encoder and the prepared
recipes (loaded once per pipeline run, not once per step) and the runtime settings.

Data roles (:mod:`analysis.pipeline.datasets`): ``eval`` (``data.source``), ``train``, ``gating`` and
``calibration`` (never the eval images). A policy records the model, precision and data settings it
was trained with (``policy.json`` -> ``settings``); the downstream steps (:func:`exit_report`,
:func:`validate_exits`) take them from there, and settings passed explicitly are overrides, checked
against the policy (same weights and recipe, by content hash, before any backbone pass).
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from analysis.settings import (AdaViTCfg, DataCfg, ExitsCfg, FixedPointCfg, HlsCfg, ModelCfg, PrecisionCfg,
                               RuntimeCfg, ThresholdsCfg, clock_period_ns)
from common.errors import InputError
from common.timing import span


# ---- the session: what steps share in one process ---------------------------------------------
class Session:
    """Runtime settings plus the encoder and prepared recipes loaded so far (keyed by their settings).

    ``progress``: show progress bars; ``log``: where one-line status messages go.
    """

    def __init__(self, runtime: RuntimeCfg | None = None, progress: bool = True, log: Callable[[str], None] = print):
        self.runtime = runtime or RuntimeCfg()
        self.progress = progress
        self.log = log
        self._encoders: dict = {}
        self._recipes: dict = {}

    def encoder(self, model: ModelCfg):
        """The loaded open_clip encoder of ``model`` (:class:`quant.encoder.LoadedEncoder`), loaded once."""
        from quant.encoder import load_encoder

        key = (model.name, model.pretrained, model.force_quick_gelu, self.runtime.device)
        if key not in self._encoders:
            self._encoders[key] = load_encoder(model.name, model.pretrained, device=self.runtime.device,
                                               force_quick_gelu=model.force_quick_gelu)
        return self._encoders[key]

    def recipe(self, enc, precision: PrecisionCfg, calibration: str | Path | None = None,
               data: DataCfg | None = None):
        """The prepared recipe of ``precision`` (:class:`quant.prepare.PreparedRecipe`), built once.

        A static INT8 recipe reads ``calibration`` (a saved calibration file) or, without one, is
        calibrated on ``precision.calib_n`` images of the calibration role of ``data`` (cached on disk by
        :func:`quant.prepare.prepare_recipe`)."""
        from quant.prepare import prepare_recipe
        from quant.recipes import parse_precision

        recipe = parse_precision(precision.recipe, precision.scales)
        key = (id(enc), repr(precision.backbone_dump()), os.path.abspath(calibration) if calibration else None,
               data.model_dump_json() if data is not None and calibration is None else None)
        if key in self._recipes:
            return self._recipes[key]
        calib = None
        if recipe.needs_calibration and calibration is None:
            from analysis.data.loader import calibration_images

            calib = calibration_images(enc, calibration_spec(data or DataCfg()), precision.calib_n,
                                       self.runtime.workers)
        r = self.runtime
        prepared = prepare_recipe(enc, recipe, calibration=calibration, calib_method=precision.calib_method,
                                  calib_images=calib, engine=precision.engine, batch_size=r.batch_size,
                                  device=r.device, progress=self.progress)
        self._recipes[key] = prepared
        return prepared

    def fp32(self, enc):
        """The FP32 recipe of ``enc`` (the teacher and the baseline)."""
        return self.recipe(enc, PrecisionCfg(recipe="fp32"))

    def store_kwargs(self, with_dtype: bool = True) -> dict:
        """Keywords of :func:`analysis.features.get_features` (and, without dtype, of the tap calibration)."""
        from analysis.features import DEFAULT_CACHE_DIR

        r = self.runtime
        kw = dict(cache_dir=Path(r.cache_dir) if r.cache_dir else DEFAULT_CACHE_DIR, batch_size=r.batch_size,
                  device=r.device, progress=self.progress, workers=r.workers)
        if with_dtype:
            kw["dtype"] = r.store_dtype
        return kw


# ---- data roles --------------------------------------------------------------------------------
def calibration_spec(data: DataCfg) -> str:
    """The calibration images' source spec (opened as split ``calibration``): ``data.calibration_source``,
    else the train source (never the eval images)."""
    from analysis.pipeline.datasets import role_specs

    return role_specs(data)["calibration"].spec


def open_role(data: DataCfg, role: str, n: int | None = None, eval_source=None):
    """The images of ``role`` (eval, train, gating, calibration; :mod:`analysis.pipeline.datasets`)."""
    from analysis.pipeline.datasets import open_role as _open

    return _open(data, role, n, eval_source)


def _templates(data: DataCfg):
    from analysis.templates import resolve_templates

    return resolve_templates(data.templates)


def _static(precision: PrecisionCfg, why: str):
    """The parsed recipe; refused when it is FP32 (``why`` says what needs a quantized backbone)."""
    from quant.recipes import parse_precision

    recipe = parse_precision(precision.recipe, precision.scales)
    if recipe.kind == "fp32":
        from quant.recipes import quantized_allowed_text

        raise InputError(f"--precision fp32: {why}; allowed: {quantized_allowed_text()}")
    return recipe


# ---- steps -------------------------------------------------------------------------------------
def backbone(session: Session, model: ModelCfg):
    """Load (once per session) the encoder of ``model``; returns :class:`quant.encoder.LoadedEncoder`."""
    return session.encoder(model)


@dataclass(frozen=True)
class Calibration:
    """A saved calibration: ``path`` (.safetensors, a .json sidecar beside it), its ``meta`` (the sidecar)
    and, when checked, the bit-accuracy ``exactness`` summary (:func:`quant.exactness.summary`)."""

    path: Path
    meta: dict
    exactness: dict | None = None


def calibrate(session: Session, model: ModelCfg, precision: PrecisionCfg, data: DataCfg, out: str | Path,
              check_exact: bool = False) -> Calibration:
    """Calibrate a static INT8 recipe on ``precision.calib_n`` images of the calibration role and save its
    state to ``out`` (``.safetensors`` + ``.json`` sidecar). With ``check_exact``, also prove bit accuracy
    on one calibration image (``FILE.exactness.json``)."""
    from analysis.data.loader import calibration_images
    from quant.prepare import run_calibration
    from quant.recipes import parse_precision

    out = Path(out)
    recipe = parse_precision(precision.recipe, precision.scales)
    if not recipe.needs_calibration:
        from quant.recipes import static_allowed_text

        raise InputError(f"--precision {precision.recipe}: {recipe.name} needs no calibration; "
                         f"allowed: {static_allowed_text()}")
    enc = session.encoder(model)
    spec = calibration_spec(data)
    r = session.runtime
    qv, meta = run_calibration(enc, recipe, precision.calib_method,
                               calibration_images(enc, spec, precision.calib_n, r.workers),
                               r.batch_size, r.device, progress=session.progress, out=out)
    session.log(f"calibrated {enc.name} {recipe.name} ({recipe.scales} scales, {precision.calib_method}) on "
                f"{meta['n']} images of {meta['data']}; state {meta['state_sha256'][:12]} -> {out} (+ .json)")
    if check_exact:
        from common import atomic
        from analysis.data.loader import image_batches
        from analysis.data.sources import open_source
        from quant.exactness import check_exactness, summary

        _, x = next(image_batches(enc, open_source(spec, "calibration", 1), 1))
        s = summary(check_exactness(qv, x))
        s.update({"model": enc.name, "recipe": recipe.descriptor(), "calibration_file": str(out), "images": 1})
        path = out.with_name(out.name[: -len(".safetensors")] + ".exactness.json")
        atomic.write_json(path, s)
        session.log(f"bit accuracy: {s['layers']} quantized layers/matmuls, all exact: {s['all_exact']}, worst ULP "
                    f"{s['ulp_max']:.3g}, widest accumulator {s['acc_bits_max']} bits -> {path}")
        return Calibration(out, meta, s)
    return Calibration(out, meta)


def profile(session: Session, model: ModelCfg, precision: PrecisionCfg, data: DataCfg, out: str | Path,
            calibration: str | Path | None = None, source=None, split: str = "calibration") -> dict:
    """QIRC profile of the recipe vs FP32 on ``data.profile_n`` calibration images (or ``source``, opened as
    split ``split``): writes
    ``out/profile.json`` and ``out/profile.png``, and caches the exit-tap scales counted in the same pass.
    Returns the profile record (one entry per block in ``blocks``)."""
    from tqdm import tqdm

    from common import atomic
    from analysis.data.loader import image_batches
    from analysis.features import save_token_tap
    from quant.profile import plot_profile, qirc_profile
    from quant.tap import TAP_PERCENTILE, TapScaleCounter

    out = Path(out)
    recipe = _static(precision, "the profile compares a quantized recipe with FP32")
    source = source if source is not None else open_role(data, "calibration", data.profile_n)
    if len(source) == 0:
        raise InputError(f"--n {len(source)}: no images to profile; allowed: a positive number")
    enc = session.encoder(model)
    prepared = session.recipe(enc, precision, calibration, data)
    r = session.runtime
    bar = tqdm(total=len(source), desc=f"profile {prepared.tag}", unit="img", disable=not session.progress)
    counter = TapScaleCounter(range(1, enc.geometry.depth + 1), TAP_PERCENTILE)
    prof = qirc_profile(enc.model.visual, prepared,
                        (x.to(r.device) for _, x in image_batches(enc, source, r.batch_size, workers=r.workers,
                                                                  device=r.device)),
                        enc.geometry.depth, bar, observe=counter.update_taps)
    bar.close()
    save_token_tap(enc, prepared, source, counter, session.store_kwargs()["cache_dir"])
    record = {"model": enc.name, "pretrained": enc.pretrained, "precision": recipe.name,
              "recipe": prepared.descriptor(), "engine": prepared.engine,
              "calibration_file": prepared.calibration_path, "dataset": source.name, "split": split,
              "n": prof["n"], "depth": enc.geometry.depth, "cos_embedding": prof["cos_embedding"],
              "definitions": "see quant/profile.py (Eq. 1 and 5 of the paper)", "blocks": prof["blocks"]}
    out.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(out / "profile.png") as tmp:
        plot_profile(prof, tmp, f"QIRC profile: {enc.name} {prepared.tag} vs FP32, {source.name} (n={prof['n']})")
    atomic.write_json(out / "profile.json", record)
    return record


def exit_tap(session: Session, enc, prepared, data: DataCfg):
    """The exit-tap quantizer of every block (:class:`quant.tap.TokenTap`): scales counted on
    ``data.profile_n`` calibration images (a cache hit after :func:`profile` on the same images)."""
    from analysis.features import calibrate_token_tap

    return calibrate_token_tap(enc, prepared, open_role(data, "calibration", data.profile_n),
                               range(1, enc.geometry.depth + 1), **session.store_kwargs(with_dtype=False))


def features(session: Session, model: ModelCfg, precision: PrecisionCfg, data: DataCfg,
             calibration: str | Path | None = None, roles=("train", "teacher", "gating", "eval", "eval-fp32"),
             sources: dict | None = None) -> list[dict]:
    """Build (or reuse) the feature store of every split and precision the later steps read: one backbone
    pass each, the exit-tap sums from the same pass, a split's images decoded once for all its stores.
    ``roles``: train (INT8, exit tap), teacher (train, FP32 embedding), gating (INT8, exit tap), eval (INT8,
    exit tap + token vectors), eval-fp32 (eval, FP32 baseline). Returns one manifest entry per store (split,
    role, data, precision, content key)."""
    from analysis.features import get_feature_sets, split_request

    enc = session.encoder(model)
    depth = enc.geometry.depth
    tname, templates = _templates(data)
    prepared = session.recipe(enc, precision, calibration, data)
    tap = exit_tap(session, enc, prepared, data)
    if sources is None:
        from analysis.pipeline.datasets import check_sources

        sources = check_sources(data)
    plan = {"train": ("train", prepared, "train"), "teacher": ("train", None, "teacher"),
            "gating": ("gating", prepared, "gating"), "eval": ("eval", prepared, "eval"),
            "eval-fp32": ("eval", None, "teacher")}
    by_split: dict[str, list] = {}  # the stores of one split are built in one pass over its images
    for name in roles:
        split, prec, role = plan[name]
        by_split.setdefault(split, []).append((role, prec if prec is not None else session.fp32(enc)))
    manifest = []
    for split, wanted in by_split.items():
        sets = get_feature_sets(enc, sources[split], [{"precision": prec, **split_request(role, tap, depth)}
                                                      for role, prec in wanted], tname, templates,
                                **session.store_kwargs())
        for (role, prec), fs in zip(wanted, sets):
            manifest.append({"split": split, "role": role, "data": sources[split].name, "precision": prec.tag,
                             "key": fs.meta["key"]})
            session.log(f"  {'reused' if fs.hit else 'built'} {fs.path}")
    return manifest


def read_inr(path: str | Path, depth: int) -> dict[int, float]:
    """INR per block from a QIRC ``profile.json``; one-line InputError when unreadable or incomplete."""
    from common.readers import read_json

    path = Path(path)
    rec = read_json(path, allowed="profile.json written by `lraee profile`")
    try:
        inr = {int(b["block"]): float(b["inr"]) for b in rec["blocks"]}
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{path}: blocks[].inr: unreadable ({e}); allowed: profile.json of `lraee profile`") from None
    missing = [L for L in range(1, depth) if L not in inr]
    if missing:
        raise InputError(f"{path}: blocks: no INR for blocks {missing}; allowed: a profile of this {depth}-block model")
    return inr


def policy_settings(model: ModelCfg, precision: PrecisionCfg, data: DataCfg, calibration, policy_dir: Path) -> dict:
    """What a policy records of its backbone: the model, precision and data settings, and the calibration
    file relative to the policy folder (so a policy folder moved with its run folder still resolves)."""
    cal = None
    if calibration is not None:
        cal = os.path.relpath(Path(calibration).resolve(), Path(policy_dir).resolve())
    return {"model": model.model_dump(), "precision": precision.backbone_dump(), "data": data.model_dump(),
            "calibration": cal}


def train_exits(session: Session, model: ModelCfg, precision: PrecisionCfg, data: DataCfg, exits: ExitsCfg,
                out: str | Path, calibration: str | Path | None = None, profile_json: str | Path | None = None,
                use_exit_tap: bool = True):
    """Exit heads of every block (SSA distilled, SSA hard, CLS) per seed, the candidate layers (INR pruning on
    ``profile_json``, computed on the calibration images when None, or ``exits.exit_layers``) and the
    3-feature gates on the gating split: the policy folder ``out`` (policy.json, policy.safetensors,
    gating.safetensors). Returns the loaded :class:`exitlogic.artifacts.Policy`."""
    from analysis.exits import train_exits as _train
    from analysis.features import get_feature_sets, get_features, split_request
    from exitlogic.artifacts import load_policy
    from exitlogic.heads import HeadTrainConfig
    from exitlogic.pruning import parse_exit_layers

    out = Path(out)
    recipe = _static(precision, "exit heads are trained on a quantized backbone")
    tname, templates = _templates(data)
    enc = session.encoder(model)
    depth = enc.geometry.depth
    exit_layers = None
    if exits.exit_layers is not None:
        try:
            exit_layers = parse_exit_layers(exits.exit_layers, depth)
        except ValueError as e:
            raise InputError(str(e)) from None
    ref = open_role(data, "eval", None)
    train_src = open_role(data, "train", eval_source=ref)
    gating_src = open_role(data, "gating", eval_source=ref)
    if train_src.classes != gating_src.classes:
        raise InputError(f"--gating-data {gating_src.name}: classes differ from the training data's; "
                         "allowed: the same class list")
    t0 = time.time()
    prepared = session.recipe(enc, precision, calibration, data)
    kw = session.store_kwargs()
    tap = exit_tap(session, enc, prepared, data) if use_exit_tap else None
    train_fs, teacher_fs = get_feature_sets(enc, train_src, [
        {"precision": prepared, **split_request("train", tap, depth)},
        {"precision": session.fp32(enc), **split_request("teacher", None, depth)}], tname, templates, **kw)
    gating_fs = get_features(enc, gating_src, prepared, tname, templates, **split_request("gating", tap, depth), **kw)
    session.log(f"features ready in {time.time() - t0:.1f} s (train {len(train_src)}, gating {len(gating_src)})")
    inr = None
    if exit_layers is None:
        if profile_json is None:
            profile(session, model, precision, data, out, calibration)
            profile_json = out / "profile.json"
            session.log(f"QIRC profile on the calibration images -> {profile_json}")
        inr = read_inr(profile_json, depth)
    cfg = HeadTrainConfig(epochs=exits.epochs, lr=exits.lr, batch_size=exits.head_batch_size,
                          distill_weight=exits.distill_weight, dtype=exits.head_dtype)
    provenance = {"model": enc.name, "pretrained": enc.pretrained, "precision": recipe.name,
                  "recipe": prepared.descriptor(), "calibration_file": prepared.calibration_path,
                  "templates": tname, "exit_tap": None if tap is None else {
                      **tap.descriptor(), "quantization_point": tap.QUANTIZATION_POINT},
                  "settings": policy_settings(model, precision, data, calibration, out)}
    meta = _train(train_fs, teacher_fs, gating_fs, enc.geometry, out, list(range(exits.seeds)), cfg, inr,
                  exit_layers, exits.kappa, exits.viability, exits.max_candidates, exits.gating_fraction,
                  exits.gate_l2, provenance, device=session.runtime.device, progress=session.progress,
                  log=session.log)
    acc = meta["candidates"]["head_accuracy"]
    session.log("gating top-1 of the SSA heads (mean over seeds): " +
                " ".join(f"L{k}={100 * v:.1f}%" for k, v in acc.items()))
    session.log(f"candidate layers {meta['candidates']['candidate_layers']}; wrote {out / 'policy.json'}")
    return load_policy(out)


def thresholds(policy_dir: str | Path, settings: ThresholdsCfg, log: Callable[[str], None] = print) -> dict:
    """LCT thresholds per seed and policy under ``settings.budget`` on the threshold grid, written into
    ``policy_dir/policy.json``, and the LRA-EE Pareto set to ``policy_dir/pareto.json``; returns them."""
    from analysis.exits import choose_thresholds
    from exitlogic.policy import check_grid_size, parse_grid
    from exitlogic.artifacts import load_policy

    grid = parse_grid(settings.grid)
    policy = load_policy(policy_dir)
    check_grid_size(settings.grid, grid, len(policy.candidate_layers), policy.path)
    th = choose_thresholds(policy, settings.budget, grid, settings.with_heads)
    for s, by in th["by_seed"].items():
        for name, rec in by.items():
            taus = " ".join(f"tau{L}={t:.2f}" for L, t in rec["thresholds"].items())
            log(f"seed {s} {name:<22} {taus}  gating top-1 {100 * rec['accuracy_gating']:.2f}%  "
                f"saving {100 * rec['flops_saving_gating']:.2f}%  ({len(rec['pareto'])} Pareto points)")
    return th


# ---- downstream steps: the policy carries its backbone -----------------------------------------
def backbone_of(policy, model: ModelCfg | None = None, precision: PrecisionCfg | None = None,
                data: DataCfg | None = None):
    """(model, precision, data, calibration) of a policy: its recorded settings, each replaced by the
    override given. A model or recipe override that differs from the policy's is refused (the heads
    were trained on that backbone); a data override is how a policy is evaluated on other images."""
    rec = policy.meta.get("settings")
    if rec is None:  # a policy from before settings were recorded: everything must be given
        if model is None or precision is None or data is None:
            raise InputError(f"{policy.path / 'policy.json'}: settings: missing (a policy written before lraee "
                             "recorded its backbone); allowed: give --model, --precision and --data")
        return model, precision, data, None
    pm, pp, pd = ModelCfg(**rec["model"]), PrecisionCfg(**rec["precision"]), DataCfg(**rec["data"])
    for flag, given, own, fields in (("--model", model, pm, ("name", "pretrained", "force_quick_gelu")),
                                     ("--precision", precision, pp, ("recipe", "scales", "calib_method"))):
        if given is None:
            continue
        diff = [f for f in fields if getattr(given, f) != getattr(own, f)]
        if diff:
            raise InputError(f"{flag}: {', '.join(f'{f}={getattr(given, f)!r}' for f in diff)} differs from the "
                             f"policy's {', '.join(f'{f}={getattr(own, f)!r}' for f in diff)} "
                             f"({policy.path / 'policy.json'}); allowed: the backbone the policy was trained on")
    cal = rec.get("calibration")
    if cal is not None:
        cal = Path(os.path.normpath(policy.path / cal))
        if not cal.is_file():
            raise InputError(f"{policy.path / 'policy.json'}: settings.calibration: {cal}: file not found; "
                             "allowed: the calibration file the policy was trained with (give --calibration)")
    return model or pm, precision or pp, data or pd, cal


def thresholded_policy(policy_dir):
    from exitlogic.artifacts import load_policy

    policy = load_policy(policy_dir)
    if policy.meta.get("thresholds") is None:
        raise InputError(f"{policy.path / 'policy.json'}: thresholds: missing; run `lraee thresholds --policy "
                         f"{policy.path}` first")
    return policy


def exit_report(session: Session, policy_dir: str | Path, out: str | Path, model: ModelCfg | None = None,
                precision: PrecisionCfg | None = None, data: DataCfg | None = None,
                calibration: str | Path | None = None, split: str = "eval") -> dict:
    """Evaluate the policy on the eval images (``data.source``, split ``split``, ``data.eval_n``) for every
    seed: ``out/trace.csv`` (+ ``trace.meta.json``), ``out/results.json`` and the plots. Returns results."""
    from analysis.data.sources import open_source
    from analysis.exits import exit_report as _report
    from analysis.features import get_feature_sets, split_request
    from exitlogic.artifacts import check_key
    from quant.tap import TokenTap

    policy = thresholded_policy(policy_dir)
    model, precision, data, pcal = backbone_of(policy, model, precision, data)
    tname, templates = _templates(data)
    source = open_source(data.source, split, data.eval_n, data.classnames)
    enc = session.encoder(model)
    prepared = session.recipe(enc, precision, calibration or pcal, data)
    tap = policy.meta.get("exit_tap")
    tap = TokenTap.from_descriptor(tap) if tap else None  # decide on what the exit unit reads
    depth = enc.geometry.depth
    kw = session.store_kwargs()
    fs, fp = get_feature_sets(enc, source, [{"precision": prepared, **split_request("eval", tap, depth)},
                                            {"precision": session.fp32(enc), **split_request("teacher", None, depth)}],
                              tname, templates, **kw)
    check_key(policy, fs.meta["key"], str(fs.path))
    return _report(policy, fs, fp, Path(out))


def validate_exits(session: Session, policy_dir: str | Path, out: str | Path, fixedpoint: FixedPointCfg,
                   model: ModelCfg | None = None, precision: PrecisionCfg | None = None, data: DataCfg | None = None,
                   calibration: str | Path | None = None, spec: str | Path | None = None, search: bool = False,
                   split: str = "eval") -> tuple[dict, list[Path]]:
    """The bit-true fixed-point exit unit vs the float policy on the eval images. Without ``spec`` (or with
    ``search``) the minimal widths are searched on the gating images first (``out/fixedpoint_spec.json``).
    Writes ``out/validate.json`` and the error plots; returns the validation result and the files written."""
    from analysis.data.sources import open_source
    from analysis.features import calibrate_token_tap, get_features, split_request
    from analysis.validate_exits import (make_unit, policy_unit_params, run_search, search_rows, tap_tokens,
                                         validate, write_outputs)
    from exitlogic.artifacts import check_key, load_policy
    from exitlogic.fixedpoint import FixedPointSpec
    from quant.tap import TokenTap

    out = Path(out)
    policy = load_policy(policy_dir)
    params = policy_unit_params(policy)
    sha = policy.meta["policy_sha256"]
    given = None
    if spec is not None:
        given = FixedPointSpec.load(spec, policy_sha256=sha, policy_source=str(policy.path))
        if given.policy_sha256 is None:
            raise InputError(f"fixed-point spec {spec}: policy_sha256 is null; allowed: a spec sized for this "
                             f"policy (sha256 {sha[:16]}...)")
        make_unit(given, policy, params)  # parameter formats and intermediate widths, before any backbone work
    search = search or given is None
    model, precision, data, pcal = backbone_of(policy, model, precision, data)
    tname, templates = _templates(data)
    eval_src = open_source(data.source, split, data.eval_n, data.classnames)
    gating_src = open_role(data, "gating", eval_source=eval_src) if search else None
    if gating_src is not None and gating_src.digest() == eval_src.digest():
        raise InputError(f"--gating-data {gating_src.name}: the width search would run on the eval images; allowed: "
                         "other images than --data/--split (e.g. the procedural gating split or another folder)")
    enc = session.encoder(model)
    prepared = session.recipe(enc, precision, calibration or pcal, data)
    kw = session.store_kwargs()
    layers = policy.candidate_layers
    depth = enc.geometry.depth
    if policy.meta.get("exit_tap"):  # the policy decides on the exit-tap tokens: same scales, same stores
        etap = TokenTap.from_descriptor(policy.meta["exit_tap"])
        tap = etap.restricted(layers)
        greq, ereq = split_request("gating", etap, depth), split_request("eval", etap, depth)
    else:
        tap = calibrate_token_tap(enc, prepared, open_role(data, "calibration", data.profile_n), layers,
                                  fixedpoint.tap_percentile, **session.store_kwargs(with_dtype=False))
        greq, ereq = {"tokens": tap}, {"tokens": tap}
    tap_meta = {"quantization_point": tap.QUANTIZATION_POINT, **tap.descriptor(),
                "scales": {str(L): tap.scale(L) for L in layers}}
    print("exit-tap scales: " + ", ".join(f"L{L} 2^{tap.exponents[L]}" for L in layers), file=sys.stderr)
    search_rec, use = None, given
    if search:
        gfs = get_features(enc, gating_src, prepared, tname, templates, **greq, **kw)
        check_key(policy, gfs.meta["key"], str(gfs.path))
        rows = search_rows(len(gfs))
        with span("width search", len(rows), split="gating"):
            use, search_rec = run_search(policy, params, tap_tokens(gfs, layers, rows), gfs["top5"][rows, 0],
                                         fixedpoint.target, given, safety=fixedpoint.search_safety,
                                         progress=session.progress, log=lambda m: print(m, file=sys.stderr))
        search_rec["data"] = gfs.meta["dataset"]
        search_rec["n_split"] = len(gfs)
    efs = get_features(enc, eval_src, prepared, tname, templates, **ereq, **kw)
    check_key(policy, efs.meta["key"], str(efs.path))
    origin = str(out / "fixedpoint_spec.json") if search else str(spec)
    with span("validation", len(efs), split=split):
        result, hist = validate(policy, use, efs, fixedpoint.target, tap_meta, search_rec, origin)
    written = write_outputs(out, result, hist, use if search else None)
    return result, written


def adavit(session: Session, policy_dir: str | Path, out: str | Path, settings: AdaViTCfg,
           target_saving: float | None = None, results_json: str | Path | None = None) -> dict:
    """The AdaViT baseline at matched FLOPs (paper Table 2) on the policy's backbone: decision networks
    trained with Gumbel-softmax on ``settings.train_n`` train-split images toward ``target_saving`` (default:
    LRA-EE's mean FLOPs saving in ``results_json``, the trace step's results), INT8 backbone frozen (fast path),
    ``settings.seeds`` seeds (default: the policy's), evaluated on the eval split the policy is reported on.
    Writes ``out/adavit.json`` (and ``adavit.timings.json``); returns the result (:func:`analysis.adavit.run_adavit`)."""
    from analysis.adavit import run_adavit
    from analysis.data.sources import open_source
    from common.readers import read_json

    policy = thresholded_policy(policy_dir)
    model, precision, data, cal = backbone_of(policy)
    if target_saving is None:
        if results_json is None:
            raise InputError("--target: missing; allowed: a FLOPs-saving fraction in [0, 1), or --results "
                             "results.json (LRA-EE's saving)")
        res = read_json(results_json, allowed="results.json written by `lraee exit-report`")
        try:
            target_saving = float(res["lra_ee"]["flops_saving"]["mean"])
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{results_json}: lra_ee.flops_saving.mean: missing; allowed: results.json of "
                             "`lraee exit-report`") from None
    enc = session.encoder(model)
    prepared = session.recipe(enc, precision, cal, data)
    ref = open_source(data.source, "eval", data.eval_n, data.classnames)
    train = open_role(data, "train", eval_source=ref)
    seeds = settings.seeds or len(policy.seeds)
    r = session.runtime
    result = run_adavit(enc, prepared, train, ref, policy.tensors["text_embeddings"],
                        float(policy.meta["logit_scale"]), target_saving, out, seeds=seeds, config=settings.config(),
                        batch_size=r.batch_size, workers=r.workers, progress=session.progress)
    session.log(f"AdaViT ({len(result['per_seed'])} seeds, target {100 * result['target_saving']:.2f} %): FLOPs saving "
                f"{100 * result['flops_saving']['mean']:.2f} ± {100 * result['flops_saving']['std']:.2f} %, top-1 "
                f"{100 * result['top1']['mean']:.2f} ± {100 * result['top1']['std']:.2f} % "
                f"({result['timings']['seconds']:.1f} s) -> {Path(out) / 'adavit.json'}")
    return result


# ---- where early exit pays: the precision sweep -------------------------------------------------
def recipe_precision(recipe: str) -> dict:
    """``weight_bits``, ``act_bits`` (the trace meta's, :func:`analysis.exits.recipe_bits`; None for a float
    recipe) and ``smoothquant_alpha`` (None without SmoothQuant) of a recipe name."""
    from analysis.exits import recipe_bits
    from quant.recipes import parse_precision

    alpha = next((float(m.alpha) for m in parse_precision(recipe).modifiers if hasattr(m, "alpha")), None)
    return {"weight_bits": None, "act_bits": None, **recipe_bits(recipe), "smoothquant_alpha": alpha}


def parse_sweep(recipes, field: str = "precision.sweep") -> list[str]:
    """The sweep's recipe names, each a static INT8 recipe (``wXaY`` with optional ``+sq``), no repeats; one-line
    InputError naming ``field`` otherwise."""
    from quant.recipes import parse_precision, static_allowed_text

    if isinstance(recipes, str):
        recipes = [r for r in recipes.split(",") if r.strip()]
    out = []
    for text in recipes:
        r = parse_precision(str(text).strip(), flag=field)
        if not r.needs_calibration:
            raise InputError(f"{field}: {text!r} is not a static INT8 recipe; allowed: {static_allowed_text()}")
        if r.name in out:
            raise InputError(f"{field}: {r.name!r} listed twice; allowed: each recipe once")
        out.append(r.name)
    return out


def sweep_recipe_dir(out: str | Path, recipe: str) -> Path:
    from analysis.precision_sweep import slug

    return Path(out) / slug(recipe)


def precision_sweep(session: Session, model: ModelCfg, precision: PrecisionCfg, data: DataCfg, exits: ExitsCfg,
                    thresholds_cfg: ThresholdsCfg, recipes, out: str | Path, reuse: dict | None = None) -> dict:
    """Where early exit pays: for every recipe of ``recipes`` the main flow on that recipe's INT8 backbone
    (``precision`` with its ``recipe`` replaced): calibration, QIRC profile, exit policy over ``exits.seeds``
    seeds at the budget of ``thresholds_cfg``, eval trace and results, in ``out/<recipe>/`` (calibration,
    ``profile/``, ``policy/``, ``trace/``). The FP32 features and the text embeddings are one cached build
    shared by every recipe (and by the main run). ``reuse`` maps a recipe to the folders a run already made
    for it: ``{recipe: {"results": results.json, "profile": profile.json}}``. Writes ``out/sweep.json``,
    ``out/sweep.csv`` and ``out/sweep.png`` (:mod:`analysis.precision_sweep`); returns sweep.json's dict."""
    from analysis.precision_sweep import sweep_row, write_sweep
    from common.readers import read_json

    names = parse_sweep(recipes)
    if not names:
        raise InputError("precision.sweep: empty; allowed: one or more static recipes, e.g. w8a8, w8a5, w8a4")
    out = Path(out)
    rows = []
    for i, name in enumerate(names):
        prec = precision.model_copy(update={"recipe": name})
        got = (reuse or {}).get(name)
        if got is None:
            d = sweep_recipe_dir(out, name)
            session.log(f"sweep [{i + 1}/{len(names)}] {name}: calibration, profile, exit policy, eval trace -> {d}")
            cal = calibrate(session, model, prec, data, d / "calibration.safetensors")
            profile(session, model, prec, data, d / "profile", cal.path)
            train_exits(session, model, prec, data, exits, d / "policy", calibration=cal.path,
                        profile_json=d / "profile" / "profile.json")
            thresholds(d / "policy", thresholds_cfg, log=lambda _m: None)
            exit_report(session, d / "policy", d / "trace")
            got = {"results": d / "trace" / "results.json", "profile": d / "profile" / "profile.json",
                   "trace": d / "trace" / "trace.csv", "pareto": d / "policy" / "pareto.json"}
        else:
            session.log(f"sweep [{i + 1}/{len(names)}] {name}: the run's own results ({got['results']})")
        row = sweep_row(name, read_json(got["results"]), read_json(got["profile"]), recipe_precision(name))
        row["files"] = {k: os.path.relpath(Path(v).resolve(), out.resolve()) for k, v in got.items()}
        rows.append(row)
        session.log(f"  {name}: INT8 full depth {100 * row['methods']['INT8 full depth']['top1']['mean']:.2f} %, "
                    f"LRA-EE {100 * row['methods']['LRA-EE']['top1']['mean']:.2f} % "
                    f"({row['lra_ee_delta_pp']['mean']:+.2f} pp)")
    meta = {"model": model.name, "data": data.source, "budget": thresholds_cfg.budget, "seeds": exits.seeds}
    write_sweep(out, rows, meta)
    return read_json(out / "sweep.json")


# ---- hardware --------------------------------------------------------------------------------
def simulate(trace_csv: str | Path, out: str | Path, arch: str | Path | None = None, load: float = 0.5,
             loads=None, flags: dict | None = None, log: Callable[[str], None] = print) -> dict:
    """Replay an exit trace on an accelerator (``arch``: a YAML, default ``hwsim/configs/arch.yaml``) and at
    full depth: ``out/summary.json`` (cycles, service and sojourn latency at ``load``, energy, bounds) and
    ``out/samples.csv``. ``loads``: the load sweep (default :data:`hwsim.cli.DEFAULT_LOADS`; ``()`` skips
    it); ``flags``: further keywords of :func:`hwsim.cli.simulate_trace` (``size_stages``, ``slo_us``, ...).
    Returns the summary."""
    from hwsim.cli import DEFAULT_ARCH, DEFAULT_LOADS, simulate_trace

    return simulate_trace(arch or DEFAULT_ARCH, trace_csv, Path(out), load=load,
                          loads=DEFAULT_LOADS if loads is None else loads, log=log, **(flags or {}))


def dse(space: str | Path, trace_csv, out: str | Path, policies=None,
        max_configs: int | None = None, workers: int | None = None, progress: bool = False,
        log: Callable[[str], None] = print, policy_points: int | None = None) -> dict:
    """Design-space sweep of the space YAML over accelerator configs x the traces (x each policy's Pareto
    threshold sets with ``policies``): ``out/results.csv``, ``pareto.csv``, ``pareto.png``, ``dse.json``.

    ``trace_csv``: one trace or a list (traces of several recipes: one front across precisions);
    ``policies``: one Pareto file (every trace) or one per trace; ``policy_points``: at most this many
    threshold sets per Pareto file (evenly spaced in FLOPs saving; None: all)."""
    from hwsim.cli import dse_sweep

    traces = list(trace_csv) if isinstance(trace_csv, (list, tuple)) else [trace_csv]
    return dse_sweep(space, out, traces=traces, policies=policies, max_configs=max_configs, workers=workers,
                     progress=progress, log=log, policy_points=policy_points)


# ---- exit blocks: HLS and RTL ------------------------------------------------------------------
TOKEN_SOURCES = ("auto", "cache", "extract", "derived")


def exit_vectors(session: Session, policy, layers: list[int], n: int, tokens: str = "auto",
                 model: ModelCfg | None = None, precision: PrecisionCfg | None = None, data: DataCfg | None = None,
                 calibration: str | Path | None = None, split: str = "eval"):
    """int8 exit-tap vectors of ``layers`` for C-simulation and RTL simulation (:class:`hls.vectors.Vectors`).

    ``tokens``: ``cache`` (a feature store with ``tap_tokens`` in the session's cache, any split), ``extract``
    (the policy's backbone on its eval images, cached), ``derived`` (deterministic tokens from the cached float
    features), ``auto`` (cached tokens of ``split``, else extract)."""
    from analysis.data.sources import open_source
    from analysis.features import TOKEN_VECTORS, calibrate_token_tap, get_features, split_request
    from exitlogic.artifacts import check_key
    from hls.vectors import derived_vectors, tap_vectors, vectors_from_store
    from quant.tap import TokenTap

    if tokens not in TOKEN_SOURCES:
        raise InputError(f"--tokens {tokens!r}; allowed: {', '.join(TOKEN_SOURCES)}")
    if n < 1:
        raise InputError(f"--vectors {n}; allowed: a positive integer")
    cache = Path(session.store_kwargs()["cache_dir"])
    if tokens == "derived":
        return derived_vectors(policy, cache, layers, n)
    if tokens in ("auto", "cache"):
        v = tap_vectors(policy, cache, layers, n, split if tokens == "auto" else None) if cache.is_dir() else None
        if v is not None and (tokens == "cache" or min(t.shape[0] for t in v.tokens.values()) >= n):
            return v
        if tokens == "cache":
            raise InputError(f"--cache-dir {cache}: no feature store with exit-tap tokens (tap_tokens) of layers "
                             f"{layers} for the policy's model and recipe; allowed: --tokens extract or derived")
    model, precision, data, pcal = backbone_of(policy, model, precision, data)
    tname, templates = _templates(data)
    source = open_source(data.source, split, data.eval_n or n, data.classnames)
    enc = session.encoder(model)
    prepared = session.recipe(enc, precision, calibration or pcal, data)
    vectors = max(n, TOKEN_VECTORS)
    if policy.meta.get("exit_tap"):  # the policy's own exit-tap scales: the eval store every stage shares
        req = split_request("eval", TokenTap.from_descriptor(policy.meta["exit_tap"]), enc.geometry.depth, vectors)
    else:
        req = {"tokens": calibrate_token_tap(enc, prepared, open_role(data, "calibration", data.profile_n), layers,
                                             **session.store_kwargs(with_dtype=False)), "token_vectors": vectors}
    fs = get_features(enc, source, prepared, tname, templates, **req, **session.store_kwargs())
    check_key(policy, fs.meta["key"], str(fs.path))
    return vectors_from_store(fs.path, layers, n)


def block_layers(policy, layers) -> list[int]:
    """The candidate layers a block step builds (all of the policy's by default); one-line error otherwise."""
    layers = [int(L) for L in layers] if layers else list(policy.candidate_layers)
    bad = [L for L in layers if L not in policy.candidate_layers]
    if bad:
        raise InputError(f"--layers {bad}: not candidate layers of {policy.path}; allowed: {policy.candidate_layers}")
    return layers


def hls_options(hls: HlsCfg, **extra):
    """:class:`hls.blocks.BlockOptions` of the HLS settings (``extra``: io_type, project, knobs), validated."""
    from hls.blocks import BlockOptions

    return BlockOptions(backend=hls.backend, part=hls.part, clock_period_ns=clock_period_ns(hls.clock_mhz),
                        **extra).validate()


def hls_blocks(session: Session, policy_dir: str | Path, out: str | Path, hls: HlsCfg,
               spec: str | Path | None = None, layers=None, blocks=None, options=None, compile: bool = True,
               tokens: str = "auto", rtl_report: str | Path | None = None, **backbone) -> dict:
    """hls4ml projects of the exit blocks per candidate layer under ``out`` (``options``: a
    :class:`hls.blocks.BlockOptions`, default from ``hls``), compiled and C-simulated bit for bit against the
    fixed-point unit on ``hls.vectors`` exit-tap vectors; ``rtl_report`` merges Yosys counts. Writes and
    returns ``hls_report.json``. ``backbone``: model/precision/data/calibration overrides for extraction."""
    from exitlogic.artifacts import load_policy
    from hls.blocks import BLOCKS
    from hls.flow import check_blocks, run

    opts = options or hls_options(hls)
    blocks = check_blocks(blocks or BLOCKS)
    policy = load_policy(policy_dir)
    if spec is not None and not Path(spec).is_file():
        raise InputError(f"--spec {spec}: file not found")
    if rtl_report is not None:
        from hls.flow import load_rtl_report

        if not Path(rtl_report).is_file():
            raise InputError(f"--rtl-report {rtl_report}: file not found; allowed: the rtl_report.json of `lraee rtl`")
        load_rtl_report(rtl_report, policy.meta["policy_sha256"])  # before any vectors are extracted
    layers = block_layers(policy, layers)
    vectors = exit_vectors(session, policy, layers, hls.vectors, tokens, **backbone)
    return run(policy, vectors, Path(out), spec_path=spec, layers=layers, blocks=blocks, opts=opts, compile=compile,
               rtl_report=rtl_report, log=session.log)


def rtl_blocks(session: Session, policy_dir: str | Path, out: str | Path, hls: HlsCfg,
               spec: str | Path | None = None, layers=None, kinds=None, synth: str = "all", project: str = "lraee",
               tokens: str = "auto", **backbone) -> dict:
    """Verilog of the exit blocks (gate + comparator, streaming SSA/SAV) per candidate layer under ``out``,
    simulated with Verilator bit for bit against the fixed-point unit on ``hls.vectors`` exit-tap vectors and
    synthesised with Yosys ``synth_xilinx`` for the family of ``hls.part`` (``synth``: all, gate, none). Writes
    and returns ``rtl_report.json``; a missing tool is a one-line error naming it."""
    from exitlogic.artifacts import load_policy
    from rtl import tools
    from rtl.blocks import KINDS
    from rtl.flow import run
    from rtl.synth import family_of

    kinds = tuple(kinds or KINDS)
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise InputError(f"--blocks {','.join(kinds)!r}; allowed: {', '.join(KINDS)}")
    family_of(hls.part)
    tools.require("verilator")  # before any vectors are extracted: a missing tool is a one-line error
    if synth != "none":
        tools.require("yosys")
    policy = load_policy(policy_dir)
    if spec is not None and not Path(spec).is_file():
        raise InputError(f"--spec {spec}: file not found")
    layers = block_layers(policy, layers)
    vectors = exit_vectors(session, policy, layers, hls.vectors, tokens, **backbone)
    return run(policy, vectors, Path(out), spec_path=spec, layers=layers, part=hls.part, project=project,
               kinds=kinds, synth=synth, cache_dir=Path(session.store_kwargs()["cache_dir"]), log=session.log)
