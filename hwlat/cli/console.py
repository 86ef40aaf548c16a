"""What every hwlat command shares on the terminal: the argument parser's error style and the progress bar."""

from __future__ import annotations

import argparse
from typing import NoReturn

#: Exit code for bad input (one line ``hwlat: ...`` on stderr, nothing written).
EXIT_USAGE = 2


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
