"""The transfer's out-of-fold judge of the networks (issue 10, "where the sources fit, nothing may get worse";
docs/predictor.md, "The networks' judge"): the same transfer with the judge off (``TransferConfig(judge=False)``,
the evidence blend of step 4 alone) and on, side by side.

Two parts:

* ``--tasks``: the development tasks (NB201 ND and NX1-NX3 of ``nasflat_tasks.json``, FO1-FO3 of
  ``family_out_tasks.json``) in the NASFLAT protocol of ``hwlat predictor bench``. Per task and seed one
  pretraining serves both variants and every N, and per N one set of picks (default sampler) both variants,
  so they differ in nothing else (as ``predictor.bench.run_task_seed_variants``).
* ``--bundled``: the case the judge is for. The bundled predictor re-transfers each of hwlat's four NB201
  configurations of ``datasets/`` (a pretrained device, as a new device name) from N of its own measured archs,
  and a synthetic target: the bundled model's epyc2c-ort-t1 prediction x 1.3 on 3000 random NB201 cells (the
  networks' own ranking, not additive over the op choices). Scored on every other arch; random and default picks.

Mean Spearman and within +-10 % per (task, N) and variant, and the networks alone (``nn_weight`` 1, no
evidence, no judge) for the bundled part, go to ``--json``.

    taskset -c 1 nice -n 5 .venv/bin/python -m benchmarks.networks_judge --tasks ND NX1 NX2 NX3 FO1 FO2 FO3 \\
        --samples 5 10 20 --seeds 3 --json out/networks_judge_tasks.json
    taskset -c 1 nice -n 5 .venv/bin/python -m benchmarks.networks_judge --bundled --samples 5 10 20 --seeds 3 \\
        --json out/networks_judge_bundled.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from predictor.api import BUNDLED_MODEL
from predictor.bench import load_tasks, pretrain_protocol, transfer_and_score, validate_tasks
from predictor.data import load_table
from predictor.encode import get_encoder
from predictor.train import TrainConfig
from predictor.transfer import TransferConfig

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "nb201"
FAMILY_OUT = REPO / "benchmarks" / "family_out_tasks.json"
VARIANTS = {"evidence": TransferConfig(judge=False), "judged": TransferConfig()}
NETWORKS = {"networks": TransferConfig(nn_weight=1.0, evidence_blend=False, judge=False)}
BUNDLED_TARGETS = ("epyc2c-ort-t1", "epyc2c-ort-t1-noopt", "epyc2c-ort-t2", "epyc2c-ov-t1")


def _summary(per: dict) -> dict:
    """{key: {variant: [metrics per device and seed]}} -> means of Spearman and within 10 %."""
    return {key: {label: {"spearman": float(np.mean([m["spearman"] for m in ms])),
                          "within_10pct": float(np.mean([m["within_10pct"] for m in ms])), "count": len(ms)}
                  for label, ms in by.items()} for key, by in per.items()}


def run_tasks(names: list[str], samples: list[int], seeds: int) -> dict:
    table = load_table([SHARED / "latency_long.parquet"], spaces=["nb201"])
    tasks = load_tasks(SHARED / "nasflat_tasks.json") + load_tasks(FAMILY_OUT)
    per: dict = {}
    for task in [t for t in tasks if t.name in names]:
        validate_tasks(table, [task], max(samples))
        for seed in range(seeds):
            # one pretraining per task and seed serves every N and both variants (as run_task_seed_variants)
            model = pretrain_protocol(table, task.space, list(task.train_devices), TrainConfig(seed=seed))
            for name in task.test_devices:
                for n in samples:
                    _picks, res = transfer_and_score(model, table.device_series(task.space, name), n, "default",
                                                     seed, VARIANTS, f"{name}@{n}")
                    for label, metrics in res.items():
                        per.setdefault(f"{task.name}@{n}", {}).setdefault(label, []).append(metrics)
            print(task.name, seed, {k: {label: round(float(np.mean([m["spearman"] for m in ms])), 4)
                                        for label, ms in by.items()} for k, by in per.items()
                                    if k.startswith(f"{task.name}@")}, flush=True)
    return _summary(per)


def run_bundled(samples: list[int], seeds: int) -> dict:
    import predictor

    model = predictor.load(BUNDLED_MODEL)
    sm = model.models["nb201"]
    table = load_table([REPO / "datasets"], spaces=["nb201"])
    targets = {name: table.device_series("nb201", name) for name in BUNDLED_TARGETS}
    space = get_encoder("nb201").enumerate()
    cells = [space[i] for i in np.random.default_rng(123).choice(len(space), 3000, replace=False)]
    log_ms, _ = sm.predict(cells, "epyc2c-ort-t1")
    targets["synthetic: ort-t1 networks x 1.3"] = pd.Series(1.3 * np.exp(log_ms), index=cells)
    per: dict = {}
    for name, series in targets.items():
        for sampler in ("random", "default"):
            for n in samples:
                for seed in range(seeds):
                    _picks, res = transfer_and_score(sm, series, n, sampler, seed, {**VARIANTS, **NETWORKS},
                                                     f"{name}-again-{sampler}-{n}-{seed}")
                    for label, metrics in res.items():
                        per.setdefault(f"{name} {sampler}@{n}", {}).setdefault(label, []).append(metrics)
                print(name, sampler, n, {k: round(float(np.mean([m["spearman"] for m in v])), 4)
                                         for k, v in per[f"{name} {sampler}@{n}"].items()}, flush=True)
    return _summary(per)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", nargs="*", default=[])
    ap.add_argument("--bundled", action="store_true")
    ap.add_argument("--samples", type=int, nargs="+", default=[5, 10, 20])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.tasks and not SHARED.exists():
        print(f"--tasks needs the shared NB201 data at {SHARED}", file=sys.stderr)
        return 2
    report = {}
    if args.tasks:
        report["tasks"] = run_tasks(args.tasks, args.samples, args.seeds)
    if args.bundled:
        report["bundled"] = run_bundled(args.samples, args.seeds)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
