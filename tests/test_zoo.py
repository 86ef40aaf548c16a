"""benchmarks/zoo.py end to end on a real, tiny zoo: six torchvision models exported by the script, measured
with `hwlat measure --models` on two onnxruntime configurations (optimised / not), then evaluated
leave-one-family-out. Checks the protocol, not the accuracy: no held-out model is in its transfer set, every
model is predicted once per target and seed against its own measurement on that target, the copy-best-source
baseline equals an independent computation, and every figure is in range."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pytest
from profiles import fast_profile

from hwlat.spaces.graph import DATASET_GRAPHS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import zoo  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.skipif(importlib.util.find_spec("torchvision") is None,
                                                   reason="torchvision (the test extra) is not installed")]

#: the six smallest zoo entries, 4 families: two families of 2 models, two of 1
SUBSET = ["mobilenet_v3_small_160", "mobilenet_v3_small_224", "squeezenet1_1_160", "squeezenet1_1_224",
          "shufflenet_v2_x0_5_224", "mnasnet0_5_224"]
TRANSFER = 3


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(zoo folder, dataset): the subset exported and measured for real on two configurations."""
    tmp = tmp_path_factory.mktemp("zoo")
    models = tmp / "models"
    assert zoo.main(["export", "--out", str(models), "--only", *SUBSET]) == 0
    manifest = json.loads((models / zoo.MANIFEST).read_text())
    assert [r["name"] for r in manifest["models"]] == SUBSET and (models / zoo.READY).exists()
    assert all(r["flops"] > 0 and r["params"] > 0 for r in manifest["models"])
    devices = [fast_profile(tmp, "zoo-opt", extra='graph_optimization_level = "all"'),
               fast_profile(tmp, "zoo-noopt", extra='graph_optimization_level = "disable"')]
    data = tmp / "data"
    for dev in devices:  # one after the other: two local agents at once would time each other's load
        proc = subprocess.run([sys.executable, "-m", "hwlat", "measure", "--models", str(models), "--out", str(data),
                               "--device", str(dev), "--wait", "600"], cwd=ROOT, capture_output=True, text=True,
                              timeout=900)
        assert proc.returncode == 0, proc.stderr
    return models, data


def _raw(data: Path) -> pd.DataFrame:
    df = pads.dataset(str(data), format="parquet", partitioning="hive").to_table().to_pandas()
    df = df[(df["search_space"] == "onnx") & df["status"].isin(["ok", "unstable"])]
    return df.groupby(["device", "arch"])["latency_ms"].mean().unstack("device")


def test_leave_one_family_out(measured: tuple[Path, Path], tmp_path: Path) -> None:
    _models, data = measured
    out = tmp_path / "zoo.json"
    assert zoo.main(["evaluate", "--data", str(data), "--transfer", str(TRANSFER), "--seeds", "2", "--steps", "20",
                     "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    lat = _raw(data)
    family_of = {e.name: e.family for e in zoo.ZOO}
    assert report["models"] == len(SUBSET) and sorted(report["configurations"]) == ["zoo-noopt", "zoo-opt"]

    runs = report["runs"]
    assert len(runs) == 2 * 2 * 4  # targets x seeds x families
    for run in runs:
        members = sorted(n for n in SUBSET if family_of[n] == run["family"])
        assert sorted(run["held_out"]) == members
        assert len(run["transfer"]) == TRANSFER and len(set(run["transfer"])) == TRANSFER
        assert not set(run["transfer"]) & set(members), run  # the held-out family never leaks into the transfer
        assert run["copy_source"] != run["target"]
    # the transfer choice is fixed by (seed, family): the same on both targets, reproducible
    by_key = {(r["seed"], r["family"], r["target"]): r["transfer"] for r in runs}
    assert all(by_key[(s, f, "zoo-opt")] == by_key[(s, f, "zoo-noopt")] for s, f, _ in by_key)

    preds = pd.DataFrame(report["predictions"])
    assert len(preds) == 2 * 2 * len(SUBSET)
    assert (preds.groupby(["target", "seed", "model"]).size() == 1).all()  # each model once per target and seed
    for row in preds.itertuples():
        assert row.measured_ms == pytest.approx(lat.loc[row.model, row.target], rel=1e-9)
        assert family_of[row.model] == row.family
        run = next(r for r in runs if (r["target"], r["seed"], r["family"]) == (row.target, row.seed, row.family))
        # copy-best-source with one other configuration: its measurement x the geometric-mean ratio on the picks
        src = "zoo-noopt" if row.target == "zoo-opt" else "zoo-opt"
        ratio = np.exp(np.mean(np.log(lat.loc[run["transfer"], row.target] / lat.loc[run["transfer"], src])))
        assert row.copy_best_source_ms == pytest.approx(lat.loc[row.model, src] * ratio, rel=1e-9)
        assert np.isfinite(row.predictor_ms) and row.predictor_ms > 0 and row.predictor_log_std > 0

    for fam, entry in report["families"].items():
        assert entry["predictor"]["spearman"] is None  # no family of the subset has 3 models
        assert sorted(entry["models"]) == sorted(n for n in SUBSET if family_of[n] == fam)
    for method in zoo.METHODS:
        overall = report["overall"][method]
        assert -1.0 <= overall["spearman"] <= 1.0
        assert 0.0 <= overall["within_10pct"] <= 1.0 and 0.0 <= overall["coverage_1sigma"] <= 1.0
        assert 0.0 <= overall["mape"] < 1000.0


def test_a_target_that_is_a_source_times_a_constant(measured: tuple[Path, Path], tmp_path: Path) -> None:
    """A third configuration that is exactly 1.7 x zoo-opt: copy-best-source must pick zoo-opt and be exact,
    whichever family is held out (a wrong source, scale or model row would show here)."""
    _models, data = measured
    rows = pads.dataset(str(data), format="parquet", partitioning="hive").to_table().to_pandas()
    scaled = rows[rows["device"] == "zoo-opt"].copy()
    scaled["device"], scaled["latency_ms"] = "zoo-scaled", scaled["latency_ms"] * 1.7
    folder = tmp_path / "scaled"
    folder.mkdir()
    keep = ["search_space", "arch", "device", "latency_ms", "model_sha256", "status"]
    pd.concat([rows, scaled])[keep].astype({"device": str, "search_space": str}).to_parquet(folder / "rows.parquet")
    shutil.copytree(data / DATASET_GRAPHS, folder / DATASET_GRAPHS)
    out = tmp_path / "scaled.json"
    assert zoo.main(["evaluate", "--data", str(folder), "--targets", "zoo-scaled", "--transfer", str(TRANSFER),
                     "--seeds", "1", "--steps", "20", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert {r["copy_source"] for r in report["runs"]} == {"zoo-opt"}
    copy = report["overall"]["copy_best_source"]
    assert copy["spearman"] == pytest.approx(1.0) and copy["within_10pct"] == 1.0 and copy["mape"] < 1e-9
    preds = pd.DataFrame(report["predictions"])
    assert sorted(preds["model"]) == sorted(SUBSET)


def test_unknown_family_and_too_few_models(measured: tuple[Path, Path], tmp_path: Path) -> None:
    models, data = measured
    assert zoo.main(["evaluate", "--data", str(data), "--transfer", "5", "--seeds", "1", "--steps", "20"]) == 2
    # with --manifest the families are the manifest's: a model it does not name is refused
    manifest = tmp_path / "manifest.json"
    records = json.loads((models / zoo.MANIFEST).read_text())
    records["models"] = records["models"][1:]
    manifest.write_text(json.dumps(records))
    assert zoo.load_zoo(data)[0].names == sorted(SUBSET)
    with pytest.raises(zoo.UsageError, match="no family"):
        zoo.load_zoo(data, manifest=manifest)
