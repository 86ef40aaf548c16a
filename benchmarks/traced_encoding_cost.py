"""Cost of the traced graph encoding (hwlat.spaces.trace, predictor.traced) on N archs of a space.

Reports, for N sampled archs: cold encoding (empty caches, in this process or the spawned workers the CPU
affinity allows), warm encoding from the on-disk cache in a fresh in-memory state (what a second run of
``hwlat profile`` or ``hwlat predictor bench`` pays), and the rest of a bench task-seed's cost path on those
archs: pretraining one device, a transfer from 20 archs, predicting all N with uncertainty.

The pretraining targets are a stand-in (a fixed function of each arch's traced FLOPs and bytes): there are
no N real latencies of one space here, and only the timings are reported, never accuracy.

    taskset -c 1 nice -n 5 python -m benchmarks.traced_encoding_cost --space ofa -n 5000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> dict[str, float]:
    wall, cpu = _clock()
    return {"wall_s": round(wall - start[0], 2), "cpu_s_this_process": round(cpu - start[1], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="ofa")
    parser.add_argument("-n", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-train", action="store_true", help="encoding only")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--cache", type=Path, help="graph cache to fill (default: a new temporary folder)")
    args = parser.parse_args()
    cache = args.cache or Path(tempfile.mkdtemp(prefix="hwlat-trace-bench-"))
    os.environ["HWLAT_GRAPH_CACHE"] = str(cache)

    import numpy as np
    import torch

    torch.set_num_threads(1)
    from hwlat.spaces import get_space
    from predictor import traced
    from predictor.encode import get_encoder

    archs = get_space(args.space).sample(args.n, args.seed)
    enc = get_encoder(args.space)
    out: dict = {"space": args.space, "n": args.n, "cpus": len(os.sched_getaffinity(0)),
                 "workers": traced._workers(args.n) if args.n >= traced.PARALLEL_MIN else 1,
                 "load_avg_before": os.getloadavg()[0]}
    start = _clock()
    first = enc.encode(archs)
    out["cold"] = _since(start)
    out["cold"]["ms_per_arch_wall"] = round(out["cold"]["wall_s"] / args.n * 1000, 1)
    traced._ROWS.clear()
    traced._LOADED.clear()
    start = _clock()
    again = enc.encode(archs)
    out["warm_from_disk"] = _since(start)
    assert np.array_equal(first.flat, again.flat)
    out["disk_cache_bytes"] = sum(p.stat().st_size for p in cache.rglob("*.npz"))
    if not args.no_train:
        import pandas as pd

        from predictor.api import Predictor
        from predictor.data import reduce_frame

        lin = enc.linear(first.flat)
        stand_in = 1.0 + lin[:, : lin.shape[1] // 3].sum(1) + 0.3 * lin[:, lin.shape[1] // 3:].sum(1)
        frame = pd.DataFrame({"search_space": args.space, "arch": archs, "device": "stand-in",
                              "latency_ms": stand_in})
        start = _clock()
        model = Predictor.train(reduce_frame(frame))
        out["pretrain_one_device"] = _since(start)
        pick = list(np.random.default_rng(args.seed).choice(args.n, 20, replace=False))
        start = _clock()
        model.transfer("target", [archs[i] for i in pick], 1.3 * stand_in[pick], space=args.space)
        out["transfer_20"] = _since(start)
        start = _clock()
        model.predict_with_uncertainty(archs, "target", space=args.space)
        out["predict_all"] = _since(start)
    out["load_avg_after"] = os.getloadavg()[0]
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
