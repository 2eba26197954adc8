"""Shared builders for hwsim tests (torch-free)."""
from __future__ import annotations

import argparse
import contextlib
import io

import numpy as np

from common.errors import InputError
from quant.geometry import shipped_geometry

VIT_B_32 = shipped_geometry("ViT-B-32")
TINY = shipped_geometry("lraee-tiny")
CANDS = (4, 6, 8, 10)


def make_trace(exit_layer, cands=CANDS, depth=12, k=25, geometry=TINY, correct=None):
    from hwsim.trace import ExitTrace, default_evaluated
    el = np.asarray(exit_layer, np.int64)
    return ExitTrace([str(i) for i in range(len(el))], el, default_evaluated(el, cands),
                     None if correct is None else np.asarray(correct, np.int8), tuple(cands), depth, k, geometry)


def arch(**upd):
    from hwsim.config import arch_from_dict
    d: dict = {}
    for dotted, v in upd.items():
        cur = d
        parts = dotted.split("__")
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = v
    return arch_from_dict(d)


def run_cli(argv):
    """Run an hwsim command like ``lraee`` does: (exit status, stdout, stderr)."""
    from hwsim.cli import REGISTRARS
    parser = argparse.ArgumentParser(prog="lraee")
    sub = parser.add_subparsers(dest="command")
    for r in REGISTRARS:
        r(sub)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        args = parser.parse_args(argv)
        try:
            rc = args.func(args)
        except InputError as e:
            print(f"lraee {args.command}: error: {e}", file=err)
            rc = 2
    return rc, out.getvalue(), err.getvalue()
