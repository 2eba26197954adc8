"""Peak resident memory of this process over a stretch of work (bytes), for per-stage figures.

On Linux the kernel keeps the process's RSS high-water mark (``VmHWM`` in ``/proc/self/status``) and
resets it to the current RSS when ``5`` is written to ``/proc/self/clear_refs``: :func:`reset` then
:func:`peak_bytes` gives the peak of exactly what ran in between, at no cost while it runs. Where that
file cannot be written (other systems, restricted containers) :func:`reset` returns False and
:func:`peak_bytes` is the whole process's peak so far (``ru_maxrss``), which is an upper bound.

Only this process is counted: child processes (decoding workers, DSE workers, compilers) are not.
"""
from __future__ import annotations

import resource
import sys


def reset() -> bool:
    """Restart the high-water mark at the current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_bytes() -> int:
    """Peak RSS in bytes since the last successful :func:`reset` (else since the process started)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss) if sys.platform == "darwin" else int(rss) * 1024  # bytes on macOS, kB elsewhere
