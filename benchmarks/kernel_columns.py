"""How additive each configuration's latency is in the cost model's graph features, without and with the kernel
columns: 10-fold out-of-fold ridge on the linear features (``predictor.graph.linear``) of every arch that all
the configurations measured, per configuration (docs/predictor.md, "Kernel sizes").

    taskset -c 1 .venv/bin/python benchmarks/kernel_columns.py --data datasets --space ofa

"Per-type columns" are the first 3K (FLOPs, bytes, launches per op type), "+ kernel buckets" all of them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold, cross_val_predict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from predictor.data import load_table
from predictor.encode import get_encoder
from predictor.graph import K

DEVICES = ("epyc2c-ort-t1", "epyc2c-ort-t1-noopt", "epyc2c-ort-t2", "epyc2c-ov-t1", "epyc2c-et-t1")


def out_of_fold(x: np.ndarray, y: np.ndarray) -> str:
    """Spearman / within +-10 % / MAPE % of a ridge (alpha by inner CV) predicted 10-fold out of fold."""
    pred = cross_val_predict(RidgeCV(alphas=np.logspace(-6, 2, 20)), x, y, cv=KFold(10, shuffle=True, random_state=0))
    rel = np.abs(pred - y) / y
    return f"{spearmanr(pred, y)[0]:.3f} / {np.mean(rel <= 0.10):.2f} / {100 * rel.mean():.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("datasets"))
    ap.add_argument("--space", default="ofa")
    ap.add_argument("--devices", nargs="+", default=list(DEVICES))
    args = ap.parse_args()
    table = load_table([args.data], spaces={args.space})  # usable rows, one latency per (device, arch)
    lat = {d: table.device_series(args.space, d) for d in args.devices}
    archs = sorted(set.intersection(*(set(v.index) for v in lat.values())))
    enc = get_encoder(args.space)
    x = enc.linear(enc.encode(archs).flat)
    print(f"{args.space}: {len(archs)} archs; Spearman / within 10 % / MAPE %")
    print("| configuration | per-type columns | + kernel buckets |\n| --- | --- | --- |")
    for d in args.devices:
        y = lat[d].loc[archs].to_numpy()
        print(f"| {d} | {out_of_fold(x[:, :3 * K], y)} | {out_of_fold(x, y)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
