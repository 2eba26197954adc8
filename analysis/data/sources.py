"""Image sources for evaluation and feature extraction, parsed from ``--data`` specs.

- ``procedural`` or ``procedural:SEED``: the embedded procedural set (splits train,
  calibration, gating, eval; sizes from ``--n`` or the defaults).
- ``folder:PATH``: an ImageFolder directory (one sub-folder per class). Class names are the
  folder names with ``_`` as spaces, or come from ``--classnames FILE.json`` (a JSON object
  folder -> name, or a list in sorted-folder order).
- ``imagenet:PATH``: ImageNet-1k val in folder layout (1000 WordNet-id folders); class
  names are open_clip's ``IMAGENET_CLASSNAMES`` in sorted-wnid order.

A source yields uint8 RGB images; the encoder's preprocessing turns them into tensors.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from analysis.data.procedural import DEFAULT_SPLIT_SIZES, SPLITS, ProceduralShapes
from common.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm")
DATA_KINDS = ("procedural", "procedural:SEED", "folder:PATH", "imagenet:PATH")


@dataclass
class ImageSource:
    """A labelled image set.

    name: short tag used in file names (e.g. ``procedural0-eval``).
    classes: K class names (index = label).
    labels: int64 [n].
    descriptor: JSON-able identity of the data (hashed into the feature cache key).
    """

    name: str
    classes: list[str]
    labels: np.ndarray
    descriptor: dict
    _procedural: ProceduralShapes | None = None
    _split: str = ""
    _files: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return int(len(self.labels))

    def is_pil(self) -> bool:
        """True when images come from files (PIL path); False for rendered uint8 arrays."""
        return self._procedural is None

    def render(self, start: int, stop: int) -> np.ndarray:
        """Procedural images uint8 [stop-start, H, W, 3]."""
        assert self._procedural is not None
        return self._procedural.render_split(self._split, stop - start, start)[0]

    def open(self, i: int):
        """PIL RGB image i (file sources)."""
        from PIL import Image

        path = self._files[i]
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except Exception as e:
            raise InputError(f"{path}: cannot read image ({type(e).__name__})") from None

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.descriptor, sort_keys=True).encode()).hexdigest()


def _procedural(seed: int, split: str, n: int | None) -> ImageSource:
    if split not in SPLITS:
        raise InputError(f"--split {split!r}: unknown split of the procedural set; allowed: {', '.join(SPLITS)}")
    n = DEFAULT_SPLIT_SIZES[split] if n is None else n
    if n <= 0:
        raise InputError(f"--n {n}: must be a positive number of images")
    ds = ProceduralShapes(seed)
    labels = np.array([ds.label_of(i) for i in range(n)], dtype=np.int64)
    desc = {"kind": "procedural", "seed": seed, "split": split, "n": n, "spec": ds.spec.__dict__,
            "generator_version": 1}
    return ImageSource(f"procedural{seed}-{split}-{n}", ds.classes, labels, desc, _procedural=ds, _split=split)


def _folder(root: Path, classnames: Path | None, imagenet: bool, n: int | None) -> ImageSource:
    kind = "imagenet" if imagenet else "folder"
    if not root.is_dir():
        raise InputError(f"--data {kind}:{root}: directory not found")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise InputError(f"--data {kind}:{root}: no class sub-folders (expected ROOT/<class>/<image>)")
    files, labels = [], []
    for k, d in enumerate(folders):
        for f in sorted(d.rglob("*")):
            if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file():
                files.append(f)
                labels.append(k)
    if not files:
        raise InputError(f"--data {kind}:{root}: no images found (allowed suffixes: {', '.join(IMAGE_SUFFIXES)})")
    if imagenet:
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

        if len(folders) != len(IMAGENET_CLASSNAMES):
            raise InputError(f"--data imagenet:{root}: {len(folders)} class folders; ImageNet-1k val needs "
                             f"{len(IMAGENET_CLASSNAMES)} (one per WordNet id)")
        classes = list(IMAGENET_CLASSNAMES)
    elif classnames is not None:
        classes = _read_classnames(classnames, [d.name for d in folders])
    else:
        classes = [d.name.replace("_", " ") for d in folders]
    if n is not None:
        if n <= 0:
            raise InputError(f"--n {n}: must be a positive number of images")
        # a deterministic, class-balanced-ish subset: every (len/n)-th file
        idx = np.linspace(0, len(files) - 1, num=min(n, len(files))).round().astype(int)
        files, labels = [files[i] for i in idx], [labels[i] for i in idx]
    stat = [(str(f.relative_to(root)), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    desc = {"kind": kind, "root": str(root.resolve()), "classes": classes,
            "files_sha256": hashlib.sha256(json.dumps(stat).encode()).hexdigest(), "n": len(files)}
    tag = f"{kind}-{root.resolve().name}-{len(files)}"
    return ImageSource(tag, classes, np.array(labels, dtype=np.int64), desc, _files=files)


def _read_classnames(path: Path, folder_names: list[str]) -> list[str]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"--classnames {path}: file not found") from None
    except json.JSONDecodeError as e:
        raise InputError(f"--classnames {path}: not valid JSON ({e.msg}, line {e.lineno})") from None
    if isinstance(obj, list):
        if len(obj) != len(folder_names) or not all(isinstance(x, str) for x in obj):
            raise InputError(f"--classnames {path}: a list must hold {len(folder_names)} strings (one per folder)")
        return obj
    if isinstance(obj, dict):
        missing = [f for f in folder_names if f not in obj]
        if missing:
            raise InputError(f"--classnames {path}: no name for folder(s) {', '.join(missing[:5])}")
        return [str(obj[f]) for f in folder_names]
    raise InputError(f"--classnames {path}: expected a JSON object folder->name or a list of names")


def open_source(spec: str = "procedural", split: str = "eval", n: int | None = None,
                classnames: str | None = None) -> ImageSource:
    """Parse a ``--data`` spec (see module docstring) into an :class:`ImageSource`.

    ``split`` applies to the procedural set only; folder sources are one split.
    """
    kind, _, arg = spec.partition(":")
    if kind == "procedural":
        try:
            seed = int(arg) if arg else 0
        except ValueError:
            raise InputError(f"--data {spec!r}: the procedural seed must be an integer") from None
        return _procedural(seed, split, n)
    if kind in ("folder", "imagenet") and arg:
        return _folder(Path(arg), Path(classnames) if classnames else None, kind == "imagenet", n)
    raise InputError(f"--data {spec!r}: unknown data source; allowed: {', '.join(DATA_KINDS)}")
