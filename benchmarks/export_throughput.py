"""ONNX/TFLite export throughput into a fresh cache: models per second, worker start-up included.

    .venv/bin/python benchmarks/export_throughput.py 20 --workers 1

A benchmark, not a production hook: it lives here rather than in harness/export.py (docs/spaces.md has figures).
"""

from __future__ import annotations

import argparse
import tempfile
import time

from harness.export import export_models
from harness.records import ModelSpec
from hwlat.spaces import get_space


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, help="sampled NB201 archs to export")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--format", default="onnx", choices=("onnx", "tflite"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    specs = [ModelSpec("nb201", arch) for arch in get_space("nb201").sample(args.n, args.seed)]
    with tempfile.TemporaryDirectory(prefix="throughput-") as fresh:
        start = time.perf_counter()
        export_models(specs, args.format, fresh, workers=args.workers)
        seconds = time.perf_counter() - start
    print(f"{args.n / seconds:.2f} models/s ({args.n} models, {args.workers} workers, {seconds:.1f} s)")


if __name__ == "__main__":
    main()
