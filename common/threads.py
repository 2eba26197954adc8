"""Threads that drive external tools (g++, Verilator, Yosys) block by block.

The HLS and RTL stages build several independent blocks; each block's time is spent in subprocesses
(the compilers, the simulators, Yosys), so a few threads that start them and wait keep every core busy
while the Python parts (hls4ml's conversion and writer, the C-simulation calls) take turns.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor


def cpu_count() -> int:
    """Cores this process may run on (its affinity mask where the OS has one), at least 1: what every worker
    default reads (image decoding, DSE processes, HLS and RTL blocks)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, n)


def block_workers(n_blocks: int) -> int:
    """Blocks built at once: one per core, at most ``n_blocks``, at least 1."""
    return max(1, min(cpu_count(), int(n_blocks)))


def in_order(fn: Callable, jobs: Iterable[tuple], workers: int | None = None, name: str = "lraee") -> Iterator:
    """``fn(*job)`` for every job on a pool of ``workers`` threads (default :func:`block_workers`), yielded
    in job order whatever order they finish in; each result is dropped from the pool once yielded. The
    first failure (in job order) is raised after the jobs already running have finished and the ones not
    started are cancelled, so a job never stops half-way through its own clean-up."""
    jobs = list(jobs)
    workers = block_workers(len(jobs)) if workers is None else max(1, int(workers))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
    try:
        futures = [pool.submit(fn, *job) for job in jobs]
        for i, fut in enumerate(futures):
            result = fut.result()
            futures[i] = None
            yield result
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()


class _PerThreadStdout(io.TextIOBase):
    """A ``sys.stdout`` that sends each thread's writes to that thread's buffer (when it has one)."""

    def __init__(self, fallback):
        self._local = threading.local()
        self._fallback = fallback

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        buf = getattr(self._local, "buf", None)
        return (buf if buf is not None else self._fallback).write(s)

    def flush(self) -> None:
        buf = getattr(self._local, "buf", None)
        (buf if buf is not None else self._fallback).flush()

    @contextlib.contextmanager
    def capture(self, buf: io.StringIO) -> Iterator[io.StringIO]:
        """While open, what the calling thread prints goes to ``buf``."""
        old = getattr(self._local, "buf", None)
        self._local.buf = buf
        try:
            yield buf
        finally:
            self._local.buf = old


@contextlib.contextmanager
def per_thread_stdout() -> Iterator[_PerThreadStdout]:
    """Replace ``sys.stdout`` for the section: ``with router.capture(buf):`` in a thread collects that
    thread's printout (``contextlib.redirect_stdout`` swaps the one global stream, so two threads
    redirecting at once would take each other's output). Other threads print as before."""
    router = _PerThreadStdout(sys.stdout)
    old = sys.stdout
    sys.stdout = router
    try:
        yield router
    finally:
        sys.stdout = old
