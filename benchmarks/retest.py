"""Retest reliability of the measurement protocol, side by side with the old single-session protocol.

    python benchmarks/retest.py [--device local|PROFILE] [--count 200] [--cpu 1] [--config default|ort2-noopt]
                                [--ssh] [--no-load] [--load-seed 0] [--timeit-count 30] [--json OUT.json]
                                [--keep DIR]
    python benchmarks/retest.py --reanalyse DIR      # the agreement figures of campaigns kept with --keep
    python benchmarks/retest.py --worker-experiment 8 [--rounds 4] [--cpu 1]

One invocation runs, over the same NB201 archs, two separate campaigns (two sessions, two agent runs, two
dataset folders) for each protocol:

* ``new``: the profile's timing as it is (default: R rounds spread over the campaign, re-measures; docs/timing.md);
* ``old``: the single-session protocol of before (``rounds = 1``, ``min_runs = 30``, ``min_time_s = 1.5``,
  ``max_time_s = 10``, no re-measures): the same per-model timed budget in one stretch.

The first campaign of each protocol runs beside the seeded on/off background load of ``benchmarks/loadgen.py``
(one spinning process in 5-20 s phases, started afresh with the same seed for each protocol), the second is
quiet. The campaigns alternate (new 1, old 1, new 2, old 2) so both protocols see the same phases of the day.
For each protocol and estimator column it reports Spearman, median and p90 |relative difference| and ICC(2,1)
(``harness.compare``), and the same for ``reference_normalized``: both campaigns put on one drift-reference
baseline by ``hwlat datasets compare`` (harness/compare.py); plus the measuring wall time of each campaign,
and harness-vs-``timeit`` agreement on a subset after the first campaign (quiet).

``--cpu`` pins this process, the agent (the profile's ``cpu_affinity``), the load generator and the timeit loop
to the given CPUs. ``--config ort2-noopt``: onnxruntime with 2 intra-op threads and graph optimisation off.
``--ssh``: the campaigns go through a real sshd on 127.0.0.1 (tests/sshkit.py; needs sshd, root installs it).

``--worker-experiment N``: N models, each timed ``--rounds`` times in one agent run, once with one persistent
worker process and once with a fresh worker per job (``timing.fresh_worker``), twice each, alternating; prints the
median between-round coefficient of variation of each mode (does a fresh process remove variance?).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))  # loadgen, also for its spawned child
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.sshkit

import loadgen

from agents.records import Job, RunSpec
from harness.campaign import CampaignRequest, run_campaign
from harness.compare import compare, icc
from harness.devices import DeviceProfile, resolve_device
from harness.export import export_models
from harness.plan import plan_specs
from harness.store import read_dataset
from harness.transport.local import reserve_machine

#: The old protocol: one session per model with the timed budget of before rounds existed.
OLD_TIMING = {"rounds": 1, "min_runs": 30, "min_time_s": 1.5, "max_time_s": 10.0, "max_runs": 2000,
              "warmup_min_s": 0.1, "remeasure_max": 0}
#: Columns compared for each protocol: the row's latency and the alternatives it carries.
ESTIMATORS = ("latency_ms", "pooled_median_ms", "latency_corrected_ms")


def _column(path: Path, column: str) -> dict[str, float]:
    rows = read_dataset(path).select(["model_sha256", column, "status"]).to_pylist()
    return {r["model_sha256"]: r[column] for r in rows if r["status"] in ("ok", "unstable") and r[column]}


def agreement(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """Spearman, median and p90 |B/A - 1| (%), ICC(2,1) on log latency, over the models in both."""
    common = sorted(set(a) & set(b))
    x, y = np.array([a[s] for s in common]), np.array([b[s] for s in common])
    rel = np.abs(y / x - 1.0)
    return {"archs": len(common), "spearman": float(spearmanr(x, y).statistic),
            "median_abs_rel_diff_pct": float(np.median(rel) * 100), "p90_abs_rel_diff_pct":
            float(np.percentile(rel, 90) * 100), "icc2_1": icc(np.log(np.column_stack([x, y])))["icc2_1"]}


def agreements(work: Path, name: str) -> dict[str, Any]:
    """Every estimator's agreement between campaigns ``work/<name>-1`` and ``-2``, and campaign 1's re-measures."""
    entry: dict[str, Any] = {}
    for column in ESTIMATORS:
        a, b = _column(work / f"{name}-1", column), _column(work / f"{name}-2", column)
        if len(set(a) & set(b)) >= 3:
            entry[column] = agreement(a, b)
    result = compare(work / f"{name}-1", work / f"{name}-2")
    if result["normalized"] is not None:
        norm = result["normalized"]
        entry["reference_normalized"] = {
            "archs": norm["matched"], "spearman": norm["spearman"],
            "median_abs_rel_diff_pct": 100 * norm["median_abs_rel_diff"],
            "p90_abs_rel_diff_pct": 100 * norm["p90_abs_rel_diff"], "icc2_1": norm["icc2_1"],
            "beta": [b["beta"] for b in result["reference"]["baselines"]],
            "reference_spread_pct": [100 * result["reference"][k]["spread"] for k in ("a", "b")]}
    remeasured = read_dataset(work / f"{name}-1").column("remeasured_rounds").to_pylist()
    entry["remeasured_rounds_campaign1"] = int(sum(r or 0 for r in remeasured))
    return entry


def timeit_median_ms(model: Path, profile: DeviceProfile, repeat: int = 200) -> float:
    """Median of ``repeat`` single inferences with timeit, after a short warm-up, in this process."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = profile.runtime.threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}.get(
        profile.runtime.graph_optimization_level, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {i.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32)
             for i in sess.get_inputs()}
    for _ in range(20):
        sess.run(None, feeds)
    times = timeit.Timer(lambda: sess.run(None, feeds)).repeat(repeat=repeat, number=1)
    return statistics.median(times) * 1000.0


def _profile(args: argparse.Namespace, work: Path) -> tuple[DeviceProfile, Any]:
    """The device profile the campaigns use (and the sshd serving it with ``--ssh``)."""
    server = None
    if args.ssh:
        from tests.sshkit import SSHServer

        server = SSHServer(work / "sshd").start()
        server.trust()
        profile = resolve_device(str(server.profile(work / "loopback.toml", "loopback", work / "device")))
    else:
        profile = resolve_device(args.device)
    runtime = profile.runtime
    if args.config == "ort2-noopt":
        runtime = dataclasses.replace(runtime, threads=2, graph_optimization_level="disable")
    affinity = args.cpu if args.cpu is not None else profile.cpu_affinity
    return dataclasses.replace(profile, runtime=runtime, cpu_affinity=list(affinity)), server


def retest(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    profile, server = _profile(args, work)
    hold = reserve_machine(profile.name, 3600.0, on_wait=print) if profile.is_local else contextlib.nullcontext()
    with hold:
        return _retest(args, work, profile, server)


def _retest(args: argparse.Namespace, work: Path, profile: DeviceProfile, server: Any) -> dict[str, Any]:
    try:
        protocols = {"new": profile,
                     "old": dataclasses.replace(profile, timing=dataclasses.replace(profile.timing, **OLD_TIMING))}
        base = CampaignRequest(devices=[profile], out=work / "unused", space="nb201", count=args.count,
                               seed=args.seed, cache_dir=work / "cache")
        specs, reference = plan_specs(base)
        export_models([*specs, reference], "onnx", work / "cache")  # before any timing or load
        out: dict[str, Any] = {"count": args.count, "config": args.config, "ssh": args.ssh, "cpu": args.cpu,
                               "load": not args.no_load, "protocols": {}}
        for k in (1, 2):
            for name, prof in protocols.items():
                req = dataclasses.replace(base, devices=[prof], out=work / f"{name}-{k}")
                gen = loadgen.LoadGenerator(seed=args.load_seed, total_s=24 * 3600) if k == 1 and not args.no_load \
                    else None
                if gen is not None:
                    gen.start()
                try:
                    t0 = time.monotonic()
                    result = run_campaign(req)
                    wall = time.monotonic() - t0
                finally:
                    if gen is not None:
                        gen.stop()
                outcome = result.outcomes[0]
                if outcome.error:
                    raise RuntimeError(f"campaign {name}-{k} failed: {outcome.error}")
                entry = out["protocols"].setdefault(name, {"timing": dataclasses.asdict(prof.timing)})
                entry[f"campaign{k}"] = {"measure_s": result.measure_s, "wall_s": wall, "timed_s": outcome.timed_s,
                                         "rows": outcome.rows, "status": outcome.status_counts}
                print(f"{name}-{k}: {outcome.rows} rows, measure {result.measure_s:.0f} s, timed "
                      f"{outcome.timed_s:.0f} s, {outcome.status_counts}", flush=True)
        for name in protocols:
            out["protocols"][name] |= agreements(work, name)
        if args.timeit_count and not args.ssh:
            new2 = _column(work / "new-2", "latency_ms")
            models = {p.stem: p for p in (work / "cache" / "models").glob("*.onnx")}
            subset = sorted(new2)[: args.timeit_count]
            ti = {sha: timeit_median_ms(models[sha], profile) for sha in subset}
            h, t = np.array([new2[s] for s in subset]), np.array([ti[s] for s in subset])
            out["timeit"] = {"archs": len(subset),
                             "harness_vs_timeit_median_abs_rel_diff_pct": float(np.median(np.abs(h - t) / t) * 100),
                             "harness_over_timeit_median_ratio": float(np.median(h / t))}
        return out
    finally:
        if server is not None:
            server.close()


def worker_experiment(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Same worker vs a fresh worker per job: the between-round spread of each model's medians."""
    profile, _ = _profile(args, work)
    with reserve_machine(profile.name, 3600.0, on_wait=print):
        return _worker_experiment(args, work, profile)


def _worker_experiment(args: argparse.Namespace, work: Path, profile: DeviceProfile) -> dict[str, Any]:
    base = CampaignRequest(devices=[profile], out=work / "unused", count=args.worker_experiment, seed=args.seed)
    specs, _ = plan_specs(base)
    arts = export_models(specs, "onnx", work / "cache")
    out: dict[str, Any] = {"models": len(arts), "rounds": args.rounds}
    for mode in ("same", "fresh", "same-2", "fresh-2"):
        jobs = [Job(f"m{i:03d}-r{r}", a.path, a.sha256) for r in range(args.rounds) for i, a in enumerate(arts)]
        timing = dataclasses.replace(profile.timing, fresh_worker=mode.startswith("fresh"))
        spec = RunSpec(run_id=f"exp-{mode}", runtime=profile.runtime, timing=timing, jobs=jobs,
                       cpu_affinity=profile.cpu_affinity)
        run_dir = work / "agent" / "runs" / spec.run_id
        run_dir.mkdir(parents=True)
        (run_dir / "jobs.json").write_text(spec.to_json())
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-m", "agents", "run", str(run_dir)], check=True,
                       cwd=Path(__file__).resolve().parents[1])
        medians: dict[str, list[float]] = {}
        for line in (run_dir / "journal.jsonl").read_text().splitlines():
            event = json.loads(line)
            if event["type"] == "result" and event.get("median_ms"):
                medians.setdefault(event["job_id"][:4], []).append(event["median_ms"])
        cvs = [float(np.std(v, ddof=1) / np.mean(v)) for v in medians.values() if len(v) > 1]
        out[mode] = {"wall_s": time.monotonic() - t0, "median_between_round_cv_pct": 100 * float(np.median(cvs)),
                     "mean_between_round_cv_pct": 100 * float(np.mean(cvs))}
        print(mode, out[mode], flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="local", help="a local profile (name or .toml path)")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--cpu", type=lambda s: [int(c) for c in s.split(",")], default=None,
                        help="CPU(s) to pin everything to, e.g. 1 or 0,1")
    parser.add_argument("--config", choices=("default", "ort2-noopt"), default="default")
    parser.add_argument("--ssh", action="store_true", help="measure through a real sshd on 127.0.0.1")
    parser.add_argument("--no-load", action="store_true", help="both campaigns quiet")
    parser.add_argument("--load-seed", type=int, default=0)
    parser.add_argument("--timeit-count", type=int, default=30)
    parser.add_argument("--worker-experiment", type=int, default=0, metavar="N")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per model in --worker-experiment")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", type=Path, help="copy the four campaigns' datasets here before cleaning up")
    parser.add_argument("--reanalyse", type=Path, metavar="DIR",
                        help="measure nothing: print the figures of the campaigns kept in DIR by --keep")
    args = parser.parse_args()
    if args.reanalyse:
        figures = {name: agreements(args.reanalyse, name) for name in ("new", "old")
                   if (args.reanalyse / f"{name}-1").is_dir()}
        print(json.dumps(figures, indent=1))
        return 0
    if args.cpu is not None:
        os.sched_setaffinity(0, args.cpu)  # inherited by the load generator; the agent gets cpu_affinity
    work = Path(tempfile.mkdtemp(prefix="hwlat-retest-"))
    try:
        figures = worker_experiment(args, work) if args.worker_experiment else retest(args, work)
        if args.keep:
            for campaign in sorted(work.glob("*-[12]")):
                shutil.copytree(campaign, args.keep / campaign.name)
        print(json.dumps(figures, indent=1))
        if args.json:
            args.json.write_text(json.dumps(figures, indent=1))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
