"""common.threads: per-thread printout capture and the block worker count."""
from __future__ import annotations

import io
import sys
import threading

from common.threads import block_workers, cpu_count, per_thread_stdout


def test_each_thread_keeps_its_own_printout(capsys):
    barrier = threading.Barrier(4)
    bufs = {i: io.StringIO() for i in range(4)}

    def work(i, router):
        with router.capture(bufs[i]):
            barrier.wait()  # all four print at once, interleaved
            for k in range(200):
                print(f"t{i} line {k}")

    before = sys.stdout
    with per_thread_stdout() as router:
        threads = [threading.Thread(target=work, args=(i, router)) for i in range(4)]
        for t in threads:
            t.start()
        print("main thread")
        for t in threads:
            t.join()
    assert sys.stdout is before
    for i, buf in bufs.items():
        assert buf.getvalue() == "".join(f"t{i} line {k}\n" for k in range(200))
    assert capsys.readouterr().out == "main thread\n"


def test_capture_nests_and_restores():
    outer, inner = io.StringIO(), io.StringIO()
    with per_thread_stdout() as router:
        with router.capture(outer):
            print("a")
            with router.capture(inner):
                print("b")
            print("c")
    assert outer.getvalue() == "a\nc\n" and inner.getvalue() == "b\n"


def test_block_workers_bounds():
    assert block_workers(1) == 1 and block_workers(0) == 1
    assert block_workers(10_000) == cpu_count() >= 1


def test_in_order_yields_in_job_order_and_raises_the_first_failure():
    import time

    import pytest

    from common.threads import in_order

    def job(i, delay):
        time.sleep(delay)
        return i

    assert list(in_order(job, [(0, 0.05), (1, 0.0), (2, 0.02)], workers=3)) == [0, 1, 2]
    started = []

    def failing(i):
        started.append(i)
        time.sleep(0.02)
        if i == 1:
            raise ValueError("job 1")
        return i

    got = []
    with pytest.raises(ValueError, match="job 1"):
        for r in in_order(failing, [(i,) for i in range(50)], workers=2):
            got.append(r)
    assert got == [0] and len(started) < 50  # the jobs not started were cancelled
