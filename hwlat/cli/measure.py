"""``hwlat measure``: time candidate networks on one or more devices into a Parquet dataset."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agents.errors import UsageError
from hwlat.cli.console import EXIT_DEVICE_FAILED, EXIT_OK, progress_bar


def cmd_measure(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from agents.records import STATUSES
    from harness.campaign import CampaignRequest, run_campaign
    from harness.devices import resolve_devices
    from hwlat.spaces import read_arch_file

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
    for col in ("measured", "already there", *STATUSES, "error"):
        table.add_column(col)
    failed_devices = 0
    for o in result.outcomes:
        c = o.status_counts
        measured = o.rows - c.get("export_failed", 0)
        table.add_row(o.device, str(measured), str(o.skipped), *(str(c.get(s, 0)) for s in STATUSES), o.error or "")
        failed_devices += bool(o.error)
        for warning in o.warnings:
            console.print(f"[yellow]warning[/] {o.device}: {warning}")
    console.print(table)
    for warning in result.warnings:
        console.print(f"warning: {warning}", soft_wrap=True, markup=False)
    for o in result.outcomes:
        if o.error:  # whole, on one line: the table may wrap it, logs and greps should not have to
            console.print(f"error {o.device}: {o.error}", soft_wrap=True, markup=False)
    console.print(f"wall {result.wall_s:.1f} s (export {result.export_s:.1f} s, measure {result.measure_s:.1f} s)")
    if failed_devices:
        console.print(f"hwlat: {failed_devices} of {len(result.outcomes)} devices failed; what they measured "
                      f"is saved (log: {result.out}/_logs/{result.session_id}.log); run the same command to "
                      "continue", soft_wrap=True, markup=False)
        return EXIT_DEVICE_FAILED
    return EXIT_OK


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


def register(subparsers: argparse._SubParsersAction) -> None:
    m = subparsers.add_parser("measure", help="time candidate networks on one or more devices into a Parquet dataset",
                       description="Build, export and time networks on devices; rows go to a Parquet dataset. "
                                   "Re-running the same command measures only what is missing.")
    m.add_argument("--device", action="append", metavar="DEV",
                   help="'local', a profile name, a profile .toml path or tag:TAG (repeatable; default local)")
    m.add_argument("--devices", action="append", metavar="DEV", help="same as --device (e.g. --devices tag:edge)")
    m.add_argument("--space", default="nb201", help="search space: nb201 or fbnet (default nb201)")
    m.add_argument("--count", type=int, help="number of archs to sample (default 10)")
    m.add_argument("--seed", type=int, default=0, help="sampling and measurement-order seed (default 0)")
    m.add_argument("--archs", metavar="FILE", help="file with one arch string per line instead of sampling")
    m.add_argument("--models", metavar="DIR", help="measure the ONNX files in DIR as they are")
    m.add_argument("--out", required=True, metavar="DIR", help="dataset folder (created; appended to)")
    m.add_argument("--format", choices=("onnx", "tflite"), help="model format (default: the device profile's)")
    m.add_argument("--threads", type=int, help="runtime threads (overrides the profile; 0 = runtime default)")
    m.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    m.add_argument("--resolution", type=int, default=32, help="input resolution (default 32)")
    m.add_argument("--remeasure", action="store_true", help="measure again even if the dataset has the rows")
    m.add_argument("--retry-failed", action="store_true", help="measure again models whose rows failed")
    m.add_argument("--reference-every", type=int, default=10, metavar="K",
                   help="re-measure the drift reference model every K models (default 10; 0 = start/end only)")
    m.add_argument("--cache", metavar="DIR", help="export cache (default $HWLAT_CACHE or ~/.cache/hwlat/exports)")
    m.add_argument("--workers", type=int, help="parallel export processes (default: cores)")
    m.add_argument("--max-reconnect", type=float, default=300.0, metavar="S",
                   help="give a dropped device this many seconds to come back (default 300)")
    m.set_defaults(func=cmd_measure)
