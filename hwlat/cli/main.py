"""``hwlat`` command line: measure, datasets, devices, predictor, profile.

Every command has ``--help``. Bad input ends with one line ``hwlat: <what is wrong>`` on stderr and exit
code 2, never a traceback; results already written stay written (the store is append-only and atomic).
Every exit code is defined in ``hwlat.cli.console`` and documented in README.md and docs/reliability.md; a
closed pipe (``hwlat ... | head``) ends the command quietly.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from agents import __version__
from agents.errors import BusyError, DeviceFailedError, UsageError
from hwlat.cli import datasets, devices, measure, predictor, profile
from hwlat.cli.console import (
    EXIT_BUSY,
    EXIT_CLOSED_PIPE,
    EXIT_FAILED,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    Parser,
)


def build_parser() -> Parser:
    parser = Parser(prog="hwlat", description="Measure NN latency on real devices and train latency predictors.")
    parser.add_argument("--version", action="version", version=f"hwlat {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    for group in (measure, datasets, devices, predictor, profile):
        group.register(sub)
    return parser


def _option_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """dest -> how the user wrote it (``--out``, or the positional's name), over every subcommand."""
    names: dict[str, str] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                names.update(_option_names(sub))
        elif action.dest not in names:
            names[action.dest] = action.option_strings[-1] if action.option_strings else action.dest
    return names


def refuse_empty_values(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """No hwlat option means anything as an empty string: ``--out ""`` would be the current folder."""
    for dest, value in vars(args).items():
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, str) and not v.strip() for v in values):
            raise UsageError(f"{_option_names(parser).get(dest, dest)} is empty; give a value")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        try:
            return _run(argv)
        finally:  # flush here, where a closed pipe can still be caught (also after --help's SystemExit)
            sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`hwlat ... | head`): stop quietly. Python would flush stdout again at exit
        # and fail once more, so point stdout at devnull first (the Python docs' recipe, "Note on SIGPIPE").
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_CLOSED_PIPE


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        refuse_empty_values(parser, args)
        return int(args.func(args) or 0)
    except BusyError as exc:
        print(f"hwlat: {_first_line(exc)}", file=sys.stderr)
        return EXIT_BUSY
    except UsageError as exc:
        print(f"hwlat: {_first_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except DeviceFailedError as exc:
        print(f"hwlat: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("hwlat: interrupted; what was measured is saved, run the same command to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        raise
    except Exception as exc:
        if os.environ.get("HWLAT_DEBUG"):
            raise
        print(f"hwlat: internal error: {type(exc).__name__}: {_first_line(exc) if str(exc) else ''} "
              "(set HWLAT_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
