"""QONNX export of a calibrated Brevitas image tower (what FINN and hls4ml users take).

:func:`export_tower` wraps the tower so that ``forward(images [B, 3, H, W]) -> embedding
[B, embed_dim]`` and exports it with ``brevitas.export.export_qonnx`` through the TorchScript
exporter (``dynamo=False``: Brevitas' MHA reads tensor data pointers, which torch.export
cannot trace). Each quantizer becomes a QONNX ``Quant`` node (scale, zero point, bit width).

:func:`run_qonnx` executes the exported file with ``qonnx.core.onnx_exec.execute_onnx``
(QONNX custom ops in numpy, standard ops in onnxruntime).
Needs the optional packages ``onnx``, ``onnxoptimizer``, ``onnxruntime`` and ``qonnx``.
"""
from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch import nn

from analysis.errors import InputError
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


def run_qonnx(path: str | Path, images: np.ndarray) -> np.ndarray:
    """Execute an exported tower on ``images`` float32 [B, 3, H, W]; returns the embedding [B, embed_dim]."""
    check_packages()
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    # No qonnx.util.cleanup: its constant folding re-runs the cleanup passes per node (minutes on
    # this graph); the exported graph executes as is.
    from qonnx.transformation.infer_shapes import InferShapes

    mw = ModelWrapper(str(path)).transform(InferShapes())
    iname, oname = mw.graph.input[0].name, mw.graph.output[0].name
    batch = mw.get_tensor_shape(iname)[0]  # the graph has the sample's fixed batch size
    images = np.ascontiguousarray(images, np.float32)
    outs = [execute_onnx(mw, {iname: images[i:i + batch]})[oname] for i in range(0, images.shape[0], batch)]
    return np.concatenate(outs, axis=0)


@torch.no_grad()
def roundtrip(qvisual: nn.Module, images: torch.Tensor, path: str | Path) -> dict:
    """Export, execute with qonnx and compare with the Brevitas model on ``images``.

    Returns the export record plus ``max_abs_diff``, ``rel_diff`` (max |diff| / max |ref|) and ``identical``.
    """
    rec = export_tower(qvisual, images[:1], path)
    got = run_qonnx(path, images.cpu().numpy())
    ref = EmbeddingTower(qvisual).eval()(images).cpu().numpy()
    diff = float(np.abs(got - ref).max())
    rec.update({"n": int(images.shape[0]), "max_abs_diff": diff,
                "rel_diff": diff / max(float(np.abs(ref).max()), 1e-30), "identical": bool(np.array_equal(got, ref))})
    return rec
