"""``lraee run`` settings: one YAML file, one section per stage (pydantic, field-level errors).

``lraee run --print-config`` writes the defaults below as YAML. Unknown keys are refused, so a
typo never silently falls back to a default.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from common.errors import InputError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _rule(fn, *args, **kw):
    """Run one of the commands' own parse/check functions; its InputError becomes a field error."""
    try:
        return fn(*args, **kw)
    except InputError as e:
        raise ValueError(str(e)) from None


class ModelCfg(_Section):
    name: str = Field("tiny", description="open_clip ViT config or 'tiny' (embedded default)")
    pretrained: Optional[str] = Field(None, description="checkpoint file; tiny: the shipped weights")
    force_quick_gelu: bool = False


class PrecisionCfg(_Section):
    recipe: str = Field("w8a8", description="w8a8 or wXaY (static INT8 recipes the exit unit taps)")
    scales: Literal["po2", "float"] = "po2"
    calib_method: Literal["percentile", "minmax", "mse"] = "percentile"
    calib_n: int = Field(512, gt=0)


class DataCfg(_Section):
    source: str = Field("procedural", description="procedural[:SEED], folder:PATH or imagenet:PATH (eval images)")
    train_source: Optional[str] = Field(None, description="head training images (default: source, split train; "
                                                          "required when source is a folder)")
    gating_source: Optional[str] = Field(None, description="gate/threshold images (default: source, split gating; "
                                                           "required when source is a folder)")
    calibration_source: Optional[str] = Field(None, description="INT8 calibration, QIRC profile and exit-tap scales "
                                                                "(default: a seeded slice of the train source; the "
                                                                "procedural set's calibration split); never eval")
    classnames: Optional[str] = None
    templates: str = "paper"
    train_n: int = Field(10000, gt=0)
    gating_n: Optional[int] = Field(None, gt=0)
    eval_n: Optional[int] = Field(None, gt=0, description="eval images (default: the whole split / folder)")
    profile_n: int = Field(512, gt=0, description="calibration images of the QIRC profile and the exit-tap scales")

    @field_validator("templates")
    @classmethod
    def _templates(cls, v: str) -> str:
        from analysis.templates import resolve_templates

        _rule(resolve_templates, v)
        return v


class RuntimeCfg(_Section):
    batch_size: int = Field(64, gt=0)
    device: str = "cpu"
    cache_dir: str = Field(".lraee-cache/features", description="feature cache (content-keyed, shared by runs)")
    workers: Optional[int] = Field(None, ge=0, description="image-decoding processes (default: CPU count - 1, <= 8)")
    store_dtype: Literal["float32", "float16"] = Field("float32", description="dtype of the stored block features")
    dse_workers: Optional[int] = Field(None, ge=1, description="DSE processes (default: the CPU count)")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        from analysis.cli_common import parse_device

        return _rule(parse_device, v, "", check_available=True)


class ExitsCfg(_Section):
    seeds: int = Field(3, ge=1)
    epochs: int = Field(10, ge=1)
    lr: float = Field(1e-3, gt=0)
    head_batch_size: int = Field(256, gt=0)
    distill_weight: float = Field(1.0, ge=0)
    gate_l2: float = Field(1e-3, ge=0)
    gating_fraction: float = Field(0.8, gt=0, le=1)
    exit_layers: Optional[str] = Field(None, description="e.g. '8,10,11'; default: INR pruning")
    kappa: float = Field(0.5, ge=0)
    viability: float = Field(0.9, ge=0)
    max_candidates: int = Field(3, ge=1, le=4)


class ThresholdsCfg(_Section):
    budget: float = Field(0.9, gt=0, le=1, description="largest mean compute fraction")
    grid: str = "0.20:0.92:25"
    with_heads: bool = False

    @field_validator("grid")
    @classmethod
    def _grid(cls, v: str) -> str:
        from analysis.cmd_thresholds import parse_grid

        _rule(parse_grid, v)
        return v


class FixedPointCfg(_Section):
    target: float = Field(0.999, gt=0, le=1, description="exit-decision agreement the width search keeps")


class HlsCfg(_Section):
    backend: Literal["Vitis", "Vivado"] = "Vitis"
    part: str = "xcvu13p-flga2577-2-e"
    clock_mhz: float = Field(200.0, gt=0)
    vectors: int = Field(1000, gt=0, description="eval vectors C-simulated per block")

    @model_validator(mode="after")
    def _options(self):
        from analysis.cmd_hls import clock_period_ns
        from hls.blocks import BlockOptions

        period = _rule(clock_period_ns, self.clock_mhz, "clock_mhz")
        _rule(BlockOptions(backend=self.backend, part=self.part, clock_period_ns=period).validate)
        return self


class HwsimCfg(_Section):
    arch: Optional[str] = Field(None, description="accelerator YAML (default hwsim/configs/arch.yaml)")
    space: Optional[str] = Field(None, description="DSE space YAML (default hwsim/configs/space.yaml)")
    max_configs: int = Field(100000, gt=0)
    load: float = Field(0.5, gt=0, le=2, description="stated load for latency: Poisson arrivals at this fraction "
                                                      "of the full-depth throughput")

    @field_validator("arch")
    @classmethod
    def _arch(cls, v):
        if v is not None:
            from hwsim.config import load_arch

            _rule(load_arch, v)
        return v

    @field_validator("space")
    @classmethod
    def _space(cls, v):
        if v is not None:
            from common.readers import read_yaml

            if not isinstance(_rule(read_yaml, v, allowed="a DSE space YAML (see hwsim/configs/space.yaml)"), dict):
                raise ValueError(f"{v}: <root>: expected a mapping; allowed: a DSE space YAML")
        return v


class RunConfig(_Section):
    model: ModelCfg = Field(default_factory=ModelCfg)
    precision: PrecisionCfg = Field(default_factory=PrecisionCfg)
    data: DataCfg = Field(default_factory=DataCfg)
    runtime: RuntimeCfg = Field(default_factory=RuntimeCfg)
    exits: ExitsCfg = Field(default_factory=ExitsCfg)
    thresholds: ThresholdsCfg = Field(default_factory=ThresholdsCfg)
    fixedpoint: FixedPointCfg = Field(default_factory=FixedPointCfg)
    hls: HlsCfg = Field(default_factory=HlsCfg)
    hwsim: HwsimCfg = Field(default_factory=HwsimCfg)

    @field_validator("precision")
    @classmethod
    def _static_recipe(cls, v: PrecisionCfg) -> PrecisionCfg:
        from quant.recipes import parse_precision

        try:
            r = parse_precision(v.recipe, v.scales)
        except InputError as e:
            raise ValueError(str(e)) from None
        if not r.needs_calibration:
            raise ValueError(f"recipe {v.recipe!r}: the pipeline needs a static INT8 recipe; allowed: w8a8, wXaY")
        return v

    @model_validator(mode="after")
    def _cross_fields(self):
        """Checks that need more than one field, with the commands' own rules: the model name (and its
        depth for exits.exit_layers), the checkpoint, the data sources with their sizes."""
        from analysis.data.sources import check_n, open_source
        from exitlogic.pruning import parse_exit_layers
        from quant.encoder import _check_model_name, canonical_name, register_configs

        m, d = self.model, self.data
        register_configs()
        mcfg = _field_rule("model.name", _check_model_name, canonical_name(m.name))
        if m.pretrained is not None and not Path(m.pretrained).is_file():
            raise ValueError(f"model.pretrained: {m.pretrained}: file not found; allowed: a local checkpoint "
                             "(.pt/.pth/.bin/.safetensors)")
        for field, spec, n in (("data.source", d.source, d.eval_n), ("data.train_source", d.train_source, d.train_n),
                               ("data.gating_source", d.gating_source, d.gating_n),
                               ("data.calibration_source", getattr(d, "calibration_source", None), None)):
            if spec is None:
                continue
            src = _field_rule(field, open_source, spec, "eval", 1, d.classnames)
            if n is not None and src.descriptor.get("kind") == "procedural":
                _field_rule(field.replace("source", "n").replace("data.n", "data.eval_n"), check_n, n)
        if d.source.partition(":")[0] == "procedural":
            _field_rule("data.train_n", check_n, d.train_n)
            _field_rule("data.profile_n", check_n, d.profile_n)
        if self.exits.exit_layers is not None:
            depth = int(mcfg.get("vision_cfg", {}).get("layers", 12))
            try:
                parse_exit_layers(self.exits.exit_layers, depth)
            except ValueError as e:
                raise ValueError(f"exits.exit_layers: {str(e).removeprefix('--exit-layers ')}") from None
        return self


def _field_rule(field: str, fn, *args):
    """:func:`_rule` for a check of :class:`RunConfig`'s model validator: the message names ``field``."""
    try:
        return fn(*args)
    except InputError as e:
        raise ValueError(f"{field}: {e}") from None


def default_yaml() -> str:
    """The defaults as commented-free YAML (``lraee run --print-config``)."""
    return yaml.safe_dump(RunConfig().model_dump(), sort_keys=False)


def load_config(path: str | Path | None, overrides: dict | None = None) -> RunConfig:
    """Read ``path`` (YAML, safe_load) over the defaults; one-line InputError naming file and field."""
    data: dict = {}
    src = str(path) if path else "<defaults>"
    if path is not None:
        from common.readers import read_yaml

        data = read_yaml(path, allowed="a YAML file (see lraee run --print-config)") or {}
        if not isinstance(data, dict):
            raise InputError(f"{src}: <root>: expected a mapping of sections; allowed: {', '.join(RunConfig.model_fields)}")
    for dotted, value in (overrides or {}).items():
        sec, key = dotted.split(".")
        data.setdefault(sec, {})[key] = value
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        from hwsim.config import format_validation_error

        first = e.errors()[0]
        if not first["loc"] and first["type"] == "value_error":  # RunConfig's cross-field checks name the field
            raise InputError(f"{src}: {first['msg'].removeprefix('Value error, ')}") from None
        raise InputError(format_validation_error(src, e)) from None
