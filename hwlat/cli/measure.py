"""``hwlat measure``: time candidate networks on one or more devices into a Parquet dataset."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agents.errors import UsageError
from agents.runtimes import FORMATS
from hwlat.cli.console import (
    EXIT_BUSY,
    EXIT_FAILED,
    EXIT_OK,
    add_json_flag,
    add_wait_flag,
    console,
    emit_json,
    fmt_ms,
    progress_bar,
)

#: Most per-model rows the end table shows; longer campaigns show the fastest and slowest and point to
#: ``hwlat datasets show`` (the dataset has every row).
TABLE_ROWS = 20


def cmd_measure(args: argparse.Namespace) -> int:
    from harness.campaign import run_campaign
    from harness.devices import resolve_devices
    from harness.plan import CampaignRequest, configure_device, plan_models
    from harness.runtimes import preflight_runtimes
    from harness.transport.local import reserve_machine
    from hwlat.spaces import read_arch_file
    from hwlat.spaces.shapes import shape_request

    specs = list(args.device or []) + list(args.devices or [])
    profiles = resolve_devices(specs or ["local"])
    if args.models and (args.archs or args.count is not None):
        raise UsageError("--models measures the given ONNX files; it cannot be combined with --archs or --count")
    if args.models and not Path(args.models).is_dir():
        raise UsageError(f"--models {args.models}: not a folder")
    if args.input_shape and not args.models:
        raise UsageError("--input-shape sizes the inputs of --models ONNX files; the search spaces use --batch "
                         "and --resolution")
    shapes = shape_request(args.input_shape, args.batch, args.resolution)
    archs = read_arch_file(Path(args.archs)) if args.archs else None
    preflight_runtimes(profiles, args.format)
    if args.op_profile:
        others = [p.name for p in profiles if (args.format or p.format) != "onnx"]
        if others:
            raise UsageError(f"--op-profile needs onnxruntime (LiteRT's Python API has no operator profiler); "
                             f"device {others[0]} runs LiteRT")
    req = CampaignRequest(
        devices=profiles, out=Path(args.out), space=args.space, count=args.count, seed=args.seed, archs=archs,
        models_dir=Path(args.models) if args.models else None, fmt=args.format, threads=args.threads,
        batch=1 if args.batch is None else args.batch, resolution=args.resolution,
        shapes=shapes, op_profile=args.op_profile, remeasure=args.remeasure, retry_failed=args.retry_failed,
        reference_every=args.reference_every, cache_dir=Path(args.cache) if args.cache else None,
        workers=args.workers, max_reconnect_s=args.max_reconnect,
    )
    for profile in profiles:
        configure_device(profile, req.fmt, req.threads)  # bad --threads / --format: exit 2, even when busy
    plan_models(req)  # bad space, arch strings or model files: exit 2 before waiting for the machine
    err = console(stderr=True)
    local = next((p for p in profiles if p.is_local), None)
    # The local machine lock is taken before exporting: a busy machine is refused (or queued for) at once.
    hold = reserve_machine(local.name, args.wait, on_wait=lambda m: err.print(m, markup=False)) \
        if local is not None else contextlib.nullcontext()
    with hold, progress_bar() as progress:
        watch = RowWatcher(lambda m: progress.console.print(m, markup=False, soft_wrap=True))
        result = run_campaign(req, progress=progress, on_row=watch)
    failed = [o for o in result.outcomes if o.error and not o.busy]
    # rows lost before this run (a damaged part file moved aside) also keep the exit code from saying 0
    code = EXIT_FAILED if failed or result.quarantined else EXIT_BUSY if any(o.busy for o in result.outcomes) \
        else EXIT_OK
    if args.json:
        emit_json(campaign_document(result, code))
        return code
    print_models(console(), result)
    for o in result.outcomes:
        if o.error:  # whole, on one line: logs and greps should not have to unwrap it
            err.print(f"{'busy' if o.busy else 'error'} {o.device}: {o.error}", soft_wrap=True, markup=False)
    for warning in result.warnings:
        err.print(f"warning: {warning}", soft_wrap=True, markup=False)
    if failed:
        err.print(f"hwlat: {len(failed)} of {len(result.outcomes)} devices failed; what they measured is saved "
                  f"(log: {result.out}/_logs/{result.session_id}.log); run the same command to continue",
                  soft_wrap=True, markup=False)
    for was, now, why in result.quarantined:
        err.print(f"error damaged part file {was} ({why}) moved to {now}; its rows are no longer in the dataset "
                  "(this command measured again those it covers)", soft_wrap=True, markup=False)
    return code


class RowWatcher:
    """Says on the terminal, as rows arrive, what makes a timing doubtful: the board's own warnings
    (governor, throttling, load at start), unstable rows, a clock that fell while timing, failures."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.seen_devices: set[str] = set()

    def __call__(self, device: str, row: dict[str, Any]) -> None:
        if device not in self.seen_devices:
            self.seen_devices.add(device)
            fingerprint = json.loads(row.get("fingerprint_json") or "{}")
            for warning in fingerprint.get("warnings") or []:
                self.say(f"warning {device}: {warning}")
        name = row["arch"]  # whole: a cut arch string cannot be looked up
        if row["status"] == "unstable":
            load = row.get("load1_before")
            self.say(f"warning {device}: unstable timing of {name}: robust CV {100 * (row['robust_cv'] or 0):.0f}%"
                     + (f" (load average {load:.2f} before it)" if load is not None else "")
                     + "; the median is kept, the row is flagged")
        elif row["status"] in ("failed", "timeout"):
            why = next(iter((row.get("error") or "").splitlines()), "")
            self.say(f"warning {device}: {row['status']} {name}: {why}")
        before, after = row.get("cpu_freq_mhz_before"), row.get("cpu_freq_mhz_after")
        if before and after and after < 0.9 * before:
            self.say(f"warning {device}: CPU clock fell from {before:.0f} to {after:.0f} MHz while timing {name} "
                     "(throttling?)")


def shown_rows(models: list[dict[str, Any]], limit: int = TABLE_ROWS) -> tuple[list[dict[str, Any] | None], int]:
    """The rows the table shows, fastest first and failures last, and how many it leaves out.

    Over ``limit`` rows: every failure (up to half the limit), then the fastest and the slowest of the rest
    with ``None`` (an ellipsis row) between them.
    """
    timed = sorted((m for m in models if m["median_ms"] is not None), key=lambda m: m["median_ms"])
    broken = [m for m in models if m["median_ms"] is None]
    if len(models) <= limit:
        return [*timed, *broken], 0
    broken = broken[: limit // 2]
    room = limit - len(broken)
    head, tail = (room + 1) // 2, room // 2
    picked: list[dict[str, Any] | None] = [*timed[:head], None, *timed[len(timed) - tail:], *broken] \
        if len(timed) > room else [*timed, *broken]
    return picked, len(models) - sum(m is not None for m in picked)


def print_models(out: Any, result: Any) -> None:
    """The end of ``hwlat measure``: per-model latencies, then one summary line per device.

    Numbers never shrink: on a narrow terminal the arch column folds onto more lines instead.
    """
    from rich.table import Table

    several = len(result.outcomes) > 1
    table = Table(title=f"session {result.session_id} -> {result.out}", title_justify="left", box=None,
                  pad_edge=False)
    columns = [("device", "left")] if several else []
    columns += [("arch / model", "left"), ("median ms", "right"), ("p90 ms", "right"), ("p99 ms", "right"),
                ("±CI95 ms", "right"), ("CV", "right"), ("runs", "right"), ("status", "left")]
    for col, justify in columns:
        if col == "arch / model":
            table.add_column(col, justify=justify, overflow="fold", ratio=1)
        else:
            table.add_column(col, justify=justify, no_wrap=True, min_width=len(col))
    left_out = 0
    for o in result.outcomes:
        rows, hidden = shown_rows(o.models)
        left_out += hidden
        for m in rows:
            cells = [f"… {hidden} more …", "", "", "", "", "", "", ""] if m is None else [
                m["arch"], fmt_ms(m["median_ms"]), fmt_ms(m["p90_ms"]), fmt_ms(m["p99_ms"]), fmt_ms(m["ci95_half_ms"]),
                "" if m["robust_cv"] is None else f"{100 * m['robust_cv']:.0f}%", str(m["n_runs"] or ""),
                m["status"]]
            table.add_row(*([o.device] if several else []), *cells)
    if any(o.models for o in result.outcomes):
        out.print(table)
    if left_out:
        out.print(f"{left_out} rows not shown: hwlat datasets show {result.out}", markup=False)
    for o in result.outcomes:
        out.print(summary_line(o), markup=False, soft_wrap=True)
    out.print(f"wall {result.wall_s:.1f} s (export {result.export_s:.1f} s, measure {result.measure_s:.1f} s)")


def summary_line(o: Any) -> str:
    """``local: 5 measured (4 ok, 1 unstable), 2 already there; median 1.23 ms (0.80 .. 2.41)``."""
    import numpy as np

    counts = ", ".join(f"{n} {s}" for s, n in sorted(o.status_counts.items()))
    line = f"{o.device}: {o.rows} measured" + (f" ({counts})" if counts else "") + f", {o.skipped} already there"
    medians = [m["median_ms"] for m in o.models if m["median_ms"] is not None]
    if medians:
        line += (f"; median {float(np.median(medians)):.3f} ms over the models "
                 f"(fastest {min(medians):.3f}, slowest {max(medians):.3f})")
    if o.error:
        line += "; device busy" if o.busy else "; stopped by an error"
    return line


def campaign_document(result: Any, code: int) -> dict[str, Any]:
    """``hwlat measure --json`` (docs/cli.md)."""
    return {
        "session_id": result.session_id, "out": str(result.out), "exit_code": code,
        "wall_s": result.wall_s, "export_s": result.export_s, "measure_s": result.measure_s,
        "quarantined": [{"file": str(was), "moved_to": str(now), "why": why} for was, now, why in result.quarantined],
        "devices": [{"device": o.device, "planned": o.planned, "already_there": o.skipped, "rows": o.rows,
                     "status_counts": o.status_counts, "error": o.error or None, "busy": o.busy,
                     "warnings": o.warnings, "timed_s": o.timed_s, "models": o.models} for o in result.outcomes],
    }


def register(subparsers: argparse._SubParsersAction) -> None:
    m = subparsers.add_parser("measure", help="time candidate networks on one or more devices into a Parquet dataset",
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
    m.add_argument("--format", choices=FORMATS,
                   help="model format (default: the device profile's); tflite runs on LiteRT, pte on ExecuTorch, "
                        "pt2 on torch")
    m.add_argument("--threads", type=int, help="runtime threads (overrides the profile; 0 = runtime default)")
    m.add_argument("--batch", type=int, help="batch size (default 1; with --models: sizes a dynamic first "
                   "dimension, refused where the model fixes another)")
    m.add_argument("--resolution", type=int, help="input resolution (default: the space's, 32 for nb201/fbnet, 224 for "
                   "autoformer; ofa archs carry their own; with --models: sizes dynamic "
                   "H/W of a 4-d input, refused where the model fixes others)")
    m.add_argument("--input-shape", action="append", metavar="NAME=DIMS",
                   help="with --models: shape of input NAME, e.g. input=1x3x224x224 (repeatable); a model with "
                        "a dynamic dimension nobody sizes is refused")
    m.add_argument("--op-profile", action="store_true",
                   help="after each model's timed loop, one profiled inference records per-operator times "
                        "into DIR/_ops/ (onnxruntime only)")
    m.add_argument("--remeasure", action="store_true", help="measure again even if the dataset has the rows")
    m.add_argument("--retry-failed", action="store_true", help="measure again models whose rows failed")
    m.add_argument("--reference-every", type=int, default=10, metavar="K",
                   help="re-measure the drift reference model every K models (default 10; 0 = start/end only)")
    m.add_argument("--cache", metavar="DIR", help="export cache (default $HWLAT_CACHE or ~/.cache/hwlat/exports)")
    m.add_argument("--workers", type=int, help="parallel export processes (default: cores)")
    m.add_argument("--max-reconnect", type=float, default=300.0, metavar="S",
                   help="give a dropped device this many seconds to come back (default 300)")
    add_wait_flag(m)
    add_json_flag(m)
    m.set_defaults(func=cmd_measure)
