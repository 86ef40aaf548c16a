"""Harness overhead: how much wall time a campaign spends outside the agent's timed loops.

    python benchmarks/harness_overhead.py [--device local|PROFILE] [--count 20] [--json OUT.json]

Reports, side by side from one run:
* measure-phase wall time / summed timed-loop time (every timed run of candidates and drift references) — the cost of
  sessions, warm-up, system snapshots, journal streaming and Parquet writes (goal <= 1.15 local, <= 1.25 SSH);
* the same ratio for the whole command including a cold export (for honesty: export is a one-off per arch);
* ONNX export throughput on a fresh cache (models/s, goal >= 2 on 2 cores);
* for a remote (SSH) profile: upload throughput to a cold and a warm device model cache (``transport.last_push``).

A remote profile is run in fresh workdirs under its ``workdir`` (``bench-<id>/upload`` for the upload figures,
``bench-<id>/campaign`` for the campaign), so "cold" really is cold and the campaign pays its uploads as a first
campaign on a board would (they overlap with measurement after the first chunk); both are deleted afterwards.
The device lock lives in the workdir, so the benchmark does not see a campaign using the profile's own workdir:
run it on an idle board.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import posixpath
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

from harness.campaign import CampaignRequest, run_campaign
from harness.devices import DeviceProfile, resolve_device
from harness.export import export_models
from harness.plan import plan_specs
from harness.records import ModelArtifact
from harness.store import read_dataset
from harness.transport.ssh import SSHTransport


def in_workdir(profile: DeviceProfile, sub: str) -> DeviceProfile:
    """The same device with its workdir moved to ``<workdir>/<sub>`` (a fresh, throw-away one)."""
    return dataclasses.replace(profile, workdir=posixpath.join(profile.workdir, sub))


def upload_figures(profile: DeviceProfile, arts: list[ModelArtifact]) -> dict[str, float | int | str]:
    """Push every model to an empty device cache, then again (all cached, each one hash-checked)."""
    transport = SSHTransport(profile)
    try:
        transport.connect()
        size = sum(Path(a.path).stat().st_size for a in arts)
        transport.push_models(arts)
        cold = dict(transport.last_push)
        transport.push_models(arts)
        warm = dict(transport.last_push)
        print(f"last_push cold: {cold}\nlast_push warm: {warm}")
        return {"upload_mb": size / 1e6, "upload_cold_s": cold["seconds"], "upload_cold_sent": cold["sent"],
                "upload_cold_mb_per_s": size / 1e6 / cold["seconds"], "upload_warm_s": warm["seconds"],
                "upload_warm_mb_per_s": size / 1e6 / warm["seconds"], "upload_warm_sent": warm["sent"]}
    finally:
        transport.close()


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
    bench = f"bench-{uuid.uuid4().hex[:12]}"
    if not profile.is_local:
        profile = in_workdir(profile, f"{bench}/campaign")
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
            figures.update(upload_figures(in_workdir(resolve_device(args.device), f"{bench}/upload"), arts))
        result = run_campaign(req)
        failed = [f"{o.device}: {o.error}" for o in result.outcomes if o.error]
        if failed:
            print("\n".join(failed), file=sys.stderr)
            return 1
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
        if not profile.is_local:
            SSHTransport(in_workdir(resolve_device(args.device), bench)).remove_workdir()


if __name__ == "__main__":
    sys.exit(main())
