"""Graph features of a space's archs, traced from the space's torch module (``hwlat.spaces.trace``), cached.

A space with no dedicated encoder (OFA, ``autoformer``, a plug-in) is encoded from its arch strings the same
way for training rows and for a 10,000-arch candidate pool: trace the arch's network on the meta device,
turn the ``GraphEncoding`` into ``predictor.graph.features``. Tracing costs tens of ms per arch, so features
are cached:

* in memory, by trace key (``hwlat.spaces.trace.trace_key``: space identity and version, canonical arch,
  batch, resolution, tracer and torch versions);
* on disk, under the graph cache (``$HWLAT_GRAPH_CACHE/traced/v<features version>/<space identity>/``, the
  version being ``predictor.graph.FEATURES_VERSION``): every batch of newly
  traced archs is one ``.npz`` shard (keys, features, FLOPs, params), written atomically, so a pool of
  10,000 is one file rather than 10,000; a process reads a space's shards once, on first use.

A large cold batch is traced by a pool of spawned processes (one per CPU this process may run on, at most
``MAX_WORKERS``): importing torch in a worker costs ~2-3 s, paid back after ~100 archs.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import io
import logging
import multiprocessing
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from agents.errors import UsageError
from agents.files import atomic_write
from hwlat.spaces import get_space, space_ref
from hwlat.spaces.graph import default_cache_dir
from hwlat.spaces.trace import trace_encoding, trace_key

from .graph import FEATURES_VERSION, features

log = logging.getLogger("hwlat")

#: below this many archs to trace, tracing in this process beats starting workers
PARALLEL_MIN = 200
MAX_WORKERS = 4
#: one row: (flat, nodes, adj, FLOPs, params)
Row = tuple[np.ndarray, np.ndarray, np.ndarray, float, float]

_ROWS: dict[str, Row] = {}
_LOADED: set[Path] = set()


def cache_root() -> Path:
    """The traced features' cache of this feature layout (rows of another layout live beside it, unread)."""
    return default_cache_dir() / "traced" / f"v{FEATURES_VERSION}"


def _space_dir(identity: str) -> Path:
    return cache_root() / re.sub(r"[^A-Za-z0-9_.-]", "_", identity)[:80]


def _load_shards(folder: Path) -> None:
    """Read every shard of a space's cache folder once per process (unreadable shards are skipped)."""
    if folder in _LOADED:
        return
    _LOADED.add(folder)
    for shard in sorted(folder.glob("*.npz")) if folder.is_dir() else []:
        try:
            with np.load(shard, allow_pickle=False) as z:
                keys, flat, nodes, adj, tot = z["keys"], z["flat"], z["nodes"], z["adj"], z["totals"]
        except (OSError, ValueError, KeyError) as exc:
            log.warning("skipping unreadable traced-graph cache %s: %s", shard, exc)
            continue
        for i, key in enumerate(keys.tolist()):
            _ROWS.setdefault(key, (flat[i], nodes[i], adj[i], float(tot[i, 0]), float(tot[i, 1])))


def _write_shard(folder: Path, keys: list[str], rows: list[Row]) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, keys=np.array(keys), flat=np.stack([r[0] for r in rows]),
                        nodes=np.stack([r[1] for r in rows]), adj=np.stack([r[2] for r in rows]),
                        totals=np.array([[r[3], r[4]] for r in rows], np.float64))
    name = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:32]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / f"{name}.npz", buf.getvalue())
    except OSError as exc:
        log.warning("cannot write the traced-graph cache %s: %s", folder, exc.strerror or exc)


def _trace_rows(ref: str, archs: list[str], batch: int, resolution: int | None = None) -> list[Row]:
    """Trace canonical archs of the space ``ref`` at one input size (in this process or a worker)."""
    import torch

    torch.set_num_threads(1)
    space = get_space(ref)
    rows = []
    for arch in archs:
        enc = trace_encoding(space, arch, batch, resolution)
        flat, nodes, adj = features(enc)
        rows.append((flat, nodes, adj, float(enc.total("flops")), float(enc.total("params"))))
    return rows


def _workers(n: int) -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cpus, n // (PARALLEL_MIN // 2)))


def _trace_many(space_name: str, archs: list[str], batch: int, resolution: int | None) -> list[Row]:
    ref = space_ref(space_name)
    workers = _workers(len(archs)) if len(archs) >= PARALLEL_MIN else 1
    if workers == 1:
        return _trace_rows(ref, archs, batch, resolution)
    chunks = [archs[i::workers * 4] for i in range(workers * 4)]
    ctx = multiprocessing.get_context("spawn")
    out: dict[str, Row] = {}
    try:
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            for chunk, rows in zip(chunks, pool.map(_trace_rows, [ref] * len(chunks), chunks, [batch] * len(chunks),
                                                    [resolution] * len(chunks)), strict=True):
                out.update(zip(chunk, rows, strict=True))
    except cf.process.BrokenProcessPool:
        raise UsageError("a graph-tracing worker process died (a script that calls the predictor needs the "
                         "`if __name__ == '__main__':` guard that spawned workers need)") from None
    return [out[a] for a in archs]


def traced_rows(space_name: str, archs: Sequence[str], batch: int = 1, resolution: int | None = None) -> list[Row]:
    """Feature rows of canonical ``archs`` of a space built for input ``batch`` x ``resolution`` (None: each
    arch's own or the space's default, ``SearchSpace.resolution_for``), from the caches or traced (then cached)."""
    space = get_space(space_name)
    keys = [trace_key(space, a, batch, space.resolution_for(a, resolution)) for a in archs]
    folder = _space_dir(space.cache_identity())
    missing = [i for i, k in enumerate(keys) if k not in _ROWS]
    if missing:
        _load_shards(folder)
        missing = [i for i in missing if keys[i] not in _ROWS]
    if missing:
        todo = list(dict.fromkeys(archs[i] for i in missing))
        new_keys = [trace_key(space, a, batch, space.resolution_for(a, resolution)) for a in todo]
        rows = _trace_many(space_name, todo, batch, resolution)
        _ROWS.update(zip(new_keys, rows, strict=True))
        _write_shard(folder, new_keys, rows)
    return [_ROWS[k] for k in keys]
