"""The embedded procedural image set: coloured shapes with nuisance variation.

Classes are ``<colour> <shape>`` (5 colours x 5 shapes = 25 classes, e.g. "red star").
Each image shows one large target object of its class, drawn over a noisy gradient
background with smaller distractor shapes (of any class), occluding strokes and pixel
noise; the target's position, scale, rotation and colour are jittered. Distractors of
other classes mean the label is decided by comparing objects across the image, which
shallow blocks do poorly.

Every image is a pure function of ``(seed, split, index)``: the same triple gives the
same bytes on every run. Splits draw from disjoint seed streams.

Images are uint8 arrays [H, W, 3]; by default H = W = 56 so that a patch-8 ViT sees a
7 x 7 grid (49 patch tokens, as ViT-B/32 at 224 px).
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
from matplotlib.path import Path as MplPath

COLOURS: dict[str, float] = {  # name -> hue in [0, 1)
    "red": 0.0,
    "yellow": 0.15,
    "green": 0.33,
    "blue": 0.62,
    "purple": 0.80,
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
SPLITS: dict[str, int] = {"train": 0, "calibration": 1, "gating": 2, "eval": 3}
DEFAULT_SPLIT_SIZES: dict[str, int] = {"train": 30000, "calibration": 512, "gating": 2000, "eval": 2000}
SUPERSAMPLE = 2  # render at 2x and average 2x2 blocks (anti-aliasing)


def class_names() -> list[str]:
    """The 25 class names, index = label: colour-major, e.g. ``["red circle", "red square", ...]``."""
    return [f"{c} {s}" for c in COLOURS for s in SHAPES]


def _unit_polygon(shape: str) -> np.ndarray:
    """Vertices [V, 2] of a shape with circumradius 1, centred at the origin."""
    if shape == "square":
        a = np.pi / 4 + np.arange(4) * np.pi / 2
        return np.stack([np.cos(a), np.sin(a)], 1)
    if shape == "triangle":
        a = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        return np.stack([np.cos(a), np.sin(a)], 1) * np.array([1.0, 1.0]) + np.array([0.0, 0.2])
    if shape == "star":
        a = -np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        return np.stack([r * np.cos(a), r * np.sin(a)], 1)
    if shape == "cross":
        t = 0.33
        return np.array([[-t, -1], [t, -1], [t, -t], [1, -t], [1, t], [t, t], [t, 1], [-t, 1],
                         [-t, t], [-1, t], [-1, -t], [-t, -t]], dtype=np.float64)
    raise KeyError(shape)


_POLYGONS = {s: _unit_polygon(s) for s in SHAPES if s != "circle"}


def _shape_mask(shape: str, cx: float, cy: float, radius: float, angle: float,
                points: np.ndarray, side: int) -> np.ndarray:
    """Boolean mask [side, side] of one shape over the supersampled pixel centres ``points`` [side*side, 2]."""
    if shape == "circle":
        d2 = (points[:, 0] - cx) ** 2 + (points[:, 1] - cy) ** 2
        return (d2 <= radius * radius).reshape(side, side)
    c, s = np.cos(angle), np.sin(angle)
    verts = _POLYGONS[shape] @ np.array([[c, s], [-s, c]]) * radius + np.array([cx, cy])
    return MplPath(verts).contains_points(points).reshape(side, side)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float64)


@dataclass(frozen=True)
class ProceduralSpec:
    """Parameters of the generator (all lengths relative to the image side)."""

    image_size: int = 56
    target_radius: tuple[float, float] = (0.17, 0.34)  # fraction of the side
    distractors: tuple[int, int] = (0, 4)  # inclusive range
    distractor_scale: tuple[float, float] = (0.35, 0.65)  # relative to the target radius
    strokes: tuple[int, int] = (0, 3)  # inclusive range of occluding line strokes
    noise_sigma: tuple[float, float] = (0.0, 0.12)
    hue_jitter: float = 0.035


class ProceduralShapes:
    """Deterministic procedural dataset; ``render(split, index)`` -> (uint8 [H, W, 3], label)."""

    def __init__(self, seed: int = 0, spec: ProceduralSpec | None = None):
        self.seed = int(seed)
        self.spec = spec or ProceduralSpec()
        self.classes = class_names()
        side = self.spec.image_size * SUPERSAMPLE
        coords = (np.arange(side) + 0.5) / SUPERSAMPLE  # pixel units of the output image
        xx, yy = np.meshgrid(coords, coords)
        self._points = np.stack([xx.ravel(), yy.ravel()], 1)
        self._side = side

    def label_of(self, index: int) -> int:
        """Labels cycle through the classes so every split is balanced."""
        return index % len(self.classes)

    def render(self, split: str, index: int) -> tuple[np.ndarray, int]:
        if split not in SPLITS:
            raise KeyError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
        sp = self.spec
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, SPLITS[split], int(index)]))
        label = self.label_of(index)
        colour_name, shape_name = self.classes[label].split(" ")
        S, side, pts = float(sp.image_size), self._side, self._points

        # background: desaturated gradient
        base = _hsv(rng.random(), rng.uniform(0.0, 0.25), rng.uniform(0.25, 0.75))
        direction = rng.normal(size=2)
        direction /= np.linalg.norm(direction) + 1e-12
        ramp = ((pts @ direction) / S - 0.5).reshape(side, side, 1)
        img = base + rng.uniform(0.0, 0.3) * ramp * (_hsv(rng.random(), 0.3, 1.0) - 0.5)

        radius = rng.uniform(*sp.target_radius) * S
        # distractors: smaller shapes of any colour and kind
        for _ in range(rng.integers(sp.distractors[0], sp.distractors[1] + 1)):
            r = radius * rng.uniform(*sp.distractor_scale)
            if rng.random() < 0.6:
                hue = COLOURS[list(COLOURS)[rng.integers(len(COLOURS))]] + rng.uniform(-sp.hue_jitter, sp.hue_jitter)
            else:
                hue = rng.random()
            col = _hsv(hue, rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0))
            m = _shape_mask(SHAPES[rng.integers(len(SHAPES))], rng.uniform(0, S), rng.uniform(0, S), r,
                            rng.uniform(0, 2 * np.pi), pts, side)
            img[m] = col

        # the target
        margin = 0.55 * radius
        cx, cy = rng.uniform(margin, S - margin, size=2)
        hue = COLOURS[colour_name] + rng.uniform(-sp.hue_jitter, sp.hue_jitter)
        col = _hsv(hue, rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0))
        m = _shape_mask(shape_name, cx, cy, radius, rng.uniform(0, 2 * np.pi), pts, side)
        img[m] = col

        # occluding strokes
        for _ in range(rng.integers(sp.strokes[0], sp.strokes[1] + 1)):
            p0, p1 = rng.uniform(0, S, size=2), rng.uniform(0, S, size=2)
            d = p1 - p0
            t = np.clip(((pts - p0) @ d) / (d @ d + 1e-12), 0, 1)
            dist = np.linalg.norm(pts - (p0 + t[:, None] * d), axis=1)
            m = (dist <= rng.uniform(0.5, 1.5)).reshape(side, side)
            img[m] = _hsv(rng.random(), rng.uniform(0, 1), rng.uniform(0.2, 1.0))

        # downsample, contrast/brightness jitter, pixel noise
        img = img.reshape(sp.image_size, SUPERSAMPLE, sp.image_size, SUPERSAMPLE, 3).mean(axis=(1, 3))
        img = (img - 0.5) * rng.uniform(0.75, 1.15) + 0.5 + rng.uniform(-0.08, 0.08)
        img = img + rng.normal(0.0, rng.uniform(*sp.noise_sigma), size=img.shape)
        return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), label

    def render_split(self, split: str, n: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Images uint8 [n, H, W, 3] and labels int64 [n] for indices start..start+n-1."""
        imgs = np.empty((n, self.spec.image_size, self.spec.image_size, 3), dtype=np.uint8)
        labels = np.empty(n, dtype=np.int64)
        for i in range(n):
            imgs[i], labels[i] = self.render(split, start + i)
        return imgs, labels
