"""Simulate `hwlat profile` on data that already exists: how many measurements reach a given Spearman?

    python benchmarks/active_loop.py --data ../shared/data/nb201/latency_long.parquet --space nb201 \
        --target titan_rtx_256 --target gold_6226 --target pixel2 --target raspi4 --target fpga --target eyeriss \
        --seeds 2 --json docs/active_loop.json

The target device's measured latencies are the oracle and the target is excluded from pretraining, together
with every device of the same hardware (``device_summary.csv`` beside the data, when present: titan_rtx_1 and
titan_rtx_32 would otherwise give titan_rtx_256 away). Each round measures ``--batch`` archs chosen by the
loop's samplers (diversity for the first batch, then the default sampler — exactly what `hwlat profile` does)
or uniformly at random, transfers, and scores Spearman on every other arch of the space. Reported: the
number of measurements needed to reach Spearman 0.90 and 0.95 (mean over seeds; a run that never gets there
counts as ``--max``+``--batch``), default vs random.
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
from predictor.bench import pretrain_protocol
from predictor.data import load_table
from predictor.samplers import sample
from predictor.train import TrainConfig

THRESHOLDS = (0.90, 0.95)


def hardware_of(data: Path) -> dict[str, str]:
    """device -> hardware name, from device_summary.csv beside the data (empty when absent)."""
    summary = data.parent / "device_summary.csv"
    if not summary.exists():
        return {}
    df = pd.read_csv(summary)
    return dict(zip(df["device"], df["hardware"].astype(str), strict=True))


def family_out_model(table, space: str, hardware: dict[str, str], target: str, seed: int) -> tuple[Predictor, int]:
    """(a predictor pretrained on every device but ``target`` and its hardware's other devices, how many there were)."""
    family = hardware.get(target)
    train = [d for d in table.devices(space) if d != target and (family is None or hardware.get(d) != family)]
    return Predictor({space: pretrain_protocol(table, space, train, TrainConfig(seed=seed))}, ""), len(train)


def loop(model: Predictor, space: str, series: pd.Series, sampler: str, batch: int, most: int,
         seed: int) -> list[tuple[int, float]]:
    """One simulated profile: returns (measured, Spearman on the rest) after every round.

    ``sampler`` is what picks every batch after the first (``default`` is what `hwlat profile` runs;
    other names compare candidates for the default); ``random`` picks every batch uniformly instead.
    """
    pool = list(series.index)
    measured: list[str] = []
    curve = []
    current = None
    r = 0
    while len(measured) < most:
        if sampler == "random":
            picks = sample("random", space, pool, batch, seed=seed * 1000 + r, measured=measured)
        elif len(measured) < 2:  # harness/profile.py: the first batch is diversity-sampled
            picks = sample("diversity", space, pool, batch, seed=seed * 1000 + r, measured=measured)
        else:  # harness/profile.py: model.suggest(target, n, "default", measured=..., candidates=pool, ...)
            picks = current.suggest("target", batch, sampler, measured=measured, candidates=pool, space=space,
                                    seed=seed * 1000 + r)
        measured += picks
        current = copy.deepcopy(model)  # profile.py reloads the base predictor and transfers from scratch
        current.transfer("target", measured, series.loc[measured].to_numpy(), space=space, seed=seed)
        rest = series.drop(index=measured)
        pred = np.log(current.predict(list(rest.index), "target", space=space))
        curve.append((len(measured), float(spearmanr(pred, rest.to_numpy()).statistic)))
        r += 1
    return curve


def needed(curve: list[tuple[int, float]], threshold: float, cap: int) -> int:
    return next((n for n, rho in curve if rho >= threshold), cap)


def simulation_parser(doc: str, seeds: int, batch: int) -> argparse.ArgumentParser:
    """The arguments of a simulated profile: the data, the space, the targets, seeds, batch and budget."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--space", default="nb201")
    parser.add_argument("--target", action="append", required=True)
    parser.add_argument("--seeds", type=int, default=seeds)
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--max", type=int, default=60)
    parser.add_argument("--json", type=Path)
    return parser


def main() -> int:
    parser = simulation_parser(__doc__, seeds=2, batch=5)
    parser.add_argument("--sampler", action="append",
                        help="sampler after the first batch, compared with random (repeatable; default: default)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    samplers = [*(args.sampler or ["default"]), "random"]
    table = load_table([args.data])
    hardware = hardware_of(args.data)
    report: dict = {"batch": args.batch, "max": args.max, "seeds": args.seeds, "targets": {}}
    for target in args.target:
        t0 = time.perf_counter()
        series = table.device_series(args.space, target)
        entry: dict = {name: {} for name in samplers}
        for seed in range(args.seeds):
            model, entry["train_devices"] = family_out_model(table, args.space, hardware, target, seed)
            for sampler in samplers:
                curve = loop(model, args.space, series, sampler, args.batch, args.max, seed)
                entry[sampler].setdefault("curves", []).append(curve)
        cap = args.max + args.batch
        for sampler in samplers:
            for th in THRESHOLDS:
                counts = [needed(c, th, cap) for c in entry[sampler]["curves"]]
                entry[sampler][f"n_to_{th:.2f}"] = float(np.mean(counts))
        entry["seconds"] = time.perf_counter() - t0
        report["targets"][target] = entry
        for th in THRESHOLDS:
            print(f"{target:16s} to {th:.2f}: " + " ".join(f"{name} {entry[name][f'n_to_{th:.2f}']:5.1f}"
                                                         for name in samplers), flush=True)
        print(f"{target:16s} {entry['seconds']:.0f} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
