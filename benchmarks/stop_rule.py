"""Does `hwlat profile --target-std` stop when the predictions are as good as their std claims?

    python -m benchmarks.stop_rule --data ../shared/data/nb201/latency_long.parquet --space nb201 \
        --target titan_rtx_256 --target pixel2 --target raspi4 --target eyeriss --seeds 1 --json out/stop_rule.json

Simulates the profile loop on existing data, as ``benchmarks/active_loop.py`` does (the target's latencies are the
oracle; the target and every device of its hardware are left out of pretraining; diversity first batch, then the
default sampler). After every round it records what the loop itself sees (the pool's median predicted std, the
out-of-fold MAPE, the upper end of its 95 % bootstrap interval and the ±1 std coverage, from
``hwlat.profiling.scores``, the loop's own functions) and the truth on every
unmeasured arch (Spearman, share within ±10 %, MAPE, share within the predicted ±1 std). Then, for each
``--stds`` value, it applies the loop's rule (``precise_enough``) round by round and reports where it stopped and
how good the predictions were there; a rule that never fires reports the last round.
"""

from __future__ import annotations

import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from benchmarks.active_loop import family_out_model, hardware_of, simulation_parser
from harness.devices import resolve_device
from hwlat.profiling.loop import ProfileRequest, cross_validate, precise_enough
from hwlat.profiling.scores import bootstrap_round, cv_coverage, cv_scores
from hwlat.profiling.state import RoundRecord
from predictor.api import Predictor
from predictor.data import load_table
from predictor.samplers import sample


def rounds_of(model: Predictor, space: str, series, batch: int, most: int, seed: int) -> list[dict]:
    """One simulated profile: per round, what the loop sees and the truth on the unmeasured archs."""
    pool = list(series.index)
    measured: list[str] = []
    out: list[dict] = []
    current = None
    with tempfile.TemporaryDirectory() as tmp:
        base_path = Path(tmp) / "base.pt"
        model.save(base_path)
        while len(measured) < most:
            r = len(out)
            if current is None:
                picks = sample("diversity", space, pool, batch, seed=seed * 1000 + r, measured=measured)
            else:
                picks = current.suggest("target", batch, "default", measured=measured, candidates=pool, space=space,
                                        seed=seed * 1000 + r)
            measured += picks
            lat = series.loc[measured].to_numpy()
            truth = dict(zip(measured, lat.tolist(), strict=True))
            cv, cv_std = cross_validate(base_path, "target", space, measured, lat, 4, seed)
            cv_mape = cv_scores(cv, truth)[2]  # the loop's own out-of-fold MAPE
            current = copy.deepcopy(model)
            current.transfer("target", measured, lat, space=space, seed=seed)
            pred, std = current.predict_with_uncertainty(pool, "target", space=space)
            rest = ~series.index.isin(measured)
            err = np.log(pred[rest] / series.to_numpy()[rest])
            out.append({
                "measured": len(measured), "pool_std": float(np.median(std)),
                "cv_coverage": cv_coverage(cv, cv_std, truth), "cv_mape": cv_mape,
                "cv_mape_hi": bootstrap_round(cv, truth, seed=r).get("mape_hi"),
                "spearman": float(spearmanr(pred[rest], series.to_numpy()[rest]).statistic),
                "within10": float(np.mean(np.abs(pred[rest] / series.to_numpy()[rest] - 1) <= 0.10)),
                "mape": float(np.mean(np.abs(pred[rest] / series.to_numpy()[rest] - 1)) * 100),
                "coverage": float(np.mean(np.abs(err) <= std[rest])),
            })
            print(f"  {out[-1]}", flush=True)
    return out


def stop_at(rounds: list[dict], target_std: float, min_measured: int) -> dict:
    """The first round after which the loop's own rule stops (or the last round), with the truth there."""
    req = ProfileRequest(device=resolve_device("local"), space="", budget=0, batch=0, out=Path("unused"),
                         min_measured=min_measured, target_std=target_std)
    records: list[RoundRecord] = []
    for i, r in enumerate(rounds):
        records.append(RoundRecord(i, "default", [], measured=r["measured"], pool_std=r["pool_std"],
                                   cv_coverage=r["cv_coverage"], cv_mape=r["cv_mape"], cv_mape_hi=r["cv_mape_hi"],
                                   done=True))
        if precise_enough(records, req):
            return {"stopped": True, **r}
    return {"stopped": False, **rounds[-1]}


def main() -> int:
    parser = simulation_parser(__doc__, seeds=1, batch=10)
    parser.add_argument("--min-measured", type=int, default=30)
    parser.add_argument("--stds", type=float, nargs="+", default=[0.03, 0.05, 0.08])
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    table = load_table([args.data])
    hardware = hardware_of(args.data)
    report: dict = {"batch": args.batch, "max": args.max, "min_measured": args.min_measured, "targets": {}}
    for target in args.target:
        t0 = time.perf_counter()
        series = table.device_series(args.space, target)
        runs = []
        for seed in range(args.seeds):
            print(f"{target} seed {seed}", flush=True)
            model, _ = family_out_model(table, args.space, hardware, target, seed)
            rounds = rounds_of(model, args.space, series, args.batch, args.max, seed)
            runs.append({"rounds": rounds, "stops": {str(s): stop_at(rounds, s, args.min_measured)
                                                     for s in args.stds}})
        report["targets"][target] = {"runs": runs, "seconds": time.perf_counter() - t0}
        for s in args.stds:
            for run in runs:
                st = run["stops"][str(s)]
                print(f"{target:16s} target-std {s:.2f}: {'stopped' if st['stopped'] else 'never (last round)'} at "
                      f"{st['measured']}: pool std {st['pool_std']:.3f}, out-of-fold MAPE {st['cv_mape']:.1f}% "
                      f"(up to {st['cv_mape_hi']:.1f}%), "
                      f"coverage {st['cv_coverage']:.2f}"
                      f" | truth: Spearman {st['spearman']:.3f}, within 10% {st['within10']:.2f}, MAPE "
                      f"{st['mape']:.1f}%, ±1 std holds {st['coverage']:.2f}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
