"""``hwlat`` command line: measure, datasets, devices, predictor, profile.

Every command has ``--help``. Bad input ends with one line ``hwlat: <what is wrong>`` on stderr and exit
code 2, never a traceback; results already written stay written (the store is append-only and atomic).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from agents import __version__
from agents.errors import UsageError
from hwlat.cli import datasets, devices, measure, predictor, profile
from hwlat.cli.console import EXIT_USAGE, Parser


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
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        refuse_empty_values(parser, args)
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"hwlat: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("hwlat: interrupted; what was measured is saved, run the same command to continue", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("HWLAT_DEBUG"):
            raise
        print(f"hwlat: internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
              "(set HWLAT_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1

