"""A real GPU as a new device (issue 10): the predictor transferred to ``h100-torch-cuda`` (PyTorch eager on an
NVIDIA H100, batch 1; datasets/, docs/datasets.md) from N of its measured NB201 archs and scored on the others.

Beside it, on the same picks: copy-the-best-source (``predictor.bench.copy_best_source``: the source device
whose latencies rank the N picks best, scaled by the geometric-mean ratio on them) and the measurement's own
round-to-round noise (how often one round's median lies within +-10 % of the row's latency), which bounds what
any predictor can reach within +-10 %. Scores as ``predictor.bench.score`` (degenerate cells apart).

Two predictors:

* ``bundled``: the shipped predictor (HELP's 27 devices, five GPUs at three batch sizes among them, and the
  bundled CPU configurations);
* ``family-out`` (``--family-out``): the same training data without any GPU (HELP's phones, Raspberry Pi,
  server CPUs, FPGA, ASIC and the bundled CPU configurations), trained here on NB201 only, so the H100 is a
  hardware family the sources never saw. Copy-best-source draws from the same sources.

    taskset -c 0 .venv/bin/python -m benchmarks.gpu_transfer --samples 5 10 20 --seeds 10 --family-out \\
        --json out/gpu_transfer.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import predictor
from agents.records import USABLE_STATUSES
from predictor.api import BUNDLED_MODEL, Predictor
from predictor.bench import copy_best_source, score
from predictor.data import LatencyTable, load_table
from predictor.encode import get_encoder
from predictor.train import TrainConfig

REPO = Path(__file__).resolve().parents[1]
TARGET = "h100-torch-cuda"
HELP = REPO / "datasets" / "_published" / "nb201-help" / "latency.parquet"
#: HELP's GPU configurations: the hardware family the family-out predictor must not see.
GPU_PREFIXES = ("1080ti", "2080ti", "titan")


def target_rows() -> pd.DataFrame:
    """The H100 rows: arch, latency_ms and the kept rounds' medians (for the noise floor)."""
    df = pd.read_parquet(REPO / "datasets" / f"device={TARGET}")
    return df[df["status"].isin(USABLE_STATUSES)].reset_index(drop=True)


def source_rows(family_out: bool) -> pd.DataFrame:
    """The sources' NB201 rows (``search_space, device, arch, latency_ms``): the bundled configurations but the
    target, and HELP's devices on the archs those hold (what the bundled predictor trains on); without any GPU
    for ``family_out``."""
    ours = load_table([REPO / "datasets"], spaces=["nb201"]).df
    ours = ours[ours["device"] != TARGET]
    help_ = pd.read_parquet(HELP)
    help_ = help_[help_["arch"].isin(set(ours["arch"]))][["search_space", "device", "arch", "latency_ms"]]
    rows = pd.concat([ours, help_], ignore_index=True)
    if family_out:
        rows = rows[~rows["device"].str.startswith(GPU_PREFIXES)]
    return rows.reset_index(drop=True)


def noise_floor(rows: pd.DataFrame) -> dict[str, float]:
    """One kept round's median against the row's latency: what a perfect model of the device could match."""
    ratios = []
    for medians, kept, latency in zip(rows["round_medians_ms"], rows["round_kept"], rows["latency_ms"], strict=True):
        ratios += [m / latency - 1.0 for m, k in zip(medians, kept, strict=True) if k]
    ratios = np.abs(np.asarray(ratios))
    return {"rounds": len(ratios), "round_within10": float((ratios < 0.1).mean()),
            "round_median_abs_pct": float(100 * np.median(ratios)),
            "median_robust_cv": float(rows["robust_cv"].median())}


def family_out_model(rows: pd.DataFrame, threads: int) -> Predictor:
    """NB201 predictor pretrained on ``source_rows(family_out=True)``: the bundled training data minus every GPU."""
    torch.set_num_threads(threads)
    return Predictor.train(LatencyTable(rows), TrainConfig())


def run(model: Predictor, src: pd.DataFrame, rows: pd.DataFrame, samples: list[int], seeds: int,
        tag: str) -> list[dict]:
    archs = rows["arch"].tolist()
    y = rows["latency_ms"].to_numpy()
    degenerate = np.asarray(get_encoder("nb201").degenerate(archs), bool)
    out = []
    for n in samples:
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            idx = rng.permutation(len(archs))
            pick, rest = idx[:n], idx[n:]
            name = f"{TARGET}-{tag}-n{n}-s{seed}"
            t0 = time.perf_counter()
            model.transfer(name, [archs[i] for i in pick], y[pick], space="nb201", seed=seed)
            pred, std = model.predict_with_uncertainty([archs[i] for i in rest], name, space="nb201")
            took = time.perf_counter() - t0
            base, base_std, _ = copy_best_source(y[pick], src.loc[[archs[i] for i in pick]].to_numpy(),
                                                 src.loc[[archs[i] for i in rest]].to_numpy())
            out.append({"model": tag, "n": n, "seed": seed, "transfer_s": took,
                        "hwlat": score(pred, y[rest], std, degenerate[rest]),
                        "copy_best": score(base, y[rest], base_std, degenerate[rest])})
    return out


def summary(results: list[dict]) -> list[dict]:
    table = []
    for (tag, n), group in pd.DataFrame(results).groupby(["model", "n"], sort=False):
        row = {"model": tag, "n": int(n), "seeds": len(group)}
        for who in ("hwlat", "copy_best"):
            for key in ("spearman", "within_10pct", "mape", "coverage_1sigma"):
                row[f"{who}_{key}"] = float(np.mean([r[key] for r in group[who]]))
        table.append(row)
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, nargs="+", default=[5, 10, 20])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--family-out", action="store_true", help="also the predictor trained without any GPU")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = target_rows()
    doc: dict = {"target": TARGET, "archs": len(rows), "noise": noise_floor(rows), "results": []}
    def wide(src: pd.DataFrame) -> pd.DataFrame:  # arch x device, what copy-best-source picks from
        return src.pivot_table(index="arch", columns="device", values="latency_ms")

    doc["results"] += run(predictor.load(BUNDLED_MODEL), wide(source_rows(False)), rows, args.samples, args.seeds,
                          "bundled")
    if args.family_out:
        src = source_rows(True)
        t0 = time.perf_counter()
        model = family_out_model(src, args.threads)
        doc["family_out_train_s"] = time.perf_counter() - t0
        doc["family_out_sources"] = sorted(src["device"].unique())
        doc["results"] += run(model, wide(src), rows, args.samples, args.seeds, "family-out")
    doc["summary"] = summary(doc["results"])
    print(f"{TARGET}: {len(rows)} archs; noise: {json.dumps(doc['noise'])}")
    print("| predictor | N | Spearman | within ±10 % | MAPE | ±1 std holds | copy-best Spearman | within ±10 % | MAPE "
          "| ±1 std holds |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in doc["summary"]:
        print(f"| {r['model']} | {r['n']} | " + " | ".join(
            f"{r[f'{who}_spearman']:.3f} | {r[f'{who}_within_10pct']:.2f} | {r[f'{who}_mape']:.1f} % | "
            f"{r[f'{who}_coverage_1sigma']:.2f}" for who in ("hwlat", "copy_best")) + " |")
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
