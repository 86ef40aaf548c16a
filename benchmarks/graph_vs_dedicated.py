"""NB201 through the graph path alone vs its dedicated encoder (docs/predictor.md, "Graph encoding").

The graph predictor must encode all 15625 NB201 networks. By default (``--graphs traced``) each is the network
as the space builds it, traced (``hwlat.spaces.trace``, ~15 worker-ms each): what the predictor does for any
space it can build when the data carry arch strings only, as HELP's latencies do -- their devices did not run
hwlat's ONNX export. ``--graphs onnx`` encodes the graph of hwlat's own export instead. Exporting each with
torch costs ~0.5 s (2 hours for the space), so that mode writes each network's ONNX graph directly with
``onnx.helper``, mirroring
what the harness's TorchScript export of ``hwlat.spaces.nb201.TinyNetwork`` contains (BN folded into the
convs, ``none`` = Mul by 0, ``skip`` = no node, chained Adds per cell node, equal nodes merged, the head's
unfolded BN), and
runs it through the same ``hwlat.spaces.graph.encode_model`` as any measured file. Fidelity is checked, not
assumed: ``--check N`` exports N random archs with the real exporter and compares their features with the
generated graphs' (the script stops if any differs). The two differ where the exporter merges equal nodes: two
3x3 average pools (or ReLUs) reading one cell node are one operator in the export and two in the network.

Then it runs the transfer benchmark (``predictor.bench.run_bench``) on the same tasks twice: once with the
dedicated ``nb201`` encoder (its 8-node cell graph and cell features; since 2026-11-27 its cost model reads the
traced graph's cost features too) and once with the rows relabelled to a graph-encoded space whose "archs" key
the encodings.

    nice .venv/bin/python -m benchmarks.graph_vs_dedicated --check 0 --only graph --tasks ND NX1 NX2 NX3 --seeds 3

``--prior both`` runs each side with and without the hardware-agnostic cost prior on the same pretrained
models and picks (``blend`` adds the prior with the fixed network weight); ``--tasks`` also takes the
family-out splits FO1-FO3 (``family_out_tasks.json``); ``--archs M`` restricts both sides to M archs of the
space drawn with seed 0 (encoding all 15625 takes ~4 minutes of CPU traced, ~10-20 minutes as generated ONNX).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hwlat.spaces import get_space
from hwlat.spaces.graph import encode_file, encode_model
from hwlat.spaces.nb201 import EDGES, NUM_NODES, canonical_archs, parse
from hwlat.spaces.trace import trace_encoding
from predictor.bench import PRETRAIN_CAPS, Task, load_tasks, run_bench_variants
from predictor.data import load_table, reduce_frame
from predictor.encode import add_graph_features, register_graph_space
from predictor.graph import FEATURES_VERSION, FLAT_DIM, N_DEAD, features
from predictor.transfer import TransferConfig

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nb201"
FAMILY_OUT = Path(__file__).resolve().parent / "family_out_tasks.json"
GRAPH_SPACE = "nb201-graph"


class _Builder:
    """Collects nodes and zero-valued initializers of one graph (values do not change an encoding)."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0
        self.seen: dict[tuple, str] = {}

    def name(self, stem: str) -> str:
        self.n += 1
        return f"{stem}_{self.n}"

    def init(self, shape: tuple[int, ...]) -> str:
        name = self.name("w")
        self.inits.append(numpy_helper.from_array(np.zeros(shape, np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs: object) -> str:
        """Add a node, or reuse an identical one: the TorchScript exporter's common-subexpression pass
        merges equal nodes on equal inputs (two convs reading one cell node share their ReLU; the Muls
        by 0 of ``none`` edges from one node are one Mul)."""
        key = (op, tuple(inputs), tuple(sorted((k, repr(v)) for k, v in attrs.items())))
        if key in self.seen:
            return self.seen[key]
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        self.seen[key] = out
        return out

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, bias: bool = True) -> str:
        ins = [x, self.init((cout, cin, k, k))] + ([self.init((cout,))] if bias else [])
        return self.node("Conv", ins, kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4,
                         dilations=[1, 1], group=1)

    def relu_conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1) -> str:
        return self.conv(self.node("Relu", [x]), cin, cout, k, stride)  # the BN is folded into the bias


def nb201_onnx(arch: str, channels: int = 16, cells: int = 5, classes: int = 10, resolution: int = 32
               ) -> onnx.ModelProto:
    """The ONNX graph the harness exports for an NB201 arch, built node by node (no torch)."""
    ops = dict(zip(EDGES, parse(arch), strict=True))
    b = _Builder()
    zero = "zero"  # a Constant node (not an initializer: no parameter), as torch exports x.mul(0.0)
    b.nodes.append(helper.make_node("Constant", [], [zero], value=numpy_helper.from_array(np.zeros((), np.float32))))
    x = b.conv("input", 3, channels, 3)
    c = channels
    for stage in range(3):
        if stage:
            a = b.relu_conv(x, c, 2 * c, 3, 2)
            a = b.relu_conv(a, 2 * c, 2 * c, 3)
            short = b.conv(b.node("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0]),
                           c, 2 * c, 1, bias=False)
            x = b.node("Add", [short, a])
            c *= 2
        for _ in range(cells):
            nodes = [x]
            for i in range(1, NUM_NODES):
                total = None
                for j in range(i):
                    op, src = ops[(i, j)], nodes[j]
                    if op == "none":
                        out = b.node("Mul", [src, zero])
                    elif op == "skip_connect":
                        out = src
                    elif op == "avg_pool_3x3":
                        out = b.node("AveragePool", [src], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1],
                                     count_include_pad=0)
                    else:
                        out = b.relu_conv(src, c, c, 1 if op == "nor_conv_1x1" else 3)
                    total = out if total is None else b.node("Add", [total, out])
                nodes.append(total)
            x = nodes[-1]
    bn = b.node("BatchNormalization", [x, b.init((c,)), b.init((c,)), b.init((c,)), b.init((c,))])
    pooled = b.node("GlobalAveragePool", [b.node("Relu", [bn])])
    flat = b.node("Flatten", [pooled], axis=1)
    b.nodes.append(helper.make_node("Gemm", [flat, b.init((classes, c)), b.init((classes,))], ["output"],
                                    name="gemm", alpha=1.0, beta=1.0, transB=1))
    graph = helper.make_graph(
        b.nodes, "nb201", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, resolution, resolution])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, classes])], initializer=b.inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def check_fidelity(n: int, seed: int = 0) -> dict:
    """Export ``n`` random archs (plus all-none and all-skip) with the real exporter; compare features."""
    from harness.export import export_models
    from harness.records import ModelSpec

    rng = np.random.default_rng(seed)
    archs = [canonical_archs()[i] for i in rng.choice(15625, size=n, replace=False)]
    archs += ["|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
              "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        arts = export_models([ModelSpec("nb201", a) for a in archs], "onnx", Path(tmp) / "exports", workers=1)
        export_s = (time.perf_counter() - t0) / len(archs)
        worst = 0.0
        for arch, art in zip(archs, arts, strict=True):
            real = features(encode_file(art.path, cache_dir=Path(tmp) / "graphs"))
            made = features(encode_model(nb201_onnx(arch), "x"))
            for r, m in zip(real, made, strict=True):
                worst = max(worst, float(np.abs(r - m).max()))
            if worst > 1e-5:
                raise SystemExit(f"generated graph of {arch} differs from the export (max |diff| {worst})")
    return {"archs": len(archs), "max_abs_feature_diff": worst, "export_s_per_arch": export_s}


def _features_of(arch: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return features(encode_model(nb201_onnx(arch), arch))


def _traced_features_of(arch: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return features(trace_encoding(get_space("nb201"), arch))


def encode_space(cache: Path, workers: int, limit: int = 0, traced: bool = True
                 ) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, float]:
    """(archs, flat, nodes, adj) of all 15625 archs, or of ``limit`` of them drawn with seed 0 (in canonical
    order), cached in ``cache`` (.npz), and the worker-seconds per arch when computed (NaN when read from the
    cache)."""
    archs = list(canonical_archs())
    if limit:
        archs = [archs[i] for i in sorted(np.random.default_rng(0).choice(len(archs), limit, replace=False))]
    if cache.exists():
        with np.load(cache) as z:
            return archs, z["flat"], z["nodes"], z["adj"], float("nan")
    t0 = time.perf_counter()
    of = _traced_features_of if traced else _features_of
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            rows = list(pool.map(of, archs, chunksize=256))
    else:
        rows = [of(a) for a in archs]
    per = (time.perf_counter() - t0) * workers / len(archs)  # worker-seconds per arch (wall x workers)
    flat, nodes, adj = (np.stack([r[i] for r in rows]) for i in range(3))
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cache, flat=flat, nodes=nodes, adj=adj)
    return archs, flat, nodes, adj, per


def load_all_tasks(names: list[str]) -> list[Task]:
    """The named tasks from NASFLAT's file (ND, NX1-NX3) and the family-out splits (FO1-FO3)."""
    pool = {t.name: t for path in (SHARED / "nasflat_tasks.json", FAMILY_OUT) for t in load_tasks(path)}
    unknown = [n for n in names if n not in pool]
    if unknown:
        raise SystemExit(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(sorted(pool))}")
    return [pool[n] for n in names]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", type=int, default=20, help="archs exported for real to check the generated graphs")
    ap.add_argument("--tasks", nargs="+", default=["ND", "NX1", "NX2", "NX3"])
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--out", default="out/graph_vs_dedicated")
    ap.add_argument("--workers", type=int, default=2, help="processes encoding the space")
    ap.add_argument("--archs", type=int, default=0,
                    help="use only this many archs of the space (drawn with seed 0; 0 = all 15625): the tasks "
                         "pretrain and score on that subset, on both sides")
    ap.add_argument("--only", choices=("dedicated", "graph"), help="run one side of the comparison")
    ap.add_argument("--graphs", choices=("traced", "onnx"), default="traced",
                    help="traced: the network as the space builds it (hwlat.spaces.trace, what data with arch "
                         "strings only gets); onnx: the graph of hwlat's own ONNX export (generated, with the "
                         "exporter's merging of equal nodes)")
    ap.add_argument("--no-dead", action="store_true", help="zero the dead-operator features (ablation)")
    ap.add_argument("--prior", choices=("on", "off", "both", "blend"), default="on",
                    help="the hardware-agnostic cost prior at transfer; 'both' runs with and without it on the "
                         "same pretrained models and samples; 'blend' adds the prior with the fixed network weight")
    args = ap.parse_args()
    if not SHARED.exists():
        print(f"needs the shared NB201 data at {SHARED}", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(1)
    out = Path(args.out)
    tasks = load_all_tasks(args.tasks)
    report: dict = {"fidelity": check_fidelity(args.check) if args.check and args.graphs == "onnx" else None}
    print("fidelity", report["fidelity"], flush=True)
    t0 = time.perf_counter()
    suffix = (f"_{args.archs}" if args.archs else "") + ("" if args.graphs == "onnx" else "_traced")
    archs, flat, nodes, adj, per = encode_space(out / f"nb201_graph_features_v{FEATURES_VERSION}{suffix}.npz",
                                                args.workers, args.archs, traced=args.graphs == "traced")
    if args.no_dead:
        flat = flat.copy()
        flat[:, FLAT_DIM - N_DEAD:] = 0.0
        suffix += "_nodead"
    report["encode_worker_s_per_arch"] = per
    report["load_or_encode_s"] = time.perf_counter() - t0
    print(f"encoded {len(archs)} archs in {report['load_or_encode_s']:.0f} s ({per * 1e3:.1f} worker-ms each)",
          flush=True)
    add_graph_features(archs, flat, nodes, adj)
    register_graph_space(GRAPH_SPACE)
    PRETRAIN_CAPS[GRAPH_SPACE] = PRETRAIN_CAPS["nb201"]  # the same protocol: 512 archs per train device
    table = load_table([SHARED / "latency_long.parquet"], spaces={"nb201"})
    if args.archs:
        table = reduce_frame(table.df[table.df["arch"].isin(set(archs))])
    graph_table = reduce_frame(table.df.assign(search_space=GRAPH_SPACE))
    variants = {"on": {"prior": TransferConfig()}, "off": {"source": TransferConfig(agnostic_prior=False)},
                "both": {"source": TransferConfig(agnostic_prior=False), "prior": TransferConfig()},
                "blend": {"source": TransferConfig(agnostic_prior=False), "prior": TransferConfig(),
                          "prior-fixed-blend": TransferConfig(evidence_blend=False)}}[args.prior]
    for label, tab, space in (("dedicated", table, "nb201"), ("graph", graph_table, GRAPH_SPACE)):
        if args.only not in (None, label):
            continue
        for t in tasks:
            t.space = space

        def step(task: str, seed: int, res: dict, label: str = label) -> None:
            print(f"{label} {task} seed {seed}: " + ", ".join(
                f"{v} {np.mean([m['spearman'] for m in r.values()]):.4f}" for v, r in res.items()), flush=True)

        report[label] = run_bench_variants(tab, tasks, args.samples, args.seeds, "default", variants, on_step=step)
    out.mkdir(parents=True, exist_ok=True)
    name = (f"report{'-' + args.only if args.only else ''}{'-prior-' + args.prior if args.prior != 'on' else ''}"
            f"{suffix}.json")
    (out / name).write_text(json.dumps(report, indent=1))
    print("task side/prior: Spearman, within 10 %, MAPE %, coverage +-1 std")
    for t in tasks:
        for label in ("dedicated", "graph"):
            for v, rep in report.get(label, {}).items():
                e = rep["tasks"][t.name]
                print(f"{t.name} {label}/{v}: {e['spearman']:.4f}, {e['within_10pct']:.3f}, {e['mape']:.1f}, "
                      f"{e['coverage_1sigma']:.3f} ({e['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
