"""Accelerator configuration: a YAML file validated with pydantic (field-level errors).

See ``docs/hwsim.md`` for the schema and ``hwsim/configs/arch.yaml`` for the default.
Units: clock in MHz, SRAM in KiB, DRAM bandwidth in GB/s (1e9 bytes/s), power in mW,
energies in pJ, cycles of the accelerator clock.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from common.errors import InputError

from .dataflows import NAMES as DATAFLOWS, OS_VARIANTS

BATCH_POLICIES = ("static", "regroup", "stream")
ARRIVALS = ("closed", "poisson")
ARCHITECTURES = ("monolithic", "pipelined")
MEMORY_MODELS = ("analytical", "scalesim")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # .inf / .nan are refused with the field


class ArrayCfg(_Strict):
    """The systolic array: rows x cols PEs, dataflow, OS cycle variant."""

    rows: int = Field(32, gt=0, description="array height R (PEs)")
    cols: int = Field(32, gt=0, description="array width C (PEs)")
    dataflow: Literal[DATAFLOWS] = Field("ws", description="a dataflow of the registry (hwsim/dataflows.py)")
    os_variant: Literal[OS_VARIANTS] = "scalesim"


DEFAULT_OPERAND_BITS = 8


class PrecisionCfg(_Strict):
    """Operand and partial-sum widths (bits). ``weight_bits`` and ``act_bits`` set each operand,
    ``operand_bits`` both (the specific field wins); a width the YAML leaves unset follows the
    exit trace's recipe (``weight_bits`` / ``act_bits`` of its meta, :func:`with_trace_precision`),
    else 8. Weights: the filter of Linear layers; activations: their inputs and outputs and
    both operands of attention GEMMs."""

    operand_bits: Optional[int] = Field(None, gt=0, le=64, description="weight and activation width, bits")
    weight_bits: Optional[int] = Field(None, gt=0, le=64, description="weight width, bits")
    act_bits: Optional[int] = Field(None, gt=0, le=64, description="activation width, bits")
    accumulator_bits: int = Field(32, gt=0, le=64, description="partial-sum width, bits")

    @property
    def weights(self) -> int:
        """Weight width in bits (the YAML's, else 8; see :func:`with_trace_precision`)."""
        return self.weight_bits or self.operand_bits or DEFAULT_OPERAND_BITS

    @property
    def activations(self) -> int:
        """Activation width in bits (the YAML's, else 8; see :func:`with_trace_precision`)."""
        return self.act_bits or self.operand_bits or DEFAULT_OPERAND_BITS


class SramCfg(_Strict):
    """On-chip buffers (double-buffered: half of each is filled while the other half computes)."""

    ifmap_kb: float = Field(256, gt=0, description="ifmap buffer, KiB")
    filter_kb: float = Field(256, gt=0, description="filter (weight) buffer, KiB")
    ofmap_kb: float = Field(128, gt=0, description="ofmap/partial-sum buffer, KiB")
    banks: int = Field(4, gt=0, description="banks per buffer (energy uses the bank size)")


class DramCfg(_Strict):
    bandwidth_gbps: float = Field(12.8, gt=0, description="DRAM bandwidth, GB/s")


class VectorUnitCfg(_Strict):
    """SIMD unit for LayerNorm, softmax, GELU, residual adds: ``lanes`` elements per cycle
    per unit of cost; an element of kind X takes ``cycles_per_elem[X]`` lane-cycles."""

    lanes: int = Field(32, gt=0)
    cycles_per_elem: dict[Literal["layernorm", "softmax", "gelu", "add", "mean", "scale"], float] = Field(
        default_factory=lambda: {"layernorm": 2.0, "softmax": 3.0, "gelu": 2.0, "add": 1.0, "mean": 1.0, "scale": 1.0})

    @field_validator("cycles_per_elem")
    @classmethod
    def _positive(cls, v):
        for k, x in v.items():
            if x <= 0:
                raise ValueError(f"{k} must be > 0")
        return v


class ExitUnitCfg(_Strict):
    """Gate + threshold comparator block. ``hls_report`` (a JSON path) overrides
    ``latency_cycles`` / ``interval_cycles`` when the file exists."""

    latency_cycles: int = Field(64, gt=0, description="cycles for one sample's gate decision")
    interval_cycles: int = Field(4, gt=0, description="initiation interval between samples, cycles")
    energy_pj: Optional[float] = Field(None, ge=0, description="energy per evaluation, pJ; default from table")
    hls_report: Optional[str] = None


class BatchCfg(_Strict):
    policy: Literal["static", "regroup", "stream"] = "static"
    size: int = Field(8, gt=0, description="samples per batch (stream uses 1)")
    timeout_us: float = Field(1000.0, gt=0, description="poisson: max wait to fill a batch, us")
    max_in_flight: int = Field(1, gt=0, description="groups in the pipeline at once (1 = no overlap)")


class PipelineStageCfg(_Strict):
    """One stage of a layer-pipelined accelerator (``architecture: pipelined``): blocks
    ``first..last`` (1-based, inclusive) run on the stage's own array and buffers."""

    blocks: tuple[int, int] = Field(description="first and last block of the stage (1-based, inclusive)")
    array: ArrayCfg = Field(default_factory=ArrayCfg)
    sram: Optional[SramCfg] = Field(None, description="the stage's buffers (default: the top-level sram)")

    @field_validator("blocks")
    @classmethod
    def _order(cls, v):
        if v[0] < 1 or v[1] < v[0]:
            raise ValueError("expected [first, last] with 1 <= first <= last")
        return v


class ArrivalCfg(_Strict):
    mode: Literal["closed", "poisson"] = "closed"
    rate_per_s: float = Field(100.0, gt=0, description="poisson arrival rate, images/s")
    seed: int = 0


class LeakageCfg(_Strict):
    """Static power (assumptions, not from Horowitz): per PE, per KiB of SRAM, and the rest."""

    pe_uw: float = Field(1.0, ge=0, description="leakage per PE, uW")
    sram_uw_per_kb: float = Field(5.0, ge=0, description="leakage per KiB SRAM, uW")
    other_mw: float = Field(5.0, ge=0, description="vector unit, exit unit, control, mW")


class EnergyCfg(_Strict):
    """``table``: ``horowitz45`` (default), a YAML file of per-action energies, or an Accelergy
    ERT summary (``accelergy_ert`` with ``accelergy_map``)."""

    table: str = "horowitz45"
    accelergy_ert: Optional[str] = None
    accelergy_map: dict[str, str] = Field(default_factory=dict)
    leakage: LeakageCfg = Field(default_factory=LeakageCfg)


class ArchConfig(_Strict):
    """A whole accelerator. Every field has a default; see ``hwsim/configs/arch.yaml``."""

    name: str = "default"
    clock_mhz: float = Field(500.0, gt=0, le=1e5, description="accelerator clock, MHz (at most 100 GHz)")
    array: ArrayCfg = Field(default_factory=ArrayCfg)
    precision: PrecisionCfg = Field(default_factory=PrecisionCfg)
    sram: SramCfg = Field(default_factory=SramCfg)
    dram: DramCfg = Field(default_factory=DramCfg)
    vector_unit: VectorUnitCfg = Field(default_factory=VectorUnitCfg)
    exit_unit: ExitUnitCfg = Field(default_factory=ExitUnitCfg)
    batch: BatchCfg = Field(default_factory=BatchCfg)
    arrivals: ArrivalCfg = Field(default_factory=ArrivalCfg)
    energy: EnergyCfg = Field(default_factory=EnergyCfg)
    memory: Literal["analytical", "scalesim"] = Field(
        "analytical", description="DRAM traffic and stall model: ours (analytical) or SCALE-Sim v2's (USER bandwidth)")
    overlap: bool = Field(False, description="double buffering across groups: array, DRAM, vector unit and exit "
                                             "unit work concurrently on two groups in flight")
    architecture: Literal["monolithic", "pipelined"] = "monolithic"
    stages: list[PipelineStageCfg] = Field(default_factory=list,
                                           description="pipelined: the stages, covering blocks 1..depth in order")

    @model_validator(mode="after")
    def _consistent(self):
        if self.architecture == "pipelined":
            if not self.stages:
                raise ValueError("architecture pipelined needs stages (a list of {blocks: [first, last], array: ...})")
            prev = 0
            for i, st in enumerate(self.stages):
                if st.blocks[0] != prev + 1:
                    raise ValueError(f"stages[{i}].blocks starts at {st.blocks[0]}, expected {prev + 1} "
                                     "(stages must cover the blocks in order, without gaps)")
                prev = st.blocks[1]
        elif self.stages:
            raise ValueError("stages are only used with architecture: pipelined")
        if self.overlap and self.batch.max_in_flight != 1:
            raise ValueError("overlap runs two groups in flight (double buffering); leave batch.max_in_flight at 1")
        return self

    @property
    def dram_bytes_per_cycle(self) -> float:
        """DRAM bytes transferred per accelerator cycle."""
        return self.dram.bandwidth_gbps * 1e9 / (self.clock_mhz * 1e6)

    @property
    def effective_batch(self) -> int:
        return 1 if self.batch.policy == "stream" else self.batch.size


_ALLOWED = {
    "dataflow": ", ".join(DATAFLOWS), "os_variant": ", ".join(OS_VARIANTS),
    "policy": ", ".join(BATCH_POLICIES), "mode": ", ".join(ARRIVALS),
    "architecture": ", ".join(ARCHITECTURES), "memory": ", ".join(MEMORY_MODELS),
}


def format_validation_error(source: str, err: ValidationError) -> str:
    """One line naming the file, the first bad field and the problem."""
    e = err.errors()[0]
    loc = ".".join(str(x) for x in e["loc"]) or "<root>"
    msg = e["msg"]
    if e["type"] == "extra_forbidden":
        msg = "unknown field"
    if e["type"] == "value_error":
        msg = msg.removeprefix("Value error, ")
    field = str(e["loc"][-1]) if e["loc"] else ""
    allowed = _ALLOWED.get(field)
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{source}: {loc}: {msg}" + (f"; allowed: {allowed}" if allowed else "") + more


def arch_from_dict(d: dict[str, Any], source: str = "<dict>") -> ArchConfig:
    """Validate a mapping into an :class:`ArchConfig`; raise InputError on bad fields."""
    if not isinstance(d, dict):
        raise InputError(f"{source}: <root>: expected a mapping of fields; allowed: {', '.join(ArchConfig.model_fields)}")
    try:
        return ArchConfig.model_validate(d)
    except ValidationError as err:
        raise InputError(format_validation_error(source, err)) from None


def with_trace_precision(arch: ArchConfig, trace_meta: dict | None) -> tuple[ArchConfig, dict]:
    """``arch`` with its operand widths resolved: the YAML's where set, else the trace meta's
    ``weight_bits`` / ``act_bits`` (its quantization recipe), else 8. Returns the arch (both
    widths explicit, so resolving again changes nothing) and ``{"weight_bits", "act_bits",
    "source": {field: "arch" | "trace" | "default"}}``."""
    p = arch.precision
    meta = trace_meta or {}
    out, src = {}, {}
    for field, own in (("weight_bits", p.weight_bits), ("act_bits", p.act_bits)):
        if own or p.operand_bits:
            out[field], src[field] = own or p.operand_bits, "arch"
        elif meta.get(field) is not None:
            out[field], src[field] = int(meta[field]), "trace"
        else:
            out[field], src[field] = DEFAULT_OPERAND_BITS, "default"
    resolved = arch.model_copy(update={"precision": p.model_copy(update=out)})
    return resolved, dict(out, source=src)


def load_yaml(path: str | Path) -> Any:
    """Read a YAML file; InputError on a missing file or a syntax error."""
    from common.readers import read_yaml

    return read_yaml(path) or {}


def load_arch(path: str | Path) -> ArchConfig:
    """Load and validate an accelerator YAML file."""
    cfg = arch_from_dict(load_yaml(path), str(path))
    return _resolve_paths(cfg, Path(path).parent)


def _resolve_paths(cfg: ArchConfig, base: Path) -> ArchConfig:
    upd = {}
    e = cfg.energy
    if e.table not in ("horowitz45",) and not Path(e.table).is_absolute():
        upd["table"] = str(base / e.table)
    if e.accelergy_ert and not Path(e.accelergy_ert).is_absolute():
        upd["accelergy_ert"] = str(base / e.accelergy_ert)
    if upd:
        cfg = cfg.model_copy(update={"energy": e.model_copy(update=upd)})
    x = cfg.exit_unit
    if x.hls_report and not Path(x.hls_report).is_absolute():
        cfg = cfg.model_copy(update={"exit_unit": x.model_copy(update={"hls_report": str(base / x.hls_report)})})
    return cfg
