"""Re-score a kept end-to-end run (``benchmarks/profile_e2e.py --work DIR``) offline: no new measurement.

    python benchmarks/e2e_rescore.py out/e2e/ort2 out/e2e/torch-t1 --json out/e2e_rescore.json

For each work folder: load the profile's own starting predictor (``profile/base-predictor.pt``), transfer it to
the device from the profile's measurements exactly as ``hwlat profile`` combines them (mean of an arch's usable
rows), predict the check campaign's archs and score them with ``predictor.bench.score`` against the check's
per-arch median, as ``profile_e2e.py`` does. With the predictor code of this checkout, so a change to the
transfer is scored on the real device's data without measuring again.

It also reports what the end-to-end figures alone hide: the drift reference's median *per measuring session*
(``hwlat profile`` measures one session per batch; the machine's speed can differ between them), the level of
the prediction (median measured / predicted) on the profile's own archs and on the check archs, and the same
scores without the cost model's level correction (``TransferConfig(level=False)``) and for two
counterfactual inputs that say whether a level miss comes from the measurements or from the
predictor: every session's latencies scaled to the run's median drift reference (``ref-normalised``), and the
sessions whose reference is more than ``--slow`` times that median left out (``slow sessions dropped``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import predictor
from harness.store import read_dataset
from hwlat.spaces import get_space
from predictor.bench import score
from predictor.transfer import TransferConfig

USABLE = ("ok", "unstable")


def usable(folder: Path) -> pd.DataFrame:
    df = read_dataset(folder).to_pandas()
    return df[df["status"].isin(USABLE) & df["latency_ms"].notna()]


def rescore(work: Path, space: str, seed: int, slow: float) -> dict:
    """Transfer from the kept profile measurements as profiled (level correction off and on) and under the two
    counterfactual inputs; scores and levels of each."""
    prof = usable(work / "profile" / "measurements")
    per_arch = prof.groupby("arch", sort=False)
    measured = per_arch["latency_ms"].mean()  # hwlat.profiling.loop.measured_latencies combines rows so
    session_ref = prof.groupby("session_id")["ref_latency_ms"].median()
    arch_ref = per_arch["session_id"].first().map(session_ref)
    run_ref = float(np.median(arch_ref))
    check = usable(work / "check").groupby("arch")["latency_ms"].median()
    sp = get_space(space)
    degenerate = np.array([sp.degenerate(a) for a in check.index])
    device = str(prof["device"].iloc[0])
    kept = measured[(arch_ref <= slow * run_ref).to_numpy()]
    inputs = {"as profiled, no level correction": (measured, TransferConfig(level=False)),
              "as profiled": (measured, TransferConfig()),
              "ref-normalised": (measured * run_ref / arch_ref, TransferConfig()),
              "slow sessions dropped": (kept, TransferConfig())}
    out: dict = {"work": str(work), "device": device, "profiled": len(measured), "checked": len(check),
                 "session_ref_ms": {k: float(v) for k, v in session_ref.items()},
                 "check_ref_ms": float(usable(work / "check")["ref_latency_ms"].median()), "runs": {}}
    for label, (lat, cfg) in inputs.items():
        model = predictor.load(work / "profile" / "base-predictor.pt")
        info = model.transfer(device, list(lat.index), lat.to_numpy(), space=space, cfg=cfg, seed=seed)
        ms, log_std = model.predict_with_uncertainty(list(check.index), device, space=space)
        own = model.predict(list(lat.index), device, space=space)
        out["runs"][label] = {**score(ms, check.to_numpy(), log_std, degenerate), "profiled_used": len(lat),
                              "level_own": float(np.median(lat.to_numpy() / own)),
                              "level_check": float(np.median(check.to_numpy() / ms)),
                              "nn_weight": info["nn_weight"], "p_source": info["p_source"],
                              "cost_level": info["cost_level"]}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work", nargs="+", type=Path, help="profile_e2e.py --work folders (profile/ and check/)")
    ap.add_argument("--space", default="nb201")
    ap.add_argument("--seed", type=int, default=0, help="the profile's --seed (its transfers use it)")
    ap.add_argument("--slow", type=float, default=1.25, help="a session this much slower than the median is dropped")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results = []
    for work in args.work:
        res = rescore(work, args.space, args.seed, args.slow)
        results.append(res)
        refs = ", ".join(f"{v:.3f}" for v in res["session_ref_ms"].values())
        print(f"{work}: drift reference per profile session {refs} ms; check {res['check_ref_ms']:.3f} ms")
        for label, r in res["runs"].items():
            print(f"  {label:32s} n={r['profiled_used']:2d}  Spearman {r['spearman']:.3f}  within 10% "
                  f"{r['within_10pct']:.3f}  MAPE {r['mape']:.2f}%  coverage {r['coverage_1sigma']:.2f}  "
                  f"level own {r['level_own']:.3f} check {r['level_check']:.3f}  cost level {r['cost_level']:.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
