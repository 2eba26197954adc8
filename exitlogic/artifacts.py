"""The exit-policy artifact: a folder with ``policy.json`` + ``policy.safetensors`` (+ ``gating.safetensors``).

``policy.json`` (schema_version 1):
    model, pretrained, precision, recipe (descriptor), keys {train, gating} (feature-cache content
    hashes: weights_sha256, recipe_sha256, data_sha256, templates_sha256, format_version),
    geometry (encoder geometry), num_classes, classes, logit_scale, layers (blocks with heads:
    1..depth), candidates (the selection record of :func:`exitlogic.pruning.select_candidates`
    or {"candidate_layers": [...], "source": "--exit-layers"}), head_config, seeds [s...],
    variants (``ssa-distill`` = LRA-EE, ``ssa-hard``, ``cls-distill``), gate_l2, gating_fraction,
    gating_n, thresholds (after ``lraee thresholds``: {"budget", "grid", "by_seed": {s: {policy:
    {"thresholds": {layer: tau}, "accuracy", "flops_saving"}}}}), policy_sha256 (hash of the
    tensors file).

``policy.safetensors`` (float32):
    ``seed{s}.{variant}.{param}`` stacked head parameters [depth, ...] (param: ln_weight [D, d],
    ln_bias [D, d], fc1_weight [D, d, d], fc1_bias [D, d], fc2_weight [D, e, d], fc2_bias [D, e]),
    ``seed{s}.{variant}.gate.L{L}.{w,b,mu,sigma}`` learned gate of candidate L ([3], [1], [3], [3]),
    ``text_embeddings`` [K, e] (L2-normalised).

``gating.safetensors``: per seed the gating-split sample (what LCT searches):
    ``seed{s}.labels`` [n], ``seed{s}.full_correct`` [n] (uint8), and per variant
    ``seed{s}.{variant}.score`` [n, C] (learned gate), ``.conf`` [n, C], ``.correct`` [n, C] (uint8).

A policy is tied to the model and recipe that made its features: :func:`check_key` refuses one
from another model (weights hash) or another precision recipe (recipe hash).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from common import atomic
from common.hashing import file_sha256
from common.errors import InputError
from exitlogic.gates import LogisticGate

POLICY_SCHEMA_VERSION = 1
VARIANTS = ("ssa-distill", "ssa-hard", "cls-distill")
MAIN_VARIANT = "ssa-distill"
HEAD_PARAMS = ("ln_weight", "ln_bias", "fc1_weight", "fc1_bias", "fc2_weight", "fc2_bias")
UNIT_NAMES = {"ln_weight": "ln.weight", "ln_bias": "ln.bias", "fc1_weight": "fc1.weight",
              "fc1_bias": "fc1.bias", "fc2_weight": "fc2.weight", "fc2_bias": "fc2.bias"}


@dataclass
class Policy:
    """A loaded policy folder: ``meta`` (policy.json), ``tensors`` (policy.safetensors), ``path``."""

    path: Path
    meta: dict
    tensors: dict[str, np.ndarray]

    @property
    def candidate_layers(self) -> list[int]:
        return list(self.meta["candidates"]["candidate_layers"])

    @property
    def depth(self) -> int:
        return int(self.meta["geometry"]["depth"])

    @property
    def seeds(self) -> list[int]:
        return list(self.meta["seeds"])

    def heads(self, seed: int, variant: str):
        from exitlogic.heads import StackedHeads  # torch only when heads are evaluated

        return StackedHeads.from_tensors(self.tensors, f"seed{seed}.{variant}", self.meta["layers"])

    def gate(self, seed: int, variant: str, layer: int) -> LogisticGate:
        p = f"seed{seed}.{variant}.gate.L{layer}"
        return LogisticGate.from_arrays({k: self.tensors[f"{p}.{k}"] for k in ("w", "b", "mu", "sigma")})

    def thresholds(self, seed: int, name: str) -> dict[int, float]:
        th = self.meta.get("thresholds")
        if not th:
            raise InputError(f"{self.path / 'policy.json'}: thresholds: missing; run `lraee thresholds --policy "
                             f"{self.path}` first")
        return {int(k): float(v) for k, v in th["by_seed"][str(seed)][name]["thresholds"].items()}

    def layer_params(self, layer: int, seed: int = 0, variant: str = MAIN_VARIANT) -> dict:
        """Numpy parameters of one exit unit (head + gate + threshold) at candidate ``layer``, in the
        fixed-point unit's naming: ln.weight, ln.bias, fc1.weight [d, d], fc1.bias, fc2.weight [e, d],
        fc2.bias, gate.w [3], gate.b [1], gate.mu [3], gate.sigma [3], tau (float, if chosen)."""
        i = self.meta["layers"].index(layer)
        out = {UNIT_NAMES[k]: self.tensors[f"seed{seed}.{variant}.{k}"][i] for k in HEAD_PARAMS}
        g = f"seed{seed}.{variant}.gate.L{layer}"
        for k in ("w", "b", "mu", "sigma"):
            out[f"gate.{k}"] = self.tensors[f"{g}.{k}"]
        if self.meta.get("thresholds"):
            out["tau"] = self.thresholds(seed, f"{variant}/learned")[layer]
        return out


def save_policy(folder: Path, meta: dict, tensors: dict[str, np.ndarray], gating: dict[str, np.ndarray]) -> None:
    """Write the three files atomically (tensors first; policy.json last carries their hash)."""
    folder.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(folder / "policy.safetensors") as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp))
    with atomic.atomic_path(folder / "gating.safetensors") as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in gating.items()}, str(tmp))
    meta = dict(meta, schema_version=POLICY_SCHEMA_VERSION,
                policy_sha256=file_sha256(folder / "policy.safetensors"))
    atomic.write_json(folder / "policy.json", meta)


def load_policy(folder: str | Path) -> Policy:
    """Read and check a policy folder; one-line InputError naming the file and field."""
    folder = Path(folder)
    js = folder / "policy.json"
    st = folder / "policy.safetensors"
    if not js.is_file():
        raise InputError(f"{js}: file not found; allowed: a folder written by `lraee train-exits`")
    from common.readers import read_json

    meta = read_json(js, allowed="policy.json written by `lraee train-exits`")
    if not isinstance(meta, dict):
        raise InputError(f"{js}: <root>: expected a JSON object; allowed: policy.json written by `lraee train-exits`")
    if meta.get("schema_version") != POLICY_SCHEMA_VERSION:
        raise InputError(f"{js}: schema_version: {meta.get('schema_version')!r}; allowed: {POLICY_SCHEMA_VERSION}")
    if not st.is_file():
        raise InputError(f"{st}: file not found; allowed: the tensors written with {js.name}")
    if file_sha256(st) != meta.get("policy_sha256"):
        raise InputError(f"{st}: policy_sha256 differs from {js.name}; allowed: the pair written together")
    try:
        tensors = load_file(str(st))
    except Exception as e:  # noqa: BLE001 - corrupt file
        raise InputError(f"{st}: not a readable safetensors file ({e})") from None
    depth = int(meta["geometry"]["depth"])
    cands = meta.get("candidates", {}).get("candidate_layers")
    if not isinstance(cands, list) or not cands or any(not isinstance(L, int) or not 1 <= L < depth for L in cands):
        raise InputError(f"{js}: candidates.candidate_layers: {cands!r}; allowed: blocks in 1..{depth - 1}")
    th = meta.get("thresholds")
    if th:
        for s, by in th.get("by_seed", {}).items():
            for name, rec in by.items():
                for L, t in rec["thresholds"].items():
                    if not (isinstance(t, (int, float)) and 0.0 <= t <= 1.0):
                        raise InputError(f"{js}: thresholds.by_seed.{s}.{name}.thresholds.{L}: {t!r}; "
                                         "allowed: a number in [0, 1]")
    return Policy(folder, meta, tensors)


def load_gating(policy: Policy) -> dict[str, np.ndarray]:
    p = policy.path / "gating.safetensors"
    if not p.is_file():
        raise InputError(f"{p}: file not found; allowed: the gating sample written by `lraee train-exits`")
    return load_file(str(p))


def check_key(policy: Policy, key: dict, source: str) -> None:
    """Refuse features (``key`` of the feature cache) from another model or precision recipe."""
    mine = policy.meta["keys"]["gating"]
    for field, what in (("weights_sha256", "model weights"), ("recipe_sha256", "precision recipe"),
                        ("templates_sha256", "prompt templates")):
        if mine.get(field) != key.get(field):
            raise InputError(f"{policy.path / 'policy.json'}: keys.gating.{field}: the policy was made with other "
                             f"{what} than {source} ({mine.get(field, '?')[:12]} vs {key.get(field, '?')[:12]}); "
                             "allowed: the model, --precision and --templates the policy was trained with")
