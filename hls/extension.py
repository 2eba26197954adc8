"""The exit-unit layers hls4ml lacks, added through its extension API.

Four custom layers, each a PyTorch leaf module (for the PyTorch frontend), a converter handler, an
hls4ml IR layer, a config and a function-call template registered with the Vivado and Vitis
backends, and C++ in ``hls/cpp/nnet_lraee.h`` registered as backend source (hls4ml copies it to
``firmware/nnet_utils/`` of every project):

* ``LraeeSSAMean``    mean of the N patch tokens with the spec's constant 1/N and token scale 2**e
  (hls4ml pooling includes the CLS token and rounds differently);
* ``LraeeLayerNorm``  LayerNorm with the spec's LUT-seed + Newton rsqrt unit and variable shift;
* ``LraeeGELU``       x * Phi(x), Phi interpolated in the spec's breakpoint table;
* ``LraeeExitComparator`` the exit decision ``g >= T`` (T a code of ``gate.out``).

Dense layers are stock hls4ml ``Dense``.  Every layer's precisions come from the fixed-point spec
through the hls4ml configuration (``LayerName -> Precision``); the internal exact types (sums, the
shift type) are derived here from the same formats.  :func:`register` is idempotent.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

CPP_SOURCE = Path(__file__).resolve().parent / "cpp" / "nnet_lraee.h"
INCLUDE = ["nnet_utils/nnet_lraee.h"]
BACKENDS = ("Vivado", "Vitis")
_AP_TYPE = re.compile(r"^ap_u?(fixed|int)<-?[0-9]+(,-?[0-9]+)?(,AP_[A-Z_]+,AP_[A-Z_]+)?>$")

_registered = False


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


# ---- PyTorch leaf modules (shape-only forwards: the numbers come from the fixed-point model) ----------

def _modules():
    import torch
    from hls4ml.utils.torch import HLS4MLModule

    class LraeeSSAMean(HLS4MLModule):
        """[n, (N+1)*d] int8 codes -> [n, d]; ``hls`` holds the layer's attributes."""

        def __init__(self, hls: dict):
            super().__init__()
            self.hls = hls

        def forward(self, x):
            d, n = self.hls["d"], self.hls["n_tokens"]
            return x.reshape(x.shape[0], n + 1, d)[:, 1:, :].mean(dim=1) * self.hls["scale"]

    class LraeeLayerNorm(HLS4MLModule):
        def __init__(self, hls: dict):
            super().__init__()
            self.hls = hls

        def forward(self, x):
            return torch.nn.functional.layer_norm(x, (x.shape[-1],))

    class LraeeGELU(HLS4MLModule):
        def __init__(self, hls: dict):
            super().__init__()
            self.hls = hls

        def forward(self, x):
            return torch.nn.functional.gelu(x)

    class LraeeExitComparator(HLS4MLModule):
        def __init__(self, hls: dict):
            super().__init__()
            self.hls = hls

        def forward(self, x):
            return torch.cat([x, (x >= self.hls["threshold"]).to(x.dtype)], dim=-1)

    return {c.__name__: c for c in (LraeeSSAMean, LraeeLayerNorm, LraeeGELU, LraeeExitComparator)}


_MODULES = None


def modules() -> dict:
    """{class name: torch module class} (built lazily: torch is imported only when blocks are made)."""
    global _MODULES
    if _MODULES is None:
        _MODULES = _modules()
    return _MODULES


# ---- hls4ml IR layers ---------------------------------------------------------------------------------

def _layers():
    from hls4ml.model.layers import Layer
    from hls4ml.model.attributes import Attribute, ConfigurableAttribute, TypeAttribute, WeightAttribute

    class _Lraee(Layer):
        _expected_attributes = [ConfigurableAttribute("reuse_factor", default=1)]
        _weights: tuple = ()

        def _add_consts(self):
            consts = self.get_attr("consts")
            for name in self._weights:
                self.add_weights_variable(name=name, var_name=f"{name}{{index}}",
                                          data=np.asarray(consts[name], np.float64).reshape(-1))

    class LraeeSSAMean(_Lraee):
        _expected_attributes = [Attribute("n_tokens"), Attribute("d"), WeightAttribute("recip"),
                                TypeAttribute("recip")]
        _weights = ("recip",)

        def initialize(self):
            self.add_output_variable([self.get_attr("d")])
            self._add_consts()

    class LraeeLayerNorm(_Lraee):
        _expected_attributes = [Attribute("n_in"), WeightAttribute("recip"), WeightAttribute("eps"),
                                WeightAttribute("table"), WeightAttribute("gamma"), WeightAttribute("beta"),
                                TypeAttribute("recip"), TypeAttribute("eps"), TypeAttribute("table"),
                                TypeAttribute("gamma"), TypeAttribute("beta")]
        _weights = ("recip", "eps", "table", "gamma", "beta")

        def initialize(self):
            self.add_output_variable([self.get_attr("n_in")])
            self._add_consts()

    class LraeeGELU(_Lraee):
        _expected_attributes = [Attribute("n_in"), WeightAttribute("table"), TypeAttribute("table")]
        _weights = ("table",)

        def initialize(self):
            self.add_output_variable([self.get_attr("n_in")])
            self._add_consts()

    class LraeeExitComparator(_Lraee):
        _expected_attributes = [WeightAttribute("threshold"), TypeAttribute("threshold")]
        _weights = ("threshold",)

        def initialize(self):
            self.add_output_variable([2])
            self._add_consts()

    return {c.__name__: c for c in (LraeeSSAMean, LraeeLayerNorm, LraeeGELU, LraeeExitComparator)}


# ---- converter handlers -------------------------------------------------------------------------------

def _handler(class_name: str, out_dim):
    def parse(operation, layer_name, input_names, input_shapes, node, class_object, data_reader, config):
        assert operation == class_name
        layer = {"class_name": class_name, "name": layer_name, "inputs": input_names}
        layer.update({k: v for k, v in class_object.hls.items() if k not in ("scale", "threshold")})
        return layer, [input_shapes[0][0], out_dim(class_object.hls, input_shapes[0])]

    return parse


_OUT_DIMS = {
    "LraeeSSAMean": lambda h, s: h["d"],
    "LraeeLayerNorm": lambda h, s: s[-1],
    "LraeeGELU": lambda h, s: s[-1],
    "LraeeExitComparator": lambda h, s: 2,
}


# ---- templates ----------------------------------------------------------------------------------------

def _typedefs(node) -> str:
    return "".join(f"    typedef {cpp_type(t)} {name};\n" for name, t in node.get_attr("cpp_types").items()
                   if re.match(r"^[a-z_0-9]+$", name))


def _consts(node, keys) -> str:
    c = node.get_attr("cpp_consts")
    return "".join(f"    static const {'bool' if isinstance(c[k], bool) else 'int'} {k} = "
                   f"{str(c[k]).lower() if isinstance(c[k], bool) else _cpp_int(c[k])};\n" for k in keys)


def _unit_struct(node) -> str:
    u = node.get_attr("unit")
    body = "".join(f"    static const {'bool' if k == 'rsqrt' else 'int'} {k} = "
                   f"{str(bool(u['consts'][k])).lower() if k == 'rsqrt' else _cpp_int(u['consts'][k])};\n"
                   for k in ("rsqrt", "v_w", "v_f", "lut_bits", "newton_steps", "mant_w", "mant_f", "shift_w"))
    body += "".join(f"    typedef {cpp_type(t)} {n};\n" for n, t in u["types"].items())
    return f"struct unit_config{node.index} : nnet::lraee_norm_unit_config {{\n{body}}};\n"


def _templates():
    from hls4ml.backends.template import FunctionCallTemplate, LayerConfigTemplate

    L = _layers_cache()

    def config_tpl(cls_name, base, keys, pre=None):
        class T(LayerConfigTemplate):
            def __init__(self):
                super().__init__(L[cls_name])

            def format(self, node):
                head = pre(node) if pre else ""
                extra = ""
                if cls_name == "LraeeLayerNorm":
                    extra = f"    typedef unit_config{node.index} unit;\n"
                return (f"{head}struct config{node.index} : nnet::{base} {{\n"
                        f"    static const unsigned reuse_factor = {_cpp_int(node.get_attr('reuse_factor'))};\n"
                        f"{_consts(node, keys)}{_typedefs(node)}{extra}}};\n")

        T.__name__ = f"{cls_name}ConfigTemplate"
        return T

    def func_tpl(cls_name, fn, weights):
        class T(FunctionCallTemplate):
            def __init__(self):
                super().__init__(L[cls_name], include_header=INCLUDE)

            def format(self, node):
                p = self._default_function_params(node)
                args = ", ".join([p["input"], p["output"]] + [node.get_weights(w).name for w in weights])
                return f"nnet::{fn}<{p['input_t']}, {p['output_t']}, {p['config']}>({args});"

        T.__name__ = f"{cls_name}FunctionTemplate"
        return T

    return [
        config_tpl("LraeeSSAMean", "lraee_ssa_config", ("n_tokens", "d")),
        func_tpl("LraeeSSAMean", "lraee_ssa_mean", ("recip",)),
        config_tpl("LraeeLayerNorm", "lraee_layernorm_config", ("n_in",), pre=_unit_struct),
        func_tpl("LraeeLayerNorm", "lraee_layernorm", ("recip", "eps", "table", "gamma", "beta")),
        config_tpl("LraeeGELU", "lraee_gelu_config", ("n_in", "x_w", "a_w", "r_shift", "sh", "entries")),
        func_tpl("LraeeGELU", "lraee_gelu", ("table",)),
        config_tpl("LraeeExitComparator", "lraee_comparator_config", ()),
        func_tpl("LraeeExitComparator", "lraee_exit_comparator", ("threshold",)),
    ]


_LAYERS = None


def _layers_cache() -> dict:
    global _LAYERS
    if _LAYERS is None:
        _LAYERS = _layers()
    return _LAYERS


def register() -> None:
    """Register the handlers, IR layers, templates and C++ source with hls4ml (once per process)."""
    global _registered
    if _registered:
        return
    import hls4ml
    from hls4ml.converters.pytorch_to_hls import layer_handlers

    for name, cls in _layers_cache().items():
        hls4ml.model.layers.register_layer(name, cls)
        if name not in layer_handlers:
            hls4ml.converters.register_pytorch_layer_handler(name, _handler(name, _OUT_DIMS[name]))
    templates = _templates()
    for b in BACKENDS:
        backend = hls4ml.backends.get_backend(b)
        for t in templates:
            backend.register_template(t)
        backend.register_source(CPP_SOURCE)
    _registered = True
