"""Does training on one drift reference level give a configuration's training latencies that reproduce better?

    python benchmarks/train_level.py out/retest-ort2-data/k out/retest-ort2q-data/k \
        out/retest200-data out/retest200b-data/k --bundled datasets --json out/train_level.json

Each argument is a retest folder (``benchmarks/retest.py``: campaigns ``new-1``, ``new-2`` (rounds protocol) and
``old-1``, ``old-2`` (single session) of the same archs on one configuration); given in pairs of two independent
retests of the same configuration. For each pair and each set of campaigns, the per-arch training latency is built
exactly as ``hwlat predictor train`` builds it (``predictor.data.load_table``: the mean of an arch's usable rows
over the campaigns), once as measured and once with ``--normalize`` (``harness.compare.on_one_level``), in each
retest separately; then the two retests' tables are compared (Spearman, median and p90 |relative difference|).
A target that two independent sets of campaigns reproduce is what a predictor can learn.

With ``--bundled DIR`` it also measures a trained predictor: per pair and ``--seeds`` seed, pretrain
(``Predictor.train``, the default schedule, NB201 rows only) on the bundled datasets plus the first retest's four
campaigns with half its archs held out (drawn by the seed), as measured and with ``--normalize`` (which then
normalizes the bundled datasets' configurations too), predict the held-out archs on the retest's device, and
score Spearman against the second, independent retest's latencies of those archs: as measured (median over its
four campaigns) and put on one level (``harness.compare.normalize_sessions``).
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

from harness.compare import normalize_sessions, on_one_level, usable_rows
from predictor.api import Predictor
from predictor.data import LatencyTable, load_table
from predictor.train import TrainConfig

CAMPAIGNS = (("new-1", "new-2"), ("old-1", "old-2"), ("new-1", "new-2", "old-1", "old-2"))


def _level(frames: list[pd.DataFrame]) -> list[pd.DataFrame]:
    """``load_table``'s ``level`` hook as ``hwlat predictor train --normalize`` passes it (without the report)."""
    return on_one_level(frames)[0]


def target(root: Path, campaigns: tuple[str, ...], normalize: bool) -> dict[str, float]:
    """arch -> training latency of the retest's campaigns (one device configuration)."""
    table = load_table([root / c for c in campaigns], level=_level if normalize else None)
    [(space, device)] = {(s, d) for s in table.spaces() for d in table.devices(s)}
    return table.device_series(space, device).to_dict()


def pretrained(a: Path, b: Path, bundled: Path, seed: int) -> list[dict]:
    """Held-out Spearman of a predictor pretrained with half of retest ``a``'s archs, against retest ``b``."""
    campaigns = CAMPAIGNS[-1]
    other = [usable_rows(b / c) for c in campaigns]
    truths = {"as measured": pd.concat(other).groupby("arch")["latency_ms"].median(),
              "on one level": pd.concat(normalize_sessions(other)[0]).groupby("arch")["normalized_ms"].median()}
    out = []
    for normalize in (False, True):
        table = load_table([bundled, *(a / c for c in campaigns)], spaces={"nb201"},
                           level=_level if normalize else None)
        [device] = {d for d in table.devices("nb201")} - set(load_table([bundled], spaces={"nb201"}).devices("nb201"))
        archs = sorted(set(table.device_series("nb201", device).index) & set(truths["as measured"].index))
        held = sorted(np.random.default_rng(seed).choice(archs, len(archs) // 2, replace=False))
        df = table.df[~((table.df["device"] == device) & table.df["arch"].isin(held))].reset_index(drop=True)
        model = Predictor.train(LatencyTable(df), TrainConfig(seed=seed))
        pred = model.predict(held, device, space="nb201")
        for name, truth in truths.items():
            out.append({"a": str(a), "b": str(b), "seed": seed, "normalize": normalize, "truth": name,
                        "held_out": len(held), "spearman": float(spearmanr(pred, truth[held]).statistic)})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("retests", nargs="+", type=Path, help="retest folders, in pairs of the same configuration")
    ap.add_argument("--bundled", type=Path, help="the bundled datasets: also pretrain predictors (minutes)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if len(args.retests) % 2:
        ap.error("retest folders come in pairs")
    results = []
    for a, b in zip(args.retests[::2], args.retests[1::2], strict=True):
        print(f"{a} vs {b}")
        for campaigns in CAMPAIGNS:
            for normalize in (False, True):
                ta, tb = target(a, campaigns, normalize), target(b, campaigns, normalize)
                archs = sorted(set(ta) & set(tb))
                x, y = np.array([ta[k] for k in archs]), np.array([tb[k] for k in archs])
                rel = np.abs(y / x - 1)
                r = {"a": str(a), "b": str(b), "campaigns": list(campaigns), "normalize": normalize,
                     "archs": len(archs), "spearman": float(spearmanr(x, y).statistic),
                     "median_abs_rel_diff": float(np.median(rel)), "p90_abs_rel_diff": float(np.percentile(rel, 90))}
                results.append(r)
                print(f"  {'+'.join(campaigns):24s} {'--normalize' if normalize else 'as measured':12s} "
                      f"n={r['archs']}  Spearman {r['spearman']:.3f}  median |diff| "
                      f"{100 * r['median_abs_rel_diff']:.2f}%  p90 {100 * r['p90_abs_rel_diff']:.2f}%")
    trained = []
    if args.bundled:
        for a, b in zip(args.retests[::2], args.retests[1::2], strict=True):
            for seed in range(args.seeds):
                trained += pretrained(a, b, args.bundled, seed)
        for a, b in zip(args.retests[::2], args.retests[1::2], strict=True):
            print(f"pretrained with half of {a}'s archs, held-out Spearman against {b} (mean of {args.seeds} seeds)")
            for normalize in (False, True):
                for truth in ("as measured", "on one level"):
                    v = [r["spearman"] for r in trained if (r["a"], r["normalize"], r["truth"]) ==
                         (str(a), normalize, truth)]
                    print(f"  {'--normalize' if normalize else 'as measured':12s} against {truth:13s}: "
                          f"{np.mean(v):.3f}  (seeds: {', '.join(f'{x:.3f}' for x in v)})")
    if args.json:
        results = {"targets": results, "pretrained": trained}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
