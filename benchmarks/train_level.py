"""Does training on one drift reference level give a configuration's training latencies that reproduce better?

    python benchmarks/train_level.py out/retest-ort2-data/k out/retest-ort2q-data/k \
        out/retest200-data out/retest200b-data/k --json out/train_level.json

Each argument is a retest folder (``benchmarks/retest.py``: campaigns ``new-1``, ``new-2`` (rounds protocol) and
``old-1``, ``old-2`` (single session) of the same archs on one configuration); given in pairs of two independent
retests of the same configuration. For each pair and each set of campaigns, the per-arch training latency is built
exactly as ``hwlat predictor train`` builds it (``predictor.data.load_table``: the mean of an arch's usable rows
over the campaigns), once as measured and once with ``--normalize`` (``harness.compare.on_one_level``), in each
retest separately; then the two retests' tables are compared (Spearman, median and p90 |relative difference|).
A target that two independent sets of campaigns reproduce is what a predictor can learn; this measures the
training target, not a trained predictor's accuracy.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.compare import on_one_level
from predictor.data import load_table

CAMPAIGNS = (("new-1", "new-2"), ("old-1", "old-2"), ("new-1", "new-2", "old-1", "old-2"))


def target(root: Path, campaigns: tuple[str, ...], normalize: bool) -> dict[str, float]:
    """arch -> training latency of the retest's campaigns (one device configuration)."""
    table = load_table([root / c for c in campaigns], level=(lambda f: on_one_level(f)[0]) if normalize else None)
    [(space, device)] = {(s, d) for s in table.spaces() for d in table.devices(s)}
    return table.device_series(space, device).to_dict()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("retests", nargs="+", type=Path, help="retest folders, in pairs of the same configuration")
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
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
