"""What every hwlat command shares on the terminal: exit codes, the argument parser's error style, the
progress bar, terminal-wide consoles and ``--json`` output.

Streams: results (tables, summaries) go to stdout; progress, warnings and errors go to stderr. With
``--json`` stdout carries exactly one JSON document and nothing else, so ``hwlat ... --json | jq`` works.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any, NoReturn

#: The exit codes of every hwlat command, in one place (README.md "Exit codes", docs/reliability.md).
#: Done: everything asked for was measured / computed (a model that failed or timed out on a device is a row,
#: ``unstable`` rows are results: neither is an error of the command).
EXIT_OK = 0
#: A bug in hwlat: ``hwlat: internal error: ...`` (HWLAT_DEBUG=1 shows the traceback).
EXIT_INTERNAL = 1
#: Bad input (one line ``hwlat: ...`` on stderr, nothing written).
EXIT_USAGE = 2
#: The device is busy: another hwlat campaign holds its lock (queue with ``--wait [SECONDS]``); nothing measured.
EXIT_BUSY = 3
#: Something failed after the input was accepted: at least one device (unreachable too long, corrupt or forged
#: journal, full disk, ...) or the dataset (a damaged part file moved aside, its rows gone). Its error is in the
#: table, on stderr and in the dataset's session log; the other devices finished and what was measured is saved.
#: Re-running the same command measures what is missing.
EXIT_FAILED = 4
#: Interrupted (Ctrl-C / SIGINT); what was measured is saved.
EXIT_INTERRUPTED = 130
#: The reader closed stdout (``hwlat ... | head``): 128 + SIGPIPE, what a shell reports for a tool SIGPIPE ended.
EXIT_CLOSED_PIPE = 141


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (not usage + error) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"hwlat: {message} (see `{self.prog} --help`)\n")


def fmt_ms(value: float | None) -> str:
    """A latency for a table: blank when unknown, 3 decimals below 100 ms, 1 above (every table alike)."""
    return "" if value is None else f"{value:.3f}" if value < 100 else f"{value:.1f}"


def console(stderr: bool = False):  # rich types stay local to the CLI
    """A rich console as wide as the terminal; 200 columns when the stream is a pipe or a file.

    rich falls back to 80 columns without a terminal, which wrapped every progress line and table of a
    logged run; a log is read in an editor, where long lines cost nothing.
    """
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 200, highlight=False)


def progress_bar():
    """The one progress-bar style of every long hwlat command: bar, count, elapsed time and ETA (on stderr)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), transient=False, console=console(stderr=True))


def _plain(value: Any) -> Any:
    """JSON-safe value: NaN/inf become null (JSON has neither), paths and datetimes become strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value) if isinstance(value, set | frozenset) else value
        return [_plain(v) for v in items]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _plain(value.item())
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def emit_json(document: Any) -> None:
    """Print ``document`` as the one JSON document of a ``--json`` run (keys documented in docs/cli.md)."""
    sys.stdout.write(json.dumps(_plain(document), indent=2, sort_keys=True, allow_nan=False) + "\n")
    sys.stdout.flush()


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """The same ``--json`` flag on every command that has results."""
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document on stdout instead of the tables (keys: docs/cli.md)")


def add_wait_flag(parser: argparse.ArgumentParser) -> None:
    """``--wait [SECONDS]``: queue for a busy device instead of giving up at once (exit code 3)."""
    parser.add_argument("--wait", nargs="?", type=float, const=math.inf, default=None, metavar="SECONDS",
                        help="if another campaign is measuring on this machine, wait for it (at most SECONDS; "
                             "no value: as long as it takes) instead of exiting with code 3 (device busy)")
