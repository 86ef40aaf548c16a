"""The real-model zoo (issue 9): torchvision architectures measured as ONNX files, and how well the graph
predictor transfers to a configuration from 10 of them when a whole model family is new to it.

``export --out DIR`` builds the zoo: every entry of ``ZOO`` from torchvision's model builders with random
weights (``weights=None``: nothing is downloaded), exported with the TorchScript exporter at a fixed
input shape 1x3xSxS, plus ``DIR/manifest.json`` (name, family, input size, builder, FLOPs, parameters,
sha256 of each file). Each file is checked before it counts: onnxruntime loads it and the graph encoder
reads it (a file the encoder refused would be measured without a graph and be useless here).
``DIR/READY`` is written last, so a measurement queue waiting for it never sees a half-built zoo.

The measurement is ``hwlat measure --device CONFIG --models DIR --out DATA`` per configuration.

``evaluate --data DATA`` is the leave-one-family-out protocol. For each family F and target configuration
T among the measured configurations, and each seed:

1. pretrain the graph predictor (``predictor.Predictor.train``, space ``onnx``) on every row of the other
   configurations (all families: the question is a new *configuration*, on which F is also new);
2. transfer to T from ``--transfer`` (10) models of T outside F (a seeded random choice);
3. predict F's models on T and score them against T's measurements.

The baseline, side by side: copy-best-source. Of the other configurations, the one whose measured
latencies rank the 10 transfer models most like T's; F's latency on T is that configuration's measurement
of F times the geometric-mean ratio T/source over the 10 models, and its +-1 std is the rms log residual on
those 10.

Figures per family and overall: Spearman over F's models (where F has at least 3; every family's
held-out predictions pooled per target and seed for the overall figure), the share within +-10 %, MAPE (%)
and the +-1 std coverage (``ms * exp(+-log_std)``). Means over targets and seeds.

    taskset -c 1 python benchmarks/zoo.py export --out /work/zoo-models
    hwlat measure --device epyc2c-ort-t1 --models /work/zoo-models --out /work/zoo-data   # per configuration
    taskset -c 1 nice python benchmarks/zoo.py evaluate --data /work/zoo-data --seeds 3 --json out/zoo.json
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import importlib.util
import json
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/zoo.py` from the repo root imports this checkout
    sys.path.insert(0, str(REPO))

from agents.errors import UsageError  # noqa: E402
from agents.files import atomic_path, atomic_write  # noqa: E402
from predictor.bench import copy_best_source as bench_copy_best_source  # noqa: E402

OPSET = 17
INPUT_NAME = "input"
MANIFEST = "manifest.json"
READY = "READY"


@dataclass(frozen=True)
class Entry:
    """One zoo model: the ``torchvision.models`` builder ``builder`` (or, for ``VisionTransformer``, that class
    with ``kwargs``) at input ``size`` x ``size``; named ``label or builder`` + ``_size``."""

    builder: str
    family: str
    size: int
    kwargs: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    @property
    def name(self) -> str:
        return f"{self.label or self.builder}_{self.size}"


def _vit(layers: int, heads: int, dim: int, mlp: int, patch: int = 16) -> dict[str, Any]:
    """A ``torchvision.models.VisionTransformer`` of the given shape (torchvision builds only B/L/H)."""
    return {"patch_size": patch, "num_layers": layers, "num_heads": heads, "hidden_dim": dim, "mlp_dim": mlp}


#: 41 models, 11 families, input sizes 128-224. Small and medium members only: one configuration measures
#: the whole zoo in a few minutes with the bundled profiles' timing (>= 30 runs, <= 3 s per model).
ZOO: tuple[Entry, ...] = (
    Entry("resnet18", "resnet", 160), Entry("resnet18", "resnet", 192), Entry("resnet18", "resnet", 224),
    Entry("resnet34", "resnet", 160), Entry("resnet50", "resnet", 160),
    Entry("mobilenet_v2", "mobilenet_v2", 160), Entry("mobilenet_v2", "mobilenet_v2", 192),
    Entry("mobilenet_v2", "mobilenet_v2", 224),
    Entry("mobilenet_v3_small", "mobilenet_v3", 160), Entry("mobilenet_v3_small", "mobilenet_v3", 224),
    Entry("mobilenet_v3_large", "mobilenet_v3", 160), Entry("mobilenet_v3_large", "mobilenet_v3", 224),
    Entry("efficientnet_b0", "efficientnet", 160), Entry("efficientnet_b0", "efficientnet", 192),
    Entry("efficientnet_b0", "efficientnet", 224), Entry("efficientnet_b1", "efficientnet", 192),
    Entry("regnet_x_400mf", "regnet", 224), Entry("regnet_y_400mf", "regnet", 224),
    Entry("regnet_x_800mf", "regnet", 192), Entry("regnet_y_800mf", "regnet", 160),
    Entry("shufflenet_v2_x0_5", "shufflenet", 224), Entry("shufflenet_v2_x1_0", "shufflenet", 160),
    Entry("shufflenet_v2_x1_0", "shufflenet", 224), Entry("shufflenet_v2_x1_5", "shufflenet", 192),
    Entry("mnasnet0_5", "mnasnet", 224), Entry("mnasnet0_75", "mnasnet", 192),
    Entry("mnasnet1_0", "mnasnet", 160), Entry("mnasnet1_0", "mnasnet", 224),
    Entry("squeezenet1_0", "squeezenet", 224), Entry("squeezenet1_1", "squeezenet", 160),
    Entry("squeezenet1_1", "squeezenet", 224),
    Entry("densenet121", "densenet", 128), Entry("densenet121", "densenet", 160),
    Entry("densenet121", "densenet", 224),
    Entry("convnext_tiny", "convnext", 128), Entry("convnext_tiny", "convnext", 160),
    Entry("convnext_tiny", "convnext", 224),
    Entry("vit_b_16", "vit", 224), Entry("vit_b_32", "vit", 224),
    # DeiT-tiny and DeiT-small shapes (Touvron et al. 2021) through torchvision's VisionTransformer class
    Entry("VisionTransformer", "vit", 224, _vit(12, 3, 192, 768), label="vit_ti_16"),
    Entry("VisionTransformer", "vit", 224, _vit(12, 6, 384, 1536), label="vit_s_16"),
)


def zoo_entries(only: list[str] | None = None) -> list[Entry]:
    """``ZOO``, or the entries named in ``only`` (UsageError for a name the zoo does not have)."""
    if not only:
        return list(ZOO)
    by_name = {e.name: e for e in ZOO}
    unknown = [n for n in only if n not in by_name]
    if unknown:
        raise UsageError(f"not in the zoo: {', '.join(unknown)}; known: {', '.join(by_name)}")
    return [by_name[n] for n in only]


# --------------------------------------------------------------------------------------------- export
def import_torchvision() -> Any:
    """``torchvision.models``, also where its compiled ops cannot load.

    PyPI's torchvision wheels are built against PyPI's (CUDA) torch; next to a CPU-only torch build their
    ``_C`` extension does not load, and ``import torchvision`` then fails registering fake kernels for
    ``torchvision::nms``/``qnms``. The model builders need no compiled op, so the two schemas are declared
    first in that case (detection models, which do use them, are not in the zoo).
    """
    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        raise UsageError("torchvision is not installed (pip install -e '.[test]')")
    libs = glob.glob(str(Path(spec.origin).parent / "_C*.so"))
    try:
        for lib in libs:
            torch.ops.load_library(lib)
        loaded = bool(libs)
    except (OSError, RuntimeError):
        loaded = False
    if not loaded and not hasattr(torch.ops.torchvision, "nms"):
        for op in ("nms", "qnms"):
            torch.library.define(f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision.models

    return torchvision.models


def build(entry: Entry) -> Any:
    """The torch module of one entry, random weights, in eval mode (seeded, so files are reproducible)."""
    import torch

    models = import_torchvision()
    torch.manual_seed(0)
    if entry.builder == "VisionTransformer":
        module = models.VisionTransformer(image_size=entry.size, **entry.kwargs)
    else:
        kwargs = dict(entry.kwargs)
        if entry.family == "vit":
            kwargs["image_size"] = entry.size
        module = models.get_model(entry.builder, weights=None, **kwargs)
    return module.eval()


def export_entry(entry: Entry, out: Path) -> dict[str, Any]:
    """Export one entry to ``out/<name>.onnx`` atomically and check it; returns its manifest record."""
    import onnx
    import onnxruntime as ort
    import torch

    from hwlat.spaces.graph import encode_model

    module = build(entry)
    sample = torch.randn(1, 3, entry.size, entry.size)
    final = out / f"{entry.name}.onnx"
    t0 = time.perf_counter()
    with atomic_path(final) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        # not under no_grad: nn.MultiheadAttention would take its fused inference path, which has no ONNX export
        torch.onnx.export(module, (sample,), str(tmp), input_names=[INPUT_NAME], output_names=["output"],
                          opset_version=OPSET, do_constant_folding=True, dynamo=False)
        model = onnx.load(str(tmp))
        onnx.checker.check_model(model)
        sha = hashlib.sha256(tmp.read_bytes()).hexdigest()
        # UsageError (and the file is not kept) if the encoder cannot read it; its FLOPs/params are the ones the
        # predictor sees (and the ones `hwlat measure --models` writes: the same counter)
        graph = encode_model(model, sha, label=entry.name)
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        session.run(None, {INPUT_NAME: sample.numpy()})
    return {"name": entry.name, "family": entry.family, "input_size": entry.size, "builder": entry.builder,
            "kwargs": entry.kwargs, "flops": graph.total("flops"), "params": graph.total("params"), "sha256": sha,
            "export_s": round(time.perf_counter() - t0, 2)}


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / READY).unlink(missing_ok=True)
    records = []
    for entry in zoo_entries(args.only):
        rec = export_entry(entry, out)
        records.append(rec)
        print(f"{rec['name']:24s} {rec['family']:13s} {rec['flops'] / 1e9:7.2f} GFLOPs {rec['params'] / 1e6:6.1f} M "
              f"params  {rec['export_s']:.1f} s", flush=True)
    manifest = {"torchvision": _torchvision_version(), "torch": torch.__version__, "opset": OPSET,
                "models": records}
    atomic_write(out / MANIFEST, json.dumps(manifest, indent=1).encode())
    atomic_write(out / READY, f"{len(records)} models\n".encode())
    print(f"{len(records)} models, {len({r['family'] for r in records})} families -> {out}")
    return 0


def _torchvision_version() -> str:
    from importlib.metadata import version

    return version("torchvision")


# --------------------------------------------------------------------------------------------- evaluate
@dataclass
class ZooData:
    """The measured zoo: ``lat`` [model, configuration] ms (models measured ok on every configuration),
    model names, their families, graph keys (sha256) and FLOPs."""

    lat: np.ndarray
    names: list[str]
    families: list[str]
    keys: list[str]
    flops: np.ndarray
    configs: list[str]
    dropped: list[str]


def load_zoo(data: Path, manifest: Path | None = None) -> tuple[ZooData, Any]:
    """Read ``hwlat measure --models`` rows of the zoo (and their graphs) from ``data``.

    Returns the data and the ``predictor.data.LatencyTable`` whose ``onnx`` archs are the graph keys. A
    model's family comes from ``ZOO`` by its name (the file stem), or, when given, from ``manifest`` alone
    (``export``'s manifest.json, or a hand-written one for a zoo other than this file's).
    """
    import pyarrow.dataset as pads

    from agents.records import USABLE_STATUSES
    from hwlat.spaces.graph import DATASET_GRAPHS, read_cached
    from predictor.data import load_table

    family_of = {e.name: e.family for e in ZOO}
    if manifest is not None:
        try:
            records = json.loads(manifest.read_text(encoding="utf-8"))["models"]
            family_of = {r["name"]: r["family"] for r in records}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"cannot read manifest {manifest}: {exc}") from None
    table = load_table([data], spaces={"onnx"})
    try:
        raw = pads.dataset(str(data), format="parquet", partitioning="hive").to_table(
            columns=["arch", "model_sha256", "status"]).to_pandas()
    except Exception as exc:  # pyarrow raises several types; load_table has already named a bad file
        raise UsageError(f"cannot read {data}: {exc}") from None
    raw = raw[raw["status"].astype(str).isin(USABLE_STATUSES)]
    name_of = dict(zip(raw["model_sha256"].astype(str), raw["arch"].astype(str), strict=False))
    wide = table.df[table.df["search_space"] == "onnx"].pivot(index="arch", columns="device", values="latency_ms")
    unknown = sorted(name_of[k] for k in wide.index if name_of[k] not in family_of)
    if unknown:
        raise UsageError(f"{len(unknown)} measured model(s) have no family (first: {unknown[0]}); pass the zoo's "
                         "manifest.json with --manifest")
    complete = wide.dropna()
    dropped = sorted(name_of[k] for k in wide.index.difference(complete.index))
    complete = complete.loc[sorted(complete.index, key=lambda k: name_of[k])]
    keys = [str(k) for k in complete.index]
    names = [name_of[k] for k in keys]
    folder = data / DATASET_GRAPHS
    flops = np.array([read_cached(folder, k).total("flops") for k in keys], float)  # load_table checked them
    zoo = ZooData(complete.to_numpy(float), names, [family_of[n] for n in names], keys, flops,
                  [str(c) for c in complete.columns], dropped)
    return zoo, table


def transfer_picks(zoo: ZooData, family: str, n: int, seed: int) -> list[int]:
    """``n`` models outside ``family``: a seeded choice that depends on the seed and the family only, so every
    target configuration transfers from the same models (and a rerun from the same ones)."""
    outside = [i for i, f in enumerate(zoo.families) if f != family]
    if len(outside) < n:
        raise UsageError(f"family {family}: only {len(outside)} models outside it, --transfer {n} needs more")
    salt = int(hashlib.sha256(family.encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng([seed, salt])
    return sorted(int(i) for i in rng.choice(outside, size=n, replace=False))


def copy_best_source(zoo: ZooData, target: int, picks: list[int], held: list[int]
                     ) -> tuple[np.ndarray, np.ndarray, str]:
    """The baseline (``predictor.bench.copy_best_source``) over the other configurations. Returns (ms,
    log_std, source)."""
    others = [c for c in range(len(zoo.configs)) if c != target]
    ms, std, best = bench_copy_best_source(zoo.lat[picks, target], zoo.lat[np.ix_(picks, others)],
                                           zoo.lat[np.ix_(held, others)])
    return ms, std, zoo.configs[others[best]]


def flops_fit(zoo: ZooData, target: int, picks: list[int], held: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """A second reference: log latency linear in log FLOPs, fitted on ``picks``; std = rms residual there."""
    x, y = np.log(zoo.flops[picks]), np.log(zoo.lat[picks, target])
    slope, icept = np.polyfit(x, y, 1)
    std = float(np.sqrt(np.mean((y - (icept + slope * x)) ** 2)))
    return np.exp(icept + slope * np.log(zoo.flops[held])), np.full(len(held), std)


def scores(pred: np.ndarray, true: np.ndarray, log_std: np.ndarray, min_rank: int = 3) -> dict[str, float | None]:
    """Spearman (None under ``min_rank`` models), share within +-10 %, MAPE (%), +-1 std coverage."""
    from scipy.stats import spearmanr

    rel = np.abs(pred - true) / true
    rho = float(spearmanr(pred, true)[0]) if len(true) >= min_rank else None
    return {"spearman": rho, "within_10pct": float(np.mean(rel <= 0.10)), "mape": float(100 * np.mean(rel)),
            "coverage_1sigma": float(np.mean(np.abs(np.log(true) - np.log(pred)) <= log_std)), "n": len(true)}


METHODS = ("predictor", "copy_best_source", "flops_fit")
FIGURES = ("spearman", "within_10pct", "mape", "coverage_1sigma")


def _mean(values: list[float | None]) -> float | None:
    have = [v for v in values if v is not None]
    return float(np.mean(have)) if have else None


def evaluate(zoo: ZooData, table: Any, seeds: int, n_transfer: int, steps: int,
             targets: list[str] | None = None, log: Any = print) -> dict[str, Any]:
    """The leave-one-family-out protocol (module docstring); returns the JSON report."""
    import pandas as pd

    from predictor import Predictor
    from predictor.data import LatencyTable
    from predictor.train import TrainConfig

    targets = targets or zoo.configs
    missing = [t for t in targets if t not in zoo.configs]
    if missing or len(zoo.configs) < 2:
        raise UsageError(f"need a target among at least 2 measured configurations; have {', '.join(zoo.configs)}"
                         + (f", not {', '.join(missing)}" if missing else ""))
    families = sorted(set(zoo.families))
    held_of = {f: [i for i, g in enumerate(zoo.families) if g == f] for f in families}
    for family in families:  # refuse now, not after the first pretraining
        transfer_picks(zoo, family, n_transfer, 0)
    rows = table.df[table.df["search_space"] == "onnx"]
    rows = rows[rows["arch"].isin(set(zoo.keys))]
    records: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    for target in targets:
        t = zoo.configs.index(target)
        for seed in range(seeds):
            t0 = time.perf_counter()
            sources = LatencyTable(rows[rows["device"] != target].reset_index(drop=True))
            model = Predictor.train(sources, TrainConfig(steps=steps, seed=seed))
            t_train = time.perf_counter() - t0
            for family in families:
                held = held_of[family]
                picks = transfer_picks(zoo, family, n_transfer, seed)
                name = f"{target}@without-{family}"
                info = model.transfer(name, [zoo.keys[i] for i in picks], zoo.lat[picks, t], space="onnx",
                                      seed=seed)
                ms, log_std = model.predict_with_uncertainty([zoo.keys[i] for i in held], name, space="onnx")
                copy_ms, copy_std, copy_src = copy_best_source(zoo, t, picks, held)
                fl_ms, fl_std = flops_fit(zoo, t, picks, held)
                runs.append({"target": target, "seed": seed, "family": family,
                             "transfer": [zoo.names[i] for i in picks], "held_out": [zoo.names[i] for i in held],
                             "best_source": info["best_source"], "nn_weight": info["nn_weight"],
                             "copy_source": copy_src})
                for j, i in enumerate(held):
                    records.append({"target": target, "seed": seed, "family": family, "model": zoo.names[i],
                                    "measured_ms": float(zoo.lat[i, t]),
                                    "predictor_ms": float(ms[j]), "predictor_log_std": float(log_std[j]),
                                    "copy_best_source_ms": float(copy_ms[j]),
                                    "copy_best_source_log_std": float(copy_std[j]),
                                    "flops_fit_ms": float(fl_ms[j]), "flops_fit_log_std": float(fl_std[j])})
            log(f"{target} seed {seed}: pretrain {t_train:.1f} s, all families {time.perf_counter() - t0:.1f} s")
    return summarise(pd.DataFrame(records), runs, zoo, seeds, n_transfer, steps, targets)


def _score_frame(df: Any, method: str, min_rank: int = 3) -> dict[str, float | None]:
    return scores(df[f"{method}_ms"].to_numpy(), df["measured_ms"].to_numpy(), df[f"{method}_log_std"].to_numpy(),
                  min_rank)


def summarise(df: Any, runs: list[dict[str, Any]], zoo: ZooData, seeds: int, n_transfer: int, steps: int,
              targets: list[str]) -> dict[str, Any]:
    """Figures per family (mean over target x seed) and overall (every family's held-out predictions pooled
    per target and seed, then the mean); per target too."""
    report: dict[str, Any] = {"configurations": zoo.configs, "targets": targets, "seeds": seeds,
                              "transfer": n_transfer, "steps": steps, "models": len(zoo.names),
                              "dropped_incomplete": zoo.dropped, "families": {}, "overall": {}, "targets_overall": {}}
    for family, sub in df.groupby("family", sort=True):
        entry: dict[str, Any] = {"models": sorted(sub["model"].unique())}
        for method in METHODS:
            per = [_score_frame(g, method) for _, g in sub.groupby(["target", "seed"])]
            entry[method] = {k: _mean([p[k] for p in per]) for k in FIGURES}
        report["families"][family] = entry
    for method in METHODS:
        per = {key: _score_frame(g, method) for key, g in df.groupby(["target", "seed"])}
        report["overall"][method] = {k: _mean([p[k] for p in per.values()]) for k in FIGURES}
        report["overall"][method]["spearman_family_mean"] = _mean(
            [report["families"][f][method]["spearman"] for f in report["families"]])
        for target in targets:
            mine = [p for (t, _s), p in per.items() if t == target]
            report["targets_overall"].setdefault(target, {})[method] = {k: _mean([p[k] for p in mine])
                                                                        for k in FIGURES}
    report["runs"] = runs
    report["predictions"] = df.to_dict(orient="records")
    return report


def print_report(report: dict[str, Any]) -> None:
    """The tables docs/benchmarks.md shows: per family, then overall (predictor vs the baselines)."""
    def fmt(v: float | None, pct: bool = False) -> str:
        return "-" if v is None else f"{v:.1f}" if pct else f"{v:.3f}"

    print(f"{report['models']} models, configurations {', '.join(report['configurations'])}; "
          f"{report['seeds']} seed(s), transfer from {report['transfer']}")
    if report["dropped_incomplete"]:
        print(f"not measured ok on every configuration (left out): {', '.join(report['dropped_incomplete'])}")
    head = "| family | models | Spearman pred / copy / flops | within 10 % pred / copy / flops | MAPE % pred / " \
           "copy / flops | coverage pred / copy / flops |"
    print(head)
    print("| --- " * 6 + "|")
    rows = [(f, e, len(e["models"])) for f, e in report["families"].items()]
    rows.append(("overall", report["overall"], report["models"]))
    for label, e, n in rows:
        cells = []
        for key in FIGURES:
            cells.append(" / ".join(fmt(e[m][key], key == "mape") for m in METHODS))
        print(f"| {label} | {n} | " + " | ".join(cells) + " |")
    print("per target (overall): " + "; ".join(
        f"{t}: Spearman {fmt(v['predictor']['spearman'])} / {fmt(v['copy_best_source']['spearman'])}, "
        f"within 10 % {fmt(v['predictor']['within_10pct'])} / {fmt(v['copy_best_source']['within_10pct'])}"
        for t, v in report["targets_overall"].items()))


def cmd_evaluate(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    zoo, table = load_zoo(Path(args.data), Path(args.manifest) if args.manifest else None)
    report = evaluate(zoo, table, args.seeds, args.transfer, args.steps, args.targets,
                      log=lambda m: print(m, file=sys.stderr, flush=True))
    report["seconds"] = round(time.perf_counter() - t0, 1)
    print_report(report)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(Path(args.json), json.dumps(report, indent=1).encode())
    return 0


# --------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/zoo.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("export", help="build the zoo folder (ONNX files + manifest.json + READY)")
    ex.add_argument("--out", required=True)
    ex.add_argument("--only", nargs="+", help="zoo names to export (default: all of ZOO)")
    ev = sub.add_parser("evaluate", help="leave-one-family-out transfer figures on a measured zoo dataset")
    ev.add_argument("--data", required=True, help="hwlat measure --models dataset of the zoo")
    ev.add_argument("--manifest", help="manifest.json of a zoo other than ZOO (model families)")
    ev.add_argument("--seeds", type=int, default=3)
    ev.add_argument("--transfer", type=int, default=10, help="target measurements to transfer from (default 10)")
    ev.add_argument("--steps", type=int, default=1200, help="pretraining steps (default: the predictor's 1200)")
    ev.add_argument("--targets", nargs="+", help="target configurations (default: every measured one)")
    ev.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ev.add_argument("--json", help="write the full report (figures, transfer sets, every prediction)")
    args = parser.parse_args(argv)
    try:
        return {"export": cmd_export, "evaluate": cmd_evaluate}[args.cmd](args)
    except UsageError as exc:
        print(f"hwlat: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
