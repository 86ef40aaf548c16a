"""Reproduce the predictor figures in docs/predictor.md (ND at 20 and 10 samples, NX1-NX3 and the
family-out splits FO1-FO3 of ``family_out_tasks.json`` at 20).

Thin wrapper over ``hwlat predictor bench``; needs ``../shared/data/nb201``. Writes one JSON per run
into ``--out`` (default ``out/predictor_bench``). Takes ~15 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hwlat.cli.predictor import main as cli

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nb201"
FAMILY_OUT = Path(__file__).resolve().parent / "family_out_tasks.json"
RUNS = (("nd20", ["--task", "ND", "--samples", "20"]), ("nd10", ["--task", "ND", "--samples", "10"]),
        ("nx20", ["--task", "NX1", "--task", "NX2", "--task", "NX3", "--samples", "20"]),
        ("fo20", ["--task", "FO1", "--task", "FO2", "--task", "FO3", "--samples", "20"]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="out/predictor_bench")
    ap.add_argument("--seeds", default="3")
    args = ap.parse_args()
    if not SHARED.exists():
        print(f"needs the shared NB201 data at {SHARED}", file=sys.stderr)
        return 2
    for name, extra in RUNS:
        rc = cli(["predictor", "bench", "--data", str(SHARED / "latency_long.parquet"),
                  "--tasks", str(FAMILY_OUT if name == "fo20" else SHARED / "nasflat_tasks.json"),
                  "--seeds", args.seeds, *extra,
                  "--json", str(Path(args.out) / f"{name}.json")])
        if rc:
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
