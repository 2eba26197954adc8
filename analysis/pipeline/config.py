"""``lraee run`` settings: one YAML file, one section per stage (pydantic, field-level errors).

``lraee run --print-config`` writes the defaults below as YAML. Unknown keys are refused, so a
typo never silently falls back to a default.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from common.errors import InputError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
    train_source: Optional[str] = Field(None, description="head training images (default: source, split train)")
    gating_source: Optional[str] = Field(None, description="gate/threshold images (default: source, split gating)")
    classnames: Optional[str] = None
    templates: str = "paper"
    train_n: int = Field(10000, gt=0)
    gating_n: Optional[int] = Field(None, gt=0)
    eval_n: Optional[int] = Field(None, gt=0, description="eval images (default: the whole split / folder)")
    profile_n: int = Field(512, gt=0, description="calibration-split images of the QIRC profile")


class RuntimeCfg(_Section):
    batch_size: int = Field(64, gt=0)
    device: str = "cpu"
    cache_dir: str = Field(".lraee-cache/features", description="feature cache (content-keyed, shared by runs)")


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


class FixedPointCfg(_Section):
    target: float = Field(0.999, gt=0, le=1, description="exit-decision agreement the width search keeps")


class HlsCfg(_Section):
    backend: Literal["Vitis", "Vivado"] = "Vitis"
    part: str = "xcvu13p-flga2577-2-e"
    clock_mhz: float = Field(200.0, gt=0)
    vectors: int = Field(1000, gt=0, description="eval vectors C-simulated per block")


class HwsimCfg(_Section):
    arch: Optional[str] = Field(None, description="accelerator YAML (default hwsim/configs/arch.yaml)")
    space: Optional[str] = Field(None, description="DSE space YAML (default hwsim/configs/space.yaml)")
    max_configs: int = Field(100000, gt=0)


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


def default_yaml() -> str:
    """The defaults as commented-free YAML (``lraee run --print-config``)."""
    return yaml.safe_dump(RunConfig().model_dump(), sort_keys=False)


def load_config(path: str | Path | None, overrides: dict | None = None) -> RunConfig:
    """Read ``path`` (YAML, safe_load) over the defaults; one-line InputError naming file and field."""
    data: dict = {}
    src = str(path) if path else "<defaults>"
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise InputError(f"{src}: file not found; allowed: a YAML file (see lraee run --print-config)") from None
        except yaml.YAMLError as e:
            raise InputError(f"{src}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise InputError(f"{src}: <root>: expected a mapping of sections; allowed: {', '.join(RunConfig.model_fields)}")
    for dotted, value in (overrides or {}).items():
        sec, key = dotted.split(".")
        data.setdefault(sec, {})[key] = value
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        from hwsim.config import format_validation_error

        raise InputError(format_validation_error(src, e)) from None
