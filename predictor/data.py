"""Latency data in: any Parquet file or hive-partitioned folder with ``search_space, arch, device, latency_ms``
(plus ``model_sha256`` and the dataset's ``_graphs/`` for spaces without a dedicated encoder).

The harness writes one row per measurement (with ``status``, ``config_id``, repeats); the shared NB201
table has one row per (device, arch). Both reduce to the same ``LatencyTable``: ok rows only, spaces
normalised to their canonical names, archs validated by the space's encoder, repeated measurements of
one (space, device, arch) averaged. Anything malformed is a one-line ``UsageError``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads

from harness.errors import ArchError, UnknownSpaceError, UsageError

from .encode import (
    add_graphs,
    canonical_space,
    get_encoder,
    is_graph_space,
    is_registered,
    known_spaces,
    register_graph_space,
    space_key,
)
from .graph import DATASET_GRAPHS, read_cached

REQUIRED = ("search_space", "arch", "device", "latency_ms")


@dataclass
class LatencyTable:
    """Mean latency per (space, device, arch); ``df`` columns: search_space, device, arch, latency_ms."""

    df: pd.DataFrame

    def spaces(self) -> list[str]:
        return sorted(self.df["search_space"].unique())

    def devices(self, space: str) -> list[str]:
        return sorted(self.df.loc[self.df["search_space"] == space, "device"].unique())

    def device_series(self, space: str, device: str) -> pd.Series:
        """Latency (ms) indexed by arch for one device of one space."""
        sel = self.df[(self.df["search_space"] == space) & (self.df["device"] == device)]
        return sel.set_index("arch")["latency_ms"]

    def fingerprint(self) -> str:
        """A content hash of the training data, stored in models so a prediction can be traced to it."""
        h = hashlib.sha256()
        ordered = self.df.sort_values(["search_space", "device", "arch"])
        for col in ("search_space", "device", "arch"):
            h.update("\x1f".join(ordered[col].astype(str)).encode())
        h.update(np.round(ordered["latency_ms"].to_numpy(np.float64), 9).tobytes())
        return h.hexdigest()[:16]


def _read_one(path: Path) -> pd.DataFrame:
    """Read a single Parquet file or a (hive-partitioned) folder of them."""
    if not path.exists():
        raise UsageError(f"data not found: {path}")
    try:
        if path.is_dir():
            table = pads.dataset(str(path), format="parquet", partitioning="hive").to_table()
        else:
            table = pads.dataset(str(path), format="parquet").to_table()
    except Exception as exc:  # pyarrow raises several types for unreadable input
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"cannot read Parquet data {path}: {msg}") from exc
    return table.to_pandas()


def load_table(paths: Sequence[str | Path], spaces: Collection[str] | None = None) -> LatencyTable:
    """Read, validate and reduce one or more Parquet datasets into a ``LatencyTable``.

    ``spaces`` (canonical names, see ``space_key``) keeps only those spaces' rows, so a benchmark can read
    files that also hold spaces it does not use. Rows of a space without a dedicated encoder are keyed
    by ``model_sha256`` and encoded from the graphs in the dataset's ``_graphs/`` folder.
    """
    if not paths:
        raise UsageError("no --data given")
    frames = []
    for p in paths:
        df = _read_one(Path(p))
        missing = [c for c in REQUIRED if c not in df.columns]
        if missing:
            raise UsageError(f"{p}: missing column(s) {', '.join(missing)} (need {', '.join(REQUIRED)})")
        if "status" in df.columns:
            df = df[df["status"].astype(str) == "ok"]
        df = df[[*REQUIRED, *(["model_sha256"] if "model_sha256" in df.columns else [])]].copy()
        df["search_space"] = df["search_space"].astype(str)
        if spaces is not None:
            df = df[df["search_space"].map(space_key).isin(set(spaces))]
        frames.append(_graph_rows(df, Path(p))[list(REQUIRED)])
    return reduce_frame(pd.concat(frames, ignore_index=True))


def _graph_rows(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Key the rows of graph-encoded spaces by ``model_sha256`` and load their graphs from ``_graphs/``."""
    keys = df["search_space"].map(space_key)
    graph = keys.map(lambda k: not is_registered(k) or is_graph_space(k)).astype(bool)
    if not graph.any():
        return df
    first = str(keys[graph].iloc[0])
    if "model_sha256" not in df.columns or df.loc[graph, "model_sha256"].isna().any():
        raise UnknownSpaceError(f"unknown search space {first!r}; known: {', '.join(known_spaces())} (rows of "
                                "other spaces need a model_sha256 column and graph encodings in _graphs/)")
    folder = (path if path.is_dir() else path.parent) / DATASET_GRAPHS
    encodings, missing = [], []
    for sha in df.loc[graph, "model_sha256"].astype(str).unique():
        enc = read_cached(folder, sha)
        if enc is None:
            missing.append(sha)
        else:
            encodings.append(enc)
    if missing:
        row = df[df["model_sha256"] == missing[0]].iloc[0]
        raise UsageError(f"{path}: {len(missing)} measured network(s) have no graph encoding in {folder} (first: "
                         f"{row['search_space']} {row['arch']!r}, model_sha256 {missing[0][:12]}); `hwlat measure` "
                         "writes them beside the rows")
    add_graphs(encodings)
    for name in keys[graph].unique():
        register_graph_space(name)
    df = df.copy()
    df.loc[graph, "arch"] = df.loc[graph, "model_sha256"].astype(str)
    return df


def reduce_frame(df: pd.DataFrame) -> LatencyTable:
    """Validate a frame with the required columns and average repeats per (space, device, arch)."""
    if df.empty:
        raise UsageError("no usable rows (need rows with status ok and the columns "
                         f"{', '.join(REQUIRED)})")
    df = df.copy()
    lat = pd.to_numeric(df["latency_ms"], errors="coerce")
    bad = ~np.isfinite(lat.to_numpy(np.float64)) | (lat.to_numpy(np.float64) <= 0)
    if bad.any():
        raise UsageError(f"{int(bad.sum())} row(s) have a missing, NaN or non-positive latency_ms "
                         "(first: device {!r}, arch {!r})".format(df["device"].iloc[int(np.argmax(bad))],
                                                                 df["arch"].iloc[int(np.argmax(bad))]))
    df["latency_ms"] = lat.astype(np.float64)
    for col in ("search_space", "device", "arch"):
        if df[col].isna().any():
            raise UsageError(f"column {col} has missing values")
        df[col] = df[col].astype(str)
    spaces = {s: canonical_space(s) for s in df["search_space"].unique()}
    df["search_space"] = df["search_space"].map(spaces)
    for space, archs in df.groupby("search_space")["arch"]:
        try:
            get_encoder(space).encode(list(archs.unique()))  # validates, and warms the encoding cache
        except ArchError as exc:
            raise ArchError(f"{space}: {exc}") from None
    out = df.groupby(["search_space", "device", "arch"], as_index=False, sort=True)["latency_ms"].mean()
    return LatencyTable(out)
