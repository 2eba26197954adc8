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
    _folder_names: list[str] = field(default_factory=list)

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

    def file_identities(self) -> set[tuple[int, int]]:
        """(device, inode) of every image file (empty for the procedural set): what "the same image" means
        for the leakage check, whatever the path spelling or symlinks."""
        ids = set()
        for f in self._files:
            st = f.stat()
            ids.add((st.st_dev, st.st_ino))
        return ids

    def overlaps(self, other: "ImageSource") -> bool:
        """True when the two sources share an image (procedural: same seed and split; folders: file identity)."""
        if self._procedural is not None or other._procedural is not None:
            a, b = self.descriptor, other.descriptor
            return (self._procedural is not None and other._procedural is not None
                    and a["seed"] == b["seed"] and a["split"] == b["split"])
        return not self.file_identities().isdisjoint(other.file_identities())

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.descriptor, sort_keys=True).encode()).hexdigest()


MAX_PROCEDURAL_N = 1_000_000  # images per procedural split (README: "The embedded default")


def check_n(n: int, limit: int | None = MAX_PROCEDURAL_N) -> int:
    """The one rule for ``--n`` (and the run config's ``*_n``): a positive integer, at most
    ``limit`` (:data:`MAX_PROCEDURAL_N` images per procedural split; ``None`` for folders, which
    give at most the images they hold); one-line InputError otherwise."""
    allowed = f"1..{limit:,}" if limit else "a positive integer"
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise InputError(f"--n {n!r}: must be a positive number of images; allowed: {allowed}")
    if limit is not None and n > limit:
        raise InputError(f"--n {n:,}: the procedural set renders at most {limit:,} images per split; "
                         f"allowed: {allowed}")
    return n


def _procedural(seed: int, split: str, n: int | None) -> ImageSource:
    if split not in SPLITS:
        raise InputError(f"--split {split!r}: unknown split of the procedural set; allowed: {', '.join(SPLITS)}")
    n = DEFAULT_SPLIT_SIZES[split] if n is None else check_n(n)
    ds = ProceduralShapes(seed)
    labels = np.array([ds.label_of(i) for i in range(n)], dtype=np.int64)
    desc = {"kind": "procedural", "seed": seed, "split": split, "n": n, "spec": ds.spec.__dict__,
            "generator_version": 1}
    return ImageSource(f"procedural{seed}-{split}-{n}", ds.classes, labels, desc, _procedural=ds, _split=split)


CALIBRATION_SAMPLE_SEED = 0  # folder sources opened as split "calibration": a seeded random sample of n files


def _folder(root: Path, classnames: Path | None, imagenet: bool, n: int | None, split: str = "eval",
            like: "ImageSource | None" = None) -> ImageSource:
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
    if like is not None and like._folder_names:  # the eval source's classes, matched by folder name
        index = {name: k for k, name in enumerate(like._folder_names)}
        unknown = [d.name for d in folders if d.name not in index]
        if unknown:
            raise InputError(f"--data {kind}:{root}: class folder(s) {', '.join(unknown[:5])} are not classes of the "
                             f"eval source {like.name}; allowed: folders named like the eval source's")
        remap = [index[d.name] for d in folders]
        labels = [remap[k] for k in labels]
        classes = list(like.classes)
        folder_names = list(like._folder_names)
    elif imagenet:
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

        if len(folders) != len(IMAGENET_CLASSNAMES):
            raise InputError(f"--data imagenet:{root}: {len(folders)} class folders; ImageNet-1k val needs "
                             f"{len(IMAGENET_CLASSNAMES)} (one per WordNet id)")
        classes = list(IMAGENET_CLASSNAMES)
    elif classnames is not None:
        classes = _read_classnames(classnames, [d.name for d in folders])
    else:
        classes = [d.name.replace("_", " ") for d in folders]
    if like is None or not like._folder_names:
        folder_names = [d.name for d in folders]
    if n is not None:
        check_n(n, None)
        if split == "calibration":  # a seeded random slice (e.g. of the train folder), never the eval images
            idx = np.sort(np.random.default_rng(CALIBRATION_SAMPLE_SEED).choice(len(files), size=min(n, len(files)),
                                                                               replace=False))
        else:  # a deterministic, class-balanced-ish subset: every (len/n)-th file
            idx = np.linspace(0, len(files) - 1, num=min(n, len(files))).round().astype(int)
        files, labels = [files[i] for i in idx], [labels[i] for i in idx]
    stat = [(str(f.relative_to(root)), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    desc = {"kind": kind, "root": str(root.resolve()), "classes": classes,
            "files_sha256": hashlib.sha256(json.dumps(stat).encode()).hexdigest(), "n": len(files)}
    if split == "calibration":
        desc["sample"] = {"split": "calibration", "seed": CALIBRATION_SAMPLE_SEED}
    tag = f"{kind}-{root.resolve().name}-{len(files)}" + ("-calib" if split == "calibration" else "")
    return ImageSource(tag, classes, np.array(labels, dtype=np.int64), desc, _files=files,
                       _folder_names=folder_names)


def _read_classnames(path: Path, folder_names: list[str]) -> list[str]:
    from common.readers import read_text  # one-line error for a folder, unreadable or non-UTF-8 file

    try:
        obj = json.loads(read_text(path, "--classnames"))
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
                classnames: str | None = None, like: ImageSource | None = None) -> ImageSource:
    """Parse a ``--data`` spec (see module docstring) into an :class:`ImageSource`.

    ``split`` picks the procedural split; a folder source is one split, of which ``split`` =
    ``calibration`` takes a seeded random sample of ``n`` files (other splits: evenly spaced files).
    ``like`` (the eval source): a folder source takes its class names and class indices, matched
    by folder name (so a gating or training folder of an ImageNet-layout eval set gets ImageNet's).
    """
    kind, _, arg = spec.partition(":")
    if kind == "procedural":
        try:
            seed = int(arg) if arg else 0
        except ValueError:
            raise InputError(f"--data {spec!r}: the procedural seed must be an integer") from None
        return _procedural(seed, split, n)
    if kind in ("folder", "imagenet") and arg:
        return _folder(Path(arg), Path(classnames) if classnames else None, kind == "imagenet", n, split, like)
    raise InputError(f"--data {spec!r}: unknown data source; allowed: {', '.join(DATA_KINDS)}")
