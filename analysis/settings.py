"""The settings schema of ``lraee``: one pydantic section per concern (model, precision, data, runtime,
exits, thresholds, fixed point, HLS, hwsim).

These sections are the one settings schema of the project: ``lraee run`` reads them from YAML
(:mod:`analysis.pipeline.config`), every command's argparse flags fill the same sections
(:func:`from_args`), and the workflow functions (:mod:`analysis.workflows`) take them. Field checks
use the commands' own parse functions, so a bad value gives the same one-line error everywhere.
Training defaults live in :class:`exitlogic.head_config.HeadTrainConfig` and nowhere else.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from common.errors import InputError
from exitlogic.fixedpoint.search import SEARCH_SAFETY
from exitlogic.adavit_config import AdaViTConfig
from exitlogic.head_config import HEAD_DTYPE_NAMES, HeadTrainConfig

_HEADS = HeadTrainConfig()
_ADAVIT = AdaViTConfig()


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _rule(fn, *args, **kw):
    """Run one of the commands' own parse/check functions; its InputError becomes a field error."""
    try:
        return fn(*args, **kw)
    except InputError as e:
        raise ValueError(str(e)) from None


DEVICES = "cpu, cuda or cuda:N"


def parse_device(text: str, flag: str = "--device", check_available: bool = False) -> str:
    """The one rule for a device string (``--device``, ``runtime.device``): ``cpu``, ``cuda`` or
    ``cuda:N``; with ``check_available``, CUDA must be present. InputError (one line) otherwise."""
    import re

    d = str(text).strip()
    at = f"{flag} " if flag else ""
    if not re.fullmatch(r"cpu|cuda(:\d+)?", d):
        raise InputError(f"{at}{text!r}: unknown device; allowed: {DEVICES}")
    if check_available and d.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise InputError(f"{at}{d}: CUDA is not available here; allowed: cpu")
        if ":" in d and int(d.split(":")[1]) >= torch.cuda.device_count():
            raise InputError(f"{at}{d}: no such CUDA device; allowed: cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return d


def clock_period_ns(mhz: float, flag: str = "--clock-mhz") -> float:
    """The one rule for ``--clock-mhz`` / ``hls.clock_mhz``: a positive, finite number of MHz; the period in ns."""
    import math

    if isinstance(mhz, bool) or not isinstance(mhz, (int, float)) or not math.isfinite(mhz) or not mhz > 0:
        raise InputError(f"{flag} {mhz}; allowed: a positive number (10 to 2000 MHz)")
    return 1000.0 / float(mhz)


class ModelCfg(_Section):
    name: str = Field("tiny", description="open_clip ViT config or 'tiny' (embedded default)")
    pretrained: Optional[str] = Field(None, description="checkpoint file; tiny: the shipped weights")
    force_quick_gelu: bool = False


#: ``precision.sweep``'s default: where activation noise grows, and SmoothQuant where it is largest
DEFAULT_SWEEP = ("w8a8", "w8a5", "w8a4", "w8a4+sq")


class PrecisionCfg(_Section):
    recipe: str = Field("w8a8", description="a static INT8 recipe the exit unit taps: w8a8 or wXaY, "
                                              "optionally +sq / +sqALPHA (SmoothQuant)")
    scales: Literal["po2", "float"] = "po2"
    calib_method: Literal["percentile", "minmax", "mse"] = "percentile"
    calib_n: int = Field(512, gt=0)
    engine: Literal["fast", "brevitas"] = Field("fast", description="static INT8 recipes: the bit-identical fast "
                                                                     "path or the Brevitas model itself")
    sweep: list[str] = Field(default_factory=lambda: list(DEFAULT_SWEEP),
                             description="lraee run: the precision x exit sweep's static recipes ([] = off); "
                                         "each gets its own calibration, profile, policy and trace")

    @field_validator("sweep")
    @classmethod
    def _sweep(cls, v: list[str]) -> list[str]:
        from analysis.workflows import parse_sweep

        return _rule(parse_sweep, v, "sweep")

    def backbone_dump(self) -> dict:
        """The fields that define the backbone (what keys calibrations, stores and policies): all but ``sweep``."""
        return self.model_dump(exclude={"sweep"})


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
    train_n: int = Field(4000, gt=0)
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
    workers: Optional[int] = Field(None, ge=0, description="image-decoding processes (default: CPU count - 1, <= 8; 0 on the CPU with <= 2 cores)")
    store_dtype: Literal["float32", "float16"] = Field("float32", description="dtype of the stored block features")
    dse_workers: Optional[int] = Field(None, ge=1, description="DSE processes (default: the CPU count)")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        return _rule(parse_device, v, "", check_available=True)


class ExitsCfg(_Section):
    seeds: int = Field(3, ge=1)
    epochs: int = Field(_HEADS.epochs, ge=1)
    lr: float = Field(_HEADS.lr, gt=0)
    head_batch_size: int = Field(_HEADS.batch_size, gt=0)
    distill_weight: float = Field(_HEADS.distill_weight, ge=0)
    head_dtype: Literal[HEAD_DTYPE_NAMES] = Field(
        _HEADS.dtype, description="compute dtype of the heads' matmuls; bfloat16: mixed precision (float32 master "
                                  "weights and Adam), for GPUs and CPUs with AMX or AVX512-BF16")
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
        from exitlogic.policy import parse_grid

        _rule(parse_grid, v)
        return v


class AdaViTCfg(_Section):
    """The AdaViT baseline at LRA-EE's FLOPs saving (:mod:`exitlogic.adavit`; defaults from its AdaViTConfig)."""

    enabled: bool = Field(True, description="lraee run: train and evaluate AdaViT (stage adavit)")
    seeds: Optional[int] = Field(None, ge=1, description="default: the policy's seeds")
    train_n: int = Field(_ADAVIT.train_n, gt=0, description="train-split images the decision networks learn on")
    epochs: int = Field(_ADAVIT.epochs, ge=1)
    lr: float = Field(_ADAVIT.lr, gt=0)
    batch_size: int = Field(_ADAVIT.batch_size, gt=0)
    temperature: float = Field(_ADAVIT.temperature, gt=0, description="Gumbel-sigmoid temperature")
    usage_weight: float = Field(_ADAVIT.usage_weight, ge=0, description="weight of the squared FLOPs-fraction error")
    distill_weight: float = Field(_ADAVIT.distill_weight, ge=0, description="cosine distillation to the FP32 "
                                                                            "embedding (0: off)")

    def config(self):
        """The :class:`exitlogic.adavit.AdaViTConfig` of these settings."""
        from exitlogic.adavit import AdaViTConfig

        return AdaViTConfig(train_n=self.train_n, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                            temperature=self.temperature, usage_weight=self.usage_weight,
                            distill_weight=self.distill_weight)


class FixedPointCfg(_Section):
    target: float = Field(0.999, gt=0, le=1, description="exit-decision agreement the width search keeps")
    search_safety: float = Field(SEARCH_SAFETY, ge=1, description="the search also keeps SAFETY x the estimated "
                                                                   "disagreement rate within 1 - target")
    tap_percentile: float = Field(99.99, gt=0, le=100, description="policies without an exit tap: the tap scale "
                                                                    "covers this percentile of |z_L|")


class HlsCfg(_Section):
    backend: Literal["Vitis", "Vivado"] = "Vitis"
    part: str = "xcvu13p-flga2577-2-e"
    clock_mhz: float = Field(200.0, gt=0)
    vectors: int = Field(1000, gt=0, description="eval vectors C-simulated per block")

    @model_validator(mode="after")
    def _options(self):
        from hls.blocks import BlockOptions

        period = _rule(clock_period_ns, self.clock_mhz, "clock_mhz")
        _rule(BlockOptions(backend=self.backend, part=self.part, clock_period_ns=period).validate)
        return self


class HwsimCfg(_Section):
    arch: Optional[str] = Field(None, description="accelerator YAML (default hwsim/configs/arch.yaml)")
    space: Optional[str] = Field(None, description="DSE space YAML (default hwsim/configs/space.yaml)")
    max_configs: int = Field(100000, gt=0)
    policy_points: Optional[int] = Field(20, gt=0, description="DSE: threshold sets per recipe's Pareto file, evenly "
                                                               "spaced in FLOPs saving (null: all)")
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


SECTIONS = {"model": ModelCfg, "precision": PrecisionCfg, "data": DataCfg, "runtime": RuntimeCfg, "exits": ExitsCfg,
            "thresholds": ThresholdsCfg, "adavit": AdaViTCfg, "fixedpoint": FixedPointCfg, "hls": HlsCfg,
            "hwsim": HwsimCfg}


def default(section: type[BaseModel], field: str):
    """A field's default (for argparse defaults: the schema states each default once)."""
    return section.model_fields[field].get_default(call_default_factory=True)


def from_args(section: type[BaseModel], args, flags: dict[str, str], base: BaseModel | None = None):
    """Fill ``section`` from argparse ``args``: ``flags`` maps a field to its flag (``{"name": "--model"}``);
    a flag left at None keeps ``base``'s value (or the schema default). A field error is one InputError
    naming the flag and its value."""
    data = base.model_dump() if base is not None else {}
    for field, flag in flags.items():
        v = getattr(args, flag.lstrip("-").replace("-", "_"), None)
        if v is not None:
            data[field] = str(v) if hasattr(v, "__fspath__") else v
    try:
        return section.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        flag = flags.get(field, field)
        msg = first["msg"].removeprefix("Value error, ")
        if msg.startswith(flag):  # the field's own rule already names the flag
            raise InputError(msg) from None
        raise InputError(f"{flag} {data.get(field)}: {msg}; allowed: {_allowed(first, field)}") from None


def _allowed(err: dict, field: str) -> str:
    """The allowed values of a pydantic field error, in words (``--n 0`` -> a positive number of images)."""
    ctx, kind = err.get("ctx") or {}, err["type"]
    what = "number of images" if field.endswith("_n") else "number"
    if kind == "greater_than":
        return f"a positive {what}" if ctx.get("gt") == 0 else f"a {what} greater than {ctx.get('gt')}"
    if kind == "greater_than_equal":
        return f"a {what} >= {ctx.get('ge')}"
    if kind in ("less_than_equal", "less_than"):
        return f"a {what} {'<=' if kind == 'less_than_equal' else '<'} {ctx.get('le', ctx.get('lt'))}"
    if kind == "literal_error":
        return str(ctx.get("expected"))
    if kind in ("int_parsing", "int_from_float"):
        return "an integer"
    if kind in ("float_parsing", "finite_number"):
        return "a finite number"
    return "see lraee run --print-config"
