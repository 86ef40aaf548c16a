"""The latency dataset: the one module that owns the Parquet schema (documented in docs/dataset.md).

Layout: ``DIR/device=<name>/search_space=<space>/part-<session>-<seq>.parquet`` (hive partitioning), so
pandas, polars and DuckDB read the folder unchanged. The partition columns live in the folder names only.

Append-only and atomic: every write goes to a hidden temp file (readers ignore names starting with '.')
and is renamed into place, so killing the process at any moment leaves a readable dataset. Each result is
flushed as soon as it arrives; at the end of a session its small files are merged into one
(``compact_session``) through a marker file, so a kill during the merge is finished on the next open.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from agents.errors import UsageError
from agents.files import atomic_path, fsync_dir
from agents.records import AGENT_STATUSES, STATUSES

SCHEMA_VERSION = 1
PARTITIONS = ("device", "search_space")

_TS = pa.timestamp("us", tz="UTC")

#: Every column of a row, in order. The partition columns (device, search_space) are not stored in the
#: files; readers get them back from the folder names.
SCHEMA = pa.schema(
    [
        # identity
        ("schema_version", pa.int16()),
        ("row_id", pa.string()),
        ("session_id", pa.string()),
        ("run_id", pa.string()),
        ("job_id", pa.string()),
        ("order_index", pa.int32()),
        # device and configuration
        ("config_id", pa.string()),
        ("device_host", pa.string()),
        ("hostname", pa.string()),
        ("cpu_model", pa.string()),
        ("cores_logical", pa.int32()),
        ("cores_physical", pa.int32()),
        ("ram_mb", pa.int64()),
        ("os", pa.string()),
        ("machine", pa.string()),
        ("board_model", pa.string()),
        ("gpu", pa.string()),
        ("python_version", pa.string()),
        ("fingerprint_json", pa.string()),
        # model
        ("arch", pa.string()),
        ("arch_index", pa.int64()),
        ("model_sha256", pa.string()),
        ("format", pa.string()),
        ("input_shape", pa.list_(pa.int64())),
        ("input_shapes_json", pa.string()),
        ("batch", pa.int32()),
        ("resolution", pa.int32()),
        ("flops", pa.int64()),
        ("params", pa.int64()),
        # runtime
        ("runtime", pa.string()),
        ("runtime_version", pa.string()),
        ("provider", pa.string()),
        ("providers", pa.list_(pa.string())),
        ("threads", pa.int32()),
        ("inter_op_threads", pa.int32()),
        ("graph_optimization_level", pa.string()),
        # outcome
        ("status", pa.string()),
        ("error_type", pa.string()),
        ("error", pa.string()),
        ("load_ms", pa.float64()),
        ("first_ms", pa.float64()),
        ("latency_ms", pa.float64()),
        ("mean_ms", pa.float64()),
        ("std_ms", pa.float64()),
        ("min_ms", pa.float64()),
        ("max_ms", pa.float64()),
        ("p90_ms", pa.float64()),
        ("p99_ms", pa.float64()),
        ("cv", pa.float64()),
        ("robust_cv", pa.float64()),
        ("ci95_low_ms", pa.float64()),
        ("ci95_high_ms", pa.float64()),
        ("n_outliers", pa.int32()),
        ("n_runs", pa.int32()),
        ("warmup_runs", pa.int32()),
        ("stop_reason", pa.string()),
        ("raw_ms", pa.list_(pa.float64())),
        ("timing_json", pa.string()),
        # system state around the model
        ("load1_before", pa.float64()),
        ("load1_after", pa.float64()),
        ("busy_pct_before", pa.float64()),
        ("busy_pct_after", pa.float64()),
        ("cpu_freq_mhz_before", pa.float64()),
        ("cpu_freq_mhz_after", pa.float64()),
        ("temp_c_before", pa.float64()),
        ("temp_c_after", pa.float64()),
        ("mem_available_mb_before", pa.float64()),
        ("mem_available_mb_after", pa.float64()),
        ("governor", pa.string()),
        ("system_before_json", pa.string()),
        ("system_after_json", pa.string()),
        # drift reference: the session's reference model, re-measured every K models
        ("ref_model_sha256", pa.string()),
        ("ref_latency_ms", pa.float64()),
        ("ref_index", pa.int32()),
        ("ref_drift_pct", pa.float64()),
        # time and provenance
        ("started_at", _TS),
        ("finished_at", _TS),
        ("hwlat_version", pa.string()),
        ("agent_version", pa.string()),
    ]
)

#: Outcomes that count as "measured" for resume: re-running the same command skips these. Every status an
#: agent reports; not ``export_failed`` (no device saw the model, so a re-run tries the export again).
DONE_STATUSES = AGENT_STATUSES
#: Where ``DatasetStore.log`` writes: readers skip folders starting with ``_``.
LOG_DIR = "_logs"


@dataclass(frozen=True)
class MeasuredKey:
    """What makes a measurement the same measurement: device + configuration + exact model file."""

    device: str
    config_id: str
    model_sha256: str


def _parse_ts(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def row_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows (dicts keyed by SCHEMA names) -> a table with exactly the schema; unknown keys are an error."""
    names = set(SCHEMA.names)
    for row in rows:
        extra = set(row) - names
        if extra:
            raise ValueError(f"columns not in the schema: {sorted(extra)}")
    columns = {}
    for field in SCHEMA:
        values = [row.get(field.name) for row in rows]
        if field.type == _TS:
            values = [_parse_ts(v) if isinstance(v, str) else v for v in values]
        columns[field.name] = pa.array(values, type=field.type)
    return pa.table(columns, schema=SCHEMA)


def _write_atomic(table: pa.Table, final: Path) -> None:
    with atomic_path(final) as tmp:
        pq.write_table(table, tmp, compression="zstd")


class DatasetStore:
    """Append-only writer and reader of one dataset folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._seq = 0

    def ensure_writable(self) -> None:
        """Create the folder and prove we can write there, before anything is measured."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".probe-{uuid.uuid4().hex[:8]}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise UsageError(f"cannot write to output folder {self.root}: {exc.strerror or exc}") from None
        self.recover()

    def partition_dir(self, device: str, space: str) -> Path:
        return self.root / f"device={device}" / f"search_space={space}"

    def append(self, device: str, space: str, session_id: str, rows: list[dict[str, Any]]) -> Path:
        """Write rows as one new part file, atomically."""
        folder = self.partition_dir(device, space)
        folder.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        final = folder / f"part-{session_id}-{self._seq:06d}.parquet"
        _write_atomic(row_table(rows), final)
        return final

    def compact_session(self, session_id: str) -> None:
        """Merge one session's part files per partition into one file.

        Protocol: write the merged file hidden, rename it to a ``.ready`` marker (complete from here on),
        delete the small parts, rename the marker into place. ``recover`` finishes an interrupted merge.
        """
        for folder in self._partition_dirs():
            parts = sorted(folder.glob(f"part-{session_id}-*.parquet"))
            if len(parts) < 2:
                continue
            table = pa.concat_tables([pq.read_table(p, schema=SCHEMA) for p in parts])
            ready = folder / f".compact-{session_id}.ready"
            _write_atomic(table, ready)
            self._finish_compaction(ready, session_id)

    def _finish_compaction(self, ready: Path, session_id: str) -> None:
        folder = ready.parent
        for part in folder.glob(f"part-{session_id}-*.parquet"):
            part.unlink()
        os.replace(ready, folder / f"part-{session_id}.parquet")
        fsync_dir(folder)

    def recover(self) -> None:
        """Finish merges a kill interrupted and drop temp files left by killed writers."""
        for folder in self._partition_dirs():
            for ready in folder.glob(".compact-*.ready"):
                session_id = ready.name[len(".compact-") : -len(".ready")]
                self._finish_compaction(ready, session_id)
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)

    def _partition_dirs(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return [p for p in self.root.glob("device=*/search_space=*") if p.is_dir()]

    def measured_keys(self, device: str, statuses: Iterable[str] = DONE_STATUSES) -> set[MeasuredKey]:
        """Keys already in the dataset for a device (any space), for resume."""
        wanted = set(statuses)
        keys: set[MeasuredKey] = set()
        for folder in self.root.glob(f"device={device}/search_space=*"):
            for part in folder.glob("part-*.parquet"):
                table = pq.read_table(part, columns=["config_id", "model_sha256", "status"])
                for cfg, sha, status in zip(*(table.column(c).to_pylist() for c in table.column_names),
                                            strict=True):
                    if status in wanted:
                        keys.add(MeasuredKey(device, cfg, sha))
        return keys


    def log(self, session_id: str, message: str) -> None:
        """Append one line to the session's log, ``DIR/_logs/<session_id>.log`` (what failed, and why).

        Best effort: the log must never hide the failure it reports, so a log that cannot be written (the
        disk that just filled up) is given up silently; the message also reaches the terminal.
        """
        line = f"{datetime.now(UTC).isoformat(timespec='seconds')} {' '.join(message.split())}\n".encode()
        try:
            folder = self.root / LOG_DIR
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(folder / f"{session_id}.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass


def read_dataset(path: Path | str) -> pa.Table:
    """Read a dataset folder (or one Parquet file) with the partition columns restored."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"no dataset at {path}")
    try:
        if path.is_file():
            return pq.read_table(path)
        partitioning = ds.partitioning(pa.schema([(name, pa.string()) for name in PARTITIONS]), flavor="hive")
        dataset = ds.dataset(path, format="parquet", partitioning=partitioning, exclude_invalid_files=True)
        return dataset.to_table()
    except (pa.ArrowInvalid, OSError) as exc:
        raise UsageError(f"cannot read dataset {path}: {exc}") from None


def summarize(path: Path | str) -> dict[str, Any]:
    """What ``hwlat datasets show`` prints: devices, spaces, rows, failures, unstable rows, date range."""
    table = read_dataset(path)
    if table.num_rows == 0:
        return {"rows": 0, "devices": {}, "spaces": {}, "status": {}, "first": None, "last": None}
    cols = table.column_names
    need = {"device", "search_space"}
    if not need <= set(cols):
        raise UsageError(f"{path} is not an hwlat dataset (missing columns {sorted(need - set(cols))})")
    devices = table.column("device").to_pylist()
    spaces = table.column("search_space").to_pylist()
    statuses = table.column("status").to_pylist() if "status" in cols else ["ok"] * table.num_rows
    summary: dict[str, Any] = {"rows": table.num_rows, "devices": {}, "spaces": {}, "status": {}}
    for dev, space, status in zip(devices, spaces, statuses, strict=True):
        entry = summary["devices"].setdefault(str(dev), {"rows": 0, **dict.fromkeys(STATUSES, 0), "spaces": set()})
        entry["rows"] += 1
        entry[status if status in entry else "failed"] += 1
        entry["spaces"].add(str(space))
        summary["spaces"][str(space)] = summary["spaces"].get(str(space), 0) + 1
        summary["status"][status] = summary["status"].get(status, 0) + 1
    for entry in summary["devices"].values():
        entry["spaces"] = sorted(entry["spaces"])
    if "finished_at" in cols:
        times = [t for t in table.column("finished_at").to_pylist() if t is not None]
        summary["first"] = min(times).isoformat() if times else None
        summary["last"] = max(times).isoformat() if times else None
    else:
        summary["first"] = summary["last"] = None
    if "cpu_model" in cols:
        models: dict[str, str] = {}
        for dev, cpu in zip(devices, table.column("cpu_model").to_pylist(), strict=True):
            if cpu:
                models.setdefault(str(dev), cpu)
        for dev, cpu in models.items():
            summary["devices"][dev]["cpu_model"] = cpu
    return summary


def dumps_compact(obj: Any) -> str:
    """JSON for the *_json columns: sorted keys so equal states compare equal as strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
