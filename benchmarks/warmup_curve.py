"""How many warm-up runs a fresh runtime session needs before its timed median is unbiased (docs/benchmarks.md).

Every round of the default protocol (docs/timing.md, "Rounds") opens a fresh session and warms it up
(``warmup_min_runs`` and ``warmup_min_s``) before the timed runs; that warm-up is the largest part of a local
campaign's overhead. This script measures what it buys: for N NB201 and N FBNet archs (``--seed 2026``, the
bundled datasets' first archs, so their exports are usually cached) and every runtime installed here (one thread
each, through the agent's own backends), it opens ``--sessions`` fresh sessions per model, runs one untimed first
inference (the protocol's ``first_ms``) and then times ``--runs`` consecutive runs. For each warm-up length w it
compares the median of the 30 runs after w warm-up runs (what the protocol's timed loop would see at its minimum
``min_runs``) with the session's steady state, the median of the last half of the runs:

    bias(w) = median(runs[w : w + 30]) / median(runs[R/2 :]) - 1

and reports, per runtime and w, the median and the 90th percentile of |bias| over sessions, the median signed
bias, and the wall time those w runs cost (median over sessions). Sessions alternate between models, so a load
change affects every w alike.

    taskset -c 0 python benchmarks/warmup_curve.py --n 10 --sessions 3 --json out/warmup_curve.json
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import statistics
import time
from pathlib import Path

import numpy as np

from agents.backends import get_backend
from agents.records import RuntimeConfig
from harness.export import ExportFailure, export_models
from harness.plan import CampaignRequest, plan_specs

#: label -> (runtime config, export format, module that must import)
RUNTIMES = {
    "onnxruntime": (RuntimeConfig(runtime="onnxruntime", threads=1), "onnx", "onnxruntime"),
    "openvino": (RuntimeConfig(runtime="openvino", threads=1, device="CPU", precision_hint="f32"), "onnx", "openvino"),
    "executorch": (RuntimeConfig(runtime="executorch", threads=1), "pte", "executorch"),
    "torch-eager": (RuntimeConfig(runtime="torch", threads=1), "pt2", "torch"),
}
WINDOW = 30
WARMUPS = (0, 1, 2, 3, 5, 10, 20, 50)


def model_paths(space: str, n: int, fmt: str, cache: str) -> list[str]:
    """The first ``n`` archs a ``--seed 2026`` campaign of ``space`` plans, exported (or found) in ``cache``."""
    req = CampaignRequest(devices=[], out=Path("/nonexistent"), space=space, count=n, seed=2026)
    specs, _ = plan_specs(req)
    arts = export_models(specs[:n], fmt, cache, workers=1, keep_going=True)
    return [str(a.path) for a in arts if not isinstance(a, ExportFailure)]


def session_runs(config: RuntimeConfig, path: str, runs: int) -> list[float]:
    """One fresh session: load, one untimed first inference, then ``runs`` timed runs in ms."""
    backend = get_backend(config)
    backend.load(path)
    inputs = backend.make_inputs(np.random.default_rng(0))
    backend.run(inputs)
    out = []
    clock = time.perf_counter_ns
    for _ in range(runs):
        t = clock()
        backend.run(inputs)
        out.append((clock() - t) / 1e6)
    del backend
    gc.collect()
    return out


def curve(sessions: list[list[float]]) -> dict[str, dict[str, float]]:
    """Per warm-up length: |bias| median and p90, signed median, and the median ms those warm-up runs cost."""
    out = {}
    for w in WARMUPS:
        biases, costs = [], []
        for runs in sessions:
            steady = statistics.median(runs[len(runs) // 2:])
            biases.append(statistics.median(runs[w:w + WINDOW]) / steady - 1)
            costs.append(sum(runs[:w]))
        absb = np.abs(biases)
        out[str(w)] = {
            "abs_bias_median_pct": round(float(np.median(absb)) * 100, 3),
            "abs_bias_p90_pct": round(float(np.quantile(absb, 0.9)) * 100, 3),
            "bias_median_pct": round(float(np.median(biases)) * 100, 3),
            "warmup_cost_ms": round(float(np.median(costs)), 3),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10, help="archs per space (NB201 and FBNet)")
    ap.add_argument("--sessions", type=int, default=3, help="fresh sessions per model")
    ap.add_argument("--runs", type=int, default=200, help="timed runs per session (>= 2 x (50 + 30))")
    ap.add_argument("--runtimes", default=",".join(RUNTIMES))
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "hwlat" / "exports"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    report: dict[str, object] = {"args": {k: str(v) for k, v in vars(args).items()}, "runtimes": {}}
    for name in args.runtimes.split(","):
        config, fmt, module = RUNTIMES[name]
        if importlib.util.find_spec(module) is None:
            print(f"{name}: not installed, skipped")
            continue
        paths = [p for space in ("nb201", "fbnet") for p in model_paths(space, args.n, fmt, args.cache)]
        sessions = [session_runs(config, p, args.runs) for _ in range(args.sessions) for p in paths]
        table = curve(sessions)
        report["runtimes"][name] = {"models": len(paths), "sessions": len(sessions), "curve": table}  # type: ignore[index]
        print(f"{name}: {len(paths)} models x {args.sessions} sessions")
        print("  warm-up runs | |bias| median % | |bias| p90 % | signed median % | warm-up cost ms")
        for w, row in table.items():
            print(f"  {w:>12} | {row['abs_bias_median_pct']:>15} | {row['abs_bias_p90_pct']:>12} | "
                  f"{row['bias_median_pct']:>15} | {row['warmup_cost_ms']:>15}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
