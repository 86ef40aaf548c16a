"""How well a predictor fits the rows it was trained on, per (space, device): Spearman, MAPE, within +-10 %.

    python benchmarks/bundled_fit.py [MODEL] [--data datasets]

Without MODEL: the shipped predictor (predictor/pretrained/hwlat-bundled.pt) on the bundled data. A fit
check, not a generalisation figure: held-out accuracy lives in predictor_bench.py / loco_transfer.py.
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.stats import spearmanr

import predictor
from predictor.api import BUNDLED_MODEL
from predictor.data import load_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", help="model file (default: the bundled predictor)")
    ap.add_argument("--data", action="append", default=None, help="dataset(s) (default: datasets)")
    args = ap.parse_args()
    model = predictor.load(args.model or BUNDLED_MODEL)
    table = load_table(args.data or ["datasets"]).df
    print("| space | device | archs | Spearman | MAPE | within ±10 % |\n| --- | --- | --- | --- | --- | --- |")
    for (space, device), rows in table.groupby(["search_space", "device"]):
        if space not in model.spaces() or device not in model.devices(space):
            print(f"| {space} | {device} | {len(rows)} | not a device of this model | | |")
            continue
        pred = np.asarray(model.predict(list(rows.arch), device, space=space))
        err = np.abs(pred / rows.latency_ms.to_numpy() - 1)
        rho = spearmanr(pred, rows.latency_ms)[0]
        print(f"| {space} | {device} | {len(rows)} | {rho:.3f} | {100 * err.mean():.1f} % | {(err < 0.1).mean():.2f} |")


if __name__ == "__main__":
    main()
