"""What training on HELP's bundled NB201 table does to the bundled predictor (docs/datasets.md, "Training the
bundled predictor on it").

    python benchmarks/help_bundled_training.py fit MODEL.pt [MODEL.pt ...]
    python benchmarks/help_bundled_training.py transfer --target epyc2c-ort-t1 [--help-data PATH] [--seeds 3]

``fit``: Spearman and MAPE of each model's pretrained prediction against the measured latencies of every NB201
configuration in ``datasets/`` (the rows they were trained on: how well the networks still fit hwlat's own
devices once HELP's 27 share the ensemble). ``transfer``: leave ``--target`` out of ``datasets/``, pretrain on the
rest (plus ``--help-data``, e.g. the subset that ``derive.py --subset-of`` writes), transfer to the target from 20
random archs per seed and score the other archs. Prints one JSON line per model / run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

import predictor
from predictor.data import LatencyTable, load_table

DATASETS = Path(__file__).resolve().parents[1] / "datasets"


def fit(models: list[str]) -> None:
    table = load_table([DATASETS], spaces=["nb201"])
    for path in models:
        model = predictor.load(path)
        scores = {}
        for device in table.devices("nb201"):
            measured = table.device_series("nb201", device)
            pred = model.predict(list(measured.index), device, space="nb201")
            scores[device] = {"spearman": float(spearmanr(pred, measured.values)[0]),
                              "mape": float(100 * np.mean(np.abs(pred / measured.values - 1)))}
        print(json.dumps({"model": path, "nb201_devices": len(model.devices("nb201")), "fit": scores}))


def transfer(target: str, help_data: str | None, seeds: int, samples: int = 20) -> None:
    table = load_table([DATASETS, *([help_data] if help_data else [])], spaces=["nb201"])
    full = table.device_series("nb201", target)
    sources = LatencyTable(table.df[table.df["device"] != target].reset_index(drop=True))
    start = time.process_time()
    base = predictor.Predictor.train(sources)
    train_cpu = time.process_time() - start
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        base.save(Path(tmp) / "base.pt")
        archs = list(full.index)
        for seed in range(seeds):
            model = predictor.load(Path(tmp) / "base.pt")
            picked = np.random.default_rng(seed).choice(len(full), samples, replace=False)
            info = model.transfer("new", [archs[i] for i in picked], full.values[picked], space="nb201", seed=seed)
            rest = [a for i, a in enumerate(archs) if i not in set(picked)]
            pred, truth = model.predict(rest, "new", space="nb201"), full.loc[rest].values
            err = np.abs(pred / truth - 1)
            runs.append({"seed": seed, "spearman": float(spearmanr(pred, truth)[0]), "mape": float(100 * err.mean()),
                         "within_10pct": float(np.mean(err < 0.1)), "best_source": info.get("best_source")})
    print(json.dumps({"target": target, "help_data": help_data, "sources": len(sources.devices("nb201")),
                      "pretrain_cpu_s": round(train_cpu, 1), "runs": runs,
                      "mean_spearman": float(np.mean([r["spearman"] for r in runs]))}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    f = sub.add_parser("fit")
    f.add_argument("models", nargs="+")
    t = sub.add_parser("transfer")
    t.add_argument("--target", required=True)
    t.add_argument("--help-data")
    t.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    if args.what == "fit":
        fit(args.models)
    else:
        transfer(args.target, args.help_data, args.seeds)
