"""``hwlat`` command line: measure, datasets, devices, predictor, profile.

Every command has ``--help``. Bad input ends with one line ``hwlat: <what is wrong>`` on stderr and exit
code 2, never a traceback; results already written stay written (the store is append-only and atomic).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import predictor.cli as predictor_cli
from harness import __version__, devices_cli, profile_cli
from harness.errors import UsageError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
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


def cmd_measure(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from harness.campaign import CampaignRequest, read_arch_file, run_campaign
    from harness.devices import resolve_devices

    specs = list(args.device or []) + list(args.devices or [])
    profiles = resolve_devices(specs or ["local"])
    if args.models and (args.archs or args.count is not None):
        raise UsageError("--models measures the given ONNX files; it cannot be combined with --archs or --count")
    if args.models and not Path(args.models).is_dir():
        raise UsageError(f"--models {args.models}: not a folder")
    archs = read_arch_file(Path(args.archs)) if args.archs else None
    _preflight_runtime(profiles, args.format)
    req = CampaignRequest(
        devices=profiles, out=Path(args.out), space=args.space, count=args.count, seed=args.seed, archs=archs,
        models_dir=Path(args.models) if args.models else None, fmt=args.format, threads=args.threads,
        batch=args.batch, resolution=args.resolution, remeasure=args.remeasure, retry_failed=args.retry_failed,
        reference_every=args.reference_every, cache_dir=Path(args.cache) if args.cache else None,
        workers=args.workers, max_reconnect_s=args.max_reconnect,
    )
    console = Console(stderr=True, width=None if sys.stderr.isatty() else 140)
    with progress_bar() as progress:
        result = run_campaign(req, progress=progress)
    table = Table(title=f"session {result.session_id} -> {result.out}")
    table.add_column("device", no_wrap=True)
    for col in ("measured", "already there", "ok", "unstable", "failed", "timeout", "error"):
        table.add_column(col)
    failed_devices = 0
    for o in result.outcomes:
        c = o.status_counts
        table.add_row(o.device, str(o.rows), str(o.skipped), str(c.get("ok", 0)), str(c.get("unstable", 0)),
                      str(c.get("failed", 0)), str(c.get("timeout", 0)), o.error or "")
        failed_devices += bool(o.error)
        for warning in o.warnings:
            console.print(f"[yellow]warning[/] {o.device}: {warning}")
    console.print(table)
    for o in result.outcomes:
        if o.error:  # whole, on one line: the table may wrap it, logs and greps should not have to
            console.print(f"error {o.device}: {o.error}", soft_wrap=True, markup=False)
    console.print(f"wall {result.wall_s:.1f} s (export {result.export_s:.1f} s, measure {result.measure_s:.1f} s)")
    return 1 if failed_devices else 0


def _preflight_runtime(profiles: list, fmt: str | None) -> None:
    """Fail early, with the install command, when a local device lacks its runtime or exporter."""
    import importlib.util

    def have(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            return False

    for profile in profiles:
        runtime = "litert" if (fmt or profile.format) == "tflite" else profile.runtime.runtime
        if runtime == "litert" and not have("litert_torch"):
            raise UsageError("TFLite export needs litert-torch: pip install 'hwlat[tflite]'")
        if not profile.is_local:
            continue
        if runtime == "onnxruntime" and not have("onnxruntime"):
            raise UsageError("runtime onnxruntime is not installed: pip install onnxruntime")
        if runtime == "litert" and not any(have(m) for m in ("ai_edge_litert", "tflite_runtime", "tensorflow")):
            raise UsageError("runtime LiteRT is not installed: pip install ai-edge-litert")


def cmd_datasets_show(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from harness.store import summarize

    summary = summarize(Path(args.path))
    console = Console(width=None if sys.stdout.isatty() else 140)  # a pipe or a log file: no truncated columns
    if summary["rows"] == 0:
        console.print(f"{args.path}: empty dataset")
        return 0
    table = Table(title=f"{args.path}: {summary['rows']} rows, {summary['first']} .. {summary['last']}")
    table.add_column("device", no_wrap=True)
    for col in ("cpu", "spaces", "rows", "ok", "unstable", "failed", "timeout"):
        table.add_column(col)
    for dev, e in sorted(summary["devices"].items()):
        table.add_row(dev, e.get("cpu_model", ""), ", ".join(e["spaces"]), str(e["rows"]), str(e["ok"]),
                      str(e["unstable"]), str(e["failed"]), str(e["timeout"]))
    console.print(table)
    spaces = ", ".join(f"{k}: {v}" for k, v in sorted(summary["spaces"].items()))
    console.print(f"spaces: {spaces}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hwlat", description="Measure NN latency on real devices and train latency predictors.")
    parser.add_argument("--version", action="version", version=f"hwlat {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    m = sub.add_parser("measure", help="time candidate networks on one or more devices into a Parquet dataset",
                       description="Build, export and time networks on devices; rows go to a Parquet dataset. "
                                   "Re-running the same command measures only what is missing.")
    m.add_argument("--device", action="append", metavar="DEV",
                   help="'local', a profile name, a profile .toml path or tag:TAG (repeatable; default local)")
    m.add_argument("--devices", action="append", metavar="DEV", help="same as --device (e.g. --devices tag:edge)")
    m.add_argument("--space", default="nb201",
                   help="search space: nb201, fbnet, ofa, autoformer, an installed plug-in's name, or your own "
                        "FILE.py:ClassName (docs/spaces.md; default nb201)")
    m.add_argument("--count", type=int, help="number of archs to sample (default 10)")
    m.add_argument("--seed", type=int, default=0, help="sampling and measurement-order seed (default 0)")
    m.add_argument("--archs", metavar="FILE", help="file with one arch string per line instead of sampling")
    m.add_argument("--models", metavar="DIR", help="measure the ONNX files in DIR as they are")
    m.add_argument("--out", required=True, metavar="DIR", help="dataset folder (created; appended to)")
    m.add_argument("--format", choices=("onnx", "tflite"), help="model format (default: the device profile's)")
    m.add_argument("--threads", type=int, help="runtime threads (overrides the profile; 0 = runtime default)")
    m.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    m.add_argument("--resolution", type=int,
                   help="input resolution (default: the space's, 32 for nb201/fbnet, 224 for autoformer; ofa archs "
                        "carry their own and a different --resolution is refused)")
    m.add_argument("--remeasure", action="store_true", help="measure again even if the dataset has the rows")
    m.add_argument("--retry-failed", action="store_true", help="measure again models whose rows failed")
    m.add_argument("--reference-every", type=int, default=10, metavar="K",
                   help="re-measure the drift reference model every K models (default 10; 0 = start/end only)")
    m.add_argument("--cache", metavar="DIR", help="export cache (default $HWLAT_CACHE or ~/.cache/hwlat/exports)")
    m.add_argument("--workers", type=int, help="parallel export processes (default: cores)")
    m.add_argument("--max-reconnect", type=float, default=300.0, metavar="S",
                   help="give a dropped device this many seconds to come back (default 300)")
    m.set_defaults(func=cmd_measure)

    d = sub.add_parser("datasets", help="inspect latency datasets")
    dsub = d.add_subparsers(dest="datasets_command", metavar="COMMAND", parser_class=_Parser)
    dsub.required = True
    show = dsub.add_parser("show", help="devices, spaces, rows, failures, unstable rows and date range")
    show.add_argument("path", help="dataset folder or Parquet file")
    show.set_defaults(func=cmd_datasets_show)

    devices_cli.register(sub)
    predictor_cli.register(sub)
    profile_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
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


if __name__ == "__main__":
    sys.exit(main())
