"""``hwlat profile``: the measure -> transfer -> choose loop on one device (see harness/profile.py)."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_profile(args: argparse.Namespace) -> int:
    from rich.console import Console

    from harness.cli import progress_bar
    from harness.devices import resolve_device
    from harness.profile import ProfileRequest, run_profile

    console = Console(stderr=True)
    req = ProfileRequest(
        device=resolve_device(args.device), space=args.space, budget=args.budget, batch=args.batch,
        out=Path(args.out), data=[Path(p) for p in args.data or []],
        dataset=Path(args.dataset) if args.dataset else None, model=Path(args.model) if args.model else None,
        fmt=args.format, threads=args.threads, seed=args.seed, min_measured=args.min_measured,
        patience=args.patience, cache_dir=Path(args.cache) if args.cache else None,
    )
    run_profile(req, say=lambda msg: console.print(msg), progress_factory=progress_bar)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "profile", help="profile a new device: choose archs, measure them, transfer the predictor, repeat",
        description="Start from the bundled pretrained predictor, measure a diverse first batch on DEVICE, transfer, "
                    "then let the predictor choose each next batch until the budget is spent or it has converged. "
                    "Interrupt at any time; the same command continues where it stopped.")
    p.add_argument("device", help="'local', a profile name or a profile .toml path")
    p.add_argument("--space", default="nb201", help="search space the predictor knows (nb201 or fbnet; default nb201)")
    p.add_argument("--budget", type=int, default=60, help="most archs to measure (default 60)")
    p.add_argument("--batch", type=int, default=10, help="archs per round (default 10)")
    p.add_argument("--out", required=True, help="output folder (measurements, predictor, predictions, report)")
    p.add_argument("--data", action="append", metavar="PATH",
                   help="extra latency datasets: retrain the base predictor on the bundled datasets plus these")
    p.add_argument("--dataset", metavar="PATH", help="also append the new measurements to this dataset")
    p.add_argument("--model", metavar="PATH", help="start from this predictor instead of the bundled one")
    p.add_argument("--format", choices=("onnx", "tflite"), help="model format (default: the device profile's)")
    p.add_argument("--threads", type=int, help="runtime threads (overrides the profile)")
    p.add_argument("--seed", type=int, default=0, help="seed for the samplers and the measurement order")
    p.add_argument("--min-measured", type=int, default=30,
                   help="never stop for convergence before this many measurements (default 30)")
    p.add_argument("--patience", type=int, default=2,
                   help="stop when CV Spearman improved < 0.005 in this many rounds in a row (default 2)")
    p.add_argument("--cache", metavar="DIR", help="export cache (default $HWLAT_CACHE or ~/.cache/hwlat/exports)")
    p.set_defaults(func=cmd_profile)
