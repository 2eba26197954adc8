"""Encoder geometry: the one source of truth for token counts and widths.

Every package (hwsim, the fixed-point exit unit, hls, analysis) takes depth, width,
token counts and MLP width from an :class:`EncoderGeometry`, never from constants of
its own. This module is torch-free: it is built from an open_clip model by
``quant.encoder.geometry_of`` and round-trips through JSON for torch-free consumers.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

GEOMETRY_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class EncoderGeometry:
    """Shape facts of a ViT image tower (CLIP vision encoder).

    Attributes:
        model: open_clip model name (e.g. ``ViT-B-32``, ``lraee-tiny``).
        depth: number of transformer blocks.
        width: token width d (channels per token).
        heads: attention heads per block; head width = width // heads.
        patch_size: square patch side, pixels.
        image_size: square input side, pixels.
        grid: patches per side (image_size // patch_size).
        patch_tokens: N = grid * grid patch tokens.
        tokens: N + 1 (patch tokens plus the [CLS] token).
        mlp_width: hidden width of each block's MLP.
        embed_dim: width of the final (projected) image embedding.
        activation: MLP activation, ``gelu`` or ``quick_gelu``.
        vision_params: parameter count of the image tower.
        total_params: parameter count of the whole CLIP model (image + text).
    """

    model: str
    depth: int
    width: int
    heads: int
    patch_size: int
    image_size: int
    grid: int
    patch_tokens: int
    tokens: int
    mlp_width: int
    embed_dim: int
    activation: str
    vision_params: int
    total_params: int

    def __post_init__(self) -> None:
        if self.grid * self.grid != self.patch_tokens or self.tokens != self.patch_tokens + 1:
            raise ValueError(
                f"inconsistent geometry: grid={self.grid}, patch_tokens={self.patch_tokens}, tokens={self.tokens}"
            )
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")

    @property
    def head_width(self) -> int:
        """Channels per attention head."""
        return self.width // self.heads

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["head_width"] = self.head_width
        d["schema_version"] = GEOMETRY_SCHEMA_VERSION
        return d

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<dict>") -> "EncoderGeometry":
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in d]
        if missing:
            raise ValueError(f"{source}: geometry is missing field(s) {', '.join(missing)}")
        return cls(**{n: d[n] for n in names})

    @classmethod
    def from_json(cls, path: str | Path) -> "EncoderGeometry":
        from common.readers import read_json  # InputError is a ValueError: callers catch both

        path = Path(path)
        d = read_json(path, allowed="a geometry JSON (lraee info --json)")
        return cls.from_dict(d, source=str(path))


GEOMETRY_DIR = Path(__file__).parent / "configs" / "geometry"


def shipped_geometry(model: str) -> EncoderGeometry:
    """Geometry of a model whose JSON ships with the package (``ViT-B-32``, ``lraee-tiny``).

    These files are written by ``lraee info --json`` from the open_clip configs, and a test
    checks they still equal what the loader reads off the model; torch-free code (hwsim
    tests and benchmarks) uses them instead of building the model.
    """
    path = GEOMETRY_DIR / f"{model}.json"
    if not path.is_file():
        known = sorted(p.stem for p in GEOMETRY_DIR.glob("*.json"))
        raise ValueError(f"no shipped geometry for {model!r}; available: {', '.join(known)}")
    return EncoderGeometry.from_json(path)


@dataclass(frozen=True)
class ExitHeadGeometry:
    """Shape of one SSA/CLS exit head, the one statement of it that heads, hwsim, hls and the
    fixed-point unit share: ``LayerNorm(d) -> fc1: d -> hidden (GELU) -> fc2: hidden -> embed_dim``,
    then cosine similarity against the K class text embeddings.

    Attributes:
        width: input width d (the encoder's token width).
        hidden: fc1 output width (= d in LRA-EE).
        embed_dim: fc2 output width e (the CLIP joint embedding width).
    """

    width: int
    hidden: int
    embed_dim: int

    def __post_init__(self) -> None:
        for name in ("width", "hidden", "embed_dim"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"exit head {name} = {getattr(self, name)} must be >= 1")

    @classmethod
    def lraee(cls, width: int, embed_dim: int) -> "ExitHeadGeometry":
        """The LRA-EE head on tokens of width d: d -> d -> embed_dim (hidden = d, paper Eq. 3)."""
        return cls(width=int(width), hidden=int(width), embed_dim=int(embed_dim))

    @classmethod
    def of(cls, geometry: EncoderGeometry) -> "ExitHeadGeometry":
        """The LRA-EE head of an encoder: d -> d -> embed_dim."""
        return cls.lraee(geometry.width, geometry.embed_dim)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of every head parameter, torch layout (weights [out, in]): the one statement of them that
        the trained heads allocate and the fixed-point unit and the HLS head block check."""
        d, h, e = self.width, self.hidden, self.embed_dim
        return {"ln.weight": (d,), "ln.bias": (d,), "fc1.weight": (h, d), "fc1.bias": (h,),
                "fc2.weight": (e, h), "fc2.bias": (e,)}

    @property
    def mlp_macs(self) -> int:
        """MACs of fc1 and fc2 for one sample."""
        return self.width * self.hidden + self.hidden * self.embed_dim

    def macs(self, num_classes: int) -> int:
        """MACs of one head evaluation for one sample: the MLP and the similarity GEMV against K classes."""
        return self.mlp_macs + self.embed_dim * int(num_classes)

    @property
    def params(self) -> int:
        """Trainable parameters: LayerNorm affine (2d), fc1 and fc2 weights and biases."""
        return 2 * self.width + self.width * self.hidden + self.hidden + self.hidden * self.embed_dim + self.embed_dim
