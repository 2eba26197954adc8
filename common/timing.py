"""Where the time of a run goes: backbone passes versus everything else (for ``benchmarks/bench_scale.py``).

Every backbone pass (calibration, QIRC profile, exit-tap scales, feature extraction) times its model
calls with :class:`PassTimer`; with the environment variable ``LRAEE_TIMING_LOG`` set to a file,
each pass appends one JSON line ``{"pass", "images", "forward_s", "wall_s", "pid"}`` to it at its
end (forward_s: seconds inside the backbone forwards; wall_s: the whole pass incl. decoding and
writing). Without the variable nothing is written.
"""
from __future__ import annotations

import json
import os
import time

ENV = "LRAEE_TIMING_LOG"


class PassTimer:
    """Accumulates the forward time and image count of one backbone pass named ``name``."""

    def __init__(self, name: str):
        self.name = name
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
        rec = {"pass": self.name, "images": self.images, "forward_s": round(self.forward_s, 4),
               "wall_s": round(time.perf_counter() - self._t0, 4), "pid": os.getpid()}
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")
