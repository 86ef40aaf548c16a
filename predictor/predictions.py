"""The one prediction file: what ``hwlat predictor predict`` and ``hwlat profile`` write (``predictions.parquet``).

One schema, one writer (atomic), so a script that reads one reads the other. ``latency_ms`` is the predicted
median latency; ``log_std`` its uncertainty as a standard deviation of log latency (the predicted ±1σ interval
is ``latency_ms * exp(±log_std)``); ``flops`` is 2 × multiply-accumulates where the space has an analytic count;
``measured_ms`` is the measured median where the arch was measured on that device (``hwlat profile``);
``model_sha256`` and ``path`` name the ONNX file for ``predict --models`` (its ``arch`` is the file's stem);
``model_key`` and ``input_shapes_json`` are the network predicted, a file at the input shapes it was predicted at
(a torch module from the Python API: its trace digest and shapes), written as the measured dataset writes its
columns of the same names, so a prediction joins to the rows of the network it predicts. Null for arch strings:
an arch string names a network of its space's own size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.stats import rankdata

from agents.errors import UsageError
from agents.files import atomic_path

SCHEMA = pa.schema([
    pa.field("search_space", pa.string()),
    pa.field("device", pa.string()),
    pa.field("arch", pa.string()),
    pa.field("arch_index", pa.int64()),
    pa.field("latency_ms", pa.float64()),
    pa.field("log_std", pa.float64()),
    pa.field("rank", pa.int64()),
    pa.field("flops", pa.float64()),
    pa.field("measured_ms", pa.float64()),
    pa.field("model_sha256", pa.string()),
    pa.field("path", pa.string()),
    pa.field("model_key", pa.string()),
    pa.field("input_shapes_json", pa.string()),
])


def prediction_table(space: str, device: str, archs: Sequence[str], latency_ms: np.ndarray, log_std: np.ndarray,
                     arch_index: Sequence[int | None] | None = None, flops: np.ndarray | None = None,
                     measured: Mapping[str, float] | None = None, model_sha256: Sequence[str | None] | None = None,
                     paths: Sequence[str | None] | None = None, model_key: Sequence[str] | None = None,
                     input_shapes: Sequence[str | None] | None = None) -> pa.Table:
    """Predictions of ``archs`` on ``device`` as a table of ``SCHEMA`` (rank 1 = fastest predicted);
    ``input_shapes``: each network's ``input_shapes_json`` text."""
    n = len(archs)
    ms = np.asarray(latency_ms, np.float64)
    none = [None] * n
    return pa.table({
        "search_space": [space] * n,
        "device": [device] * n,
        "arch": list(archs),
        "arch_index": pa.array(list(arch_index) if arch_index is not None else none, pa.int64()),
        "latency_ms": ms,
        "log_std": np.asarray(log_std, np.float64),
        "rank": rankdata(ms, method="min").astype(np.int64),
        "flops": pa.array(np.asarray(flops, np.float64) if flops is not None else none, pa.float64()),
        "measured_ms": pa.array([measured.get(a) for a in archs] if measured is not None else none, pa.float64()),
        "model_sha256": pa.array(list(model_sha256) if model_sha256 is not None else none, pa.string()),
        "path": pa.array(list(paths) if paths is not None else none, pa.string()),
        "model_key": pa.array(list(model_key) if model_key is not None else none, pa.string()),
        "input_shapes_json": pa.array(list(input_shapes) if input_shapes is not None else none, pa.string()),
    }, schema=SCHEMA)


def write_predictions(path: Path, table: pa.Table) -> None:
    """Write a prediction table atomically (a kill never leaves half a file under the final name)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from exc
