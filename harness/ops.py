"""Operator-level times (``hwlat measure --op-profile``): a table beside the dataset, ``DIR/_ops/``.

One Parquet file per profiled model, ``_ops/part-<session>-<device>-<job>.parquet``, written atomically when
its result arrives; one row per operator (graph node): its median kernel time over the recorded inferences of
a separate profiled session run after the timed loop (agents/backends/onnxruntime.py). Keyed by
``model_sha256`` + ``op_name`` with the device and ``config_id`` of the measurement. The folder starts with
``_`` so the dataset readers (``read_dataset``, pandas and pyarrow on ``DIR``) never take it for measurement
rows; read it on its own (docs/dataset.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from agents.files import atomic_path

OPS_DIR = "_ops"

OPS_SCHEMA = pa.schema(
    [
        ("model_sha256", pa.string()),
        ("device", pa.string()),
        ("config_id", pa.string()),
        ("session_id", pa.string()),
        ("run_id", pa.string()),
        ("job_id", pa.string()),
        ("search_space", pa.string()),
        ("arch", pa.string()),
        ("runtime", pa.string()),
        ("runtime_version", pa.string()),
        ("node_index", pa.int32()),
        ("op_name", pa.string()),
        ("op_type", pa.string()),
        ("provider", pa.string()),
        ("duration_us", pa.float64()),
        ("runs", pa.int32()),
    ]
)


def op_rows(row: dict[str, Any], device: str, search_space: str, op_times: list[dict[str, Any]]) -> list[dict]:
    """The operator rows of one measurement: ``row`` is its dataset row (harness.store.SCHEMA names)."""
    keys = ("model_sha256", "config_id", "session_id", "run_id", "job_id", "arch", "runtime", "runtime_version")
    common = {k: row.get(k) for k in keys} | {"device": device, "search_space": search_space}
    return [common | {"node_index": i, "op_name": str(op.get("op_name", "")), "op_type": str(op.get("op_type", "")),
                      "provider": str(op.get("provider", "")), "duration_us": float(op.get("duration_us", 0.0)),
                      "runs": op.get("runs")}
            for i, op in enumerate(op_times)]


def append_ops(root: Path, rows: list[dict[str, Any]]) -> Path | None:
    """Write one measurement's operator rows as ``root/_ops/part-<session>-<device>-<job>.parquet`` (atomic)."""
    if not rows:
        return None
    folder = Path(root) / OPS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    first = rows[0]
    final = folder / f"part-{first['session_id']}-{first['device']}-{first['job_id']}.parquet"
    table = pa.table({f.name: pa.array([r.get(f.name) for r in rows], type=f.type) for f in OPS_SCHEMA},
                     schema=OPS_SCHEMA)
    with atomic_path(final) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return final
