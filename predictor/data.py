"""Latency data in: any Parquet file or hive-partitioned folder with ``search_space, arch, device, latency_ms``
(plus ``model_sha256``, ``input_shapes_json`` and the dataset's ``_graphs/`` for spaces without a dedicated
encoder, and for rows measured at another size than their dedicated encoder describes).

The harness writes one row per measurement (with ``status``, ``config_id``, repeats); the shared NB201
table has one row per (device, arch). Both reduce to the same ``LatencyTable``: ok rows only, spaces
normalised to their canonical names, archs validated by the space's encoder, repeated measurements of
one (space, device, arch) averaged. Anything malformed is a one-line ``UsageError``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads

from agents.errors import ArchError, UnknownSpaceError, UsageError
from agents.records import USABLE_STATUSES
from hwlat.spaces.graph import DATASET_GRAPHS, find_cached

from .encode import (
    add_graphs,
    canonical_space,
    get_encoder,
    is_graph_space,
    is_registered,
    is_traced_space,
    known_spaces,
    register_graph_space,
    space_key,
)

log = logging.getLogger("hwlat")

REQUIRED = ("search_space", "arch", "device", "latency_ms")
#: the input size a row was measured at (harness rows have them; a table without them was measured at the default)
SIZE = ("batch", "resolution")
#: the shapes of every graph input a row was measured at (``{"name": [dims]}``): with ``model_sha256``, which
#: graph encoding in ``_graphs/`` is the measured network's (``hwlat.spaces.graph.graph_key``)
SHAPES = "input_shapes_json"
#: the graph-encoded space that takes a dedicated space's rows measured at another size than its encoder's
GRAPH_SUFFIX = "-graph"
#: Latencies outside this range are refused (ms): 1 ns is below any timer, 10^7 ms (2.8 h) above any timed
#: network. Beyond them a value is a unit or data error, and near 1e308 it overflows the means and cost
#: models to inf (and the training to NaN).
MIN_LATENCY_MS, MAX_LATENCY_MS = 1e-6, 1e7


def bad_latencies(values: np.ndarray) -> np.ndarray:
    """Mask of latencies that are missing, not finite or outside [MIN_LATENCY_MS, MAX_LATENCY_MS]."""
    values = np.asarray(values, np.float64)
    with np.errstate(invalid="ignore"):
        return ~np.isfinite(values) | (values < MIN_LATENCY_MS) | (values > MAX_LATENCY_MS)


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
    """Read a single Parquet file or a (hive-partitioned) folder of them, page checksums verified.

    A damaged file is named (not only the folder), and rows seen twice with one ``row_id`` (an hwlat merge
    killed before it deleted the merged small files) count once.
    """
    if not path.exists():
        raise UsageError(f"data not found: {path}")
    fmt = pads.ParquetFileFormat(
        default_fragment_scan_options=pads.ParquetFragmentScanOptions(page_checksum_verification=True))
    try:
        dataset = pads.dataset(str(path), format=fmt, partitioning="hive" if path.is_dir() else None)
        table = dataset.to_table()
    except Exception as exc:  # pyarrow raises several types for unreadable input
        culprit = path
        if path.is_dir():
            for file in sorted(path.rglob("*.parquet")):
                if any(part.startswith((".", "_")) for part in file.relative_to(path).parts):
                    continue
                try:
                    pads.dataset(str(file), format=fmt).to_table()
                except Exception:  # the first file that fails alone is the one to name
                    culprit = file
                    break
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"cannot read Parquet data {culprit}: {msg}") from exc
    frame = table.to_pandas()
    return frame.drop_duplicates("row_id") if "row_id" in frame.columns else frame


def load_table(paths: Sequence[str | Path], spaces: Collection[str] | None = None,
               level: Callable[[list[pd.DataFrame]], list[pd.DataFrame]] | None = None) -> LatencyTable:
    """Read, validate and reduce one or more Parquet datasets into a ``LatencyTable``.

    ``spaces`` (canonical names, see ``space_key``) keeps only those spaces' rows, so a benchmark can read
    files that also hold spaces it does not use. Rows of a space without a dedicated encoder are keyed
    by ``model_sha256`` (and their input shapes) and encoded from the graphs in the dataset's ``_graphs/``
    folder, except spaces hwlat can build (OFA, ``autoformer``, plug-ins): those keep their arch strings and
    are encoded by tracing the space's module (``predictor.traced``), the same path that encodes a profile's
    candidate pool. Rows of a dedicated space (NB201, FBNet) measured at another batch or resolution than its
    encoder describes become rows of the graph-encoded space ``<space>-graph`` (``_off_size_rows``).

    ``level`` (``hwlat predictor train --normalize``) gets every dataset's usable rows, all columns, and returns
    them with ``latency_ms`` replaced: ``harness.compare.on_one_level`` puts a configuration's campaigns on one
    drift reference level (passed in, because the predictor does not import the coordinator).
    """
    if not paths:
        raise UsageError("no --data given")
    read = []
    for p in paths:
        df = _read_one(Path(p))
        missing = [c for c in REQUIRED if c not in df.columns]
        if missing:
            raise UsageError(f"{p}: missing column(s) {', '.join(missing)} (need {', '.join(REQUIRED)})")
        if "status" in df.columns:
            df = df[df["status"].astype(str).isin(USABLE_STATUSES)]
        read.append(df)
    if level is not None:
        read = level(read)
    frames = []
    for p, df in zip(paths, read, strict=True):
        df = df[[*REQUIRED, *(c for c in ("model_sha256", *SIZE, SHAPES) if c in df.columns)]].copy()
        df["search_space"] = df["search_space"].astype(str)
        df, moved = _off_size_rows(df, Path(p))
        if spaces is not None:
            keep = df["search_space"].map(_space_keys(df)).isin(set(spaces))
            for derived, (origin, n) in moved.items():
                if origin in spaces and derived not in spaces:
                    log.warning("%s: %d %s row(s) measured at another size than the %s encoder's are left out "
                                "(they train the %s space)", p, n, origin, origin, derived)
            df = df[keep]
        frames.append(_sized_rows(_graph_rows(df, Path(p)))[list(REQUIRED)])
    return reduce_frame(pd.concat(frames, ignore_index=True))


def _space_keys(df: pd.DataFrame) -> dict[str, str]:
    """``space_key`` of each distinct space name (looking a name up may import a plug-in: once per name)."""
    return {name: space_key(name) for name in df["search_space"].unique()}


def _off_size_rows(df: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, dict[str, tuple[str, int]]]:
    """Move the rows of dedicated spaces measured at another size than their encoder's (``SpaceEncoder.size``)
    to the graph-encoded space ``<space>-graph``; returns the frame and {that space: (the space, rows moved)}.

    Why: an NB201 or FBNet encoder's features (its FLOPs, its layer shapes) describe the network at one input
    size. A row measured with ``--batch`` or ``--resolution`` is another network: encoded by its arch string it
    would train on wrong features, and be averaged with the same arch's rows at the default size. Its graph (the
    ONNX file that was timed, at the shapes it was timed at, in ``_graphs/``) describes it whatever its size, and
    keeping these rows in a space of their own keeps each space's encoding one kind. A missing batch or
    resolution (a published table) means the encoder's.
    """
    if not any(c in df.columns for c in SIZE):
        return df, {}
    keys = df["search_space"].map(_space_keys(df))
    moved: dict[str, tuple[str, int]] = {}
    for name in keys.unique():
        size = get_encoder(name).size if is_registered(name) else None
        if size is None:
            continue
        off = (keys == name).to_numpy(bool, copy=True)
        wrong = np.zeros(len(df), bool)
        for col, want in zip(SIZE, size, strict=True):
            if col in df.columns:
                got = pd.to_numeric(df[col], errors="coerce").to_numpy(np.float64)
                wrong |= ~np.isnan(got) & (got != want)
        off &= wrong
        if not off.any():
            continue
        canon = get_encoder(name).name
        n = int(off.sum())
        first = df[off].iloc[0]
        where = ", ".join(f"{c} {first[c]}" for c in SIZE if c in df.columns)
        default = f"batch {size[0]}, resolution {size[1]}"
        if "model_sha256" not in df.columns or df.loc[off, "model_sha256"].isna().any():
            raise UsageError(f"{path}: {n} {canon} row(s) were measured at another size than the {canon} encoder "
                             f"describes ({default}; first: {first['arch']!r} at {where}) and have no model_sha256 "
                             "to find their graphs by; leave them out of the data")
        derived = canon + GRAPH_SUFFIX
        df = df.copy()
        df.loc[off, "search_space"] = derived
        moved[derived] = (canon, n)
        log.warning("%s: %d %s row(s) measured at another size than the %s encoder's (%s; first: %s) are encoded "
                    "from their ONNX graphs, as the space %s", path, n, canon, canon, default, where, derived)
    return df, moved


def _input_shapes(value: object, path: Path, arch: object) -> dict[str, list[int]] | None:
    """A row's ``input_shapes_json`` as {input: dims}; None when the row has none (a table without them)."""
    if value is None or (isinstance(value, float) and value != value) or value == "":
        return None
    try:
        shapes = {str(k): [int(d) for d in v] for k, v in json.loads(str(value)).items()}
    except (ValueError, TypeError, AttributeError):
        raise UsageError(f"{path}: row {arch!r} has an unreadable input_shapes_json {str(value)[:80]!r}") from None
    return shapes or None


def _graph_rows(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Key the rows of graph-encoded spaces by the network measured (``model_sha256`` at the row's input shapes,
    ``hwlat.spaces.graph.graph_key``) and load their graphs from ``_graphs/``.

    Why the shapes: one ONNX file with dynamic dimensions measured at two sizes is two networks under one
    ``model_sha256``; each size has its own encoding there. Datasets written before encodings were keyed by
    size hold the file's own shapes under the bare sha256 (``find_cached`` takes one only for rows at those
    shapes).
    """
    keys = df["search_space"].map(_space_keys(df))
    graph = keys.map(lambda k: not is_registered(k) or (is_graph_space(k) and not is_traced_space(k))).astype(bool)
    if not graph.any():
        return df
    first = str(keys[graph].iloc[0])
    if "model_sha256" not in df.columns or df.loc[graph, "model_sha256"].isna().any():
        raise UnknownSpaceError(f"unknown search space {first!r}; known: {', '.join(known_spaces())} (rows of "
                                "other spaces need a model_sha256 column and graph encodings in _graphs/)")
    folder = (path if path.is_dir() else path.parent) / DATASET_GRAPHS
    sel = df.loc[graph]
    shas = sel["model_sha256"].astype(str).tolist()
    shape_json = sel[SHAPES].astype(object).where(sel[SHAPES].notna(), None).tolist() if SHAPES in sel.columns \
        else [None] * len(sel)
    encodings, found = [], {}
    missing: list[tuple[str, dict[str, list[int]] | None, int]] = []
    for i, pair in enumerate(zip(shas, shape_json, strict=True)):
        if pair in found:
            continue
        shapes = _input_shapes(pair[1], path, sel["arch"].iloc[i])
        enc = find_cached(folder, pair[0], shapes)
        found[pair] = None if enc is None else enc.key
        if enc is None:
            missing.append((pair[0], shapes, i))
        else:
            encodings.append(enc)
    if missing:
        sha, shapes, i = missing[0]
        row = sel.iloc[i]
        at = f" at input shapes {json.dumps(shapes, separators=(',', ':'))}" if shapes else ""
        raise UsageError(f"{path}: {len(missing)} measured network(s) have no graph encoding in {folder} (first: "
                         f"{row['search_space']} {row['arch']!r}, model_sha256 {sha[:12]}{at}); `hwlat measure` "
                         "writes them beside the rows: run the command that measured them on this folder again (it "
                         "measures nothing twice), or leave those rows out")
    add_graphs(encodings)
    for name in keys[graph].unique():
        register_graph_space(name)
    df = df.copy()
    df.loc[graph, "arch"] = [found[pair] for pair in zip(shas, shape_json, strict=True)]
    return df


def _sized_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Key the rows of traced spaces by what their encoder names the measured network
    (``TracedEncoder.measured_keys``): the arch string at the size it names, else the model's sha256, traced at
    the row's recorded batch and resolution."""
    if not any(c in df.columns for c in SIZE):
        return df
    keys = df["search_space"].map(_space_keys(df))
    traced = keys.map(lambda k: is_registered(k) and is_traced_space(k)).astype(bool)
    if not traced.any():
        return df
    df = df.copy()

    def column(sel: pd.Series, name: str) -> list:
        if name not in df.columns:
            return [None] * int(sel.sum())
        values = df.loc[sel, name]
        return values.astype(object).where(values.notna(), None).tolist()

    for name in keys[traced].unique():
        sel = keys == name
        df.loc[sel, "arch"] = get_encoder(name).measured_keys(
            df.loc[sel, "arch"].tolist(), column(sel, "batch"), column(sel, "resolution"),
            column(sel, "model_sha256"))
    return df


def reduce_frame(df: pd.DataFrame) -> LatencyTable:
    """Validate a frame with the required columns and average repeats per (space, device, arch)."""
    if df.empty:
        raise UsageError(f"no usable rows (need rows with status {' or '.join(USABLE_STATUSES)} and the columns "
                         f"{', '.join(REQUIRED)})")
    df = df.copy()
    lat = pd.to_numeric(df["latency_ms"], errors="coerce")
    bad = bad_latencies(lat.to_numpy(np.float64))
    if bad.any():
        first = int(np.argmax(bad))
        raise UsageError(f"{int(bad.sum())} row(s) have a missing, NaN or implausible latency_ms (need "
                         f"{MIN_LATENCY_MS:g} to {MAX_LATENCY_MS:g} ms; first: device {df['device'].iloc[first]!r}, "
                         f"arch {df['arch'].iloc[first]!r}, {lat.iloc[first]!r})")
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
