"""Calibration of the Brevitas static recipes, and its saved state.

``calibrate`` runs calibration images through a Brevitas image tower under
``brevitas.graph.calibrate.calibration_mode`` (quantization off, activation statistics
collected over every batch: the abs 99.999th percentile for ``percentile``, the abs max for
``minmax``, or Brevitas' MSE search for ``mse``), then turns quantization back on.

The calibrated state is every activation-quantizer tensor of the model (the scale
parameters; weight scales are recomputed from the weights) plus the fitted tensors of the
recipe's modifiers (``modifier.sq.<LayerNorm name>``: the SmoothQuant factors, float32 [d]),
so a saved calibration rebuilds the identical model without refitting. It is saved as
``FILE.safetensors`` plus ``FILE.json``: model name, SHA-256 of the float weights, recipe
descriptor, method, number of images, data descriptor and the SHA-256 of the state tensors.
``load_calibration`` refuses a file made for other weights or another recipe (one-line
InputError); it never recomputes anything.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from common import atomic
from common.errors import InputError
from common.timing import PassTimer
from quant.brevitas_model import quant_tapped_forward
from quant.recipes import MODIFIER_STATE_PREFIX

CALIB_FORMAT_VERSION = 1


def is_quant_state_key(key: str) -> bool:
    """True for state-dict entries owned by a quantizer (a path segment ending in ``_quant``)."""
    return any(seg.endswith("_quant") for seg in key.split(".")[:-1])


def calibration_state(qvisual: nn.Module) -> dict[str, torch.Tensor]:
    """The activation-quantizer tensors of a calibrated model plus its recipe modifiers' fitted
    tensors (``modifier.<key>.<name>``, e.g. the SmoothQuant factors), CPU, contiguous, float32."""
    state = {k: v.detach().cpu().float().contiguous() for k, v in qvisual.state_dict().items()
             if is_quant_state_key(k)}
    for k, v in getattr(qvisual, "lraee_modifier_state", {}).items():
        state[k] = v.detach().cpu().float().contiguous()
    return state


def modifier_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The recipe-modifier part of a calibration state (what :func:`quant.brevitas_model.build_quant_visual`
    takes as ``modifier_state``)."""
    return {k: v for k, v in state.items() if k.startswith(MODIFIER_STATE_PREFIX)}


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """Content hash of a calibration state (names, shapes, float32 bytes)."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().float().contiguous()
        h.update(f"{k}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@torch.no_grad()
def calibrate(qvisual: nn.Module, batches: Iterable[torch.Tensor], device: str = "cpu") -> int:
    """Collect activation statistics over ``batches`` (normalised images [B, 3, H, W]).

    Returns the number of images seen; raises InputError when there were none (nothing is changed).
    """
    from brevitas.graph.calibrate import calibration_mode

    batches = iter(batches)
    first = next(batches, None)
    if first is None or first.shape[0] == 0:
        raise InputError("--calib-n: calibration needs at least one image; allowed: a positive number of images")
    n = 0
    qvisual.eval()
    timer = PassTimer("calibration")
    with calibration_mode(qvisual):
        for x in _chain(first, batches):
            timer.start()
            quant_tapped_forward(qvisual, x.to(device))
            timer.stop(x.shape[0])
            n += int(x.shape[0])
    timer.close()
    qvisual.lraee_calibrated = True
    return n


def _chain(first, rest):
    yield first
    yield from rest


def calibration_paths(path: str | Path) -> tuple[Path, Path]:
    """(FILE.safetensors, FILE.json) for a calibration file given with or without its suffix."""
    p = Path(path)
    if p.suffix != ".safetensors":
        p = p.with_name(p.name + ".safetensors") if p.suffix == "" else p
    return p, p.with_suffix(".json")


def save_calibration(path: str | Path, qvisual: nn.Module, meta: dict) -> dict:
    """Write the state (safetensors) and ``meta`` + its hash (JSON), both atomically. Returns the JSON."""
    from safetensors.torch import save_file

    st, js = calibration_paths(path)
    state = calibration_state(qvisual)
    record = {"format_version": CALIB_FORMAT_VERSION, **meta, "state_sha256": state_sha256(state),
              "tensors": len(state)}
    with atomic.atomic_path(st) as tmp:
        save_file(state, str(tmp), metadata={"state_sha256": record["state_sha256"]})
    atomic.write_json(js, record)
    return record


def read_calibration_meta(path: str | Path, flag: str = "--calibration") -> dict:
    st, js = calibration_paths(path)
    if not st.is_file() or not js.is_file():
        raise InputError(f"{flag} {st}: calibration file (and its .json sidecar) not found; "
                         "create it with `lraee calibrate`")
    try:
        return json.loads(js.read_text())
    except Exception as e:
        raise InputError(f"{flag} {js}: unreadable calibration sidecar ({type(e).__name__})") from None


def read_calibration(path: str | Path, expect: dict, flag: str = "--calibration") -> tuple[dict, dict[str, torch.Tensor]]:
    """(sidecar, state tensors) of a saved calibration, verified: the sidecar's fields equal
    ``expect`` (``model``, ``weights_sha256``, ``recipe``, ``method``) and the tensors its
    ``state_sha256``. Raises InputError naming the file on any mismatch or damage."""
    from safetensors.torch import load_file

    st, _ = calibration_paths(path)
    meta = read_calibration_meta(path, flag)
    for k, v in expect.items():
        if meta.get(k) != v:
            what = {"weights_sha256": "model weights (hash mismatch)", "model": "model",
                    "recipe": "precision recipe", "method": "calibration method"}.get(k, k)
            raise InputError(f"{flag} {st}: made for another {what}: {str(meta.get(k))[:40]!s} != {str(v)[:40]}; "
                             "recalibrate with `lraee calibrate` for this model and recipe")
    try:
        state = load_file(str(st), device="cpu")
    except Exception as e:
        raise InputError(f"{flag} {st}: cannot read calibration tensors ({type(e).__name__})") from None
    if state_sha256(state) != meta.get("state_sha256"):
        raise InputError(f"{flag} {st}: tensors do not match the sidecar's state_sha256 (file changed or damaged)")
    return meta, state


def apply_calibration(qvisual: nn.Module, state: dict[str, torch.Tensor], path: str | Path,
                      flag: str = "--calibration") -> None:
    """Load a verified calibration ``state`` into an uncalibrated model built for the same recipe
    (with the same modifier state). Raises InputError naming ``path`` unless the model's
    calibration state then equals ``state`` exactly."""
    st, _ = calibration_paths(path)
    # An uncalibrated Brevitas quantizer has no scale tensor in its state dict yet (it is created
    # by the statistics pass), so the file is loaded non-strictly and then verified: every tensor
    # must have been taken, and the model's quantizer state must now equal the file.
    dev = next(qvisual.parameters()).device
    dtype = next(qvisual.parameters()).dtype
    quant = {k: v for k, v in state.items() if not k.startswith(MODIFIER_STATE_PREFIX)}
    try:
        res = qvisual.load_state_dict({k: v.to(dev, dtype) for k, v in quant.items()}, strict=False)
        bad = list(res.unexpected_keys)
    except RuntimeError as e:
        bad = [str(e).splitlines()[0][:120]]
    now = calibration_state(qvisual)
    if bad or set(now) != set(state) or any(not torch.equal(now[k], state[k].float()) for k in state):
        raise InputError(f"{flag} {st}: quantizer tensors do not fit this model/recipe "
                         f"({len(state)} in file; {len(bad)} not taken, {len(now)} in the model)")
    qvisual.lraee_calibrated = True


def load_calibration(path: str | Path, qvisual: nn.Module, expect: dict, flag: str = "--calibration") -> dict:
    """Load a saved state into an uncalibrated model built for the same recipe (and, for a recipe
    with modifiers, from the file's modifier state: see :func:`quant.prepare.load_calibrated`).

    ``expect`` holds the fields that must match (``model``, ``weights_sha256``, ``recipe``,
    ``method``). Raises InputError naming the file on any mismatch or damage.
    """
    meta, state = read_calibration(path, expect, flag)
    apply_calibration(qvisual, state, path, flag)
    return meta
