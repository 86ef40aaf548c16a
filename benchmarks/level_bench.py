"""A transfer switch side by side: `hwlat predictor bench` figures with it off and on (default: the level
correction, ``TransferConfig.level``; ``--switch family_floor``: the predictive variance's floor on the source
family's scale, ``additive.FAMILY_FLOOR``; ``--switch oof_calibration``: the predictive std's out-of-fold
calibration, ``transfer.Judgement.std_scale``; ``--switch judge_final_sd``: the judge's |z| over the final cost
fit's std; ``--before judge_folds=5``: any other "before" configuration, here 5 folds for the judge).

    taskset -c 1 nice -n 5 python benchmarks/level_bench.py --task ND --samples 20 10 --seeds 3 \
        --json out/level/nd.json
    ... --tasks benchmarks/family_out_tasks.json --task FO1 --task FO2 --task FO3 ...
    ... --switch family_floor --task ND --task NX1 --task NX2 --task NX3 --samples 5 10 20 ...

The protocol of ``hwlat predictor bench`` (``predictor.bench``: the same pretraining per task and seed, the same
default-sampler picks, the same scoring), with each task-seed pretrained once and every sample size and both
variants transferred from that model and those picks, so the two differ in nothing but the switch. Reports per
task and N the mean over test devices of the mean over seeds, as ``bench`` does, plus per-device figures in the
JSON and, per N, the calibration's per-(device, seed) error: the mean of |coverage - 0.68| over those cells
(a mean coverage of 0.68 can hide devices at 0 and at 1).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from predictor.bench import METRICS, load_tasks, pretrain_protocol, transfer_and_score, validate_tasks
from predictor.data import load_table
from predictor.train import TrainConfig
from predictor.transfer import TransferConfig

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nb201"
#: the ``TransferConfig`` switches this benchmark can turn off (each is on in the shipped configuration)
SWITCHES = ("level", "family_floor", "oof_calibration", "judge_final_sd")
#: the nominal coverage of a +-1 std interval
NOMINAL = 0.68


def _mean(values: list) -> float | None:
    have = [v for v in values if v is not None]
    return float(np.mean(have)) if have else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED / "latency_long.parquet"))
    ap.add_argument("--tasks", default=str(SHARED / "nasflat_tasks.json"))
    ap.add_argument("--task", action="append", required=True)
    ap.add_argument("--samples", type=int, nargs="+", default=[20, 10])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--switch", choices=SWITCHES, default="level")
    ap.add_argument("--before", metavar="FIELD=INT", help="the 'before' variant changes this integer "
                    "TransferConfig field instead of turning a switch off")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.before:
        field, _, value = args.before.partition("=")
        before = TransferConfig(**{field: int(value)})
    else:
        before = TransferConfig(**{args.switch: False})
    variants = {"before": before, "after": TransferConfig()}
    torch.set_num_threads(1)
    tasks = load_tasks(args.tasks, args.task)
    table = load_table([args.data], spaces={t.space for t in tasks})
    for n in args.samples:
        validate_tasks(table, tasks, n)
    # per[task][n][variant][device][metric] = [per seed]
    per: dict = {t.name: {n: {v: {d: {m: [] for m in METRICS} for d in t.test_devices} for v in variants}
                          for n in args.samples} for t in tasks}
    for task in tasks:
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            model = pretrain_protocol(table, task.space, list(task.train_devices), TrainConfig(seed=seed))
            for n in args.samples:
                for dev in task.test_devices:
                    _picks, by = transfer_and_score(model, table.device_series(task.space, dev), n, "default", seed,
                                                    variants, f"{dev}@{n}")
                    for label, metrics in by.items():
                        for m, v in metrics.items():
                            per[task.name][n][label][dev][m].append(v)
            print(f"{task.name} seed {seed}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    report: dict = {"switch": args.before or args.switch, "samples": args.samples, "seeds": args.seeds, "tasks": {}}
    for task in tasks:
        report["tasks"][task.name] = {}
        for n in args.samples:
            entry = {}
            for label in variants:
                devs = per[task.name][n][label]
                entry[label] = {m: _mean([_mean(devs[d][m]) for d in task.test_devices]) for m in METRICS}
                entry[label]["devices"] = devs
            report["tasks"][task.name][n] = entry
            b, a = entry["before"], entry["after"]
            print(f"{task.name} N={n}: " + "  ".join(
                f"{m} {b[m]:.4f} -> {a[m]:.4f}" for m in ("spearman", "within_10pct", "mape", "coverage_1sigma")))
    report["calibration_error"] = {}
    for n in args.samples:
        err = {label: _mean([abs(c - NOMINAL) for t in tasks for d in t.test_devices
                             for c in per[t.name][n][label][d]["coverage_1sigma"] if c is not None])
               for label in variants}
        report["calibration_error"][n] = err
        print(f"N={n}: mean |coverage - {NOMINAL}| over (device, seed) cells {err['before']:.3f} -> {err['after']:.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
