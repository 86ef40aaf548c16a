"""``hwlat datasets``: inspect latency datasets."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hwlat.cli import compare
from hwlat.cli.console import EXIT_FAILED, EXIT_OK, Parser, add_json_flag, console, emit_json, fmt_ms


def cmd_datasets_show(args: argparse.Namespace) -> int:
    from rich.table import Table

    from agents.records import STATUSES
    from harness.store import summarize

    summary = summarize(Path(args.path))
    for damaged in summary["damaged"]:  # named on stderr, counted in the exit code; the rest is shown
        print(f"hwlat: {damaged}", file=sys.stderr)
    status = EXIT_FAILED if summary["damaged"] else EXIT_OK
    if args.json:
        emit_json({"path": str(args.path), **summary, "damaged": [str(d) for d in summary["damaged"]]})
        return status
    out = console()
    if summary["rows"] == 0:
        out.print(f"{args.path}: {'no readable rows' if summary['damaged'] else 'empty dataset'}", markup=False)
        return status
    table = Table(title=f"{args.path}: {summary['rows']} rows, {summary['first']} .. {summary['last']}",
                  title_justify="left")
    table.add_column("device", no_wrap=True)
    for col in ("cpu", "spaces", "rows", *STATUSES):
        table.add_column(col)
    for dev, e in sorted(summary["devices"].items()):
        table.add_row(dev, e.get("cpu_model", ""), ", ".join(e["spaces"]), str(e["rows"]),
                      *(str(e.get(status, 0)) for status in STATUSES))
    out.print(table)
    if summary["configs"]:
        lat = Table(title="latency of the models' medians per device configuration and space", title_justify="left")
        for col in ("device", "config", "space", "runtime", "threads", "rows", "median ms", "p10 ms", "p90 ms",
                    "unstable", "ref drift"):
            lat.add_column(col, no_wrap=col in ("device", "config"),
                           justify="left" if col in ("device", "config", "space", "runtime") else "right")
        for c in summary["configs"]:
            runtime = " ".join(str(v) for v in (c["runtime"], c["runtime_version"]) if v)
            lat.add_row(c["device"], c["config_id"][:12], c["space"], runtime, str(c["threads"] or ""),
                        str(c["rows"]), fmt_ms(c["median_ms"]), fmt_ms(c["p10_ms"]), fmt_ms(c["p90_ms"]),
                        f"{100 * c['unstable_share']:.0f}%",
                        "" if c["drift_pct"] is None else f"{c['drift_pct']:+.1f}%")
        out.print(lat)
    spaces = ", ".join(f"{k}: {v}" for k, v in sorted(summary["spaces"].items()))
    out.print(f"spaces: {spaces}", markup=False)
    return status


def register(subparsers: argparse._SubParsersAction) -> None:
    d = subparsers.add_parser("datasets", help="inspect latency datasets")
    dsub = d.add_subparsers(dest="datasets_command", metavar="COMMAND", parser_class=Parser)
    dsub.required = True
    show = dsub.add_parser("show", help="devices, spaces, rows, failures, unstable rows, date range and latencies")
    show.add_argument("path", help="dataset folder or Parquet file")
    add_json_flag(show)
    show.set_defaults(func=cmd_datasets_show)
    compare.register(dsub)
