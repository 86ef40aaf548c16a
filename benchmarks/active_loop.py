"""Simulate `hwlat profile` on data that already exists: how many measurements reach a given Spearman?

    python benchmarks/active_loop.py --data ../shared/data/nb201/latency_long.parquet --space nb201 \
        --target titan_rtx_256 --target gold_6226 --target pixel2 --target raspi4 --target fpga --target eyeriss \
        --seeds 2 --json docs/active_loop.json

The target device's measured latencies are the oracle and the target is excluded from pretraining, together with
every device of the same hardware (``device_summary.csv`` beside the data, when present: titan_rtx_1 and
titan_rtx_32 would otherwise give titan_rtx_256 away). Each round measures ``--batch`` archs chosen by the loop's
sampler (the default one for every batch, the first asked of the base model, to which the device is unknown —
exactly what `hwlat profile` does; ``--sampler`` compares others in its place) or uniformly at random, transfers,
and scores Spearman on every other arch of the space and the share of its regular archs (the space's degenerate
ones apart) predicted within +-10 %. Reported: the number of measurements needed to reach Spearman 0.90 and 0.95
and 80 % within +-10 % (mean over seeds; a run that never gets there counts as ``--max``+``--batch``), default vs
random.

``--tasks FILE --task NAME`` pretrains on that task's train devices instead (issue 10's family-out splits,
``benchmarks/family_out_tasks.json``: no source shares the targets' hardware family); the targets default to
the task's test devices:

    python benchmarks/active_loop.py --data ../shared/data/nb201/latency_long.parquet --space nb201 \
        --tasks benchmarks/family_out_tasks.json --task FO3 --seeds 2 --batch 2 --max 40
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from predictor.api import Predictor
from predictor.bench import load_tasks, pretrain_protocol
from predictor.data import load_table
from predictor.encode import get_encoder
from predictor.samplers import sample
from predictor.train import TrainConfig

THRESHOLDS = (0.90, 0.95)
#: the share of held-out regular archs within +-10 % of their measurement that counts as reached
WITHIN_GOAL = 0.80


def hardware_of(data: Path) -> dict[str, str]:
    """device -> hardware name, from device_summary.csv beside the data (empty when absent)."""
    summary = data.parent / "device_summary.csv"
    if not summary.exists():
        return {}
    df = pd.read_csv(summary)
    return dict(zip(df["device"], df["hardware"].astype(str), strict=True))


def family_out_model(table, space: str, hardware: dict[str, str], target: str, seed: int,
                     train: list[str] | None = None) -> tuple[Predictor, int]:
    """(a predictor pretrained on ``train``, by default every device but ``target`` and its hardware's other
    devices; how many train devices there were)."""
    family = hardware.get(target)
    if train is None:
        train = [d for d in table.devices(space) if d != target and (family is None or hardware.get(d) != family)]
    return Predictor({space: pretrain_protocol(table, space, train, TrainConfig(seed=seed))}, ""), len(train)


def loop(model: Predictor, space: str, series: pd.Series, sampler: str, batch: int, most: int,
         seed: int) -> list[tuple[int, float, float]]:
    """One simulated profile: returns (measured, Spearman on the rest, share of the rest's regular archs within
    +-10 %) after every round.

    ``sampler`` is what picks every batch (``default`` is what `hwlat profile` runs; other names compare
    candidates for the default); ``random`` picks every batch uniformly instead.
    """
    pool = list(series.index)
    regular = pd.Series(~get_encoder(space).degenerate(pool), index=series.index)
    measured: list[str] = []
    curve = []
    current = None
    r = 0
    while len(measured) < most:
        if sampler == "random":
            picks = sample("random", space, pool, batch, seed=seed * 1000 + r, measured=measured)
        else:  # hwlat/profiling/loop.py: model.suggest(target, n, "default", measured=..., candidates=pool, ...),
            # the first batch from the base model, to which the device is unknown
            picks = (current or model).suggest("target", batch, sampler, measured=measured, candidates=pool,
                                               space=space, seed=seed * 1000 + r)
        measured += picks
        current = copy.deepcopy(model)  # profile.py reloads the base predictor and transfers from scratch
        current.transfer("target", measured, series.loc[measured].to_numpy(), space=space, seed=seed)
        rest = series.drop(index=measured)
        pred = current.predict(list(rest.index), "target", space=space)
        ok = regular.loc[rest.index].to_numpy()
        within = float(np.mean(np.abs(pred[ok] / rest.to_numpy()[ok] - 1.0) <= 0.10))
        curve.append((len(measured), float(spearmanr(pred, rest.to_numpy()).statistic), within))
        r += 1
    return curve


def needed(curve: list[tuple[int, float, float]], threshold: float, cap: int, column: int = 1) -> int:
    """Measurements after which the curve's ``column`` (1: Spearman, 2: within +-10 %) first reaches
    ``threshold`` (``cap`` if never)."""
    return next((row[0] for row in curve if row[column] >= threshold), cap)


def simulation_parser(doc: str, seeds: int, batch: int, targets_required: bool = True) -> argparse.ArgumentParser:
    """The arguments of a simulated profile: the data, the space, the targets, seeds, batch and budget."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--space", default="nb201")
    parser.add_argument("--target", action="append", required=targets_required)
    parser.add_argument("--seeds", type=int, default=seeds)
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--max", type=int, default=60)
    parser.add_argument("--json", type=Path)
    return parser


def main() -> int:
    parser = simulation_parser(__doc__, seeds=2, batch=5, targets_required=False)
    parser.add_argument("--sampler", action="append",
                        help="sampler of every batch, compared with random (repeatable; default: default)")
    parser.add_argument("--tasks", type=Path, help="a task file: pretrain on --task's train devices")
    parser.add_argument("--task", help="the task of --tasks (its test devices are the default targets)")
    args = parser.parse_args()
    if bool(args.tasks) != bool(args.task):
        parser.error("--tasks and --task go together")
    task = load_tasks(args.tasks, [args.task])[0] if args.tasks else None
    targets = args.target or (task.test_devices if task else None)
    if not targets:
        parser.error("name a --target (or a --task)")
    import torch

    torch.set_num_threads(1)
    samplers = [*(args.sampler or ["default"]), "random"]
    table = load_table([args.data])
    hardware = hardware_of(args.data)
    report: dict = {"batch": args.batch, "max": args.max, "seeds": args.seeds, "task": args.task, "targets": {}}
    goals = [(f"n_to_{th:.2f}", th, 1) for th in THRESHOLDS] + [(f"n_to_within_{WITHIN_GOAL:.2f}", WITHIN_GOAL, 2)]
    for target in targets:
        t0 = time.perf_counter()
        series = table.device_series(args.space, target)
        entry: dict = {name: {} for name in samplers}
        for seed in range(args.seeds):
            model, entry["train_devices"] = family_out_model(table, args.space, hardware, target, seed,
                                                             task.train_devices if task else None)
            for sampler in samplers:
                curve = loop(model, args.space, series, sampler, args.batch, args.max, seed)
                entry[sampler].setdefault("curves", []).append(curve)
        cap = args.max + args.batch
        for sampler in samplers:
            for key, th, column in goals:
                counts = [needed(c, th, cap, column) for c in entry[sampler]["curves"]]
                entry[sampler][key] = float(np.mean(counts))
        entry["seconds"] = time.perf_counter() - t0
        report["targets"][target] = entry
        for key, _, _ in goals:
            print(f"{target:16s} {key}: " + " ".join(f"{name} {entry[name][key]:5.1f}" for name in samplers),
                  flush=True)
        print(f"{target:16s} {entry['seconds']:.0f} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
