"""The ``lraee`` command line.

Each command lives in its own module with a ``register(subparsers)`` function that adds
its parser and sets ``func``; this module only assembles them and turns
:class:`common.errors.InputError` into a one-line message and exit status 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from common.errors import InputError


def _registrars() -> list[Callable[[argparse._SubParsersAction], None]]:
    from analysis import (cmd_calibrate, cmd_eval, cmd_exit_report, cmd_export, cmd_features, cmd_hls, cmd_info,
                          cmd_profile, cmd_run, cmd_thresholds, cmd_train_exits, cmd_train_tiny, cmd_validate_exits)
    from hwsim import cli as hwsim_cli

    return [cmd_run.register, cmd_info.register, cmd_eval.register, cmd_features.register, cmd_calibrate.register,
            cmd_profile.register, cmd_export.register, cmd_train_tiny.register, cmd_train_exits.register,
            cmd_thresholds.register, cmd_exit_report.register, cmd_validate_exits.register, cmd_hls.register,
            *hwsim_cli.REGISTRARS]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lraee",
        description="Co-design framework for early-exit, INT8-quantized CLIP vision encoders (LRA-EE).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for register in _registrars():
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except InputError as err:
        print(f"lraee {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lraee {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
