"""``hwlat`` command line: measure, datasets, devices, predictor, profile.

Every command has ``--help``. Bad input ends with one line ``hwlat: <what is wrong>`` on stderr and exit
code 2, never a traceback; results already written stay written (the store is append-only and atomic).
Every exit code is defined in ``hwlat.cli.console`` and documented in docs/reliability.md.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from agents import __version__
from agents.errors import DeviceFailedError, UsageError
from hwlat.cli import datasets, devices, measure, predictor, profile
from hwlat.cli.console import EXIT_DEVICE_FAILED, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, Parser


def build_parser() -> Parser:
    parser = Parser(prog="hwlat", description="Measure NN latency on real devices and train latency predictors.")
    parser.add_argument("--version", action="version", version=f"hwlat {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    for group in (measure, datasets, devices, predictor, profile):
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"hwlat: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return EXIT_USAGE
    except DeviceFailedError as exc:
        print(f"hwlat: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return EXIT_DEVICE_FAILED
    except KeyboardInterrupt:
        print("hwlat: interrupted; what was measured is saved, run the same command to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if os.environ.get("HWLAT_DEBUG"):
            raise
        print(f"hwlat: internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
              "(set HWLAT_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL

