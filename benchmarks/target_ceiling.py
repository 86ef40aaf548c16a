"""What a transfer target's own measurements allow: an out-of-fold ceiling per device and per task (issue 10).

A transfer fits a target from 5-20 of its measurements. It cannot rank the target's archs, or hit their
milliseconds, better than a model fitted on thousands of that target's own measurements over the same inputs.
Where even that falls short of a goal, the goal asks for more than the predictor's inputs (or the measurements'
repeatability) allow, and no prior or transfer method can reach it.

For every device, this script fits three regressors on the space encoder's inputs (``predictor.encode``: the
features the predictor itself reads; for NB201 the edge one-hots, the active-edge masks, FLOPs and params) and
predicts every arch out of fold (5 folds): ridge on the latency, ridge on its logarithm, and gradient-boosted
trees (which can express interactions between the choices). It scores them with the benchmarks' own
``predictor.bench.score`` (Spearman over all archs; within +-10 % and MAPE over the regular archs, the ones the
space marks as degenerate apart) and keeps, per device and metric, the best of the three: an optimistic
ceiling. A task's ceiling is the mean over its test devices, as the transfer benchmark averages.

Two sources of data:

* default: HELP's NB201 latencies of 27 devices (``../shared``), ``--archs`` archs drawn with seed 0, and the
  tasks of ``nasflat_tasks.json`` and ``benchmarks/family_out_tasks.json``;
* ``--data DIR --space S``: the configurations of an hwlat dataset (every measured arch of the space), one
  ceiling per configuration.

    .venv/bin/python -m benchmarks.target_ceiling --archs 3000 --json out/ceiling/nb201.json
    .venv/bin/python -m benchmarks.target_ceiling --data datasets --space autoformer
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold, cross_val_predict

from predictor.bench import load_tasks, score
from predictor.data import load_table
from predictor.encode import get_encoder, space_key

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nb201"
FAMILY_OUT = Path(__file__).resolve().parent / "family_out_tasks.json"
#: the metrics a ceiling reports, and whether larger is better
CEILING_METRICS = {"spearman": True, "within_10pct": True, "mape": False}
#: smallest prediction kept (ms): a ridge may extrapolate below zero, which no latency is
FLOOR_MS = 1e-3


def _regressors() -> dict[str, tuple[object, bool]]:
    """name -> (estimator, fit on log latency)."""
    alphas = np.logspace(-4, 3, 15)
    return {"ridge": (RidgeCV(alphas=alphas), False), "ridge_log": (RidgeCV(alphas=alphas), True),
            "trees": (HistGradientBoostingRegressor(max_iter=400, random_state=0), False)}


def device_ceiling(x: np.ndarray, ms: np.ndarray, degenerate: np.ndarray) -> dict[str, dict[str, float | None]]:
    """{regressor: {metric: value}} plus "best" (per metric, the best regressor's value) for one device."""
    folds = KFold(5, shuffle=True, random_state=0)
    out: dict[str, dict[str, float | None]] = {}
    for name, (model, on_log) in _regressors().items():
        pred = cross_val_predict(model, x, np.log(ms) if on_log else ms, cv=folds)
        pred = np.maximum(np.exp(pred) if on_log else pred, FLOOR_MS)
        metrics = score(pred, ms, np.zeros_like(ms), degenerate)
        out[name] = {m: metrics[m] for m in CEILING_METRICS}
    best: dict[str, float | None] = {}
    for m, larger in CEILING_METRICS.items():
        values = [v[m] for v in out.values() if v[m] is not None]
        best[m] = (max(values) if larger else min(values)) if values else None
    return {**out, "best": best}


def ceilings(table: pd.DataFrame, space: str) -> dict[str, dict]:
    """Per device (columns of ``table``: archs x devices, ms), the out-of-fold ceiling on the archs it has."""
    enc = get_encoder(space)
    result = {}
    for dev in table.columns:
        s = table[dev].dropna()
        archs = list(s.index)
        x = enc.encode(archs).flat.astype(np.float64)
        result[dev] = {"archs": len(archs), **device_ceiling(x, s.to_numpy(), enc.degenerate(archs))}
        best = result[dev]["best"]
        print(f"{dev} ({len(archs)} archs): " + ", ".join(
            f"{m} {best[m]:.3f}" for m in CEILING_METRICS if best[m] is not None), flush=True)
    return result


def _help_table(archs: int) -> pd.DataFrame:
    lat = pd.read_parquet(SHARED / "latency_long.parquet", columns=["arch", "device", "latency_ms"])
    wide = lat.pivot_table(index="arch", columns="device", values="latency_ms")
    rng = np.random.default_rng(0)
    return wide.iloc[np.sort(rng.choice(len(wide), min(archs, len(wide)), replace=False))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", type=int, default=3000, help="NB201 archs drawn from HELP's data (seed 0)")
    ap.add_argument("--data", nargs="*", help="hwlat dataset folder(s) instead of HELP's NB201 data")
    ap.add_argument("--space", default="nb201", help="with --data: the space whose configurations to score")
    ap.add_argument("--json", type=Path, help="write every figure here")
    args = ap.parse_args()
    report: dict = {}
    if args.data:
        space = space_key(args.space)
        lt = load_table(args.data, spaces={space})
        df = lt.df[lt.df["search_space"] == space]
        report["devices"] = ceilings(df.pivot_table(index="arch", columns="device", values="latency_ms"), space)
    else:
        if not SHARED.exists():
            print(f"needs the shared NB201 data at {SHARED}", file=sys.stderr)
            return 2
        report["devices"] = per_dev = ceilings(_help_table(args.archs), "nb201")
        report["tasks"] = {}
        print("task | test devices | " + " | ".join(CEILING_METRICS))
        for task in load_tasks(SHARED / "nasflat_tasks.json") + load_tasks(FAMILY_OUT):
            means = {m: float(np.mean([per_dev[d]["best"][m] for d in task.test_devices]))
                     for m in CEILING_METRICS}
            report["tasks"][task.name] = {"test_devices": task.test_devices, **means}
            print(f"{task.name} | {len(task.test_devices)} | " + " | ".join(f"{v:.3f}" for v in means.values()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
