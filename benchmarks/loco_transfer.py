"""Leave one configuration out: transfer to each device configuration of a dataset from the others, at several
sample counts, with and without the hardware-agnostic cost prior (docs/predictor.md, "Hardware-agnostic prior").

For every target configuration and seed: pretrain on the other configurations (``pretrain_protocol``, the
bench's 800-arch cap for spaces other than NB201), pick N archs of the target with the default sampler,
transfer once per variant on the same pretrained model and the same picks, and score on the target's other
archs (``predictor.bench.score``: Spearman, within +-10 %, MAPE, +-1 std coverage). One pretraining serves
every N and both variants, so they differ in nothing else. Beside them, on the same picks and held-out archs,
the copy-best-source baseline (``predictor.bench.copy_best_source``): the source configuration whose
latencies rank the N picks best, scaled to them -- chosen on the picks only, never on held-out data.
Works for any space the data holds, dedicated or graph-encoded (OFA, the ViT space, ONNX files: whatever
``load_table`` encodes).

    taskset -c 1 nice -n 5 .venv/bin/python -m benchmarks.loco_transfer --data DATASET --space ofa \\
        --samples 5 10 20 --seeds 3 --json out/loco_ofa.json

``--as-graph NAME --graphs DIR`` runs a space that has a dedicated encoder (nb201, fbnet) through the graph
path instead: its rows are relabelled to the graph space NAME, keyed by ``model_sha256``, and encoded from the
real exported networks' graphs in DIR (a dataset's ``_graphs/`` folder) -- e.g. hwlat's bundled NB201
configurations, whose 1000 archs are the same networks on every configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads

from hwlat.spaces.graph import DATASET_GRAPHS
from predictor.bench import METRICS, copy_best_source, pretrain_protocol, score, transfer_and_score
from predictor.data import load_table
from predictor.encode import get_encoder, space_key
from predictor.train import TrainConfig
from predictor.transfer import TransferConfig

VARIANTS = {"source": TransferConfig(agnostic_prior=False), "prior": TransferConfig()}
#: the report's columns: the two transfer variants and the copy-best-source baseline on the same picks
COLUMNS = (*VARIANTS, "copy_best_source")


def as_graph_dataset(data: list[str], space: str, name: str, graphs: Path, out: Path) -> Path:
    """A dataset folder ``out`` holding ``space``'s rows of ``data`` relabelled to the graph space ``name``, with
    ``graphs`` as its ``_graphs/`` folder (linked, not copied)."""
    cols = ["search_space", "arch", "device", "latency_ms", "status", "model_sha256"]
    frames = [pads.dataset(d, partitioning="hive" if Path(d).is_dir() else None).to_table(columns=cols).to_pandas()
              for d in data]
    df = pd.concat([f.astype({"search_space": str, "device": str}) for f in frames], ignore_index=True)
    df = df[df["search_space"].map(space_key) == space_key(space)].assign(search_space=name)
    out.mkdir(parents=True, exist_ok=True)
    df.to_parquet(out / "rows.parquet")
    link = out / DATASET_GRAPHS
    if not link.exists():
        link.symlink_to(graphs.resolve(), target_is_directory=True)
    return out


def run(data: list[str], space: str, samples: list[int], seeds: int, devices: list[str] | None,
        targets: list[str] | None = None) -> dict:
    """{target: {variant: {N: {metric: mean over seeds}}}} plus per-seed lists and seconds per target."""
    import torch

    torch.set_num_threads(1)
    table = load_table(data, spaces={space_key(space)})
    space = space_key(space)
    devices = devices or table.devices(space)
    if len(devices) < 2:
        raise SystemExit(f"{space}: need at least 2 configurations, the data has {devices}")
    report: dict = {"space": space, "devices": devices, "samples": samples, "seeds": seeds, "targets": {}}
    for target in targets or devices:
        t0 = time.perf_counter()
        sources = [d for d in devices if d != target]
        s = table.device_series(space, target)
        per: dict = {v: {n: {m: [] for m in METRICS} for n in samples} for v in COLUMNS}
        # the copy-best-source baseline needs every source's latency of each target arch
        src = pd.concat([table.device_series(space, d).rename(d) for d in sources], axis=1).reindex(s.index)
        if src.isna().any().any():
            raise SystemExit(f"{target}: the sources lack latencies of some of its archs; copy-best-source "
                             "needs them all")
        degenerate_all = pd.Series(get_encoder(space).degenerate(list(s.index)), index=s.index)
        chosen: dict = {n: [] for n in samples}
        for seed in range(seeds):
            model = pretrain_protocol(table, space, sources, TrainConfig(seed=seed))
            for n in samples:
                picks, by_label = transfer_and_score(model, s, n, "default", seed, VARIANTS, f"{target}@{n}-{seed}",
                                                     degenerate=degenerate_all)
                for label, metrics in by_label.items():
                    for m, v in metrics.items():
                        per[label][n][m].append(v)
                rest = s.drop(index=picks)
                ms, log_std, best = copy_best_source(s.loc[picks].to_numpy(), src.loc[picks].to_numpy(),
                                                     src.loc[rest.index].to_numpy())
                chosen[n].append(sources[best])
                for m, v in score(ms, rest.to_numpy(), log_std, degenerate_all.loc[rest.index].to_numpy()).items():
                    per["copy_best_source"][n][m].append(v)
                print(f"{target} N={n} seed {seed}: " + ", ".join(
                    f"{label} {per[label][n]['spearman'][-1]:.4f}" for label in COLUMNS), flush=True)
        report["targets"][target] = {
            "sources": sources, "archs": len(s), "seconds": time.perf_counter() - t0,
            "copy_best_source_chosen": {str(n): chosen[n] for n in samples},
            **{label: {str(n): {m: (float(np.mean([x for x in vals if x is not None]))
                                    if any(x is not None for x in vals) else None)
                                for m, vals in per[label][n].items()} | {"per_seed": per[label][n]}
                       for n in samples} for label in COLUMNS}}
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", required=True, help="dataset folders or Parquet files")
    ap.add_argument("--space", required=True)
    ap.add_argument("--samples", nargs="+", type=int, default=[5, 10, 20])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--devices", nargs="+", help="configurations to use (default: all in the data)")
    ap.add_argument("--targets", nargs="+", help="configurations left out in turn (default: every one)")
    ap.add_argument("--json", help="write the report here")
    ap.add_argument("--as-graph", metavar="NAME", help="run --space through the graph path as space NAME")
    ap.add_argument("--graphs", type=Path, help="with --as-graph: the folder of the networks' graph encodings")
    args = ap.parse_args()
    data, space = args.data, args.space
    if args.as_graph:
        if args.graphs is None:
            ap.error("--as-graph needs --graphs")
        with tempfile.TemporaryDirectory() as tmp:
            folder = as_graph_dataset(data, space, args.as_graph, args.graphs, Path(tmp) / "data")
            report = run([str(folder)], args.as_graph, args.samples, args.seeds, args.devices, args.targets)
        report["as_graph_of"] = space
    else:
        report = run(data, space, args.samples, args.seeds, args.devices, args.targets)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))
    print("target N: Spearman / within 10 % / MAPE % / coverage: source prior -> with the agnostic prior "
          "[copy-best-source]")
    for target, entry in report["targets"].items():
        for n in args.samples:
            a, b, c = (entry[label][str(n)] for label in COLUMNS)
            print(f"{target} {n}: " + " / ".join(f"{a[m]:.3g} -> {b[m]:.3g} [{c[m]:.3g}]" for m in
                                                 ("spearman", "within_10pct", "mape", "coverage_1sigma")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
