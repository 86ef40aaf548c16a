"""``hwlat predictor train | predict | bench``: argparse wiring for the predictor.

``register(subparsers)`` adds the command group to the hwlat CLI; ``python -m predictor.cli`` runs it
standalone (same exit codes: 2 with a one-line ``hwlat: ...`` message for bad input).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from harness.errors import UsageError

from .encode import canonical_space, get_encoder

if TYPE_CHECKING:
    from .api import Predictor


@contextmanager
def _bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar with ETA, fed by callback(done, total)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), transient=True, console=None) as prog:
        task = prog.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            prog.update(task, completed=done, total=total)

        yield update


def _threads(args: argparse.Namespace) -> None:
    """The nets are small: one thread is as fast as several and does not fight other work for cores."""
    import torch

    torch.set_num_threads(max(1, args.threads))


def cmd_train(args: argparse.Namespace) -> int:
    """Pretrain on every device of every space in the data and save the model."""
    from .api import Predictor
    from .data import load_table
    from .train import TrainConfig

    _threads(args)
    table = load_table(args.data)
    cfg = TrainConfig(seed=args.seed, **({"steps": args.steps} if args.steps else {}))
    t0 = time.perf_counter()
    with _bar("pretraining") as update:
        pred = Predictor.train(table, cfg, progress=lambda _space, s, t: update(s, t))
    pred.save(args.out)
    for space in pred.spaces():
        print(f"{space}: {len(pred.devices(space))} devices, "
              f"{int((table.df['search_space'] == space).sum())} (device, arch) rows")
    print(f"saved {args.out} (data fingerprint {pred.fingerprint}, {time.perf_counter() - t0:.1f} s)")
    return 0


def _read_archs(path: str) -> list[str]:
    """Archs from a text file (one per line), CSV or Parquet (an ``arch`` or ``arch_str`` column)."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"archs file not found: {path}")
    try:
        if p.suffix == ".parquet":
            df = pd.read_parquet(p)
        elif p.suffix == ".csv":
            df = pd.read_csv(p)
        else:
            return [line.strip() for line in p.read_text().splitlines() if line.strip()]
    except Exception as exc:  # pandas/pyarrow raise many types for unreadable files
        raise UsageError(f"cannot read archs file {path}: {exc}") from exc
    for col in ("arch", "arch_str"):
        if col in df.columns:
            return df[col].astype(str).tolist()
    raise UsageError(f"{path}: needs an 'arch' (or 'arch_str') column")


def cmd_predict(args: argparse.Namespace) -> int:
    """Predict latencies of given archs (or the whole space) on one device into a Parquet file."""
    from .api import load

    _threads(args)
    model = load(args.model)
    if args.models:
        return _predict_files(model, args)
    if not args.space:
        raise UsageError("--space is required unless --models DIR is given")
    space = canonical_space(args.space)
    if args.archs:
        archs = _read_archs(args.archs)
        get_encoder(space).encode(archs)  # validate before predicting
        index = None
    else:
        archs = get_encoder(space).enumerate()
        if archs is None:
            raise UsageError(f"{space} is too large to enumerate; pass --archs FILE")
        index = np.arange(len(archs))
    t0 = time.perf_counter()
    ms, log_std = model.predict_with_uncertainty(archs, args.device, space)
    seconds = time.perf_counter() - t0
    out = pd.DataFrame({"search_space": space, "arch": archs, "device": args.device, "latency_ms": ms,
                        "log_std": log_std})
    if index is not None:
        out.insert(1, "arch_index", index)
    out["rank"] = out["latency_ms"].rank(method="min").astype(int)
    _write_predictions(out, args.out)
    print(f"predicted {len(archs)} {space} archs on {args.device} in {seconds:.2f} s -> {args.out}")
    return 0


def _predict_files(model: Predictor, args: argparse.Namespace) -> int:
    """``predict --models DIR``: every ``*.onnx`` file of DIR, encoded from its graph."""
    if args.archs:
        raise UsageError("give --archs or --models, not both")
    folder = Path(args.models)
    if not folder.is_dir():
        raise UsageError(f"--models {folder}: not a directory")
    files = sorted(p for p in folder.glob("*.onnx") if p.is_file())
    if not files:
        raise UsageError(f"--models {folder}: no *.onnx files found")
    t0 = time.perf_counter()
    ms, log_std = model.predict_with_uncertainty(files, args.device, args.space)
    seconds = time.perf_counter() - t0
    keys, space = model.resolve(files, args.space)  # cached: the files were just encoded
    out = pd.DataFrame({"search_space": space, "arch": [f.stem for f in files], "model_sha256": keys,
                        "path": [str(f.resolve()) for f in files], "device": args.device, "latency_ms": ms,
                        "log_std": log_std})
    out["rank"] = out["latency_ms"].rank(method="min").astype(int)
    _write_predictions(out, args.out)
    print(f"predicted {len(files)} ONNX models on {args.device} in {seconds:.2f} s -> {args.out}")
    return 0


def _write_predictions(out: pd.DataFrame, path: str) -> None:
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        out.to_parquet(path, index=False)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from exc


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the transfer benchmark (NASFLAT/HELP protocol) and print/write the figures."""
    from rich.console import Console
    from rich.table import Table

    from .bench import METRICS, load_tasks, run_bench
    from .data import load_table
    from .samplers import SAMPLERS
    from .train import TrainConfig

    if args.sampler not in (*SAMPLERS, "default"):
        raise UsageError(f"unknown sampler {args.sampler!r}; choose from {', '.join((*SAMPLERS, 'default'))}")
    if args.samples < 2 or args.seeds < 1:
        raise UsageError("--samples must be >= 2 and --seeds >= 1")
    _threads(args)
    tasks = load_tasks(args.tasks, args.task)
    table = load_table(args.data, spaces={t.space for t in tasks})  # other spaces in the files are skipped
    console = Console()

    def on_step(task: str, seed: int, res: dict) -> None:
        mean = np.mean([m["spearman"] for m in res.values()])
        console.print(f"{task} seed {seed}: mean Spearman {mean:.4f}")

    with _bar(f"bench ({len(tasks)} task(s) x {args.seeds} seed(s))") as update:
        report = run_bench(table, tasks, args.samples, args.seeds, args.sampler,
                           train_cfg=TrainConfig(steps=args.steps) if args.steps else None, on_step=on_step,
                           progress=update)
    grid = Table(title=f"transfer with {args.samples} samples ({args.sampler} sampler), {args.seeds} seed(s)")
    for col in ("task", "device", *METRICS, "seconds"):
        grid.add_column(col, justify="left" if col in ("task", "device") else "right")
    for name, entry in report["tasks"].items():
        for dev, m in entry["devices"].items():
            grid.add_row(name, dev, *(f"{np.mean(m[k]):.4f}" for k in METRICS), "")
        grid.add_row(f"[bold]{name}", "[bold]mean", *(f"[bold]{entry[k]:.4f}" for k in METRICS),
                     f"{entry['seconds']:.1f}", end_section=True)
    console.print(grid)
    if args.json:
        try:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(report, indent=1))
        except OSError as exc:
            raise UsageError(f"cannot write {args.json}: {exc.strerror or exc}") from exc
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``predictor`` command group to the hwlat CLI."""
    p = subparsers.add_parser("predictor", help="train, use and benchmark latency predictors",
                              description="Latency predictor: pretrain on measured devices, predict, benchmark "
                                          "transfer to new devices.")
    sub = p.add_subparsers(dest="predictor_command", metavar="{train,predict,bench}", required=True)

    t = sub.add_parser("train", help="pretrain a predictor on Parquet latency data",
                       description="Pretrain on every device of every search space found in the data.")
    t.add_argument("--data", action="append", required=True, metavar="PATH",
                   help="Parquet file or hive-partitioned folder (search_space, arch, device, latency_ms); repeatable")
    t.add_argument("--out", required=True, metavar="MODEL", help="where to save the model")
    t.add_argument("--steps", type=int, default=0, help="training steps (default: the built-in schedule)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    t.set_defaults(func=cmd_train)

    q = sub.add_parser("predict", help="predict latencies on one device",
                       description="Predict latency (ms) and its uncertainty for archs on a device.")
    q.add_argument("--model", required=True)
    q.add_argument("--device", required=True)
    q.add_argument("--space", help="search space, e.g. nb201 or fbnet (required unless --models)")
    q.add_argument("--archs", metavar="FILE",
                   help="one arch per line, or CSV/Parquet with an 'arch' column (default: the whole space)")
    q.add_argument("--models", metavar="DIR",
                   help="predict every *.onnx file in DIR from its graph (a model trained on graph-encoded data)")
    q.add_argument("--out", required=True, metavar="PRED.parquet")
    q.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    q.set_defaults(func=cmd_predict)

    b = sub.add_parser("bench", help="benchmark few-shot transfer to new devices",
                       description="Per task and seed: pretrain on the train devices, transfer to each test "
                                   "device from --samples measured archs, score on all other archs.")
    b.add_argument("--data", action="append", required=True, metavar="PATH")
    b.add_argument("--tasks", required=True, metavar="TASKS.json", help="NASFLAT-style task file")
    b.add_argument("--task", action="append", metavar="NAME", help="run only this task (repeatable)")
    b.add_argument("--samples", type=int, default=20, help="measured archs per test device (default 20)")
    b.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    b.add_argument("--sampler", default="default", help="random, diversity, uncertainty, hybrid or default")
    b.add_argument("--json", metavar="OUT.json", help="write per-task/device/seed figures here")
    b.add_argument("--steps", type=int, default=0, help="pretraining steps (default: the built-in schedule)")
    b.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    b.set_defaults(func=cmd_bench)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (``python -m predictor.cli``) until the hwlat CLI wires ``register``."""
    parser = argparse.ArgumentParser(prog="hwlat")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"hwlat: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
