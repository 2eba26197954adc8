"""Loading open_clip ViT encoders (named configs, local checkpoints, the embedded tiny default).

Offline only: hub schemas (``hf-hub:``) and pretrained *tags* (``openai``, ``laion2b_...``)
are refused; weights come from a local file (``.pt``/``.pth``/``.bin`` loaded with
``torch.load(weights_only=True)``, or ``.safetensors``).

The OpenAI quick_gelu pitfall: OpenAI's CLIP weights were trained with QuickGELU, but
``create_model('ViT-B-32', pretrained=PATH)`` builds the model with nn.GELU when the weights
come from a file. Use the ``ViT-B-32-quickgelu`` config (or ``force_quick_gelu=True``,
``--force-quick-gelu`` on the command line) for OpenAI weights; :func:`load_encoder` warns
when a file is loaded into a ``ViT-*`` config without QuickGELU.
"""
from __future__ import annotations

import logging
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import open_clip
import torch
from torch import nn

from common.errors import InputError
from quant.geometry import EncoderGeometry

TINY_NAME = "lraee-tiny"
TINY_ALIASES = ("tiny", TINY_NAME)
_CONFIG_DIR = Path(__file__).parent / "configs"
TINY_WEIGHTS = Path(__file__).parent / "weights" / f"{TINY_NAME}.safetensors"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")

_registered = False


def register_configs() -> None:
    """Register the project's model configs (``lraee-tiny``) with open_clip (idempotent)."""
    global _registered
    if not _registered:
        open_clip.add_model_config(_CONFIG_DIR)
        _registered = True


def canonical_name(name: str) -> str:
    """Map the ``tiny`` alias to ``lraee-tiny``; other names unchanged."""
    return TINY_NAME if name in TINY_ALIASES else name


def _check_model_name(name: str) -> dict[str, Any]:
    if ":" in name:
        raise InputError(f"--model {name!r}: hub and directory schemas are not supported offline; "
                         "give a config name and --pretrained PATH")
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        vits = [m for m in vit_model_names() if m.startswith("ViT-B")][:6]
        raise InputError(f"--model {name!r}: unknown open_clip model; allowed: tiny or an open_clip ViT config "
                         f"name such as {', '.join(vits)} ... (`lraee info --list-models` lists all)")
    vcfg = cfg.get("vision_cfg", {})
    if "timm_model_name" in vcfg and vcfg["timm_model_name"] or isinstance(vcfg.get("layers"), (list, tuple)):
        raise InputError(f"--model {name!r}: not a ViT image tower of open_clip's VisionTransformer; "
                         "allowed: open_clip ViT configs (ViT-B-32, ViT-B-32-quickgelu, ViT-B-16, ...) or tiny")
    return cfg


def vit_model_names() -> list[str]:
    """open_clip config names whose image tower is open_clip's own VisionTransformer."""
    register_configs()
    out = []
    for m in open_clip.list_models():
        v = open_clip.get_model_config(m).get("vision_cfg", {})
        if not v.get("timm_model_name") and not isinstance(v.get("layers"), (list, tuple)):
            out.append(m)
    return out


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a CPU state dict (weights_only / safetensors; no code runs).

    Accepts plain state dicts, ``{"state_dict": ...}`` wrappers and ``module.`` prefixes.
    Raises InputError naming the file when it is missing, of an unknown type, or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--pretrained {path}: checkpoint file not found")
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise InputError(f"--pretrained {path}: unsupported checkpoint type {path.suffix!r}; "
                         f"allowed: {', '.join(CHECKPOINT_SUFFIXES)}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(path), device="cpu")
        else:
            if zipfile.is_zipfile(path):
                with zipfile.ZipFile(path) as zf:
                    if any(n.endswith("constants.pkl") for n in zf.namelist()):
                        raise InputError(
                            f"--pretrained {path}: this is a TorchScript archive (OpenAI's original .pt); "
                            "convert it once to a state dict: torch.jit.load(PATH).state_dict() -> safetensors "
                            "(see README, 'Real weights')")
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except InputError:
        raise
    except Exception as e:  # corrupt file, truncated zip, pickle with code
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"--pretrained {path}: cannot read checkpoint ({type(e).__name__}: {msg[:160]})") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise InputError(f"--pretrained {path}: not a state dict of tensors")
    if next(iter(sd)).startswith("module."):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    for k in ("input_resolution", "context_length", "vocab_size"):  # OpenAI extras
        sd.pop(k, None)
    return sd


@dataclass
class LoadedEncoder:
    """A CLIP model with its geometry, tokenizer and image normalisation.

    ``model.visual`` is the image tower; ``mean``/``std`` are the per-channel image
    normalisation (RGB in [0, 1]); ``preprocess`` maps a PIL image to a [3, H, W] tensor.
    """

    name: str
    pretrained: str | None
    model: nn.Module
    preprocess: Callable
    tokenizer: Callable
    geometry: EncoderGeometry
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def _memo(self, name: str, compute: Callable[[], str]) -> str:
        """``compute()`` once while no tensor of the model was replaced or changed in place (storage
        pointers and torch's version counters are the memo's key)."""
        stamp = tuple((k, v.data_ptr(), v._version) for k, v in self.model.state_dict(keep_vars=True).items())
        memo = self.__dict__.setdefault("_hash_memo", {})
        if memo.get(name, (None,))[0] != stamp:
            memo[name] = (stamp, compute())
        return memo[name][1]

    def weights_sha256(self) -> str:
        """Content hash of the whole model's parameters and buffers (see :func:`state_dict_sha256`),
        recomputed only after the weights change (hashing ViT-B/32 takes about a second)."""
        return self._memo("weights", lambda: state_dict_sha256(self.model))

    def text_sha256(self) -> str:
        """Content hash of the text side only (every parameter and buffer outside ``visual.``): the key
        of the text-embedding cache, unchanged by anything done to the image tower."""
        return self._memo("text", lambda: state_dict_sha256(self.model, exclude_prefix="visual."))


def state_dict_sha256(model: nn.Module, exclude_prefix: str | None = None) -> str:
    """Content hash of a model's parameters and buffers (names, dtypes, shapes, bytes), optionally
    without the entries whose name starts with ``exclude_prefix``."""
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        if exclude_prefix and k.startswith(exclude_prefix):
            continue
        t = v.detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def geometry_of(model: nn.Module, name: str) -> EncoderGeometry:
    """Read the geometry off an open_clip CLIP model's image tower."""
    v = model.visual
    blocks = v.transformer.resblocks
    b0 = blocks[0]
    width = v.transformer.width
    ps = v.patch_size[0] if isinstance(v.patch_size, (tuple, list)) else v.patch_size
    img = v.image_size[0] if isinstance(v.image_size, (tuple, list)) else v.image_size
    grid = v.grid_size[0]
    act = type(b0.mlp.gelu).__name__
    activation = {"QuickGELU": "quick_gelu", "GELU": "gelu"}.get(act, act.lower())
    return EncoderGeometry(
        model=name,
        depth=len(blocks),
        width=width,
        heads=b0.attn.num_heads,
        patch_size=int(ps),
        image_size=int(img),
        grid=int(grid),
        patch_tokens=int(grid * v.grid_size[1]),
        tokens=int(grid * v.grid_size[1] + 1),
        mlp_width=b0.mlp.c_fc.out_features,
        embed_dim=int(v.output_dim),
        activation=activation,
        vision_params=sum(p.numel() for p in v.parameters()),
        total_params=sum(p.numel() for p in model.parameters()),
    )


def load_encoder(model: str = "tiny", pretrained: str | Path | None = None, device: str = "cpu",
                 force_quick_gelu: bool = False, random_init: bool = False) -> LoadedEncoder:
    """Build an open_clip CLIP model and load weights from a local file.

    Args:
        model: open_clip config name, or ``tiny`` for the embedded default.
        pretrained: checkpoint path; for ``tiny`` defaults to the shipped weights.
        device: ``cpu`` or ``cuda``.
        force_quick_gelu: build with QuickGELU (needed for OpenAI weights under a plain ``ViT-*`` name).
        random_init: allow a named model without weights (random init; for geometry and tests).
    """
    register_configs()
    name = canonical_name(model)
    _check_model_name(name)
    if name == TINY_NAME and pretrained is None and not random_init:
        pretrained = TINY_WEIGHTS
        if not TINY_WEIGHTS.is_file():
            raise InputError(f"{TINY_WEIGHTS}: the embedded tiny CLIP checkpoint is missing; "
                             "rebuild it with `lraee train-tiny`")
    if pretrained is None and not random_init:
        raise InputError(f"--model {name}: no --pretrained PATH given (no weights are downloaded); "
                         "give a local checkpoint, or use --model tiny")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available here; allowed: cpu")
    if pretrained is not None and name.startswith("ViT-") and "quickgelu" not in name and not force_quick_gelu:
        print(f"lraee: note: loading {pretrained} into {name} with nn.GELU; OpenAI weights need "
              f"{name}-quickgelu or --force-quick-gelu", file=sys.stderr)
    sd = read_state_dict(pretrained) if pretrained is not None else None
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # silence open_clip's "initialized randomly" warning
    try:
        clip, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=None, force_quick_gelu=force_quick_gelu, device="cpu")
    finally:
        root.setLevel(level)
    if sd is not None:
        if "logit_scale" in sd and sd["logit_scale"].ndim != clip.logit_scale.ndim:
            sd["logit_scale"] = sd["logit_scale"].reshape(clip.logit_scale.shape)
        own = clip.state_dict()
        missing = [k for k in own if k not in sd]
        unexpected = [k for k in sd if k not in own]
        bad_shape = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
        if missing or unexpected or bad_shape:
            detail = "; ".join(f"{what}: {', '.join(ks[:3])}{' ...' if len(ks) > 3 else ''} ({len(ks)})"
                               for what, ks in (("missing", missing), ("unexpected", unexpected),
                                                ("shape mismatch", bad_shape)) if ks)
            raise InputError(f"--pretrained {pretrained}: does not fit model {name} ({detail})")
        clip.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()}, strict=True)
    clip = clip.to(device).eval()
    norm = [t for t in getattr(preprocess, "transforms", []) if type(t).__name__ == "Normalize"]
    mean = tuple(float(x) for x in norm[0].mean) if norm else open_clip.OPENAI_DATASET_MEAN
    std = tuple(float(x) for x in norm[0].std) if norm else open_clip.OPENAI_DATASET_STD
    return LoadedEncoder(
        name=name,
        pretrained=None if pretrained is None else str(pretrained),
        model=clip,
        preprocess=preprocess,
        tokenizer=open_clip.get_tokenizer(name),
        geometry=geometry_of(clip, name),
        mean=mean,
        std=std,
    )
