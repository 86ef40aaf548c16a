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

And what ``hwlat profile`` now does (docs/profile.md, "One reference level"): the profile's accepted sessions
(``state.json``'s set-aside sessions left out, as the loop leaves them out) put on one drift reference level by
``hwlat.profiling.loop.level_latencies``, for each candidate level (``lowest``: the batches' 10th percentile, the
loop's choice; ``latest``: the latest batch's; ``median``: the median batch's), scored twice: against the check's
latencies as measured, and against the check campaign put on the same level (its own rows' rounds and drift
reference, ``harness.compare.normalize_sessions`` with that baseline): the second says how well the predictions
rank and place the archs once both sides are on one level, the first adds the check's own level.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import predictor
from harness.compare import latest_level, lowest_level, median_level, normalize_sessions, usable_rows
from harness.store import read_dataset
from hwlat.profiling.loop import level_latencies, profile_rows
from hwlat.profiling.state import ProfileState
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
    out["levels"] = on_one_level(work, space, seed, device, check, degenerate)
    return out


def on_one_level(work: Path, space: str, seed: int, device: str, check: pd.Series,
                 degenerate: np.ndarray) -> dict:
    """The profile's accepted sessions on one reference level (as ``hwlat profile`` combines them), per candidate
    level, scored against the check as measured and against the check put on the same level."""
    state = ProfileState.load(work / "profile" / "state.json")
    set_aside = state.set_aside() if state is not None else {}
    check_rows = usable_rows(work / "check")
    config_id = str(check_rows["config_id"].iloc[0])
    rows = profile_rows(work / "profile" / "measurements", device, config_id, space)
    out: dict = {}
    for baseline in (lowest_level, latest_level, median_level):
        measured, _attempted, level = level_latencies(rows, set_aside, baseline)
        if level is None:
            return {}
        (check_norm,), summary = normalize_sessions([check_rows], lambda _refs, b=level["baseline_ms"]: b)
        truth_on_level = check_norm.groupby("arch")["normalized_ms"].median().reindex(check.index)
        model = predictor.load(work / "profile" / "base-predictor.pt")
        archs = list(measured)
        model.transfer(device, archs, np.array([measured[a] for a in archs]), space=space, seed=seed)
        ms, log_std = model.predict_with_uncertainty(list(check.index), device, space=space)
        out[baseline.__name__] = {
            **level, "check_beta": summary["baselines"][0]["beta"],
            # how far the check's own ranking moves when it is put on one level: the part of the check as
            # measured that no prediction on one level can match
            "check_self_spearman": float(spearmanr(check.to_numpy(), truth_on_level.to_numpy()).statistic),
            "vs_check_as_measured": {**score(ms, check.to_numpy(), log_std, degenerate),
                                     "level_check": float(np.median(check.to_numpy() / ms))},
            "vs_check_on_level": {**score(ms, truth_on_level.to_numpy(), log_std, degenerate),
                                  "level_check": float(np.median(truth_on_level.to_numpy() / ms))}}
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
        for name, lv in res["levels"].items():
            print(f"  on one level ({name}): {lv['baseline_ms']:.3f} ms, beta {lv['beta']:.2f}, sessions "
                  f"{lv['spread']:+.0%} apart; check on that level with its own beta {lv['check_beta']:.2f} "
                  f"(Spearman {lv['check_self_spearman']:.3f} with the check as measured)")
            for label in ("vs_check_as_measured", "vs_check_on_level"):
                r = lv[label]
                print(f"    {label:28s} Spearman {r['spearman']:.3f}  within 10% {r['within_10pct']:.3f}  "
                      f"MAPE {r['mape']:.2f}%  coverage {r['coverage_1sigma']:.2f}  level check {r['level_check']:.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
