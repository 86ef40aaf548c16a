"""What each NB201 representation can express per device: out-of-fold ridge Spearman (docs/predictor.md, "The
merged nodes are why ..." and "Dead operators").

A transfer from 20 samples cannot beat what its features can say with many samples. This script fits, per
device of HELP's NB201 data (../shared), a ridge with 5-fold cross-validation on ``--archs`` random archs (seed 0)
over each representation, and prints the out-of-fold Spearman:

* ``counts``: the count of each of the 5 ops over the 6 cell edges;
* ``counts+active``: plus the counts over the edges that lie on an input-output path (the dedicated encoder's
  active-edge masks): which devices prune dead compute;
* ``export``: the graph cost features (``predictor.graph.linear``) of hwlat's ONNX export, generated as
  ``benchmarks.graph_vs_dedicated`` does (equal nodes merged);
* ``traced`` and ``traced-no-dead``: the same features of the network as the space builds it
  (``hwlat.spaces.trace``), with and without the dead-operator columns.

    .venv/bin/python -m benchmarks.graph_fit_ceiling --archs 1000
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import cross_val_predict

from benchmarks.graph_vs_dedicated import SHARED, _features_of, _traced_features_of
from hwlat.spaces.nb201 import OPS, canonical_archs, parse
from predictor.encode import _nb201_active
from predictor.graph import N_DEAD, linear

DEVICES = ("titan_rtx_256", "1080ti_1", "gold_6226", "fpga", "eyeriss", "pixel2", "pixel3", "raspi4")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    if not SHARED.exists():
        print(f"needs the shared NB201 data at {SHARED}", file=sys.stderr)
        return 2
    space = list(canonical_archs())
    archs = [space[i] for i in sorted(np.random.default_rng(0).choice(len(space), args.archs, replace=False))]
    lat = pd.read_parquet(SHARED / "latency_long.parquet", columns=["arch", "device", "latency_ms"])
    wide = lat[lat["device"].isin(DEVICES)].pivot_table(index="arch", columns="device", values="latency_ms")
    wide = wide.reindex(archs)
    ops = [list(parse(a)) for a in archs]
    counts = np.array([[o.count(k) for k in OPS] for o in ops], float)
    active = np.array([[sum(1 for op, a in zip(o, _nb201_active(o)[0], strict=True) if a and op == k) for k in OPS]
                       for o in ops], float)
    with ProcessPoolExecutor(args.workers) as pool:
        export, traced = (linear(np.stack([rows[0] for rows in pool.map(of, archs, chunksize=50)]))
                          for of in (_features_of, _traced_features_of))
    reps = {"counts": counts, "counts+active": np.hstack([counts, active]), "export": export, "traced": traced,
            "traced-no-dead": traced[:, :-N_DEAD]}
    print("device | " + " | ".join(reps))
    for dev in DEVICES:
        y = wide[dev].to_numpy()
        rho = [spearmanr(cross_val_predict(RidgeCV(alphas=np.logspace(-6, 2, 17)), x, y, cv=5), y)[0]
               for x in reps.values()]
        print(f"{dev} | " + " | ".join(f"{r:.3f}" for r in rho), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
