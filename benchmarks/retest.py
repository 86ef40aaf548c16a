"""Retest reliability and agreement with an independent timer.

    python benchmarks/retest.py [--device local|PROFILE] [--count 200] [--timeit-count 30] [--json OUT.json]

1. The same NB201 archs are measured in two separate campaigns (two sessions, two agent processes) on the
   local device: Spearman between the two medians (goal >= 0.98) and median |relative difference| (goal <= 3%).
2. For a subset, the harness median is compared with a plain ``timeit`` loop over an onnxruntime session
   opened here with the same settings (goal: median |relative difference| within 3%).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import timeit
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from harness.campaign import CampaignRequest, run_campaign
from harness.devices import resolve_device
from harness.store import read_dataset


def _medians(path: Path) -> dict[str, float]:
    rows = read_dataset(path).select(["model_sha256", "latency_ms", "status"]).to_pylist()
    return {r["model_sha256"]: r["latency_ms"] for r in rows if r["status"] in ("ok", "unstable")}


def timeit_median_ms(model: Path, threads: int, repeat: int = 200) -> float:
    """Median of ``repeat`` single inferences with timeit, after a short warm-up, in this process."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {i.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32)
             for i in sess.get_inputs()}
    for _ in range(20):
        sess.run(None, feeds)
    times = timeit.Timer(lambda: sess.run(None, feeds)).repeat(repeat=repeat, number=1)
    return statistics.median(times) * 1000.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="local", help="a local profile (name or .toml path)")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--timeit-count", type=int, default=30)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    profile = resolve_device(args.device)
    if not profile.is_local:
        parser.error("the timeit comparison runs in this process: the device must be local")
    if profile.cpu_affinity:
        os.sched_setaffinity(0, profile.cpu_affinity)  # the timeit loop runs where the agent's worker ran
    work = Path(tempfile.mkdtemp(prefix="hwlat-retest-"))
    try:
        runs = []
        for k in (1, 2):
            req = CampaignRequest(devices=[profile], out=work / f"ds{k}", space="nb201", count=args.count,
                                  seed=args.seed, cache_dir=work / "cache")
            run_campaign(req)
            runs.append(_medians(work / f"ds{k}"))
            if k == 1:
                # independent timer right after the first campaign, on the same model files
                cache_files = {p.stem: p for p in (work / "cache" / "models").glob("*.onnx")}
                subset = sorted(runs[0])[: args.timeit_count]
                ti = {sha: timeit_median_ms(cache_files[sha], profile.runtime.threads) for sha in subset}
        common = sorted(set(runs[0]) & set(runs[1]))
        a = np.array([runs[0][s] for s in common])
        b = np.array([runs[1][s] for s in common])
        rel = np.abs(a - b) / ((a + b) / 2)
        h = np.array([runs[0][s] for s in ti])
        t = np.array([ti[s] for s in ti])
        figures = {
            "archs": len(common),
            "retest_spearman": float(spearmanr(a, b).statistic),
            "retest_median_abs_rel_diff_pct": float(np.median(rel) * 100),
            "retest_p90_abs_rel_diff_pct": float(np.percentile(rel, 90) * 100),
            "timeit_archs": len(ti),
            "harness_vs_timeit_median_abs_rel_diff_pct": float(np.median(np.abs(h - t) / t) * 100),
            "harness_over_timeit_median_ratio": float(np.median(h / t)),
        }
        for key, value in figures.items():
            print(f"{key:44s} {value:.4f}" if isinstance(value, float) else f"{key:44s} {value}")
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
