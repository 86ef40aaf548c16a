"""The same NB201 + FBNet archs on every runtime installed here, side by side (docs/benchmarks.md).

For N archs of each space: export each format once into a fresh cache (one process, one torch thread,
so the time between two finished exports is one model's export time), then time every model on every
runtime through the agent's own ``measure_job`` (one thread each), runtime after runtime for each model
so that a machine that gets busier affects all runtimes alike. Reports per runtime: the median over
models of latency / onnxruntime latency, the Spearman correlation of its ranking with every other
runtime's (per space), the median session load time, and the median export time per format.

    nice python benchmarks/runtimes.py --n 10 --json out/runtimes.json

torch.compile is left out unless ``--compile`` is given: inductor spends tens of seconds per model here.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path

from scipy.stats import spearmanr

from agents.records import Job, RuntimeConfig, TimingConfig
from agents.worker import measure_job
from harness.export import ExportCache, _make_job, export_models
from harness.records import ModelSpec
from hwlat.spaces import get_space

#: label -> (runtime config, format, module that must import)
RUNTIMES = {
    "onnxruntime": (RuntimeConfig(runtime="onnxruntime"), "onnx", "onnxruntime"),
    "openvino": (RuntimeConfig(runtime="openvino", device="CPU", precision_hint="f32"), "onnx", "openvino"),
    "executorch": (RuntimeConfig(runtime="executorch"), "pte", "executorch"),
    "torch-eager": (RuntimeConfig(runtime="torch"), "pt2", "torch"),
    "litert": (RuntimeConfig(runtime="litert", providers=[]), "tflite", "ai_edge_litert"),
}
TIMING = TimingConfig(warmup_min_runs=5, warmup_min_s=0.05, min_runs=20, min_time_s=0.2, max_runs=500,
                      max_time_s=1.0)


def installed(names: list[str]) -> dict[str, tuple[RuntimeConfig, str]]:
    runtimes = dict(RUNTIMES)
    runtimes["torch-inductor"] = (RuntimeConfig(runtime="torch", compile=True), "pt2", "torch")
    out = {}
    for name in names:
        config, fmt, module = runtimes[name]
        exporter_ok = fmt != "tflite" or importlib.util.find_spec("litert_torch") is not None
        if importlib.util.find_spec(module) is not None and exporter_ok:
            out[name] = (config, fmt)
    return out


def export_all(specs: list[ModelSpec], fmt: str, cache: Path) -> tuple[list, list[float]]:
    """Artifacts and the export seconds of each model not yet in ``cache`` (the gaps between finished
    exports, workers=1); models already there cost nothing and are not counted."""
    store = ExportCache(cache)
    todo = [s for s in specs if store.lookup(_make_job(s, fmt).key) is None]
    stamps = [time.perf_counter()]
    export_models(todo, fmt, cache, workers=1, progress=lambda _a: stamps.append(time.perf_counter()))
    return export_models(specs, fmt, cache, workers=1), [b - a for a, b in itertools.pairwise(stamps)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10, help="archs per space (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runtimes", default="onnxruntime,openvino,executorch,torch-eager,litert",
                        help="comma-separated; add torch-inductor for torch.compile")
    parser.add_argument("--compile", action="store_true", help="also torch-inductor")
    parser.add_argument("--json", type=Path, help="write the per-model results here")
    parser.add_argument("--cache", type=Path, help="keep the exports here (default: a fresh temporary folder); "
                        "export times then cover only the models this run exported")
    args = parser.parse_args()
    names = args.runtimes.split(",") + (["torch-inductor"] if args.compile else [])
    runtimes = installed(names)
    specs = {space: [ModelSpec(space, a) for a in get_space(space).sample(args.n, args.seed)]
             for space in ("nb201", "fbnet")}
    results: dict[str, dict] = {"runtimes": {}, "export_s": {}, "models": []}
    with tempfile.TemporaryDirectory(prefix="hwlat-runtimes-") as fresh:
        tmp = args.cache or fresh
        arts: dict[tuple[str, str], list] = {}
        for fmt in sorted({fmt for _, fmt in runtimes.values()}):
            per_model: list[float] = []
            for space, space_specs in specs.items():
                arts[space, fmt], secs = export_all(space_specs, fmt, Path(tmp) / fmt)
                per_model += secs
            if per_model:
                results["export_s"][fmt] = {"median": statistics.median(per_model), "max": max(per_model),
                                            "n": len(per_model)}
                print(f"export {fmt}: median {statistics.median(per_model):.2f} s/model, max {max(per_model):.2f} s "
                      f"({len(per_model)} models)", flush=True)
        for space, space_specs in specs.items():
            for i, spec in enumerate(space_specs):
                row: dict = {"space": space, "arch": spec.arch}
                for name, (config, fmt) in runtimes.items():
                    art = arts[space, fmt][i]
                    r = measure_job(Job(f"{space}-{i}", art.path, art.sha256, fmt), art.path, config, TIMING)
                    if r.status not in ("ok", "unstable"):
                        raise SystemExit(f"{name} failed on {space} {spec.arch}: {r.error}")
                    row[name] = {"median_ms": r.median_ms, "min_ms": r.min_ms, "load_ms": r.load_ms, "status": r.status,
                                 "provider": r.provider, "version": r.runtime_version}
                results["models"].append(row)
                print(f"{space} {i}: " + ", ".join(f"{n} {row[n]['median_ms']:.3f}" for n in runtimes), flush=True)
    models = results["models"]
    for name in runtimes:
        ratios = [m[name]["median_ms"] / m["onnxruntime"]["median_ms"] for m in models] if "onnxruntime" in runtimes \
            else []
        spear = {}
        for other in runtimes:
            if other != name:
                spear[other] = {}
                for space in specs:
                    mine = [m[name]["median_ms"] for m in models if m["space"] == space]
                    theirs = [m[other]["median_ms"] for m in models if m["space"] == space]
                    spear[other][space] = float(spearmanr(mine, theirs)[0])
        results["runtimes"][name] = {
            "version": models[0][name]["version"], "provider": sorted({m[name]["provider"] for m in models}),
            "ratio_to_ort_median": statistics.median(ratios) if ratios else None,
            "ratio_to_ort_by_space": {s: statistics.median([m[name]["median_ms"] / m["onnxruntime"]["median_ms"]
                                                            for m in models if m["space"] == s]) for s in specs}
            if ratios else None,
            "min_ratio_to_ort_median": statistics.median(m[name]["min_ms"] / m["onnxruntime"]["min_ms"]
                                                         for m in models) if ratios else None,
            "load_ms_median": statistics.median(m[name]["load_ms"] for m in models),
            "unstable": sum(m[name]["status"] == "unstable" for m in models),
            "spearman": spear,
        }
    print("\n| runtime | version | provider | latency / onnxruntime (median; nb201, fbnet) | min / onnxruntime min | "
          "load ms (median) | Spearman vs onnxruntime (nb201, fbnet) | unstable rows |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in results["runtimes"].items():
        by = r["ratio_to_ort_by_space"] or {}
        sp = r["spearman"].get("onnxruntime", {})
        print(f"| {name} | {r['version']} | {', '.join(r['provider'])} | {r['ratio_to_ort_median']:.2f} "
              f"({by.get('nb201', 0):.2f}, {by.get('fbnet', 0):.2f}) | {r['min_ratio_to_ort_median']:.2f} | "
              f"{r['load_ms_median']:.0f} | "
              + (f"{sp['nb201']:.2f}, {sp['fbnet']:.2f}" if sp else "-") + f" | {r['unstable']}/{len(models)} |")
    print("\nSpearman between every pair (nb201 / fbnet):")
    for name, r in results["runtimes"].items():
        print(f"  {name}: " + ", ".join(f"{o} {v['nb201']:.2f}/{v['fbnet']:.2f}" for o, v in r["spearman"].items()))
    print("export s/model (median, max, n): " + ", ".join(f"{f} {v['median']:.2f}, {v['max']:.2f}, {v['n']}"
                                                       for f, v in results["export_s"].items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
