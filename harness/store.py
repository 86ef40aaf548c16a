"""The latency dataset: the one module that owns the Parquet schema (documented in docs/dataset.md).

Layout: ``DIR/device=<name>/search_space=<space>/part-<session>-<seq>.parquet`` (hive partitioning), so
pandas, polars and DuckDB read the folder unchanged. The partition columns live in the folder names only.

Append-only and atomic: every write goes to a hidden temp file (readers ignore names starting with '.')
and is renamed into place, so killing the process at any moment leaves a readable dataset. Each result is
flushed as soon as it arrives; at the end of a session its small files are merged into one
(``compact_session``): the merged file is renamed into place *before* the small files are removed, and a
small file whose rows are all in its session's merged file is skipped by every reader here, so a kill at
any point of a merge leaves every row visible (exactly once to these readers).

One writer at a time: a writer holds ``flock`` on ``DIR/.hwlat-writer.lock`` from ``ensure_writable`` on,
and only the holder cleans up (temp files, unfinished merges) or moves damaged files aside. Part files are
written with Parquet page checksums; every read here verifies them, and a part that cannot be read is
reported by name (``DamagedPartError``) instead of being skipped silently or hiding the rest of the data.
The next writer moves it to ``DIR/.quarantine/`` (bytes kept, out of the readers' way) and resumes.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import urllib.parse
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from agents.errors import BusyError, UsageError
from agents.files import atomic_path, fsync_dir
from agents.records import AGENT_STATUSES, STATUSES
from hwlat.spaces import one_line

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
        # the network measured: the file at its input shapes (hwlat.spaces.graph.network_key; null in rows
        # written before it existed, read as model_sha256 by ``row_model_key``)
        ("model_key", pa.string()),
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
        # memory and cooldown (null in rows written before these columns existed)
        ("base_rss_mb", pa.float64()),
        ("peak_rss_mb", pa.float64()),
        ("cooldown_s", pa.float64()),
        ("start_temp_c", pa.float64()),
        # drift reference: the session's reference model, re-measured every K models
        ("ref_model_sha256", pa.string()),
        ("ref_latency_ms", pa.float64()),
        ("ref_index", pa.int32()),
        ("ref_drift_pct", pa.float64()),
        # rounds (harness/rounds.py; null in rows written before rounds existed): one entry per round measured,
        # kept or discarded, in measurement order; raw_ms holds their samples one round after another
        ("rounds", pa.int32()),
        ("round_medians_ms", pa.list_(pa.float64())),
        ("round_n_runs", pa.list_(pa.int32())),
        ("round_kept", pa.list_(pa.bool_())),
        ("round_started_at", pa.list_(_TS)),
        ("round_session_ids", pa.list_(pa.string())),
        ("round_busy_pct", pa.list_(pa.float64())),
        ("round_drift_factor", pa.list_(pa.float64())),
        ("round_ref_ms", pa.list_(pa.float64())),
        ("pooled_median_ms", pa.float64()),
        ("remeasured_rounds", pa.int32()),
        ("remeasure_reasons", pa.list_(pa.string())),
        # drift correction: the reference's speed interpolated in time at the model's rounds
        ("drift_factor", pa.float64()),
        ("latency_corrected_ms", pa.float64()),
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

#: The writer lock, inside the dataset folder (hidden: readers skip it).
LOCK_FILE = ".hwlat-writer.lock"
#: Where a writer moves part files that cannot be read (hidden: readers skip it; bytes kept for forensics).
QUARANTINE_DIR = ".quarantine"
#: Columns every hwlat part file has, in any schema version: a readable Parquet file without them is foreign.
IDENTITY_COLUMNS = ("row_id", "session_id", "config_id", "model_sha256", "status")
#: The columns resume reads (``DatasetStore.measured_keys``); ``model_key`` and ``input_shapes_json`` may be absent.
_KEY_COLUMNS = ("config_id", "model_sha256", "model_key", "input_shapes_json", "status")
#: A session's small part (``part-<session>-<seq>.parquet``); ``part-<session>.parquet`` is its merge.
_SMALL_PART = re.compile(r"^part-(?P<session>.+)-\d{6}\.parquet$")


class DamagedPartError(UsageError):
    """A part file of a dataset cannot be read (truncated, zero bytes, bad checksum, not Parquet)."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"damaged part file {path} ({why}); the next `hwlat measure --out` on this dataset moves "
                         f"it to {QUARANTINE_DIR}/ and measures its rows again")
        self.path = path
        self.why = why


class DatasetBusyError(BusyError):
    """Another process holds the dataset's writer lock."""


@dataclass(frozen=True)
class MeasuredKey:
    """What makes a measurement the same measurement: device + configuration + network measured.

    ``model_key``: the row's ``model_key`` (``hwlat.spaces.graph.network_key``): the model file's sha256 when it
    was measured at its own input shapes (every static file, every exported network), else the sha256 and a
    digest of the shapes, so one file measured at two sizes is two measurements.
    """

    device: str
    config_id: str
    model_key: str


def row_model_key(model_key: str | None, model_sha256: str | None) -> str | None:
    """A row's network (``MeasuredKey.model_key``): its ``model_key``, or for rows written before that column
    existed, its ``model_sha256`` (what they were matched by then: their identity does not change)."""
    return model_key or model_sha256


def _legacy_sized_key(model_sha256: str, input_shapes_json: str | None) -> str | None:
    """For a row without ``model_key``: the key its network has if it was measured at other shapes than its
    file's own (``graph_key`` of the sha256 and the row's shapes), so that an older dataset that holds one file
    with dynamic dimensions at some size resumes at that size. None when the row has no readable shapes."""
    from hwlat.spaces.graph import graph_key

    try:
        shapes = json.loads(input_shapes_json) if input_shapes_json else None
        return graph_key(model_sha256, shapes) if isinstance(shapes, dict) and shapes else None
    except (ValueError, TypeError):
        return None


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
        pq.write_table(table, tmp, compression="zstd", write_page_checksum=True)


def read_part(path: Path, columns: list[str] | None = None) -> pa.Table:
    """One Parquet file, page checksums verified; any failure to read it is a ``DamagedPartError`` naming it."""
    try:
        return pq.read_table(path, columns=columns, page_checksum_verification=True)
    except (pa.ArrowException, OSError, ValueError) as exc:  # pyarrow raises several types for damage
        raise DamagedPartError(path, one_line(exc, 160)) from None


def _hidden(rel: Path) -> bool:
    """pyarrow's, pandas' and DuckDB's rule: a path component starting with '.' or '_' is not data."""
    return any(part.startswith((".", "_")) for part in rel.parts)


def parquet_files(root: Path) -> list[Path]:
    """Every data file under ``root`` as dataset readers see it (hidden folders and files skipped), sorted."""
    return sorted(p for p in root.rglob("*.parquet") if p.is_file() and not _hidden(p.relative_to(root)))


def _row_ids(path: Path) -> set[str] | None:
    try:
        return set(read_part(path, ["row_id"]).column("row_id").to_pylist())
    except (DamagedPartError, KeyError):
        return None


def _superseded(files: list[Path]) -> set[Path]:
    """Small parts whose rows are all in their session's merged file (a merge killed before its cleanup).

    Decided by row_id, not by name alone: a part written after the merge, or next to a damaged merged
    file, stays visible.
    """
    present = set(files)
    out: set[Path] = set()
    merged_ids: dict[Path, set[str] | None] = {}
    for path in files:
        match = _SMALL_PART.match(path.name)
        merged = path.parent / f"part-{match['session']}.parquet" if match else None
        if merged is None or merged not in present:
            continue
        if merged not in merged_ids:
            merged_ids[merged] = _row_ids(merged)
        mine, theirs = _row_ids(path), merged_ids[merged]
        if mine is not None and theirs is not None and mine <= theirs:
            out.add(path)
    return out


def _with_partitions(table: pa.Table, rel_dir: Path) -> pa.Table:
    """Add the hive partition columns (``key=value`` folder names) the way pyarrow's dataset reader does."""
    for part in rel_dir.parts:
        key, sep, value = part.partition("=")
        if sep and key not in table.column_names:
            table = table.append_column(key, pa.array([urllib.parse.unquote(value)] * table.num_rows, pa.string()))
    return table


def scan_dataset(path: Path | str) -> tuple[pa.Table, list[DamagedPartError]]:
    """Read a dataset folder (or one file): (every readable row, one error per damaged file).

    Each file is read on its own, so one damaged file costs only its own rows, and is named.
    """
    path = Path(path)
    if not path.exists():
        raise UsageError(f"no dataset at {path}")
    if path.is_file():
        return read_part(path), []
    files = parquet_files(path)
    damaged: list[DamagedPartError] = []
    readable: list[Path] = []
    for file in files:
        try:
            pq.read_metadata(file)
            readable.append(file)
        except (pa.ArrowException, OSError, ValueError) as exc:
            damaged.append(DamagedPartError(file, one_line(exc, 160)))
    skip = _superseded(readable)
    tables = []
    for file in readable:
        if file in skip:
            continue
        try:
            tables.append(_with_partitions(read_part(file), file.parent.relative_to(path)))
        except DamagedPartError as exc:
            damaged.append(exc)
    if not tables:
        return pa.table({}), damaged
    try:
        table = pa.concat_tables(tables, promote_options="default")
    except (pa.ArrowException, ValueError) as exc:
        raise UsageError(f"cannot read dataset {path}: files disagree on their columns ({one_line(exc, 160)})") \
            from None
    if "schema_version" in table.column_names:  # rows written before a column was added read it as null
        for field in SCHEMA:
            if field.name not in table.column_names:
                table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    return table, damaged


class DatasetStore:
    """Append-only writer and reader of one dataset folder."""

    def __init__(self, root: Path) -> None:
        if not str(root).strip():
            raise UsageError("the dataset folder is an empty string; give a folder, e.g. --out data/latency")
        self.root = Path(root)
        self._seq = 0
        self._lock: Any = None
        #: Damaged part files this writer moved aside: (where they were, where they are now, why).
        self.quarantined: list[tuple[Path, Path, str]] = []

    def ensure_writable(self) -> None:
        """Refuse a folder that is not a dataset, take the writer lock, then tidy up: before anything is measured.

        Order matters: nothing is created in a refused folder, and nothing is deleted or moved before the
        lock proves no other writer is using these files.
        """
        self._refuse_foreign()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".probe-{uuid.uuid4().hex[:8]}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise UsageError(f"cannot write to output folder {self.root}: {exc.strerror or exc}") from None
        self._take_lock()
        self._quarantine_damaged()
        self.recover()

    def close(self) -> None:
        """Release the writer lock (it is also released when the process dies)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _take_lock(self) -> None:
        """flock on ``DIR/.hwlat-writer.lock``: a second writer is refused at once, with the holder's pid."""
        if self._lock is not None:
            return
        fh = open(self.root / LOCK_FILE, "a+", encoding="utf-8")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read(32).strip() or "?"
            fh.close()
            raise DatasetBusyError(f"another hwlat process (pid {holder}) is writing to {self.root}; wait for it "
                                   "to finish or stop it") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._lock = fh

    def _refuse_foreign(self) -> None:
        """``--out`` inside another dataset, or a folder whose Parquet files are not an hwlat dataset: refused."""
        here = self.root.resolve()
        partitions = [f for f in (here, *here.parents) if "=" in f.name and f.name.split("=")[0] in PARTITIONS]
        if partitions:
            raise UsageError(f"{self.root} is inside a dataset's partition folder ({partitions[-1].name}); give the "
                             f"dataset folder itself ({partitions[-1].parent})")
        for folder in (here, *here.parents):
            if folder != here and ((folder / LOCK_FILE).exists() or any(folder.glob("device=*/search_space=*"))):
                raise UsageError(f"{self.root} is inside the dataset {folder}; give that folder or one outside it")
        if not here.is_dir():
            return
        for file in parquet_files(here):
            rel = file.relative_to(here)
            if len(rel.parts) != 3 or not (rel.parts[0].startswith("device=") and
                                           rel.parts[1].startswith("search_space=") and
                                           rel.name.startswith("part-")):
                raise UsageError(f"{self.root} holds Parquet files that are not an hwlat dataset (first: {rel}); "
                                 "give an empty folder or an hwlat dataset")
            try:
                names = set(pq.read_schema(file).names)
            except (pa.ArrowException, OSError, ValueError):
                continue  # damaged, not foreign: moved aside once the lock is held
            missing = [c for c in IDENTITY_COLUMNS if c not in names]
            if missing:
                raise UsageError(f"{self.root}: {rel} is not an hwlat part file (no column {missing[0]}); give an "
                                 "empty folder or an hwlat dataset")

    def _quarantine_damaged(self) -> None:
        """Move every part file that cannot be read whole to ``DIR/.quarantine/`` (same relative path)."""
        for file in parquet_files(self.root):
            try:
                read_part(file)
            except DamagedPartError as exc:
                rel = file.relative_to(self.root)
                dest = self.root / QUARANTINE_DIR / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                n = 0
                while dest.exists():
                    n += 1
                    dest = dest.with_name(f"{rel.name}.{n}")
                os.replace(file, dest)
                fsync_dir(file.parent)
                fsync_dir(dest.parent)
                self.quarantined.append((file, dest, exc.why))

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

    def _small_parts(self, folder: Path, session_id: str) -> list[Path]:
        return sorted(p for p in folder.glob(f"part-{session_id}-*.parquet")
                      if (m := _SMALL_PART.match(p.name)) and m["session"] == session_id)

    def compact_session(self, session_id: str) -> None:
        """Merge one session's part files per partition into one file.

        Protocol: write the merged file (with any earlier merge of the session) atomically under its final
        name, *then* delete the small parts. Between the two steps every row is in two visible files; the
        readers here skip a small part whose row_ids are all in the merged file, and ``recover`` deletes it.
        """
        for folder in self._partition_dirs():
            parts = self._small_parts(folder, session_id)
            merged = folder / f"part-{session_id}.parquet"
            if len(parts) < 2 and not (parts and merged.exists()):
                continue
            tables = [read_part(p) for p in ([merged] if merged.exists() else []) + parts]
            table = pa.concat_tables([t.select(SCHEMA.names).cast(SCHEMA) for t in tables])
            _, first = np.unique(np.asarray(table.column("row_id").to_pylist(), dtype=object), return_index=True)
            _write_atomic(table.take(sorted(first)), merged)
            self._drop_superseded(folder)

    def _drop_superseded(self, folder: Path) -> None:
        """Delete small parts whose rows are all in their session's merged file (their merge finished)."""
        for part in _superseded(sorted(folder.glob("part-*.parquet"))):
            part.unlink()
        fsync_dir(folder)

    def recover(self) -> None:
        """Finish merges a kill interrupted and drop temp files left by killed writers (lock holder only)."""
        if self._lock is None:
            self._take_lock()
        for folder in self._partition_dirs():
            for ready in folder.glob(".compact-*.ready"):  # an older hwlat's merge marker: complete data
                merged = folder / f"part-{ready.name[len('.compact-'):-len('.ready')]}.parquet"
                if not merged.exists():
                    os.replace(ready, merged)
            self._drop_superseded(folder)
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)

    def _partition_dirs(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return [p for p in self.root.glob("device=*/search_space=*") if p.is_dir()]

    def measured_keys(self, device: str, statuses: Iterable[str] = DONE_STATUSES) -> set[MeasuredKey]:
        """Keys already in the dataset for a device (any space), for resume (``row_model_key``).

        A row written before ``model_key`` existed gives its ``model_sha256`` (as it did) and also the key of its
        file at the row's input shapes (``_legacy_sized_key``): a file with dynamic dimensions that an older hwlat
        measured at some size counts as measured at that size, not at another. The extra key is never a
        candidate's for a file measured at its own shapes (those are keyed by the bare sha256).
        """
        wanted = set(statuses)
        keys: set[MeasuredKey] = set()
        for folder in self.root.glob(f"device={device}/search_space=*"):
            for part in folder.glob("part-*.parquet"):
                try:
                    present = set(pq.read_schema(part).names)
                except (pa.ArrowException, OSError, ValueError) as exc:
                    raise DamagedPartError(part, one_line(exc, 160)) from None
                table = read_part(part, columns=[c for c in _KEY_COLUMNS if c in present])
                column = {c: table.column(c).to_pylist() if c in present else [None] * table.num_rows
                          for c in _KEY_COLUMNS}
                for cfg, sha, key, shapes, status in zip(*column.values(), strict=True):
                    if status not in wanted:
                        continue
                    keys.add(MeasuredKey(device, cfg, row_model_key(key, sha)))
                    if key is None and sha and (sized := _legacy_sized_key(sha, shapes)):
                        keys.add(MeasuredKey(device, cfg, sized))
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
    """Read a dataset folder (or one Parquet file) with the partition columns restored.

    A damaged file is an error naming it (``DamagedPartError``): a table silently missing rows would lie.
    """
    table, damaged = scan_dataset(path)
    if damaged:
        raise damaged[0]
    return table


def summarize(path: Path | str) -> dict[str, Any]:
    """What ``hwlat datasets show`` prints: devices, spaces, rows, failures, unstable rows, date range and
    ``damaged`` (one ``DamagedPartError`` per part file that could not be read; the rest is counted)."""
    table, damaged = scan_dataset(path)
    if table.num_rows == 0:
        return {"rows": 0, "devices": {}, "spaces": {}, "status": {}, "first": None, "last": None, "configs": [],
                "damaged": damaged}
    cols = table.column_names
    need = {"device", "search_space"}
    if not need <= set(cols):
        raise UsageError(f"{path} is not an hwlat dataset (missing columns {sorted(need - set(cols))})")
    devices = table.column("device").to_pylist()
    spaces = table.column("search_space").to_pylist()
    statuses = table.column("status").to_pylist() if "status" in cols else ["ok"] * table.num_rows
    summary: dict[str, Any] = {"rows": table.num_rows, "devices": {}, "spaces": {}, "status": {},
                               "damaged": damaged}
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
    summary["configs"] = _latency_summaries(table)
    return summary


def _latency_summaries(table: pa.Table) -> list[dict[str, Any]]:
    """Per (device, configuration, space): the spread of the models' medians, the unstable share, the drift.

    Medians of ``ok`` and ``unstable`` rows (an unstable row keeps a robust median, docs/timing.md);
    ``drift_pct`` is the largest drift of the session's reference model (``ref_drift_pct``) in either
    direction: how far the device itself moved while it was measured.
    """
    import numpy as np

    cols = set(table.column_names)
    if not {"latency_ms", "status"} <= cols:
        return []
    wanted = [c for c in ("device", "config_id", "search_space", "status", "latency_ms", "ref_drift_pct",
                          "runtime", "runtime_version", "threads", "provider") if c in cols]
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in table.select(wanted).to_pylist():
        key = (str(row["device"]), str(row.get("config_id") or ""), str(row["search_space"]))
        groups.setdefault(key, []).append(row)
    out = []
    for (device, config_id, space), rows in sorted(groups.items()):
        usable = [r for r in rows if r["status"] in ("ok", "unstable") and r["latency_ms"] is not None]
        lat = np.array([r["latency_ms"] for r in usable], dtype=float)
        drifts = [r["ref_drift_pct"] for r in rows if r.get("ref_drift_pct") is not None]
        first = rows[0]
        out.append({
            "device": device, "config_id": config_id, "space": space,
            "runtime": first.get("runtime"), "runtime_version": first.get("runtime_version"),
            "provider": first.get("provider"), "threads": first.get("threads"),
            "rows": len(rows), "usable": len(usable),
            "median_ms": float(np.median(lat)) if len(lat) else None,
            "p10_ms": float(np.percentile(lat, 10)) if len(lat) else None,
            "p90_ms": float(np.percentile(lat, 90)) if len(lat) else None,
            "unstable_share": sum(r["status"] == "unstable" for r in rows) / len(rows),
            "drift_pct": max(drifts, key=abs) if drifts else None,
        })
    return out


def dumps_compact(obj: Any) -> str:
    """JSON for the *_json columns: sorted keys so equal states compare equal as strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
