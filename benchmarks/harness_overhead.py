"""Harness overhead: how much wall time a campaign spends outside the agent's timed loops.

    python benchmarks/harness_overhead.py [--device local|PROFILE] [--count 20] [--json OUT.json]

Reports, side by side from one run:
* measure-phase wall time / summed timed-loop time (every timed run of candidates and drift references) — the cost of
  sessions, warm-up, system snapshots, journal streaming and Parquet writes (goal <= 1.15 local, <= 1.25 SSH);
* the same ratio for the whole command including a cold export (for honesty: export is a one-off per arch);
* ONNX export throughput on a fresh cache (models/s, goal >= 2 on 2 cores);
* for a remote (SSH) profile: upload throughput to a cold and a warm device model cache.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from harness.campaign import CampaignRequest, plan_specs, run_campaign
from harness.devices import resolve_device
from harness.export import export_models
from harness.store import read_dataset
from harness.transport import open_transport


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="local")
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    profile = resolve_device(args.device)
    work = Path(tempfile.mkdtemp(prefix="hwlat-overhead-"))
    try:
        req = CampaignRequest(devices=[profile], out=work / "ds", space="nb201", count=args.count,
                              seed=args.seed, cache_dir=work / "cache", workers=args.workers)
        specs, reference = plan_specs(req)
        t0 = time.perf_counter()
        arts = export_models([*specs, reference], "onnx", work / "cache", workers=args.workers)
        export_s = time.perf_counter() - t0
        figures: dict[str, float | int | str] = {
            "device": profile.name,
            "models": args.count,
            "export_models_per_s": len(arts) / export_s,
            "export_s": export_s,
        }
        if not profile.is_local:
            transport = open_transport(profile)
            transport.connect()
            size = sum(Path(a.path).stat().st_size for a in arts)
            t0 = time.perf_counter()
            transport.push_models(arts)
            cold = time.perf_counter() - t0
            t0 = time.perf_counter()
            transport.push_models(arts)
            warm = time.perf_counter() - t0
            transport.close()
            figures.update({"upload_mb": size / 1e6, "upload_cold_mb_per_s": size / 1e6 / cold,
                            "upload_cold_s": cold, "upload_warm_s": warm})
        result = run_campaign(req)
        table = read_dataset(work / "ds")
        timed_s = sum(o.timed_s for o in result.outcomes)  # candidates and drift references alike
        figures.update({
            "rows": table.num_rows,
            "measure_wall_s": result.measure_s,
            "timed_loop_s": timed_s,
            "ratio_measure_wall_to_timed": result.measure_s / timed_s,
            "ratio_total_wall_to_timed": (result.measure_s + export_s) / timed_s,
        })
        for key, value in figures.items():
            print(f"{key:32s} {value:.3f}" if isinstance(value, float) else f"{key:32s} {value}")
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
