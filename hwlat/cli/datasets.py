"""``hwlat datasets``: inspect latency datasets."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hwlat.cli.console import Parser


def cmd_datasets_show(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from agents.records import STATUSES
    from harness.store import summarize

    summary = summarize(Path(args.path))
    console = Console(width=None if sys.stdout.isatty() else 140)  # a pipe or a log file: no truncated columns
    if summary["rows"] == 0:
        console.print(f"{args.path}: empty dataset")
        return 0
    table = Table(title=f"{args.path}: {summary['rows']} rows, {summary['first']} .. {summary['last']}")
    table.add_column("device", no_wrap=True)
    for col in ("cpu", "spaces", "rows", *STATUSES):
        table.add_column(col)
    for dev, e in sorted(summary["devices"].items()):
        table.add_row(dev, e.get("cpu_model", ""), ", ".join(e["spaces"]), str(e["rows"]),
                      *(str(e[status]) for status in STATUSES))
    console.print(table)
    spaces = ", ".join(f"{k}: {v}" for k, v in sorted(summary["spaces"].items()))
    console.print(f"spaces: {spaces}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    d = subparsers.add_parser("datasets", help="inspect latency datasets")
    dsub = d.add_subparsers(dest="datasets_command", metavar="COMMAND", parser_class=Parser)
    dsub.required = True
    show = dsub.add_parser("show", help="devices, spaces, rows, failures, unstable rows and date range")
    show.add_argument("path", help="dataset folder or Parquet file")
    show.set_defaults(func=cmd_datasets_show)
