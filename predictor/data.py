"""Latency data in: any Parquet file or hive-partitioned folder with ``search_space, arch, device, latency_ms``.

The harness writes one row per measurement (with ``status``, ``config_id``, repeats); the shared NB201
table has one row per (device, arch). Both reduce to the same ``LatencyTable``: ok rows only, spaces
normalised to their canonical names, archs validated by the space's encoder, repeated measurements of
one (space, device, arch) averaged. Anything malformed is a one-line ``UsageError``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads

from agents.errors import ArchError, UsageError
from agents.records import USABLE_STATUSES

from .encode import canonical_space, get_encoder

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


def load_table(paths: Sequence[str | Path]) -> LatencyTable:
    """Read, validate and reduce one or more Parquet datasets into a ``LatencyTable``."""
    if not paths:
        raise UsageError("no --data given")
    frames = []
    for p in paths:
        df = _read_one(Path(p))
        missing = [c for c in REQUIRED if c not in df.columns]
        if missing:
            raise UsageError(f"{p}: missing column(s) {', '.join(missing)} (need {', '.join(REQUIRED)})")
        if "status" in df.columns:
            df = df[df["status"].astype(str).isin(USABLE_STATUSES)]
        frames.append(df[list(REQUIRED)].copy())
    return reduce_frame(pd.concat(frames, ignore_index=True))


def reduce_frame(df: pd.DataFrame) -> LatencyTable:
    """Validate a frame with the required columns and average repeats per (space, device, arch)."""
    if df.empty:
        raise UsageError(f"no usable rows (need rows with status {' or '.join(USABLE_STATUSES)} and the columns "
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
