"""The ``predictor`` command group: train/predict/bench on the fixture, and one-line errors (exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agents.errors import UsageError
from hwlat.cli.main import main
from predictor.data import load_table

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "predictor_small.parquet"
ARCH0 = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"


def _write(tmp_path: Path, name: str, df: pd.DataFrame) -> Path:
    path = tmp_path / name
    df.to_parquet(path, index=False)
    return path


@pytest.fixture()
def good() -> pd.DataFrame:
    return pd.read_parquet(FIXTURE)


def test_status_filter_and_repeats_are_averaged(tmp_path: Path, good: pd.DataFrame) -> None:
    extra = pd.DataFrame([{"search_space": "nb201", "arch": ARCH0, "device": "dev9", "latency_ms": v, "status": "ok"}
                          for v in (1.0, 3.0)])
    table = load_table([_write(tmp_path, "a.parquet", pd.concat([good, extra]))])
    assert table.device_series("nb201", "dev9").loc[ARCH0] == 2.0
    assert np.isfinite(table.df["latency_ms"]).all()  # the fixture's status=error NaN rows are dropped


def test_hive_partitioned_folder(tmp_path: Path, good: pd.DataFrame) -> None:
    folder = tmp_path / "ds"
    for dev, g in good[good["search_space"] == "nasbench201"].groupby("device"):
        part = folder / f"device={dev}"
        part.mkdir(parents=True)
        g.drop(columns=["device"]).to_parquet(part / "part-0.parquet", index=False)
    table = load_table([folder])
    assert table.devices("nb201") == [f"dev{i}" for i in range(6)]


@pytest.mark.parametrize("case", ["missing_column", "unknown_space", "nan_latency", "bad_arch"])
def test_malformed_data_is_a_usage_error(tmp_path: Path, good: pd.DataFrame, case: str) -> None:
    df = good.copy()
    if case == "missing_column":
        df = df.drop(columns=["latency_ms"])
    elif case == "unknown_space":
        df.loc[0, "search_space"] = "darts"
    elif case == "nan_latency":
        df.loc[3, "latency_ms"] = float("nan")  # an ok row without a latency
        assert df.loc[3, "status"] == "ok"
    else:
        df.loc[0, "arch"] = "|conv~0|"
    path = _write(tmp_path, "bad.parquet", df)
    with pytest.raises(UsageError) as err:
        load_table([path])
    assert "\n" not in str(err.value)
    assert main(["predictor", "train", "--data", str(path), "--out", str(tmp_path / "m.pt")]) == 2


def test_subprocess_exit_code_and_one_line(tmp_path: Path, good: pd.DataFrame) -> None:
    path = _write(tmp_path, "bad.parquet", good.drop(columns=["device"]))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "hwlat", "predictor", "train", "--data", str(path),
                           "--out", str(tmp_path / "m.pt")], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hwlat: ") and "device" in lines[0]


def test_train_predict_bench_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "m.pt"
    assert main(["predictor", "train", "--data", str(FIXTURE), "--out", str(model), "--steps", "40"]) == 0
    out = tmp_path / "pred.parquet"
    assert main(["predictor", "predict", "--model", str(model), "--device", "dev1", "--space", "nb201",
                 "--out", str(out)]) == 0
    pred = pd.read_parquet(out)
    assert len(pred) == 15625 and pred["arch"].iloc[0] == ARCH0 and pred["arch_index"].iloc[-1] == 15624
    assert (pred["latency_ms"] > 0).all() and (pred["log_std"] >= 0).all()

    archs = tmp_path / "archs.txt"
    archs.write_text(f"{ARCH0}\n")
    assert main(["predictor", "predict", "--model", str(model), "--device", "dev1", "--space", "nb201",
                 "--archs", str(archs), "--out", str(out)]) == 0
    assert pd.read_parquet(out)["latency_ms"].iloc[0] == pytest.approx(pred["latency_ms"].iloc[0], rel=1e-6)
    assert main(["predictor", "predict", "--model", str(model), "--device", "nope", "--space", "nb201",
                 "--out", str(out)]) == 2

    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps({"tasks": [{"search_space": "nasbench201", "paper_name": "T1",
                                            "train_devices": ["dev0", "dev1", "dev2", "dev3"],
                                            "test_devices": ["dev4", "dev5"]}]}))
    report = tmp_path / "bench.json"
    assert main(["predictor", "bench", "--data", str(FIXTURE), "--tasks", str(tasks), "--samples", "5",
                 "--seeds", "2", "--steps", "40", "--json", str(report)]) == 0
    got = json.loads(report.read_text())["tasks"]["T1"]
    for key in ("spearman", "kendall", "mape", "within_10pct", "coverage_1sigma", "seconds"):
        assert np.isfinite(got[key])
    assert 0.0 <= got["coverage_1sigma"] <= 1.0
    assert len(got["devices"]["dev4"]["spearman"]) == 2
    assert "T1" in capsys.readouterr().out
    assert main(["predictor", "bench", "--data", str(FIXTURE), "--tasks", str(tasks), "--task", "ND",
                 "--json", str(report)]) == 2


def test_exclude_device_leaves_its_rows_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`train --exclude-device` trains without that device (it is then unknown to predict); an unknown name is a
    one-line usage error, nothing written."""
    model = tmp_path / "m.pt"
    assert main(["predictor", "train", "--data", str(FIXTURE), "--out", str(model), "--steps", "20",
                 "--exclude-device", "dev1"]) == 0
    out = tmp_path / "pred.parquet"
    assert main(["predictor", "predict", "--model", str(model), "--device", "dev1", "--space", "nb201",
                 "--out", str(out)]) == 2
    assert main(["predictor", "predict", "--model", str(model), "--device", "dev2", "--space", "nb201",
                 "--out", str(out)]) == 0
    other = tmp_path / "other.pt"
    capsys.readouterr()
    assert main(["predictor", "train", "--data", str(FIXTURE), "--out", str(other), "--steps", "20",
                 "--exclude-device", "devX"]) == 2
    assert capsys.readouterr().err.strip() == "hwlat: --exclude-device devX: no such device in the data"
    assert not other.exists()
