"""The exit-unit layers hls4ml lacks, added through its extension API: one descriptor per layer.

Each custom layer is one :class:`CustomLayer` (in :data:`CUSTOM_LAYERS`), and everything hls4ml
needs is built from it by :func:`register`: the PyTorch leaf module (for the PyTorch frontend),
the converter handler, the hls4ml IR layer, the config and function-call templates of the Vivado
and Vitis backends, and the C++ include (``hls/cpp/nnet_lraee.h``, registered as backend source:
hls4ml copies it to ``firmware/nnet_utils/`` of every project).  The descriptor also names the
numpy twin, the function of :mod:`exitlogic.fixedpoint.stages` the C++ mirrors cast for cast, and
the spec format of the layer's output (its ``result`` precision).

* :data:`SSA_MEAN` ``LraeeSSAMean``    mean of the N patch tokens with the spec's constant 1/N and
  token scale 2**e (hls4ml pooling includes the CLS token and rounds differently);
* :data:`LAYER_NORM` ``LraeeLayerNorm``  LayerNorm with the spec's LUT-seed + Newton rsqrt unit and
  variable shift;
* :data:`GELU` ``LraeeGELU``       x * Phi(x), Phi interpolated in the spec's breakpoint table;
* :data:`EXIT_COMPARATOR` ``LraeeExitComparator`` the exit decision ``g >= T`` (T a code of ``gate.out``).

Dense layers are stock hls4ml ``Dense``.  Every layer's precisions come from the fixed-point spec
through the hls4ml configuration (``LayerName -> Precision``); the internal exact types (sums, the
shift type) are derived in :mod:`hls.blocks` from the same formats and handed to
:meth:`CustomLayer.attributes`, which checks them against the descriptor.  :func:`register` is
idempotent.
"""
from __future__ import annotations

import functools
import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

CPP_SOURCE = Path(__file__).resolve().parent / "cpp" / "nnet_lraee.h"
BACKENDS = ("Vivado", "Vitis")
_AP_TYPE = re.compile(r"^ap_u?(fixed|int)<-?[0-9]+(,-?[0-9]+)?(,AP_[A-Z_]+,AP_[A-Z_]+)?>$")
_CPP_NAME = re.compile(r"^[a-z_][a-z_0-9]*$")


def cpp_type(s: str) -> str:
    """Refuse anything but a plain ap_[u]fixed / ap_[u]int type string (nothing else reaches C++)."""
    s = str(s).replace(" ", "")
    if not _AP_TYPE.match(s):
        raise ValueError(f"not an ap type: {s!r}")
    return s


def _cpp_int(v) -> int:
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    if not isinstance(v, (int, np.integer)):
        raise ValueError(f"not an integer: {v!r}")
    return int(v)


# ---- the descriptor -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class CustomLayer:
    """Everything about one hls4ml custom layer of the exit unit.

    Attributes:
        name: the class name of the PyTorch module, the IR layer and the templates (``Lraee...``).
        cpp_function: the C++ function in :attr:`include` (``nnet::{cpp_function}<in_t, out_t, config>``,
            arguments: input, output, then :attr:`weights` in order).
        config_base: the C++ config struct the generated ``config{index}`` derives from.
        sizes: integer attributes of the IR layer (element counts, no unit) also passed to the handler.
        weights: constant arrays of the layer (hls4ml weight variables with a type each), in C++ argument order.
        cpp_consts: the config struct's integer constants (bit widths, shifts, counts).
        cpp_types: the config struct's typedefs (ap types of the exact internal values).
        out_size: output elements per sample, from the layer's attributes.
        shape_forward: the torch forward used only to trace shapes: ``(x, attributes) -> tensor``
            (the numbers come from the fixed-point model; the module never runs in a result).
        twin: the function of :mod:`exitlogic.fixedpoint.stages` this layer mirrors cast for cast.
        output: the spec format of the layer's result (the comparator: of g; its exit bit is 0 or 1).
        norm_unit: the config also carries a ``unit`` struct (:func:`_unit_struct`, LayerNorm's rsqrt).
        include: the C++ header (under the project's firmware folder) holding :attr:`cpp_function`.
        torch_only: attributes read by :attr:`shape_forward` only (not passed to hls4ml).
    """

    name: str
    cpp_function: str
    config_base: str
    sizes: tuple
    weights: tuple
    cpp_consts: tuple
    cpp_types: tuple
    out_size: Callable[[dict], int]
    shape_forward: Callable
    twin: str
    output: str
    norm_unit: bool = False
    include: str = f"nnet_utils/{CPP_SOURCE.name}"
    torch_only: tuple = ()

    @property
    def numpy_twin(self) -> Callable:
        """The numpy stage function (:mod:`exitlogic.fixedpoint.stages`) the C++ mirrors."""
        return getattr(importlib.import_module("exitlogic.fixedpoint.stages"), self.twin)

    def attributes(self, *, reuse_factor: int, consts: dict, cpp_consts: dict, cpp_types: dict,
                   unit: dict | None = None, **values) -> dict:
        """The layer's attribute dict (handed to its torch module, then by the handler to hls4ml), checked
        against the descriptor: every size, weight, constant and type present and nothing else."""
        missing = [k for k in self.sizes + self.torch_only if k not in values]
        extra = [k for k in values if k not in self.sizes + self.torch_only]
        checks = [("sizes", missing, extra), ("weights", [k for k in self.weights if k not in consts],
                                              [k for k in consts if k not in self.weights]),
                  ("cpp_consts", [k for k in self.cpp_consts if k not in cpp_consts],
                   [k for k in cpp_consts if k not in self.cpp_consts]),
                  ("cpp_types", [k for k in self.cpp_types if k not in cpp_types],
                   [k for k in cpp_types if k not in self.cpp_types])]
        for what, miss, more in checks:
            if miss or more:
                raise ValueError(f"{self.name} {what}: missing {miss}, unexpected {more}")
        if self.norm_unit != (unit is not None):
            raise ValueError(f"{self.name}: a norm unit is {'required' if self.norm_unit else 'not expected'}")
        attrs = {"reuse_factor": int(reuse_factor), **values,
                 "consts": {k: np.asarray(v, np.float64).reshape(-1) for k, v in consts.items()},
                 "cpp_consts": dict(cpp_consts), "cpp_types": {k: cpp_type(v) for k, v in cpp_types.items()}}
        if unit is not None:
            attrs["unit"] = unit
        return attrs

    def module(self, attributes: dict):
        """A PyTorch leaf module of this layer with ``attributes`` (see :meth:`attributes`)."""
        return modules()[self.name](attributes)


def _ssa_forward(x, h):
    d, n = h["d"], h["n_tokens"]
    return x.reshape(x.shape[0], n + 1, d)[:, 1:, :].mean(dim=1) * h["scale"]


def _ln_forward(x, h):
    import torch

    return torch.nn.functional.layer_norm(x, (x.shape[-1],))


def _gelu_forward(x, h):
    import torch

    return torch.nn.functional.gelu(x)


def _cmp_forward(x, h):
    import torch

    return torch.cat([x, (x >= h["threshold"]).to(x.dtype)], dim=-1)


SSA_MEAN = CustomLayer(
    name="LraeeSSAMean", cpp_function="lraee_ssa_mean", config_base="lraee_ssa_config",
    sizes=("n_tokens", "d"), weights=("recip",), cpp_consts=("n_tokens", "d"),
    cpp_types=("sum_t", "acc_t", "recip_t", "pow2_t"), out_size=lambda h: h["d"], shape_forward=_ssa_forward,
    twin="ssa_mean", output="ssa.out", torch_only=("scale",))
LAYER_NORM = CustomLayer(
    name="LraeeLayerNorm", cpp_function="lraee_layernorm", config_base="lraee_layernorm_config",
    sizes=("n_in",), weights=("recip", "eps", "table", "gamma", "beta"), cpp_consts=("n_in",),
    cpp_types=("sum_t", "recip_t", "mean_t", "diff_t", "sumsq_acc_t", "sumsq_t", "var_t", "norm_t", "shift_t",
               "gamma_t", "beta_t"),
    out_size=lambda h: h["n_in"], shape_forward=_ln_forward, twin="layernorm", output="ln.out", norm_unit=True)
GELU = CustomLayer(
    name="LraeeGELU", cpp_function="lraee_gelu", config_base="lraee_gelu_config",
    sizes=("n_in",), weights=("table",), cpp_consts=("n_in", "x_w", "a_w", "r_shift", "sh", "entries"),
    cpp_types=("frac_t", "phi_t"), out_size=lambda h: h["n_in"], shape_forward=_gelu_forward, twin="gelu",
    output="gelu.out")
EXIT_COMPARATOR = CustomLayer(
    name="LraeeExitComparator", cpp_function="lraee_exit_comparator", config_base="lraee_comparator_config",
    sizes=(), weights=("threshold",), cpp_consts=(), cpp_types=("thr_t",), out_size=lambda h: 2,
    shape_forward=_cmp_forward, twin="gate", output="gate.out", torch_only=("threshold",))

#: every custom layer by class name (the one registry: registration, blocks and estimates read it)
CUSTOM_LAYERS: dict[str, CustomLayer] = {c.name: c for c in (SSA_MEAN, LAYER_NORM, GELU, EXIT_COMPARATOR)}


# ---- PyTorch leaf modules (shape-only forwards: the numbers come from the fixed-point model) ----------

@functools.cache
def modules() -> dict:
    """{class name: torch module class} (built once, lazily: torch is imported only when blocks are made)."""
    from hls4ml.utils.torch import HLS4MLModule

    def make(desc: CustomLayer):
        def __init__(self, hls: dict):
            HLS4MLModule.__init__(self)
            self.hls = hls

        def forward(self, x):
            return desc.shape_forward(x, self.hls)

        return type(desc.name, (HLS4MLModule,), {"__init__": __init__, "forward": forward,
                                                 "__doc__": f"{desc.name} (hls.extension.{desc.name}); "
                                                            f"``hls``: the layer's attributes"})

    return {name: make(desc) for name, desc in CUSTOM_LAYERS.items()}


# ---- hls4ml IR layers ---------------------------------------------------------------------------------

@functools.cache
def _layers() -> dict:
    """{class name: hls4ml IR layer class} (built once, lazily)."""
    from hls4ml.model.attributes import Attribute, ConfigurableAttribute, TypeAttribute, WeightAttribute
    from hls4ml.model.layers import Layer

    class _Lraee(Layer):
        _expected_attributes = [ConfigurableAttribute("reuse_factor", default=1)]
        desc: CustomLayer

        def initialize(self):
            self.add_output_variable([int(self.desc.out_size(self.attributes))])
            consts = self.get_attr("consts")
            for name in self.desc.weights:
                self.add_weights_variable(name=name, var_name=f"{name}{{index}}",
                                          data=np.asarray(consts[name], np.float64).reshape(-1))

    def make(desc: CustomLayer):
        attrs = [Attribute(s) for s in desc.sizes]
        attrs += [WeightAttribute(w) for w in desc.weights] + [TypeAttribute(w) for w in desc.weights]
        return type(desc.name, (_Lraee,), {"_expected_attributes": attrs, "desc": desc})

    return {name: make(desc) for name, desc in CUSTOM_LAYERS.items()}


# ---- converter handler --------------------------------------------------------------------------------

def _handler(desc: CustomLayer):
    def parse(operation, layer_name, input_names, input_shapes, node, class_object, data_reader, config):
        assert operation == desc.name
        layer = {"class_name": desc.name, "name": layer_name, "inputs": input_names}
        layer.update({k: v for k, v in class_object.hls.items() if k not in desc.torch_only})
        return layer, [input_shapes[0][0], int(desc.out_size(class_object.hls))]

    return parse


# ---- templates ----------------------------------------------------------------------------------------

def _typedefs(node, desc: CustomLayer) -> str:
    types = node.get_attr("cpp_types")
    return "".join(f"    typedef {cpp_type(types[name])} {name};\n" for name in desc.cpp_types
                   if _CPP_NAME.match(name))


def _consts(node, desc: CustomLayer) -> str:
    c = node.get_attr("cpp_consts")
    return "".join(f"    static const {'bool' if isinstance(c[k], bool) else 'int'} {k} = "
                   f"{str(c[k]).lower() if isinstance(c[k], bool) else _cpp_int(c[k])};\n" for k in desc.cpp_consts)


def _unit_struct(node) -> str:
    u = node.get_attr("unit")
    body = "".join(f"    static const {'bool' if k == 'rsqrt' else 'int'} {k} = "
                   f"{str(bool(u['consts'][k])).lower() if k == 'rsqrt' else _cpp_int(u['consts'][k])};\n"
                   for k in ("rsqrt", "v_w", "v_f", "lut_bits", "newton_steps", "mant_w", "mant_f", "shift_w"))
    body += "".join(f"    typedef {cpp_type(t)} {n};\n" for n, t in u["types"].items() if _CPP_NAME.match(n))
    return f"struct unit_config{node.index} : nnet::lraee_norm_unit_config {{\n{body}}};\n"


def _templates(desc: CustomLayer) -> list:
    from hls4ml.backends.template import FunctionCallTemplate, LayerConfigTemplate

    layer_cls = _layers()[desc.name]

    class Config(LayerConfigTemplate):
        def __init__(self):
            super().__init__(layer_cls)

        def format(self, node):
            head = _unit_struct(node) if desc.norm_unit else ""
            extra = f"    typedef unit_config{node.index} unit;\n" if desc.norm_unit else ""
            return (f"{head}struct config{node.index} : nnet::{desc.config_base} {{\n"
                    f"    static const unsigned reuse_factor = {_cpp_int(node.get_attr('reuse_factor'))};\n"
                    f"{_consts(node, desc)}{_typedefs(node, desc)}{extra}}};\n")

    class Call(FunctionCallTemplate):
        def __init__(self):
            super().__init__(layer_cls, include_header=[desc.include])

        def format(self, node):
            p = self._default_function_params(node)
            args = ", ".join([p["input"], p["output"]] + [node.get_weights(w).name for w in desc.weights])
            return f"nnet::{desc.cpp_function}<{p['input_t']}, {p['output_t']}, {p['config']}>({args});"

    Config.__name__, Call.__name__ = f"{desc.name}ConfigTemplate", f"{desc.name}FunctionTemplate"
    return [Config, Call]


_registered = False


def register() -> None:
    """Register every :data:`CUSTOM_LAYERS` descriptor with hls4ml (handler, IR layer, templates) and the
    C++ source with the backends (once per process)."""
    global _registered
    if _registered:
        return
    import hls4ml
    from hls4ml.converters.pytorch_to_hls import layer_handlers

    templates = []
    for name, desc in CUSTOM_LAYERS.items():
        hls4ml.model.layers.register_layer(name, _layers()[name])
        if name not in layer_handlers:
            hls4ml.converters.register_pytorch_layer_handler(name, _handler(desc))
        templates += _templates(desc)
    for b in BACKENDS:
        backend = hls4ml.backends.get_backend(b)
        for t in templates:
            backend.register_template(t)
        backend.register_source(CPP_SOURCE)
    _registered = True
