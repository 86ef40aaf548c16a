"""``hwlat profile``: the measure -> transfer -> choose loop on one device (see hwlat/profiling/loop.py)."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
from pathlib import Path
from typing import Any

from agents.runtimes import FORMATS
from hwlat.cli.console import add_json_flag, add_wait_flag, console, emit_json


def cmd_profile(args: argparse.Namespace) -> int:
    from harness.devices import resolve_device
    from harness.transport.local import reserve_machine
    from hwlat.cli.console import progress_bar
    from hwlat.cli.measure import RowWatcher
    from hwlat.profiling.loop import ProfileRequest, run_profile

    err = console(stderr=True)
    req = ProfileRequest(
        device=resolve_device(args.device), space=args.space, budget=args.budget, batch=args.batch,
        out=Path(args.out), data=[Path(p) for p in args.data or []],
        dataset=Path(args.dataset) if args.dataset else None, model=Path(args.model) if args.model else None,
        fmt=args.format, threads=args.threads, seed=args.seed, sampler=args.sampler, min_measured=args.min_measured,
        patience=args.patience, cache_dir=Path(args.cache) if args.cache else None, target_std=args.target_std,
    )
    with contextlib.ExitStack() as stack:
        def hold() -> None:
            """Valid arguments: a busy machine is now refused (or queued for, --wait) before anything is written."""
            if req.device.is_local:
                stack.enter_context(reserve_machine(req.device.name, args.wait,
                                                    on_wait=lambda m: err.print(m, markup=False)))

        paths = run_profile(req, say=lambda msg: err.print(msg, markup=False, soft_wrap=True),
                            progress_factory=progress_bar,
                            on_row=RowWatcher(lambda m: err.print(m, markup=False, soft_wrap=True)),
                            before_writing=hold)
    if args.json:
        emit_json(profile_document(req.out, paths))
    return 0


def profile_document(out: Path, paths: dict[str, Any]) -> dict[str, Any]:
    """``hwlat profile --json`` (docs/cli.md): where everything is, and how each round went."""
    state = json.loads((out / "state.json").read_text())
    rounds = [{k: r.get(k) for k in ("round", "sampler", "measured", "cv_spearman", "cv_kendall", "cv_mape",
                                     "cv_mape_hi", "cv_coverage", "pool_std", "best_source", "ref_level_ms",
                                     "remeasures", "set_aside", "level_notes")}
              for r in state["rounds"] if r["done"]]
    return {"device": state["device"], "space": state["space"], "stopped": state["stopped"],
            "rounds": rounds, "level": state.get("level"), **{k: str(v) for k, v in paths.items()}}


def _fraction(text: str) -> float:
    """A std of log latency for ``--target-std``: a number above 0 and below 1."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1 (0.05: about +-5%), got {text!r}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "profile", help="profile a new device: choose archs, measure them, transfer the predictor, repeat",
        description="Start from the bundled pretrained predictor, measure a first batch on DEVICE, transfer, "
                    "then let the predictor choose each next batch until the budget is spent or it has converged. "
                    "Interrupt at any time; the same command continues where it stopped.")
    p.add_argument("device", help="'local', a profile name or a profile .toml path")
    p.add_argument("--space", default="nb201",
                   help="search space: nb201, fbnet, ofa, autoformer, an installed plug-in's name, or FILE.py:Class "
                   "(default nb201); the base predictor (or --data) must hold measurements of it")
    p.add_argument("--budget", type=int, default=60, help="most archs to measure (default 60)")
    p.add_argument("--batch", type=int, default=10, help="archs per round (default 10)")
    p.add_argument("--out", required=True, help="output folder (measurements, predictor, predictions, report)")
    p.add_argument("--data", action="append", metavar="PATH",
                   help="extra latency datasets: retrain the base predictor on the bundled datasets plus these")
    p.add_argument("--dataset", metavar="PATH", help="also append the new measurements to this dataset")
    p.add_argument("--model", metavar="PATH", help="start from this predictor instead of the bundled one")
    p.add_argument("--format", choices=FORMATS, help="model format (default: the device profile's)")
    p.add_argument("--threads", type=int, help="runtime threads (overrides the profile)")
    p.add_argument("--seed", type=int, default=0, help="seed for the samplers and the measurement order")
    p.add_argument("--sampler", default="default",
                   help="what picks each batch: default (adaptive: diversity for the first batch, variance after; "
                   "docs/active_loop.md), diversity, variance, random, weighted, uncertainty or hybrid")
    p.add_argument("--min-measured", type=int, default=30,
                   help="never stop for convergence before this many measurements (default 30)")
    p.add_argument("--patience", type=int, default=2,
                   help="stop when CV Spearman improved < 0.005 in this many rounds in a row (default 2)")
    p.add_argument("--target-std", type=_fraction, metavar="STD",
                   help="also stop (after --min-measured) once the median predicted std of log latency over the "
                   "candidates is at most STD (0.05: about +-5%%) and the out-of-fold archs confirm it: the upper "
                   "end of their MAPE's 95%% interval at most STD, half of them within their +-1 std "
                   "(docs/profile.md)")
    p.add_argument("--cache", metavar="DIR", help="export cache (default $HWLAT_CACHE or ~/.cache/hwlat/exports)")
    add_wait_flag(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_profile)
