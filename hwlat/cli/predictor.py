"""``hwlat predictor train | predict | bench``: argparse wiring for the predictor.

``register(subparsers)`` adds the command group to the hwlat CLI (``hwlat.cli.main``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.errors import UsageError
from hwlat.cli.console import add_json_flag, emit_json

if TYPE_CHECKING:
    from predictor.api import Predictor
    from predictor.data import LatencyTable


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


def _on_one_level(frames: list[Any]) -> list[Any]:
    """``--normalize``: each configuration's campaigns on one drift reference level; says what it did."""
    from harness.compare import on_one_level

    frames, report = on_one_level(frames)
    for r in report:
        what = f"baseline {r['baseline_ms']:.3f} ms, beta {r['beta']:.2f}" if r["normalized"] else \
            "left as measured (rows without round reference data, or several reference models)"
        config = r["config_id"] if isinstance(r["config_id"], str) else "(no config_id)"
        print(f"{r['device']} / {config}: {what}", file=sys.stderr)
    return frames


def _without_devices(table: LatencyTable, devices: list[str]) -> LatencyTable:
    """``--exclude-device``: drop these devices' rows (every space) from the training table.

    Why an option: a device measured in a dataset is often the held-out target of a transfer benchmark (the
    bundled H100 rows are), and pretraining on it would score the transfer on its own training data. A name the
    data lacks is a usage error (a typo would otherwise train on everything and look the same).
    """
    if not devices:
        return table
    known = set(table.df["device"].astype(str))
    unknown = [d for d in devices if d not in known]
    if unknown:
        raise UsageError(f"--exclude-device {unknown[0]}: no such device in the data")
    return replace(table, df=table.df[~table.df["device"].isin(devices)].reset_index(drop=True))


def cmd_train(args: argparse.Namespace) -> int:
    """Pretrain on every device of every space in the data and save the model."""
    from hwlat.spaces import get_space
    from predictor.api import Predictor
    from predictor.data import load_table
    from predictor.train import TrainConfig

    _threads(args)
    for spec in args.space:
        get_space(spec)  # registers the plug-in's name, so its rows resolve to the space (one-line error if not)
    table = _without_devices(load_table(args.data, level=_on_one_level if args.normalize else None),
                             args.exclude_device)
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


def cmd_predict(args: argparse.Namespace) -> int:
    """Predict latencies of given archs (or the whole space) on one device into a Parquet file."""

    from hwlat.spaces import read_arch_file
    from predictor.api import load
    from predictor.encode import canonical_space, get_encoder
    from predictor.predictions import prediction_table, write_predictions

    _threads(args)
    if not args.models and (args.input_shape or args.batch is not None or args.resolution is not None):
        raise UsageError("--input-shape, --batch and --resolution size the inputs of --models ONNX files; arch "
                         "strings name networks of their space's own size")
    model = load(args.model)
    if args.models:
        return _predict_files(model, args)
    if not args.space:
        raise UsageError("--space is required unless --models DIR is given")
    space = canonical_space(args.space)
    if args.archs:
        archs = read_arch_file(Path(args.archs))
        get_encoder(space).encode(archs)  # validate before predicting
        index = None
    else:
        archs = get_encoder(space).enumerate()
        if archs is None:
            raise UsageError(f"{space} is too large to enumerate; pass --archs FILE")
        index = list(range(len(archs)))
    t0 = time.perf_counter()
    ms, log_std = model.predict_with_uncertainty(archs, args.device, space)
    seconds = time.perf_counter() - t0
    table = prediction_table(space, args.device, archs, ms, log_std, arch_index=index)
    write_predictions(Path(args.out), table)
    if args.json:
        return _emit_prediction_summary(args, space, ms, seconds)
    print(f"predicted {len(archs)} {space} archs on {args.device} in {seconds:.2f} s -> {args.out}")
    return 0


def model_info(path: Path) -> dict:
    """What ``hwlat predictor info`` shows: spaces, devices (pretrained / transferred), data fingerprint, size."""
    from predictor.api import FORMAT, load

    model = load(path)
    spaces = {}
    for space, m in sorted(model.models.items()):
        spaces[space] = {
            "pretrained": [d for d, src in zip(m.devices, m.source, strict=True) if src],
            "transferred": [d for d, src in zip(m.devices, m.source, strict=True) if not src],
            "ensemble": len(m.nets),
        }
    return {"model": str(path), "format": FORMAT, "bytes": Path(path).stat().st_size,
            "fingerprint": model.fingerprint, "meta": model.meta, "spaces": spaces}


def cmd_info(args: argparse.Namespace) -> int:
    """Which spaces and devices a model knows, without reading them from an error message."""
    from predictor.api import BUNDLED_MODEL

    info = model_info(Path(args.model) if args.model else BUNDLED_MODEL)
    if args.json:
        emit_json(info)
        return 0
    meta = info["meta"]
    print(f"{info['model']}  ({info['bytes'] / 1e6:.1f} MB, training data fingerprint {info['fingerprint']}"
          + (f", created {meta['created']}" if meta.get("created") else "")
          + (f", {meta['rows']} rows" if meta.get("rows") else "") + ")")
    for space, entry in info["spaces"].items():
        print(f"{space}: {len(entry['pretrained'])} pretrained devices, {len(entry['transferred'])} transferred, "
              f"ensemble of {entry['ensemble']}")
        print(f"  pretrained:  {', '.join(entry['pretrained']) or '-'}")
        if entry["transferred"]:
            print(f"  transferred: {', '.join(entry['transferred'])}")
    return 0


def _emit_prediction_summary(args: argparse.Namespace, space: str, ms: Any, seconds: float) -> int:
    """``predictor predict --json``: where the predictions went and their range (docs/cli.md)."""
    import numpy as np

    emit_json({"out": str(args.out), "space": space, "device": args.device, "archs": len(ms), "seconds": seconds,
               "median_ms": float(np.median(ms)), "min_ms": float(np.min(ms)), "max_ms": float(np.max(ms))})
    return 0


def _predict_files(model: Predictor, args: argparse.Namespace) -> int:
    """``predict --models DIR``: every ``*.onnx`` file of DIR, encoded from its graph at the input shapes
    ``hwlat measure --models DIR`` with the same ``--input-shape``/``--batch``/``--resolution`` measures; each row
    records them (``model_key``, ``input_shapes_json``), so it joins to the measured rows of that network."""

    from hwlat.spaces.shapes import shape_request
    from predictor.predictions import write_predictions

    if args.archs:
        raise UsageError("give --archs or --models, not both")
    folder = Path(args.models)
    if not folder.is_dir():
        raise UsageError(f"--models {folder}: not a directory")
    files = sorted(p for p in folder.glob("*.onnx") if p.is_file())
    if not files:
        raise UsageError(f"--models {folder}: no *.onnx files found")
    request = shape_request(args.input_shape, args.batch, args.resolution)
    t0 = time.perf_counter()
    table = model.prediction_table(files, args.device, args.space, input_shapes=request.input_shapes,
                                   batch=request.batch, resolution=request.resolution,
                                   where=str(folder))  # refusals name DIR, as measure's do
    seconds = time.perf_counter() - t0
    write_predictions(Path(args.out), table)
    if args.json:
        return _emit_prediction_summary(args, table["search_space"][0].as_py(), table["latency_ms"].to_numpy(),
                                        seconds)
    print(f"predicted {len(files)} ONNX models on {args.device} in {seconds:.2f} s -> {args.out}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the transfer benchmark (NASFLAT/HELP protocol) and print/write the figures."""
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from predictor.bench import METRICS, load_tasks, run_bench
    from predictor.data import load_table
    from predictor.samplers import SAMPLERS
    from predictor.train import TrainConfig

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
    def fmt(values: list) -> str:
        have = [v for v in values if v is not None]  # degenerate-arch figures exist only where there are some
        return f"{np.mean(have):.4f}" if have else "-"

    for name, entry in report["tasks"].items():
        for dev, m in entry["devices"].items():
            grid.add_row(name, dev, *(fmt(m[k]) for k in METRICS), "")
        grid.add_row(f"[bold]{name}", "[bold]mean", *(f"[bold]{fmt([entry[k]])}" for k in METRICS),
                     f"{entry['seconds']:.1f}", end_section=True)
    # 11 columns: a pipe or file gets them whole instead of squeezed into rich's default 80
    (console if console.is_terminal else Console(width=160)).print(grid)
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
    sub = p.add_subparsers(dest="predictor_command", metavar="{train,predict,info,bench}", required=True)

    t = sub.add_parser("train", help="pretrain a predictor on Parquet latency data",
                       description="Pretrain on every device of every search space found in the data.")
    t.add_argument("--data", action="append", required=True, metavar="PATH",
                   help="Parquet file or hive-partitioned folder (search_space, arch, device, latency_ms); repeatable")
    t.add_argument("--out", required=True, metavar="MODEL", help="where to save the model")
    t.add_argument("--steps", type=int, default=0, help="training steps (default: the built-in schedule)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    t.add_argument("--space", action="append", default=[], metavar="FILE.py:Class",
                   help="a plug-in space whose rows the data holds (repeatable): its rows are then encoded from "
                        "their arch strings, as for ofa and autoformer, instead of from the dataset's ONNX graphs")
    t.add_argument("--normalize", action="store_true",
                   help="train on latencies put on one drift reference level per device configuration across the "
                        "--data campaigns (as `hwlat datasets compare` normalizes; docs/timing.md)")
    t.add_argument("--exclude-device", action="append", default=[], metavar="DEVICE",
                   help="leave this device's rows out of training (repeatable), e.g. a held-out transfer target")
    t.set_defaults(func=cmd_train)

    q = sub.add_parser("predict", help="predict latencies on one device",
                       description="Predict latency (ms) and its uncertainty for archs on a device.")
    q.add_argument("--model", required=True)
    q.add_argument("--device", required=True)
    q.add_argument("--space",
                   help="search space, e.g. nb201, fbnet, ofa, autoformer or FILE.py:Class (required unless --models)")
    q.add_argument("--archs", metavar="FILE",
                   help="one arch per line, or CSV/Parquet with an 'arch' column (default: the whole space)")
    q.add_argument("--models", metavar="DIR",
                   help="predict every *.onnx file in DIR from its graph (a model trained on graph-encoded data)")
    q.add_argument("--input-shape", action="append", metavar="NAME=DIMS",
                   help="with --models: shape of input NAME, e.g. input=1x3x224x224 (repeatable), as for `hwlat "
                        "measure --models`; a model with a dynamic dimension nobody sizes is refused")
    q.add_argument("--batch", type=int,
                   help="with --models: sizes a dynamic first dimension, refused where the model fixes another")
    q.add_argument("--resolution", type=int,
                   help="with --models: sizes dynamic H/W of a 4-d input, refused where the model fixes others")
    q.add_argument("--out", required=True, metavar="PRED.parquet")
    q.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    add_json_flag(q)
    q.set_defaults(func=cmd_predict)

    i = sub.add_parser("info", help="spaces, devices and training data of a model (default: the bundled one)",
                       description="Print what a predictor model covers: its search spaces, the devices it was "
                                   "pretrained on and those transferred to it, its training data fingerprint and "
                                   "size. Without MODEL: the pretrained predictor bundled with hwlat.")
    i.add_argument("model", nargs="?", metavar="MODEL",
                   help="model file (default: the bundled predictor/pretrained/hwlat-bundled.pt)")
    add_json_flag(i)
    i.set_defaults(func=cmd_info)

    b = sub.add_parser("bench", help="benchmark few-shot transfer to new devices",
                       description="Per task and seed: pretrain on the train devices, transfer to each test "
                                   "device from --samples measured archs, score on all other archs.")
    b.add_argument("--data", action="append", required=True, metavar="PATH")
    b.add_argument("--tasks", required=True, metavar="TASKS.json", help="NASFLAT-style task file")
    b.add_argument("--task", action="append", metavar="NAME", help="run only this task (repeatable)")
    b.add_argument("--samples", type=int, default=20, help="measured archs per test device (default 20)")
    b.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    b.add_argument("--sampler", default="default",
                   help="random, diversity, weighted, variance, uncertainty, hybrid, adaptive or default")
    b.add_argument("--json", metavar="OUT.json", help="write per-task/device/seed figures here")
    b.add_argument("--steps", type=int, default=0, help="pretraining steps (default: the built-in schedule)")
    b.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    b.set_defaults(func=cmd_bench)
