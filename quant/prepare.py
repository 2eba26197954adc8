"""Turn a loaded encoder and a ``--precision`` string into a runnable image tower.

:func:`prepare_recipe` parses the recipe (:mod:`quant.recipes`) and hands over to its
:meth:`~quant.recipes.Recipe.prepare`, which returns a :class:`PreparedRecipe` whose
:meth:`~PreparedRecipe.taps` has the interface of :func:`quant.taps.tapped_forward` (block
outputs z_0..z_depth [B, N+1, d] and the final embedding [B, embed_dim]) for every recipe:

- ``fp32``: the loaded tower.
- ``int8-dynamic``: :func:`quant.dynamic.dynamic_visual` (torch.ao, CPU only).
- ``w8a8`` / ``wXaY``: the Brevitas tower (:mod:`quant.brevitas_model`), calibrated or loaded
  from a saved calibration (:mod:`quant.calibration`), run through the bit-identical fast path
  (:mod:`quant.fastpath`, default) or Brevitas itself (``engine='brevitas'``). With a
  modifier (``w8a8+sq``) the modifier is fitted on the calibration images first (one FP32
  pass) and folded into the float tower; its fitted tensors are saved in the calibration file.

Calibration files: ``--calibration FILE`` must exist and match the model weights and recipe
(else a one-line InputError). Without it the default file
``.lraee-cache/calibration/<model>-<recipe name>[-float]-<method>-<data>.safetensors`` is
loaded when it matches, and created (with a note on stderr) when it is missing or was made
for other weights.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Protocol

import torch
from torch import nn

from common.errors import InputError
from quant.encoder import LoadedEncoder
from quant.recipes import Recipe, check_calib_method, parse_precision
from quant.taps import Taps, tapped_forward

DEFAULT_CALIB_DIR = Path(".lraee-cache") / "calibration"
DEFAULT_CALIB_N = 512
ENGINES = ("fast", "brevitas")


@dataclass
class PreparedRecipe:
    """A recipe ready to run. ``visual`` is what :meth:`taps` runs; ``brevitas`` the Brevitas tower (static)."""

    recipe: Recipe
    visual: nn.Module
    brevitas: nn.Module | None = None
    calibration: dict | None = None  # the calibration sidecar (static recipes)
    calibration_path: str | None = None
    engine: str = "fast"
    notes: list[str] = field(default_factory=list)

    @property
    def tag(self) -> str:
        """File-name tag (:meth:`quant.recipes.Recipe.tag`): recipe name, ``-float`` for float scales,
        ``-<method>`` unless percentile."""
        return self.recipe.tag((self.calibration or {}).get("method", "percentile"))

    def descriptor(self) -> dict:
        """Recipe identity plus the calibration state's hash (what the feature cache keys on)."""
        d = dict(self.recipe.descriptor())
        if self.calibration is not None:
            d["calibration"] = {k: self.calibration.get(k) for k in ("method", "n", "data", "state_sha256")}
        return d

    def taps(self, images: torch.Tensor, depth: int | None = None, keep: set[int] | None = None) -> Taps:
        if self.recipe.is_static:
            from quant.brevitas_model import quant_tapped_forward

            if not getattr(self.visual, "lraee_calibrated", False):
                raise InputError(f"--precision {self.recipe.name}: the INT8 model is not calibrated; "
                                 "calibrate it (`lraee calibrate`) or give --calibration FILE")
            return quant_tapped_forward(self.visual, images, depth=depth, keep=keep)
        return tapped_forward(self.visual, images, depth=depth, keep=keep)


def default_calibration_path(enc: LoadedEncoder, recipe: Recipe, method: str, n: int, data_name: str,
                             cache_dir: Path = DEFAULT_CALIB_DIR) -> Path:
    return Path(cache_dir) / f"{enc.name}-{recipe.tag()}-{method}-{data_name}.safetensors"


def calibration_expect(enc: LoadedEncoder, recipe: Recipe, method: str) -> dict:
    return {"model": enc.name, "weights_sha256": enc.weights_sha256(), "recipe": recipe.descriptor(),
            "method": method}


class CalibrationImages(Protocol):
    """The calibration images as quant sees them (the caller owns the data: see
    :class:`analysis.data.loader.SourceImages`): a name, a JSON-able descriptor, a count and batches
    of normalised images float32 [B, 3, H, W]."""

    name: str
    descriptor: dict

    def __len__(self) -> int: ...

    def batches(self, batch_size: int, device: str) -> Iterator[torch.Tensor]: ...


def run_calibration(enc: LoadedEncoder, recipe: Recipe, method: str, images: CalibrationImages,
                    batch_size: int = 64, device: str = "cpu", progress: bool = False,
                    out: str | Path | None = None) -> tuple[nn.Module, dict]:
    """Fit the recipe's modifiers (``+sq``: one FP32 pass for the smoothing factors), build and
    calibrate the Brevitas tower on ``images`` (the calibration split).

    Writes the state (quantizer tensors and modifier state) to ``out`` (safetensors + JSON) when
    given. Returns (tower, sidecar dict).
    """
    from quant.calibration import calibrate, save_calibration

    check_calib_method(method)
    if not recipe.needs_calibration:
        raise ValueError(f"{recipe.name} needs no calibration")
    if len(images) <= 0:
        raise InputError("--calib-n: calibration needs at least one image; allowed: a positive integer")
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(images) * (1 + len(recipe.modifiers)), desc=f"calibrate {recipe.name}", unit="img")

    def batches():
        for x in images.batches(batch_size, device):
            if bar is not None:
                bar.update(x.shape[0])
            yield x

    state = recipe.fit(enc.model.visual, batches)
    qv = recipe.build(enc.model.visual, method, state).to(device)
    seen = calibrate(qv, batches(), device=device)
    if bar is not None:
        bar.close()
    meta = {**calibration_expect(enc, recipe, method), "n": seen, "data": images.name,
            "data_descriptor": images.descriptor, "split": "calibration"}
    if out is not None:
        meta = save_calibration(out, qv, meta)
        meta["path"] = str(out)
    else:
        from quant.calibration import calibration_state, state_sha256

        meta["state_sha256"] = state_sha256(calibration_state(qv))
    return qv, meta


def load_calibrated(enc: LoadedEncoder, recipe: Recipe, method: str, path: str | Path, device: str = "cpu",
                    flag: str = "--calibration") -> tuple[nn.Module, dict]:
    """The recipe's Brevitas tower rebuilt from a saved calibration (its modifier state folded in,
    its quantizer state loaded, nothing refitted). Returns (tower, sidecar). InputError (one line,
    naming the file) when the file does not belong to this model, recipe and method."""
    from quant.calibration import apply_calibration, calibration_paths, modifier_state, read_calibration

    meta, state = read_calibration(path, calibration_expect(enc, recipe, method), flag)
    try:
        qv = recipe.build(enc.model.visual, method, modifier_state(state)).to(device)
    except ValueError as e:
        raise InputError(f"{flag} {calibration_paths(path)[0]}: {e}; recalibrate with `lraee calibrate`") from None
    apply_calibration(qv, state, path, flag)
    return qv, meta


@dataclass(frozen=True)
class PrepareOptions:
    """How :meth:`quant.recipes.Recipe.prepare` builds a runnable tower (see :func:`prepare_recipe`)."""

    calibration: str | Path | None = None
    calib_method: str = "percentile"
    calib_images: CalibrationImages | None = None
    engine: str = "fast"
    cache_dir: str | Path = DEFAULT_CALIB_DIR
    batch_size: int = 64
    device: str = "cpu"
    progress: bool = False
    quiet: bool = False


def prepare_recipe(enc: LoadedEncoder, precision: str | Recipe, scales: str = "po2",
                   calibration: str | Path | None = None, calib_method: str = "percentile",
                   calib_images: CalibrationImages | None = None, engine: str = "fast",
                   cache_dir: str | Path = DEFAULT_CALIB_DIR, batch_size: int = 64, device: str = "cpu",
                   progress: bool = False, quiet: bool = False) -> PreparedRecipe:
    """Build the image tower of a recipe (see module docstring) with :meth:`quant.recipes.Recipe.prepare`.

    ``calibration``: a saved calibration file; else ``calib_images`` name the default file (and
    calibrate it when missing or stale)."""
    recipe = precision if isinstance(precision, Recipe) else parse_precision(precision, scales)
    if engine not in ENGINES:
        raise InputError(f"--engine {engine!r}: unknown; allowed: {', '.join(ENGINES)}")
    return recipe.prepare(enc, PrepareOptions(calibration, calib_method, calib_images, engine, cache_dir,
                                              batch_size, device, progress, quiet))


def prepare_static(enc: LoadedEncoder, recipe: Recipe, opts: PrepareOptions) -> PreparedRecipe:
    """:meth:`quant.recipes.StaticRecipe.prepare`: load or create the calibration, then the fast
    path (``engine='fast'``) or the Brevitas tower itself."""
    from quant.calibration import read_calibration_meta

    check_calib_method(opts.calib_method)
    expect = calibration_expect(enc, recipe, opts.calib_method)
    notes = []
    if opts.calibration is not None:
        qv, meta = load_calibrated(enc, recipe, opts.calib_method, opts.calibration, opts.device)
        path = str(opts.calibration)
    else:
        images = opts.calib_images
        if images is None:
            raise InputError(f"--precision {recipe.name}: the INT8 model needs a calibration; allowed: "
                             "--calibration FILE or calibration images")
        if len(images) <= 0:
            raise InputError("--calib-n: calibration needs at least one image; allowed: a positive integer")
        path = default_calibration_path(enc, recipe, opts.calib_method, len(images), images.name,
                                        Path(opts.cache_dir))
        meta = None
        if path.is_file():
            old = read_calibration_meta(path)
            if all(old.get(k) == v for k, v in expect.items()):
                qv, meta = load_calibrated(enc, recipe, opts.calib_method, path, opts.device)
            else:
                notes.append(f"calibration {path} was made for other weights or another recipe; recalibrating")
        if meta is None:
            notes.append(f"calibrating {recipe.name} ({recipe.scales} scales, {opts.calib_method}) on "
                         f"{len(images)} calibration images of {images.name} -> {path}")
            if not opts.quiet:
                print(f"lraee: note: {notes[-1]}", file=sys.stderr)
            qv, meta = run_calibration(enc, recipe, opts.calib_method, images, opts.batch_size, opts.device,
                                       opts.progress, out=path)
        path = str(path)
    run_visual = qv
    if opts.engine == "fast":
        from quant.fastpath import build_fast_visual

        run_visual = build_fast_visual(qv)
    return PreparedRecipe(recipe, run_visual, brevitas=qv, calibration=meta, calibration_path=path,
                          engine=opts.engine, notes=notes)
