"""``hwlat datasets``: inspect latency datasets."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from hwlat.cli import compare
from hwlat.cli.console import EXIT_FAILED, EXIT_OK, Parser, add_json_flag, console, emit_json, fmt_ms

if TYPE_CHECKING:
    from rich.console import Console

#: Published latency tables shipped beside a dataset's own rows (``DIR/_published/<name>/*.parquet``): not
#: measured by hwlat, so the hive readers skip them (the leading ``_``) and ``show`` lists them apart.
PUBLISHED = "_published"


def published_tables(root: Path) -> tuple[list[dict], list[str]]:
    """One entry per Parquet table under ``root/_published`` (path, rows, spaces, devices, archs, credit), and
    the tables that could not be read (one line each)."""
    import json

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    tables, damaged = [], []
    for file in sorted((root / PUBLISHED).glob("*/*.parquet")) if root.is_dir() else []:
        rel = file.relative_to(root).as_posix()
        try:
            table = pq.read_table(file, columns=["search_space", "device", "arch"], page_checksum_verification=True)
            meta = (table.schema.metadata or {}).get(b"hwlat.published", b"{}")
            credit = json.loads(meta).get("credit", "")
        except Exception as exc:  # pyarrow raises several types for damaged input
            damaged.append(f"cannot read the published table {rel}: {str(exc).splitlines()[0] if str(exc) else exc}")
            continue
        tables.append({"path": rel, "rows": table.num_rows,
                       "spaces": sorted(pc.unique(table.column("search_space")).to_pylist()),
                       "devices": len(pc.unique(table.column("device"))),
                       "archs": len(pc.unique(table.column("arch"))), "credit": credit})
    return tables, damaged


def cmd_datasets_show(args: argparse.Namespace) -> int:
    from rich.table import Table

    from agents.records import STATUSES
    from harness.store import summarize

    summary = summarize(Path(args.path))
    published, unreadable = published_tables(Path(args.path))
    damaged = [*map(str, summary["damaged"]), *unreadable]
    for line in damaged:  # named on stderr, counted in the exit code; the rest is shown
        print(f"hwlat: {line}", file=sys.stderr)
    status = EXIT_FAILED if damaged else EXIT_OK
    if args.json:
        emit_json({"path": str(args.path), **summary, "damaged": damaged, "published": published})
        return status
    out = console()
    if summary["rows"] == 0:
        out.print(f"{args.path}: {'no readable rows' if summary['damaged'] else 'empty dataset'}", markup=False)
        _print_published(out, published)
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
    _print_published(out, published)
    return status


def _print_published(out: Console, published: list[dict]) -> None:
    """One line per published table: what it holds and whose it is (it is not in the counts above)."""
    if published:
        out.print("published latency tables beside the rows (not measured by hwlat, not counted above; "
                  "`hwlat predictor train --data` takes them):", markup=False)
    for t in published:
        out.print(f"  {t['path']}: {', '.join(t['spaces'])}, {t['devices']} devices x {t['archs']} archs, "
                  f"{t['rows']} rows; {t['credit']}", markup=False)


def register(subparsers: argparse._SubParsersAction) -> None:
    d = subparsers.add_parser("datasets", help="inspect latency datasets")
    dsub = d.add_subparsers(dest="datasets_command", metavar="COMMAND", parser_class=Parser)
    dsub.required = True
    show = dsub.add_parser("show", help="devices, spaces, rows, failures, unstable rows, date range and latencies")
    show.add_argument("path", help="dataset folder or Parquet file")
    add_json_flag(show)
    show.set_defaults(func=cmd_datasets_show)
    compare.register(dsub)
