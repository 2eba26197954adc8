"""``lraee run`` settings: one YAML file, one section per stage (pydantic, field-level errors).

``lraee run --print-config`` writes the defaults below as YAML. Unknown keys are refused, so a
typo never silently falls back to a default.
"""
from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from common.errors import InputError
from analysis.settings import (AdaViTCfg, DataCfg, ExitsCfg, FixedPointCfg, HlsCfg, HwsimCfg,  # noqa: F401
                               ModelCfg, PrecisionCfg, RuntimeCfg, ThresholdsCfg, _Section)


class RunConfig(_Section):
    model: ModelCfg = Field(default_factory=ModelCfg)
    precision: PrecisionCfg = Field(default_factory=PrecisionCfg)
    data: DataCfg = Field(default_factory=DataCfg)
    runtime: RuntimeCfg = Field(default_factory=RuntimeCfg)
    exits: ExitsCfg = Field(default_factory=ExitsCfg)
    thresholds: ThresholdsCfg = Field(default_factory=ThresholdsCfg)
    adavit: AdaViTCfg = Field(default_factory=AdaViTCfg)
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
            from quant.recipes import static_allowed_text

            raise ValueError(f"recipe {v.recipe!r}: the pipeline needs a static INT8 recipe; "
                             f"allowed: {static_allowed_text()}")
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
