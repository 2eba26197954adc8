"""The ``lraee`` command line.

Each command lives in its own module of this package (``cmd_<name>.py``, flags shared by several in
:mod:`analysis.cli.common`) with a ``register(subparsers)`` function that adds its parser and sets
``func``, a thin wrapper that fills the settings sections and calls :mod:`analysis.workflows`; this
module only assembles them and turns
:class:`common.errors.InputError` into a one-line message and exit status 2.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Callable, Sequence

from common.errors import InputError

SHOW_WARNINGS_ENV = "LRAEE_SHOW_WARNINGS"
PROJECT_PACKAGES = ("common", "quant", "exitlogic", "hls", "hwsim", "analysis", "rtl")


class _DropRecords(logging.Filter):
    def filter(self, record) -> bool:  # noqa: A003
        return False


def quiet_third_party() -> None:
    """Silence third-party libraries' warnings (brevitas' fast_hadamard_transform note, torch's
    "No CUDA runtime is found" log line, ...) unless ``LRAEE_SHOW_WARNINGS=1``. Called before
    torch or brevitas is imported: warnings raised inside third-party modules are ignored, and
    torch's cpp_extension logger (which logs the CUDA note at import) is muted. Warnings raised
    in the project's own modules still show."""
    if os.environ.get(SHOW_WARNINGS_ENV, "").strip() not in ("", "0"):
        return
    own = "|".join(PROJECT_PACKAGES)
    warnings.filterwarnings("ignore", module=rf"(?!(?:{own}|__main__)(?:\.|$))")
    log = logging.getLogger("torch.utils.cpp_extension")
    if not any(isinstance(f, _DropRecords) for f in log.filters):
        log.addFilter(_DropRecords())


class OneLineParser(argparse.ArgumentParser):
    """argparse with usage errors as one line, ``lraee CMD: error: MSG``, exit status 2."""

    def error(self, message: str):  # noqa: D401
        self.exit(2, f"{self.prog}: error: {' '.join(str(message).split())}; see {self.prog} --help\n")

    def parse_args(self, args=None, namespace=None):
        ns, extras = self.parse_known_args(args, namespace)
        if extras:  # name the command, not the top-level parser
            cmd = getattr(ns, "command", None)
            prog = f"{self.prog} {cmd}" if cmd else self.prog
            self.exit(2, f"{prog}: error: unrecognized arguments: {' '.join(extras)}; see {prog} --help\n")
        return ns


def _path_arg(text: str) -> Path:
    if str(text).strip() == "":
        raise argparse.ArgumentTypeError("'' is an empty path; allowed: a file or folder path")
    return Path(text)


def _str_path_arg(text: str) -> str:
    return str(_path_arg(text))


def _strict_paths(parser: argparse.ArgumentParser) -> None:
    """Every Path-typed option, and every ``--out``, refuses an empty string (``Path('')`` is the
    current folder: ``--out ""`` would write there)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for p in action.choices.values():
                _strict_paths(p)
        elif action.type is Path:
            action.type = _path_arg
        elif action.dest == "out" and action.type in (None, str):
            action.type = _str_path_arg


def _registrars() -> list[Callable[[argparse._SubParsersAction], None]]:
    from analysis.cli import (cmd_adavit, cmd_calibrate, cmd_eval, cmd_exit_report, cmd_export, cmd_features, cmd_hls,
                              cmd_info, cmd_profile, cmd_rtl, cmd_run, cmd_sweep_precision, cmd_thresholds,
                              cmd_train_exits, cmd_train_tiny, cmd_validate_exits)
    from hwsim import cli as hwsim_cli

    return [cmd_run.register, cmd_info.register, cmd_eval.register, cmd_features.register, cmd_calibrate.register,
            cmd_profile.register, cmd_export.register, cmd_train_tiny.register, cmd_train_exits.register,
            cmd_thresholds.register, cmd_exit_report.register, cmd_adavit.register, cmd_sweep_precision.register,
            cmd_validate_exits.register, cmd_hls.register,
            cmd_rtl.register, *hwsim_cli.REGISTRARS]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="lraee",
        description="Co-design framework for early-exit, INT8-quantized CLIP vision encoders (LRA-EE).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for register in _registrars():
        register(sub)
    _strict_paths(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    quiet_third_party()
    parser = build_parser()
    args = parser.parse_args(argv)
    from common.atomic import removed_on_error

    try:
        # a failing command leaves no output behind: a new --out (folder or file) is removed again
        # (`lraee run` keeps finished stages for a resume: its runner removes only what a failure left)
        outs = () if getattr(args, "keeps_out_on_error", False) else (getattr(args, "out", None),
                                                                       getattr(args, "write_topology", None))
        with removed_on_error(*outs):
            rc = args.func(args)
    except InputError as err:
        msg = " ".join(ln.strip() for ln in str(err).splitlines() if ln.strip())  # always one line
        print(f"lraee {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lraee {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)
