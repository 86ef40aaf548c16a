"""The published NB201 table bundled beside the datasets (HELP's 27 devices, datasets/_published/nb201-help):
it is the source's data, hidden from the hive readers, listed by `hwlat datasets show`, and taken by
`hwlat predictor train` and `bench` beside datasets/ (docs/datasets.md)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness.store import read_dataset
from hwlat.spaces import get_space
from predictor.data import load_table

REPO = Path(__file__).resolve().parents[1]
FOLDER = REPO / "datasets" / "_published" / "nb201-help"
TABLE = FOLDER / "latency.parquet"
SHARED = REPO.parent / "shared" / "data" / "nb201"
DERIVE = FOLDER / "derive.py"


def run(*args: str, rc: int = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == rc, proc.stderr[-2000:]
    return proc


def test_the_table_holds_every_nb201_arch_on_27_devices_once() -> None:
    df = pd.read_parquet(TABLE)
    assert list(df.columns) == ["search_space", "arch_index", "arch", "device", "latency_ms"]
    assert len(df) == 15625 * 27 and df["device"].nunique() == 27 and set(df["search_space"]) == {"nb201"}
    assert not df.duplicated(["device", "arch"]).any() and (df["latency_ms"] > 0).all()
    archs = list(get_space("nb201").all_archs())  # index order: arch_index is NB201's own
    assert (df["arch"] == [archs[i] for i in df["arch_index"]]).all()
    devices = pd.read_csv(FOLDER / "devices.csv")
    assert sorted(devices["device"]) == sorted(df["device"].unique())
    assert (FOLDER / "LICENSE").read_text().count("MIT License") == 1 and "HELP" in (FOLDER / "NOTICE").read_text()


@pytest.mark.skipif(not (SHARED / "latency_long.parquet").exists(), reason="needs ../shared/data/nb201")
def test_derived_from_the_shared_table_with_every_value_unchanged(tmp_path: Path) -> None:
    run(str(DERIVE), str(SHARED), str(tmp_path))
    assert pd.read_parquet(tmp_path / "latency.parquet").equals(pd.read_parquet(TABLE))
    assert (tmp_path / "devices.csv").read_text() == (FOLDER / "devices.csv").read_text()
    src = pd.read_parquet(SHARED / "latency_long.parquet").sort_values(["arch_index", "device"])
    ours = pd.read_parquet(TABLE)
    assert (src["arch"].to_numpy() == ours["arch"].to_numpy()).all()
    assert (src["latency_ms"].to_numpy() == ours["latency_ms"].to_numpy()).all()  # bit for bit
    # what the predictor reads from it is what it reads from the shared table: bench figures are the same
    assert load_table([TABLE]).fingerprint() == load_table([SHARED / "latency_long.parquet"]).fingerprint()


def test_hive_readers_of_datasets_do_not_see_it() -> None:
    help_devices = set(pd.read_parquet(TABLE, columns=["device"])["device"])
    for frame in (read_dataset(REPO / "datasets").to_pandas(), pd.read_parquet(REPO / "datasets")):
        assert not help_devices & set(frame["device"].astype(str)) and len(frame) < 15625


def test_datasets_show_lists_it_apart_from_the_measured_rows() -> None:
    text = run("-m", "hwlat", "datasets", "show", "datasets").stdout
    line = next(ln for ln in text.splitlines() if "_published/nb201-help/latency.parquet" in ln)
    assert "27 devices x 15625 archs, 421875 rows" in line and "HELP" in line and "MIT" in line
    doc = json.loads(run("-m", "hwlat", "datasets", "show", "datasets", "--json").stdout)
    assert doc["published"] == [{"path": "_published/nb201-help/latency.parquet", "rows": 421875, "spaces": ["nb201"],
                                 "devices": 27, "archs": 15625, "credit": doc["published"][0]["credit"]}]
    assert doc["rows"] == len(read_dataset(REPO / "datasets"))  # the measured rows' counts are unchanged


def test_an_unreadable_published_table_is_named_and_exit_4(tmp_path: Path) -> None:
    shutil.copytree(REPO / "datasets" / "device=epyc2c-ort-t2", tmp_path / "device=epyc2c-ort-t2")
    (tmp_path / "_published" / "broken").mkdir(parents=True)
    (tmp_path / "_published" / "broken" / "t.parquet").write_bytes(b"PAR1 not really")
    proc = run("-m", "hwlat", "datasets", "show", str(tmp_path), rc=4)
    assert proc.stderr.strip().startswith("hwlat: cannot read the published table _published/broken/t.parquet")
    assert len(proc.stderr.strip().splitlines()) == 1 and "epyc2c-ort-t2" in proc.stdout


def test_the_loader_takes_it_beside_datasets() -> None:
    table = load_table([REPO / "datasets", TABLE])
    assert len(table.devices("nb201")) == 27 + len(load_table([REPO / "datasets"]).devices("nb201"))
    assert len(table.device_series("nb201", "pixel2")) == 15625


@pytest.mark.slow
def test_the_bundled_predictors_training_subset_trains(tmp_path: Path) -> None:
    """The rebuild command of docs/datasets.md, with 20 steps: every HELP device on the archs of datasets/."""
    subset = tmp_path / "help-train.parquet"
    run(str(DERIVE), "--subset-of", "datasets", str(FOLDER), str(subset))
    rows = pd.read_parquet(subset)
    ours = read_dataset(REPO / "datasets").to_pandas()
    assert set(rows["arch"]) == set(ours.loc[ours["search_space"].astype(str) == "nb201", "arch"])
    assert rows.groupby("device").size().eq(rows["arch"].nunique()).all() and rows["device"].nunique() == 27
    model = tmp_path / "m.pt"
    run("-m", "hwlat", "predictor", "train", "--data", "datasets", "--data", str(subset), "--out", str(model),
        "--steps", "20")
    info = json.loads(run("-m", "hwlat", "predictor", "info", str(model), "--json").stdout)
    assert {"pixel2", "raspi4", "titan_rtx_256", "epyc2c-ort-t1"} <= set(info["spaces"]["nb201"]["pretrained"])


@pytest.mark.slow
def test_bench_reads_it_beside_data_of_other_spaces(tmp_path: Path) -> None:
    """datasets/ also holds FBNet rows: bench uses only the tasks' space (issue 9)."""
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps({"tasks": [{"search_space": "nb201", "paper_name": "H1",
                                            "train_devices": ["pixel2", "gold_6226", "titan_rtx_1"],
                                            "test_devices": ["epyc2c-ort-t1"]}]}))
    out = tmp_path / "b.json"
    run("-m", "hwlat", "predictor", "bench", "--data", "datasets", "--data", str(TABLE), "--tasks", str(tasks),
        "--samples", "10", "--seeds", "1", "--steps", "20", "--json", str(out))
    result = json.loads(out.read_text())["tasks"]["H1"]
    assert list(result["devices"]) == ["epyc2c-ort-t1"] and 0.0 < result["spearman"] <= 1.0
