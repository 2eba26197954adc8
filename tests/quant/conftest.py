"""Fixtures for the quantization tests: calibrated Brevitas towers built once per session."""
from __future__ import annotations

import pytest
import torch


def _images(enc, n: int, split: str = "calibration") -> torch.Tensor:
    from analysis.data.sources import open_source
    from analysis.data.loader import image_batches

    _, x = next(image_batches(enc, open_source("procedural", split, n), n))
    return x


def _calibrated(enc, precision: str, scales: str = "po2", method: str = "percentile", n: int = 8):
    """A Brevitas tower of ``precision`` calibrated on ``n`` procedural calibration images (modifiers
    such as ``+sq`` fitted on the same images first), through the recipe protocol."""
    from quant.calibration import calibrate
    from quant.recipes import parse_precision

    recipe = parse_precision(precision, scales)
    x = _images(enc, n)
    qv = recipe.build(enc.model.visual, method, recipe.fit(enc.model.visual, lambda: [x]))
    calibrate(qv, [x])
    return qv


@pytest.fixture(scope="session")
def images():
    return _images


@pytest.fixture(scope="session")
def make_calibrated():
    return _calibrated


@pytest.fixture(scope="session")
def tiny_w8a8(tiny_random):
    """tiny (random weights) w8a8, power-of-two scales, calibrated on 8 procedural images."""
    return _calibrated(tiny_random, "w8a8")


@pytest.fixture(scope="session")
def tiny_ckpt(tiny_random, tmp_path_factory):
    """The random tiny model saved as a checkpoint file (for the command line)."""
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("ckpt") / "tiny_random.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_random.model.state_dict().items()}, str(path))
    return path


@pytest.fixture(autouse=True)
def _one_thread():
    """Small tensors: one intra-op thread is faster (and immune to a busy second core)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
