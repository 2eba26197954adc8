"""Where the time of a run goes: backbone passes versus everything else (for ``benchmarks/bench_scale.py``).

Every backbone pass (calibration, QIRC profile, exit-tap scales, feature extraction) times its model
calls with :class:`PassTimer`, and so does the text tower's one pass over the prompts on a text-cache
miss (kind ``text``, images = prompts). The n-dependent work after the passes times itself with
:func:`span` (kind ``work``: head training per seed over the train images, the fixed-point width search
over the gating images, the validation over the eval images). With the environment variable
``LRAEE_TIMING_LOG`` set to a file, each closes with one JSON line
``{"pass", "kind", "split", "stage", "images", "forward_s", "wall_s", "pid"}`` appended to it
(forward_s: seconds inside the backbone forwards, or the whole span for kind ``work``; wall_s: from
creation to close, incl. decoding and writing; split: the images' split where the caller names it;
stage: the ``lraee run`` stage that ran it, see :func:`set_stage`, else null). Without the variable
nothing is written.
"""
from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager

ENV = "LRAEE_TIMING_LOG"
_stage: str | None = None


def set_stage(name: str | None) -> None:
    """Label the passes that close from now on with the pipeline stage ``name`` (None: no stage)."""
    global _stage
    _stage = name


KINDS = ("backbone", "text", "work")


class PassTimer:
    """Accumulates the forward time and image count of one pass named ``name`` (``kind``: see :data:`KINDS`)."""

    def __init__(self, name: str, kind: str = "backbone", split: str | None = None):
        if kind not in KINDS:
            raise ValueError(f"timing kind {kind!r}; allowed: {', '.join(KINDS)}")
        self.name, self.kind, self.split = name, kind, split
        self.images = 0
        self.forward_s = 0.0
        self._t0 = time.perf_counter()
        self._t = None

    def start(self) -> None:
        self._t = time.perf_counter()

    def stop(self, images: int) -> None:
        self.forward_s += time.perf_counter() - self._t
        self.images += int(images)

    def close(self) -> None:
        path = os.environ.get(ENV)
        if not path:
            return
        rec = {"pass": self.name, "kind": self.kind, "split": self.split, "stage": _stage, "images": self.images,
               "forward_s": round(self.forward_s, 4), "wall_s": round(time.perf_counter() - self._t0, 4), "pid": os.getpid()}
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")


@contextmanager
def span(name: str, images: int, split: str | None = None):
    """Time the ``with`` body as non-backbone work (kind ``work``) over ``images`` images of ``split``;
    nothing is recorded when the body raises."""
    timer = PassTimer(name, kind="work", split=split)
    timer.start()
    yield
    timer.stop(images)
    timer.close()
