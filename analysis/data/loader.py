"""Batches of normalised images for the encoder, decoded in parallel.

:func:`image_batches` yields ``(start, x)`` with x float32 [B, 3, H, W] normalised for the encoder,
in order. Decoding (PIL open + the encoder's preprocessing for file sources, rendering for the
procedural set) runs in ``torch.utils.data.DataLoader`` worker processes, one batch per work
item, with pinned memory when the target device is CUDA; the model runs in the main process
meanwhile. Worker count: :func:`default_workers` (CPU count - 1, at most 8; on the CPU device with
two cores or fewer, 0 = decode in the main process), or ``workers=`` / ``runtime.workers`` /
``--workers``.
"""
from __future__ import annotations


import numpy as np
import torch

from analysis.data.sources import ImageSource
from common.errors import InputError
from common.threads import cpu_count


def default_workers(device: str = "cpu") -> int:
    """Decoding processes: one core is left to the model, at most 8.

    On the CPU device with two cores or fewer: 0, decoding in the main process between forwards. There
    the forward's threads already hold every core and a worker only takes turns with them; measured on
    2 cores (random ViT-B-32, JPEG folder, batch 32, ``bench_nonbackbone.py --parts decoding``): the
    feature pass ran at 0.89-0.93x the plain forward of preloaded batches with one worker and at
    0.99-1.00x decoding in the main process."""
    n = cpu_count()
    if n <= 2 and not str(device).startswith("cuda"):
        return 0
    return max(0, min(8, n - 1))


class _BatchDataset(torch.utils.data.Dataset):
    """Item i = the i-th batch of ``source``: (start, float32 [B, 3, H, W])."""

    def __init__(self, enc, source: ImageSource, batch_size: int):
        self.source = source
        self.batch_size = int(batch_size)
        self.size = enc.geometry.image_size
        self.preprocess = enc.preprocess
        self.mean = torch.tensor(enc.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(enc.std, dtype=torch.float32).view(1, 3, 1, 1)

    def __len__(self) -> int:
        return (len(self.source) + self.batch_size - 1) // self.batch_size

    def __getitem__(self, i: int):
        try:
            return self._batch(i)
        except InputError as e:  # carried to the main process as a value: a one-line message, no traceback
            return -1, str(e)

    def _batch(self, i: int):
        start = i * self.batch_size
        stop = min(start + self.batch_size, len(self.source))
        src = self.source
        if src.is_pil():
            x = torch.stack([self.preprocess(src.open(j)) for j in range(start, stop)])
        else:
            arr = src.render(start, stop)
            if arr.shape[1] == self.size:
                x = (torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float().div_(255.0)
                     - self.mean) / self.std
            else:
                from PIL import Image

                x = torch.stack([self.preprocess(Image.fromarray(a)) for a in arr])
        return start, x.contiguous()


def image_batches(enc, source: ImageSource, batch_size: int, workers: int | None = None, device: str = "cpu"):
    """Yield ``(start, images float32 [B, 3, H, W])`` normalised for ``enc``, in order (see module doc)."""
    ds = _BatchDataset(enc, source, batch_size)
    workers = default_workers(device) if workers is None else int(workers)
    workers = min(workers, len(ds))
    if workers <= 0:
        items = (ds[i] for i in range(len(ds)))
    else:
        items = torch.utils.data.DataLoader(ds, batch_size=None, shuffle=False, num_workers=workers,
                                            pin_memory=str(device).startswith("cuda"), prefetch_factor=2,
                                            persistent_workers=False)
    for start, x in items:
        if isinstance(x, str):
            raise InputError(x)
        yield int(start), x


class SourceImages:
    """An :class:`~analysis.data.sources.ImageSource` as the batches quant's calibration reads
    (:class:`quant.prepare.CalibrationImages`): name, descriptor, count, normalised batches."""

    def __init__(self, enc, source: ImageSource, workers: int | None = None):
        self.enc, self.source, self.workers = enc, source, workers
        self.name = source.name
        self.descriptor = source.descriptor

    def __len__(self) -> int:
        return len(self.source)

    def batches(self, batch_size: int, device: str):
        for _, x in image_batches(self.enc, self.source, batch_size, workers=self.workers, device=device):
            yield x


def calibration_images(enc, spec: str = "procedural", n: int = 512, workers: int | None = None) -> SourceImages:
    """The calibration images of a ``--data`` spec (split ``calibration``: the procedural set's own split,
    a seeded random slice of a folder), for :func:`quant.prepare.prepare_recipe`."""
    from analysis.data.sources import check_n, open_source

    check_n(int(n), None)
    return SourceImages(enc, open_source(spec, "calibration", int(n)), workers)
