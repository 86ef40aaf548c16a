"""What every hwlat command shares on the terminal: the argument parser's error style and the progress bar."""

from __future__ import annotations

import argparse
from typing import NoReturn

#: The exit codes of every hwlat command, in one place (documented in docs/reliability.md, "Exit codes").
#: Done: every device did its part (a model that failed or timed out on a device is a row, not an error).
EXIT_OK = 0
#: A bug in hwlat: ``hwlat: internal error: ...`` (HWLAT_DEBUG=1 shows the traceback).
EXIT_INTERNAL = 1
#: Bad input (one line ``hwlat: ...`` on stderr, nothing written).
EXIT_USAGE = 2
#: ``hwlat measure``: at least one device failed (unreachable too long, busy, corrupt or forged journal, full
#: disk, ...); its error is in the table and the dataset's session log, the other devices finished, and what
#: was measured is saved. Re-running the same command measures what is missing.
EXIT_DEVICE_FAILED = 3
#: Interrupted (Ctrl-C / SIGINT); what was measured is saved.
EXIT_INTERRUPTED = 130


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (not usage + error) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"hwlat: {message} (see `{self.prog} --help`)\n")


def progress_bar():  # rich types stay local to the CLI
    """The one progress-bar style of every long hwlat command: bar, count, elapsed time and ETA."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), transient=False, console=Console(stderr=True))
