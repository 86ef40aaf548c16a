"""The dataset store: schema, atomic append, compaction and its recovery, readers other than pyarrow."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agents.errors import UsageError
from harness.store import SCHEMA, DatasetStore, MeasuredKey, read_dataset, row_table, summarize


def _row(i: int, status: str = "ok", config: str = "cfg1") -> dict:
    return {
        "schema_version": 1,
        "row_id": f"row{i}",
        "session_id": "s1",
        "config_id": config,
        "arch": f"arch{i}",
        "model_sha256": f"{i:064x}",
        "format": "onnx",
        "status": status,
        "latency_ms": 1.0 + i,
        "raw_ms": [1.0 + i, 1.1 + i, 0.9 + i],
        "input_shape": [1, 3, 32, 32],
        "finished_at": f"2026-11-22T01:0{i % 10}:00+00:00",
        "cpu_model": "test cpu",
    }


def test_row_table_rejects_unknown_columns() -> None:
    with pytest.raises(ValueError, match="not in the schema"):
        row_table([{**_row(0), "bogus": 1}])


def test_append_is_hive_partitioned_and_keeps_every_run(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path)
    store.ensure_writable()
    for i in range(3):
        store.append("dev-a", "nb201", "s1", [_row(i)])
    store.append("dev-b", "fbnet", "s1", [_row(9, status="failed")])
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet"))
    assert files[0].startswith("device=dev-a/search_space=nb201/part-s1-")
    assert any(f.startswith("device=dev-b/search_space=fbnet/") for f in files)
    table = read_dataset(tmp_path)
    assert table.num_rows == 4
    assert set(table.column("device").to_pylist()) == {"dev-a", "dev-b"}
    raw = {r["arch"]: r["raw_ms"] for r in table.select(["arch", "raw_ms"]).to_pylist()}
    assert raw["arch1"] == [2.0, 2.1, 1.9]
    # partition columns live in folder names only
    one = next(tmp_path.rglob("*.parquet"))
    assert "device" not in pq.read_schema(one).names


def test_pandas_polars_duckdb_read_it_unchanged(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    pl = pytest.importorskip("polars")
    duckdb = pytest.importorskip("duckdb")
    store = DatasetStore(tmp_path)
    store.ensure_writable()
    store.append("dev-a", "nb201", "s1", [_row(0), _row(1)])
    store.append("dev-b", "nb201", "s1", [_row(2)])
    frame = pd.read_parquet(tmp_path)
    assert len(frame) == 3 and set(frame["device"].astype(str)) == {"dev-a", "dev-b"}
    pframe = pl.read_parquet(f"{tmp_path}/**/*.parquet", hive_partitioning=True)
    assert pframe.height == 3 and set(pframe["device"].to_list()) == {"dev-a", "dev-b"}
    con = duckdb.connect()
    n, devices = con.execute(
        f"select count(*), count(distinct device) from read_parquet('{tmp_path}/**/*.parquet', hive_partitioning=true)"
    ).fetchone()
    assert (n, devices) == (3, 2)


def test_leftover_temp_files_are_invisible_and_cleaned(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path)
    store.ensure_writable()
    store.append("dev-a", "nb201", "s1", [_row(0)])
    folder = store.partition_dir("dev-a", "nb201")
    (folder / ".part-s1-000009.parquet.abcd.tmp").write_bytes(b"PAR1 half written")
    assert read_dataset(tmp_path).num_rows == 1
    store.close()  # the writer lock: recovery is for the next writer
    DatasetStore(tmp_path).recover()
    assert not list(folder.glob(".*.tmp"))


def test_compaction_merges_a_session_and_recovers_from_a_kill(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path)
    store.ensure_writable()
    for i in range(4):
        store.append("dev-a", "nb201", "s1", [_row(i)])
    store.compact_session("s1")
    folder = store.partition_dir("dev-a", "nb201")
    assert [p.name for p in folder.glob("*.parquet")] == ["part-s1.parquet"]
    assert read_dataset(tmp_path).num_rows == 4

    # A kill after the merged file was complete but before the small parts were removed:
    for i in range(4, 7):
        store.append("dev-a", "nb201", "s2", [_row(i)])
    parts = sorted(folder.glob("part-s2-*.parquet"))
    merged = pa.concat_tables([pq.read_table(p, schema=SCHEMA) for p in parts])
    pq.write_table(merged, folder / ".compact-s2.ready")
    parts[0].unlink()  # the kill happened while deleting
    store.close()  # the writer lock: recovery is for the next writer
    DatasetStore(tmp_path).recover()
    names = sorted(p.name for p in folder.glob("*.parquet"))
    assert names == ["part-s1.parquet", "part-s2.parquet"]
    table = read_dataset(tmp_path)
    assert table.num_rows == 7
    assert len(set(table.column("row_id").to_pylist())) == 7


def test_measured_keys_drive_resume(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path)
    store.ensure_writable()
    store.append("dev-a", "nb201", "s1", [_row(0), _row(1, status="failed"), _row(2, config="cfg2")])
    keys = store.measured_keys("dev-a")
    assert MeasuredKey("dev-a", "cfg1", f"{0:064x}") in keys
    assert MeasuredKey("dev-a", "cfg1", f"{1:064x}") in keys
    assert MeasuredKey("dev-a", "cfg1", f"{2:064x}") not in keys
    assert MeasuredKey("dev-a", "cfg1", f"{1:064x}") not in store.measured_keys("dev-a", ("ok",))
    assert store.measured_keys("dev-b") == set()


def test_summary_counts_failures_and_dates(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path)
    store.ensure_writable()
    store.append("dev-a", "nb201", "s1", [_row(0), _row(1, status="unstable"), _row(2, status="failed")])
    summary = summarize(tmp_path)
    assert summary["rows"] == 3
    dev = summary["devices"]["dev-a"]
    assert (dev["ok"], dev["unstable"], dev["failed"]) == (1, 1, 1)
    assert summary["first"].startswith("2026-11-22T01:00") and summary["last"].startswith("2026-11-22T01:02")


def test_unwritable_output_is_a_usage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError, match="cannot write"):
        DatasetStore(blocker / "sub").ensure_writable()
    if os.geteuid() != 0:  # root can write anywhere; the file-in-the-way case above covers it
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(UsageError):
            DatasetStore(ro / "x").ensure_writable()


def test_missing_dataset_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no dataset"):
        read_dataset(tmp_path / "nope")
