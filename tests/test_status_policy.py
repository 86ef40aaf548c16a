"""One status policy: the predictor's training data and the profile loop use the same rows of a dataset."""

from __future__ import annotations

from pathlib import Path

from agents.records import STATUSES, USABLE_STATUSES
from harness.store import DatasetStore
from hwlat.profiling.loop import measured_latencies
from hwlat.spaces import get_space
from predictor.data import load_table


def test_training_and_profiling_read_the_same_usable_rows(tmp_path: Path) -> None:
    archs = get_space("nb201").sample(len(STATUSES), seed=3)
    rows = [{"schema_version": 1, "row_id": f"r{i}", "session_id": "s1", "config_id": "cfg", "arch": arch,
             "model_sha256": f"{i:064x}", "format": "onnx", "status": status,
             "latency_ms": 2.0 + i if status in USABLE_STATUSES else None, "finished_at": "2026-11-25T00:00:00+00:00"}
            for i, (arch, status) in enumerate(zip(archs, STATUSES, strict=True))]
    store = DatasetStore(tmp_path)
    store.ensure_writable()
    store.append("board", "nb201", "s1", rows)

    usable = {r["arch"] for r in rows if r["status"] in USABLE_STATUSES}
    assert "unstable" in USABLE_STATUSES and len(usable) == len(USABLE_STATUSES)
    trained_on = set(load_table([tmp_path]).df["arch"])
    profiled, attempted, _level = measured_latencies(tmp_path, "board", "cfg", "nb201")
    assert trained_on == set(profiled) == usable
    assert attempted == set(archs)
