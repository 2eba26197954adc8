"""QONNX export of a calibrated Brevitas image tower (what FINN and hls4ml users take), and its check.

:func:`export_tower` wraps the tower so that ``forward(images [B, 3, H, W]) -> embedding
[B, embed_dim]`` and exports it with ``brevitas.export.export_qonnx`` through the TorchScript
exporter (``dynamo=False``: Brevitas' MHA reads tensor data pointers, which torch.export
cannot trace). Each quantizer becomes a QONNX ``Quant`` node (scale, zero point, bit width).

:class:`QonnxRunner` executes the exported file exactly as ``qonnx.core.onnx_exec.execute_onnx``
does (node by node; ``Quant`` through qonnx's own custom-op code, standard ops through one-node
onnxruntime models), but builds each node's onnxruntime session once (one thread) and can return
every intermediate tensor, or re-feed chosen ``Quant`` outputs. ``execute_onnx`` spends about 8 s
of Python bookkeeping per call on the tiny tower; the runner needs about 2 s once, then
about 0.05 s per image, bit-identical to ``execute_onnx`` (checked by :func:`roundtrip` with
``crosscheck=True`` and the tests).

:func:`roundtrip` exports, executes and compares with the Brevitas model, per ``Quant`` node:

- ``layers`` (free-running): per activation ``Quant`` node, the fraction of integer codes equal to
  Brevitas' and the largest code difference in LSBs; ``weights_biases``: the same for the
  ``Quant`` nodes on weights and biases (these must be all equal).
- ``sync``: the same comparison with every activation ``Quant`` output re-fed from Brevitas (each
  node then sees only the float ops since the previous quantizers), the largest deviation of a
  ``Quant`` input from Brevitas' in LSBs, and ``unexplained``: code differences that are not a
  1-LSB flip with a rounding tie (k + 1/2) between Brevitas' and the graph's input. A structural
  difference (an op missing or in another order, a wrong scale) shows up here.
- final embedding: ``identical``, ``max_abs_diff``, ``rel_diff`` (max |diff| / max |ref|),
  ``cosine_min`` and, with class text embeddings, ``top1_agreement``.

What it shows on the tiny w8a8 tower (procedural eval images; ``tests/quant``): the export is
faithful. Weight and bias codes are all equal. With the tower and the graph both in float64
(:func:`float64_check`) every code and the embedding are identical. In float32, onnxruntime's
LayerNormalization, Softmax and Gelu differ from torch's by a few ulps (at most 5e-5 LSB of the
next quantizer), which flips a code only where the value lies within that distance of a
rounding tie (e.g. x/s = -6.50000048 in Brevitas, -6.49999952 in the graph): re-fed, about 1 code
in 10^6 to 10^7, always 1 LSB, always at a tie. Free-running, such a flip propagates through the
residual stream: the first divergent node has the single 1-LSB flip, later nodes up to about 4 %
of codes off by up to 6 LSBs (shipped tiny, 16 images; more in a random-weight tower) and the
embedding about 2 % of its max (cosine >= 0.9997, same zero-shot top-1).

Needs the optional packages ``onnx``, ``onnxoptimizer``, ``onnxruntime`` and ``qonnx``.
"""
from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.errors import InputError
from quant.brevitas_model import quant_tapped_forward

EXPORT_PACKAGES = ("onnx", "onnxoptimizer", "onnxruntime", "qonnx")


class EmbeddingTower(nn.Module):
    """``images -> embedding`` wrapper of a (Brevitas) tower for export."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return quant_tapped_forward(self.visual, images).embedding


def check_packages() -> None:
    import importlib.util

    missing = [p for p in EXPORT_PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        raise InputError(f"QONNX export needs the packages {', '.join(missing)}; install them with "
                         f"`pip install onnx onnxoptimizer onnxruntime qonnx`")


def export_tower(qvisual: nn.Module, sample: torch.Tensor, path: str | Path) -> dict:
    """Export ``qvisual`` (calibrated) to ``path`` (.onnx) with ``sample``'s fixed batch size.

    Returns {path, op_counts, quant_nodes}.
    """
    check_packages()
    import onnx
    from brevitas.export import export_qonnx

    if not getattr(qvisual, "lraee_calibrated", False):
        raise InputError("QONNX export: the INT8 model is not calibrated")
    model = EmbeddingTower(qvisual).eval().cpu()
    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(model, args=sample.cpu(), export_path=str(path), dynamo=False)
    ops = Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    return {"path": str(path), "op_counts": dict(ops), "quant_nodes": ops.get("Quant", 0)}


class QonnxRunner:
    """Node-by-node execution of a QONNX file, as ``qonnx.core.onnx_exec.execute_onnx`` (see module doc)."""

    def __init__(self, path: str | Path, backend: str = "onnxruntime"):
        check_packages()
        if backend not in ("onnxruntime", "reference"):
            raise ValueError(f"backend {backend!r}: allowed: onnxruntime, reference")
        self.backend = backend
        # No qonnx.util.cleanup: its constant folding re-runs the cleanup passes per node (minutes on
        # this graph); the exported graph executes as is.
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.transformation.infer_shapes import InferShapes

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model = ModelWrapper(str(path)).transform(InferShapes(), make_deepcopy=False, cleanup=False)
        g = self.model.graph
        self.graph = g
        self.input_name, self.output_name = g.input[0].name, g.output[0].name
        self.batch = int(self.model.get_tensor_shape(self.input_name)[0])  # the sample's fixed batch size
        from onnx import helper

        self.dtype = np.dtype(helper.tensor_dtype_to_np_dtype(g.input[0].type.tensor_type.elem_type))
        self._context = self.model.make_empty_exec_context()
        self._opsets = self.model.get_opset_imports()
        self._sessions: dict[int, tuple] = {}
        ints = [t.tensor_name for t in g.quantization_annotation
                if self.model.get_tensor_datatype(t.tensor_name).is_integer()]
        if ints:  # execute_onnx would round those tensors (sanitize_quant_values); the export has none
            raise InputError(f"{path}: tensors annotated as integer ({ints[0]}, ...) are not supported")

    def set_initializer(self, name: str, value: np.ndarray) -> None:
        """Add or replace an initializer (e.g. to alter a scale in a test)."""
        self.model.set_initializer(name, value)
        self._context[name] = value

    def quant_nodes(self) -> list:
        return [n for n in self.graph.node if n.op_type == "Quant"]

    def is_param(self, node) -> bool:
        """True for a ``Quant`` node on an initializer (weight or bias)."""
        return self.model.get_initializer(node.input[0]) is not None

    def _session(self, i: int, node, opset: int):
        s = self._sessions.get(i)
        if s is None:  # the one-node model qonnx.core.onnx_exec.execute_node builds
            import onnxruntime as rt
            from onnx import helper
            from qonnx.util.basic import qonnx_make_model

            g = self.graph
            ins = [v for lst in (g.input, g.output, g.value_info) for v in lst if v.name in node.input]
            outs = [v for lst in (g.output, g.value_info) for v in lst if v.name in node.output]
            m = qonnx_make_model(helper.make_graph(nodes=[node], name="single-node-exec", inputs=ins, outputs=outs))
            m.opset_import[0].version = opset
            if self.backend == "reference":
                from onnx.reference import ReferenceEvaluator

                ev = ReferenceEvaluator(m)
                s = (_Ref(ev), [v.name for v in outs])
                self._sessions[i] = s
                return s
            opts = rt.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            s = (rt.InferenceSession(m.SerializeToString(), opts), [v.name for v in outs])
            self._sessions[i] = s
        return s

    def run(self, images: np.ndarray, refeed: dict | None = None) -> tuple[dict, dict]:
        """Execute on one batch (the graph's batch size).

        ``refeed``: ``Quant`` node name -> array that replaces that node's output before its
        consumers run. Returns (context: every tensor by name, own: node name -> the node's own
        output for the re-fed nodes).
        """
        import qonnx.core.execute_custom_node as ex_cu_node
        from qonnx.custom_op.registry import is_custom_op
        from qonnx.util.basic import get_preferred_qonnx_opset

        ctx = dict(self._context)
        ctx[self.input_name] = np.ascontiguousarray(images, self.dtype)
        own = {}
        for i, node in enumerate(self.graph.node):
            opset = self._opsets.get(node.domain, get_preferred_qonnx_opset())
            if self.backend == "reference" and node.op_type == "Quant":
                ctx[node.output[0]] = _quant_keep_dtype(node, ctx)
            elif is_custom_op(node.domain, node.op_type):
                ex_cu_node.execute_custom_node(node, ctx, self.graph, onnx_opset_version=opset)
            else:
                sess, names = self._session(i, node, opset)
                for name, val in zip(names, sess.run(None, {k: ctx[k] for k in node.input})):
                    ctx[name] = val
            if refeed is not None and node.name in refeed:
                own[node.name] = ctx[node.output[0]]
                ctx[node.output[0]] = np.asarray(refeed[node.name], ctx[node.output[0]].dtype)
        return ctx, own

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Embeddings [N, embed_dim] of images float32 [N, 3, H, W] (any N; run in graph-sized chunks)."""
        b = self.batch
        return np.concatenate([self.run(images[i:i + b])[0][self.output_name]
                               for i in range(0, images.shape[0], b)], axis=0)


class _Ref:
    def __init__(self, ev):
        self.ev = ev

    def run(self, _names, feeds):
        return self.ev.run(None, feeds)


def _quant_keep_dtype(node, ctx: dict) -> np.ndarray:
    """qonnx's Quant arithmetic (``int_quant``) without its cast of the result to float32."""
    from qonnx.custom_op.general.intquant import int_quant
    from qonnx.custom_op.registry import getCustomOp

    op = getCustomOp(node)
    x = ctx[node.input[0]]
    out = int_quant(x, *(np.asarray(ctx[k], x.dtype) for k in node.input[1:4]), op.get_nodeattr("signed"),
                    op.get_nodeattr("narrow"), op.get_nodeattr("rounding_mode"))
    return np.asarray(out, x.dtype)


def run_qonnx(path: str | Path, images: np.ndarray) -> np.ndarray:
    """Execute an exported tower on ``images`` float32 [B, 3, H, W]; returns the embedding [B, embed_dim]."""
    return QonnxRunner(path).embed(np.ascontiguousarray(images, np.float32))


def run_execute_onnx(path: str | Path, images: np.ndarray) -> np.ndarray:
    """The same with ``qonnx.core.onnx_exec.execute_onnx`` itself (slow: seconds per graph-sized batch)."""
    check_packages()
    from qonnx.core.onnx_exec import execute_onnx

    r = QonnxRunner(path)
    images = np.ascontiguousarray(images, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outs = [execute_onnx(r.model, {r.input_name: images[i:i + r.batch]})[r.output_name]
                for i in range(0, images.shape[0], r.batch)]
    return np.concatenate(outs, axis=0)


def _node_key(node) -> str:
    """``/resblocks.0/attn/in_proj/input_quant/export_handler/Quant`` -> ``resblocks.0.attn.in_proj.input_quant``."""
    name = node.name
    if name.endswith("/export_handler/Quant"):
        name = name[: -len("/export_handler/Quant")]
    return name.strip("/").replace("/", ".")


def map_quant_nodes(qvisual: nn.Module, nodes: list) -> dict[str, nn.Module]:
    """``Quant`` node name -> the Brevitas quant proxy it was exported from (by module path)."""
    mods = dict(qvisual.named_modules())
    out = {}
    for n in nodes:
        key = _node_key(n)
        hits = [m for m in mods if m == key or m.endswith("." + key)]
        if len(hits) != 1:
            raise RuntimeError(f"QONNX check: cannot map Quant node {n.name} to one Brevitas quantizer ({hits})")
        out[n.name] = mods[hits[0]]
    return out


@torch.no_grad()
def _brevitas(qvisual: nn.Module, images: torch.Tensor, proxies: dict[str, nn.Module]):
    """Brevitas embedding of ``images`` and, per ``Quant`` node, (float input, dequantized output, int codes)."""
    got: dict[str, list] = {name: [] for name in proxies}
    hooks = []
    for name, mod in proxies.items():
        def hook(m, inp, out, name=name):
            x = inp[0]
            x = x.value if hasattr(x, "value") else x
            val = out.value.detach().cpu().numpy()
            scale = out.scale.detach().cpu().double().numpy()
            zp = out.zero_point.detach().cpu().double().numpy()
            codes = np.round(val.astype(np.float64) / scale + zp).astype(np.int64)  # = out.int(), without its checks
            got[name].append((x.detach().cpu().numpy(), val, codes))
        hooks.append(mod.register_forward_hook(hook))
    try:
        emb = EmbeddingTower(qvisual).eval()(images).cpu().numpy()
    finally:
        for h in hooks:
            h.remove()
    bad = [k for k, v in got.items() if len(v) != 1]
    if bad:
        raise RuntimeError(f"QONNX check: quantizer of {bad[0]} ran {len(got[bad[0]])} times in one forward pass")
    return emb, {k: v[0] for k, v in got.items()}


def _codes(ctx: dict, node, out: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(integer codes of a Quant output, scale, zero point) as float64/int64."""
    scale = np.asarray(ctx[node.input[1]], np.float64)
    zp = np.asarray(ctx[node.input[2]], np.float64)
    return np.round(np.asarray(out, np.float64) / scale + zp).astype(np.int64), scale, zp


class _Stat:
    def __init__(self):
        self.n = self.diff = self.max_lsb = self.unexplained = 0
        self.max_dev = 0.0

    def add(self, a: np.ndarray, b: np.ndarray, x_ref=None, x_got=None) -> None:
        """Codes ``a`` (Brevitas) vs ``b`` (graph); ``x_ref`` / ``x_got``: their inputs in LSBs (x / scale + zp)."""
        if a.shape != b.shape or (x_ref is not None and not a.shape == np.shape(x_ref) == np.shape(x_got)):
            raise RuntimeError(f"QONNX check: code shapes differ ({a.shape} vs {b.shape})")
        d = np.abs(a - b)
        self.n += d.size
        self.diff += int((d > 0).sum())
        self.max_lsb = max(self.max_lsb, int(d.max(initial=0)))
        if x_ref is not None:
            self.max_dev = max(self.max_dev, float(np.abs(x_ref - x_got).max(initial=0.0)))
            flip = d > 0
            lo, hi = np.minimum(x_ref, x_got)[flip], np.maximum(x_ref, x_got)[flip]
            tie = np.ceil(lo - 0.5) + 0.5  # the smallest k + 1/2 >= lo
            self.unexplained += int(((d[flip] != 1) | (tie > hi)).sum())


def compare(qvisual: nn.Module, runner: QonnxRunner, images: torch.Tensor,
            text_features: torch.Tensor | np.ndarray | None = None) -> dict:
    """Layer-wise comparison of the QONNX execution with Brevitas (see the module docstring)."""
    nodes = runner.quant_nodes()
    proxies = map_quant_nodes(qvisual, nodes)
    act = [n for n in nodes if not runner.is_param(n)]
    free = {n.name: _Stat() for n in nodes}
    sync = {n.name: _Stat() for n in act}
    refs, gots, syncs = [], [], []
    x_all = images.detach().cpu().to(torch.float64 if runner.dtype == np.float64 else torch.float32)
    b = runner.batch
    for i in range(0, x_all.shape[0], b):
        x = x_all[i:i + b]
        if x.shape[0] != b:
            raise InputError(f"QONNX check: {x_all.shape[0]} images is not a multiple of the graph's batch {b}")
        emb, cap = _brevitas(qvisual, x.to(next(qvisual.parameters()).device), proxies)
        ctx, _ = runner.run(x.numpy())
        sctx, own = runner.run(x.numpy(), refeed={n.name: cap[n.name][1] for n in act})
        refs.append(emb)
        gots.append(ctx[runner.output_name])
        syncs.append(sctx[runner.output_name])
        for n in nodes:
            if i and runner.is_param(n):
                continue  # weights and biases: once
            got, scale, zp = _codes(ctx, n, ctx[n.output[0]])
            free[n.name].add(cap[n.name][2], got)
            if n.name in sync:
                sgot, _, _ = _codes(sctx, n, own[n.name])
                x_ref = np.asarray(cap[n.name][0], np.float64) / scale + zp
                x_got = np.asarray(sctx[n.input[0]], np.float64) / scale + zp
                sync[n.name].add(cap[n.name][2], sgot, x_ref, x_got)
    ref, got, sgot = (np.concatenate(a).astype(np.float64) for a in (refs, gots, syncs))

    def final(y):
        diff = float(np.abs(y - ref).max())
        cos = (y * ref).sum(1) / np.maximum(np.linalg.norm(y, axis=1) * np.linalg.norm(ref, axis=1), 1e-30)
        return {"identical": bool(np.array_equal(y, ref)), "max_abs_diff": diff,
                "rel_diff": diff / max(float(np.abs(ref).max()), 1e-30), "cosine_min": float(cos.min())}

    layers = []
    first = None
    for n in act:
        f, s = free[n.name], sync[n.name]
        row = {"node": _node_key(n), "codes": f.n, "equal_frac": 1 - f.diff / max(f.n, 1), "max_lsb": f.max_lsb,
               "sync_diff": s.diff, "sync_max_lsb": s.max_lsb, "sync_unexplained": s.unexplained,
               "sync_max_dev_lsb": s.max_dev}
        layers.append(row)
        if first is None and f.diff:
            first = {"node": row["node"], "codes_differ": f.diff, "codes": f.n, "max_lsb": f.max_lsb}
    params = [free[n.name] for n in nodes if runner.is_param(n)]
    rec = {"n": int(x_all.shape[0]), **final(got),
           "first_quant_equal": layers[0]["equal_frac"] == 1.0 if layers else None,
           "first_divergence": first,
           "act_codes_differ": sum(free[n.name].diff for n in act), "act_codes": sum(free[n.name].n for n in act),
           "act_equal_frac_min": min((r["equal_frac"] for r in layers), default=1.0),
           "act_max_lsb": max((r["max_lsb"] for r in layers), default=0),
           "weights_biases": {"nodes": len(params), "codes": sum(p.n for p in params),
                              "codes_differ": sum(p.diff for p in params)},
           "sync": {**final(sgot), "codes_differ": sum(s.diff for s in sync.values()),
                    "codes": sum(s.n for s in sync.values()),
                    "max_lsb": max((s.max_lsb for s in sync.values()), default=0),
                    "unexplained": sum(s.unexplained for s in sync.values()),
                    "max_dev_lsb": max((s.max_dev for s in sync.values()), default=0.0)},
           "layers": layers}
    rec["top1_agreement"] = None
    if text_features is not None:
        t = np.asarray(text_features, np.float64)
        rec["top1_agreement"] = float((np.argmax(got @ t.T, 1) == np.argmax(ref @ t.T, 1)).mean())
    return rec


def float64_check(qvisual: nn.Module, images: torch.Tensor, path: str | Path,
                  text_features: torch.Tensor | np.ndarray | None = None) -> dict:
    """:func:`compare` with a float64 copy of the tower exported and executed in float64.

    The graph runs with onnx's reference ops (onnxruntime has no float64 Conv) and qonnx's Quant
    arithmetic in float64. Float ops then agree far below an LSB, so any code difference left
    is structural (an op missing or in another order, a wrong scale).
    """
    import copy

    qd = copy.deepcopy(qvisual).double()
    export_tower(qd, images[:1].double(), path)
    return compare(qd, QonnxRunner(path, backend="reference"), images.double(), text_features)


@torch.no_grad()
def roundtrip(qvisual: nn.Module, images: torch.Tensor, path: str | Path,
              text_features: torch.Tensor | np.ndarray | None = None, crosscheck: bool = False,
              float64: bool = False) -> dict:
    """Export (batch 1), execute with qonnx and compare with the Brevitas model on ``images``.

    Returns the export record plus :func:`compare`'s. ``crosscheck``: also run the first image
    through ``qonnx.core.onnx_exec.execute_onnx`` itself (seconds) and record in
    ``execute_onnx_identical`` whether it gives the runner's embedding bit for bit.
    ``float64``: add ``float64`` = :func:`float64_check`'s record (without its layer rows),
    through a temporary file next to ``path``.
    """
    rec = export_tower(qvisual, images[:1], path)
    runner = QonnxRunner(path)
    rec.update(compare(qvisual, runner, images, text_features))
    rec["execute_onnx_identical"] = None
    if crosscheck:
        x = images[:1].detach().cpu().float().numpy()
        rec["execute_onnx_identical"] = bool(np.array_equal(run_execute_onnx(path, x), runner.embed(x)))
    rec["float64"] = None
    if float64:
        tmp = Path(path).with_name(f".{Path(path).stem}.float64-tmp.onnx")
        try:
            f64 = float64_check(qvisual, images, tmp, text_features)
        finally:
            tmp.unlink(missing_ok=True)
        rec["float64"] = {k: v for k, v in f64.items() if k != "layers"}
    return rec


def summary(rec: dict) -> str:
    """One paragraph for the command line."""
    fd = rec["first_divergence"]
    s = rec["sync"]
    lines = [
        f"qonnx execution vs Brevitas on {rec['n']} images: embedding "
        + ("identical" if rec["identical"] else
           f"max |diff| {rec['max_abs_diff']:.3g} ({100 * rec['rel_diff']:.2f} % of max), "
           f"cosine >= {rec['cosine_min']:.5f}")
        + ("" if rec.get("top1_agreement") is None else f", top-1 agreement {100 * rec['top1_agreement']:.1f} %"),
        f"  weights/biases: {rec['weights_biases']['codes_differ']} of {rec['weights_biases']['codes']} codes differ "
        f"({rec['weights_biases']['nodes']} Quant nodes)",
        "  activations: " + ("all codes equal" if fd is None else
                             f"first divergence at {fd['node']} ({fd['codes_differ']} of {fd['codes']} codes, "
                             f"max {fd['max_lsb']} LSB); min equal fraction {100 * rec['act_equal_frac_min']:.3f} %, "
                             f"max {rec['act_max_lsb']} LSB (a flip propagates to later blocks)"),
        f"  per node (inputs re-fed from Brevitas): {s['codes_differ']} of {s['codes']} codes differ, max "
        f"{s['max_lsb']} LSB, {s['unexplained']} not at a rounding tie; float-op deviation <= "
        f"{s['max_dev_lsb']:.2g} LSB",
    ]
    f64 = rec.get("float64")
    if f64 is not None:
        lines.append("  float64 (tower and graph in double, onnx reference ops): embedding "
                     + ("identical" if f64["identical"] else f"max |diff| {f64['max_abs_diff']:.3g}")
                     + f", {f64['act_codes_differ']} of {f64['act_codes']} activation codes differ "
                     f"({f64['sync']['codes_differ']} re-fed)")
    if rec.get("execute_onnx_identical") is not None:
        lines.append(f"  qonnx execute_onnx gives the same embedding: {rec['execute_onnx_identical']}")
    return "\n".join(lines)
