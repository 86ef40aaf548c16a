"""Exporter: ``ModelSpec`` -> model file (ONNX, TFLite, ExecuTorch .pte, torch.export .pt2) -> ``ModelArtifact``,
cached by content.

Cache layout under ``cache_dir``::

    models/<sha256>.<fmt>    the exported file, named by the hash of its bytes
    index/<key>.json         ModelArtifact JSON; key = hash of everything that changes the file:
                             space identity and version, canonical arch, batch, resolution,
                             format, opset and exporter versions (see ``cache_key``)

A second call finds the index entry and exports nothing; an entry whose file is missing or whose
bytes no longer match the hash is exported again. Every write goes to a temporary file first and
lands with ``os.replace``, so a crash never leaves a half-written model or entry behind.

Exports run in parallel in spawned worker processes (torch with one thread each); ONNX uses the
TorchScript exporter (``dynamo=False``, opset 17), about 10x faster than the dynamo exporter here
and byte-for-byte reproducible (docs/spaces.md has the measurements).
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import functools
import hashlib
import json
import multiprocessing
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from importlib import metadata
from pathlib import Path
from typing import Any

from agents.errors import UsageError
from agents.files import atomic_write, sha256_file
from harness.records import ModelArtifact, ModelSpec
from hwlat.spaces import SearchSpace, get_space, one_line, space_ref

FORMATS = ("onnx", "tflite", "pte", "pt2")
OPSET = 17
#: Bump when this module changes what it writes for the same inputs.
EXPORTER_VERSION = 1
#: Default parallelism: one worker per this many ONNX exports (see ``default_workers``).
ONNX_JOBS_PER_WORKER = 32
#: Exports a worker process makes before a fresh one replaces it, per format; absent: no limit, and one worker
#: exports in this process. The ExecuTorch exporter keeps ~55 MB per OFA model that no ``gc`` returns (RSS
#: 500 -> 741 MB over 5 exports, docs/spaces.md); a campaign that exported 350 models in one process grew to
#: 23 GB and was killed. A new worker costs ~4 s (importing torch and the exporter) against ~15 s per export.
#: ONNX and .pt2 keep ~0.6 MB per export: they stay in the process, for the profile loop's batches of five.
TASKS_PER_WORKER = {"pte": 8, "tflite": 8}
INPUT_NAME = "input"
OUTPUT_NAME = "output"


@dataclasses.dataclass(frozen=True)
class ExportFailure:
    """A model that could not be exported (``export_models(keep_going=True)``): which one, and why."""

    spec: ModelSpec
    fmt: str
    error: str


class _ExportError(UsageError):
    """One model's export failed (the model, not the environment): with ``keep_going`` the others go on."""


@dataclasses.dataclass(frozen=True)
class _Job:
    """One export to do, as sent to a worker (plain, picklable)."""

    key: str
    search_space: str
    #: what re-creates the space in a spawned worker (a plug-in file's ``file.py:Class`` spec)
    space_ref: str
    arch: str
    batch: int
    resolution: int
    fmt: str
    arch_index: int | None


def export_models(
    specs: Sequence[ModelSpec],
    fmt: str,
    cache_dir: str | Path,
    workers: int | None = None,
    progress: Callable[[ModelArtifact | ExportFailure], None] | None = None,
    keep_going: bool = False,
) -> list[Any]:
    """Export every spec (or find it in the cache); artifacts come back in the order of ``specs``.

    ``workers``: processes for the exports still to do (default ``default_workers``: one per
    core, fewer for small ONNX batches; 1 exports ONNX and .pt2 in this process with one torch thread).
    More than one, or a format in ``TASKS_PER_WORKER``, spawns worker processes, so a calling script needs
    the ``if __name__ == "__main__":`` guard. ``progress`` is called once per distinct model,
    cache hits included, in the order they become ready. Raises ``UsageError`` for an unknown
    format, space or arch, an unwritable cache directory, or a failed export; with ``keep_going`` a
    model whose export failed comes back as an ``ExportFailure`` in its place and the rest are exported
    (the list then holds ``ModelArtifact | ExportFailure``).
    """
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format '{fmt}' (known: {', '.join(FORMATS)})")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise UsageError(f"workers must be a positive integer, got {workers!r}")
    cache = ExportCache(cache_dir)
    keys: list[str] = []
    ready: dict[str, ModelArtifact] = {}
    todo: dict[str, _Job] = {}
    for spec in specs:
        job = _make_job(spec, fmt)
        keys.append(job.key)
        if job.key in ready or job.key in todo:
            continue
        hit = cache.lookup(job.key)
        if hit is None:
            todo[job.key] = job
        else:
            ready[job.key] = hit
            if progress:
                progress(hit)
    failed: dict[str, str] = {}
    for artifact_key, artifact in _run_jobs(list(todo.values()), cache, workers, keep_going):
        if isinstance(artifact, str):
            failed[artifact_key] = artifact
            if progress:
                progress(ExportFailure(ModelSpec(todo[artifact_key].search_space, todo[artifact_key].arch), fmt,
                                       artifact))
            continue
        ready[artifact_key] = artifact
        if progress:
            progress(artifact)
    return [ready[k] if k in ready else ExportFailure(spec, fmt, failed[k]) for k, spec in zip(keys, specs,
                                                                                                  strict=True)]


# -- cache ---------------------------------------------------------------------------------------


@functools.cache
def exporter_version(fmt: str) -> str:
    """Versions of everything that writes the file; part of the cache key."""
    parts = [f"hwlat-export{EXPORTER_VERSION}", f"torch{metadata.version('torch')}"]
    if fmt == "onnx":
        parts.append("torchscript-onnx")
    elif fmt == "tflite":
        parts.append(f"litert-torch{_dist_version('litert-torch')}")
    elif fmt == "pte":
        parts.append(f"executorch{_dist_version('executorch')}-xnnpack")
    else:
        parts.append("torch.export")
    return "/".join(parts)


def cache_key(space: SearchSpace, arch: str, batch: int, resolution: int, fmt: str) -> str:
    """Hash of everything that changes the exported file (``arch`` must be canonical)."""
    fields = {
        "space": space.cache_identity(),
        "arch": arch,
        "batch": batch,
        "resolution": resolution,
        "format": fmt,
        "opset": OPSET if fmt == "onnx" else None,
        "exporter": exporter_version(fmt),
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


class ExportCache:
    """The on-disk cache: ``models/<sha256>.<fmt>`` plus ``index/<key>.json``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.models = self.root / "models"
        self.index = self.root / "index"
        try:
            self.models.mkdir(parents=True, exist_ok=True)
            self.index.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.models, prefix=".probe-")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise UsageError(f"cannot write the export cache {self.root}: {exc.strerror or exc}") from None

    def model_path(self, sha256: str, fmt: str) -> Path:
        return self.models / f"{sha256}.{fmt}"

    def lookup(self, key: str) -> ModelArtifact | None:
        """The cached artifact, or None when absent, unreadable, or its file is missing/changed.

        A file whose size and mtime match the entry is trusted; otherwise its bytes are hashed.
        """
        entry = self.index / f"{key}.json"
        try:
            data = json.loads(entry.read_text())
            stamp = data.pop("_stat")
            artifact = ModelArtifact(**data)
        except (OSError, ValueError, TypeError, KeyError):
            return None
        path = self.model_path(artifact.sha256, artifact.format)
        try:
            st = path.stat()
        except OSError:
            return None
        if [st.st_size, st.st_mtime_ns] != stamp and sha256_file(path) != artifact.sha256:
            return None
        artifact.path = str(path)
        return artifact

    def store(self, key: str, tmp_file: Path, artifact: ModelArtifact) -> ModelArtifact:
        """Move an exported temp file into place and record it under ``key``."""
        path = self.model_path(artifact.sha256, artifact.format)
        os.replace(tmp_file, path)
        st = path.stat()
        artifact.path = str(path)
        # ``key`` is the sha256 for every export (its own shapes): left out, so the entry reads the same to an older
        # hwlat sharing this cache
        fields = {k: v for k, v in dataclasses.asdict(artifact).items() if k != "key"}
        entry = {**fields, "_stat": [st.st_size, st.st_mtime_ns]}
        atomic_write(self.index / f"{key}.json", json.dumps(entry, indent=1, sort_keys=True).encode())
        return artifact


# -- running the exports -------------------------------------------------------------------------


def _make_job(spec: ModelSpec, fmt: str) -> _Job:
    space = get_space(spec.search_space)
    arch = space.validate(spec.arch)
    resolution = space.resolution_for(arch, spec.resolution)
    space.check_input(spec.batch, resolution)
    index = spec.arch_index if spec.arch_index is not None else space.arch_index(arch)
    key = cache_key(space, arch, spec.batch, resolution, fmt)
    return _Job(key, space.name, space_ref(space.name), arch, spec.batch, resolution, fmt, index)


def _run_jobs(jobs: list[_Job], cache: ExportCache, workers: int | None, keep_going: bool = False):
    """Yield (key, artifact) as exports finish; in this process or in a spawned pool whose workers are
    replaced after ``TASKS_PER_WORKER`` exports of a leaking format.

    With ``keep_going`` a model's failed export yields (key, error message) instead of raising.
    """
    if not jobs:
        return
    if workers is None:
        workers = default_workers(len(jobs), jobs[0].fmt)
    workers = min(workers, len(jobs))
    tasks_per_worker = TASKS_PER_WORKER.get(jobs[0].fmt)
    if workers == 1 and tasks_per_worker is None:
        import torch

        # One thread, as in the workers: tracing gains nothing from more, and oversubscribed
        # intra-op threads made in-process exports 10x slower on a busy 2-core machine.
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for job in jobs:
                try:
                    yield job.key, _export_one(job, str(cache.root))
                except _ExportError as exc:
                    if not keep_going:
                        raise
                    yield job.key, str(exc)
        finally:
            torch.set_num_threads(previous)
        return
    ctx = multiprocessing.get_context("spawn")
    slots = [_Worker(ctx, tasks_per_worker) for _ in range(workers)]
    pending = list(reversed(jobs))
    running: dict[cf.Future, tuple[_Job, _Worker]] = {}

    def feed(slot: _Worker) -> None:
        if pending:
            job = pending.pop()
            running[slot.submit(job, str(cache.root))] = (job, slot)

    try:
        for slot in slots:
            feed(slot)
        while running:
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                job, slot = running.pop(fut)
                try:
                    artifact = fut.result()
                except _ExportError as exc:
                    if not keep_going:
                        raise
                    artifact = str(exc)
                except BrokenProcessPool:
                    raise UsageError(
                        f"an export worker died while exporting {job.search_space} arch '{job.arch}': out "
                        "of memory (retry with fewer workers), or the calling script lacks the "
                        "`if __name__ == '__main__':` guard that spawned workers need"
                    ) from None
                feed(slot)
                yield job.key, artifact
    finally:
        for slot in slots:
            slot.close()


class _Worker:
    """One export process, replaced by a fresh one after ``tasks`` exports (None: never).

    Not ``ProcessPoolExecutor(max_tasks_per_child=...)``: on Python 3.11-3.13 a pool that replaces a worker
    with tasks queued can stop scheduling and hang for ever (CPython gh-115634). A one-process executor that
    is given one job at a time and shut down when spent has no queue to lose, and still reports a worker
    that died (``BrokenProcessPool``).
    """

    def __init__(self, ctx: Any, tasks: int | None) -> None:
        self._ctx = ctx
        self._tasks = tasks
        self._done = 0
        self._pool: cf.ProcessPoolExecutor | None = None

    def submit(self, job: _Job, cache_root: str) -> cf.Future:
        if self._pool is not None and self._tasks is not None and self._done >= self._tasks:
            self.close()
        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(max_workers=1, mp_context=self._ctx, initializer=_init_worker,
                                                initargs=(os.getpid(),))
            self._done = 0
        self._done += 1
        return self._pool.submit(_export_one, job, cache_root)

    def close(self) -> None:
        """Stop the process (a job still running is waited for; the coordinator stops only between jobs
        or on an error, when workers die with it anyway: ``_init_worker``)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def default_workers(n_jobs: int, fmt: str) -> int:
    """Processes worth starting for ``n_jobs`` exports: one per core, but for ONNX only one per
    ``ONNX_JOBS_PER_WORKER`` exports, since a spawned worker costs ~3 s to start (importing torch)
    and an ONNX export ~0.15 s; a TFLite export (~15 s) always pays for its own worker."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    wanted = n_jobs // ONNX_JOBS_PER_WORKER if fmt in ("onnx", "pt2") else n_jobs  # pt2: as fast as ONNX
    return max(1, min(cores, wanted))


def _init_worker(parent_pid: int) -> None:
    """One torch thread per worker, and die with the coordinator.

    Without this, killing ``hwlat`` (kill -9, a closed terminal) left spawned export workers running their
    queued exports for minutes, competing with whatever was timed next. The parent-death signal covers a
    coordinator that dies later; the pid check one that died while this worker was still starting.
    """
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)
    import torch

    torch.set_num_threads(1)


def _export_one(job: _Job, cache_root: str) -> ModelArtifact:
    """Build, export, check and store one model (runs in a worker process)."""
    cache = ExportCache(cache_root)
    fd, tmp_name = tempfile.mkstemp(dir=cache.models, prefix=".export-", suffix=f".{job.fmt}")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        space = get_space(job.space_ref)
        model = space.build(job.arch, job.batch, job.resolution)
        sample = space.sample_input(job.batch, job.resolution)
        flops, params = torch_flops_params(model, sample)
        if job.fmt == "onnx":
            _export_onnx(model, sample, tmp)
        elif job.fmt == "tflite":
            _export_tflite(model, sample, tmp)
        else:
            from harness import export_torch

            (export_torch.export_pte if job.fmt == "pte" else export_torch.export_pt2)(model, sample, tmp)
        artifact = ModelArtifact(
            search_space=job.search_space,
            arch=job.arch,
            path="",
            sha256=sha256_file(tmp),
            format=job.fmt,
            input_shapes={INPUT_NAME: list(sample.shape)},
            batch=job.batch,
            resolution=job.resolution,
            flops=flops,
            params=params,
            arch_index=job.arch_index,
            opset=OPSET if job.fmt == "onnx" else None,
        )
        return cache.store(job.key, tmp, artifact)
    except UsageError:
        raise
    except Exception as exc:  # OSError included: a full cache disk fails this model, not the campaign
        raise _ExportError(
            f"exporting {job.search_space} arch '{job.arch}' to {job.fmt} failed: {one_line(exc)}"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)


def _export_onnx(model: Any, sample: Any, path: Path) -> None:
    import onnx
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(
            model,
            (sample,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    onnx.checker.check_model(str(path), full_check=True)


def _export_tflite(model: Any, sample: Any, path: Path) -> None:
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    try:
        import litert_torch
    except ImportError:
        raise UsageError("TFLite export needs litert-torch: pip install 'hwlat[tflite]'") from None
    from harness.export_torch import named_input

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        litert_torch.convert(named_input(model), sample_kwargs={INPUT_NAME: sample}).export(str(path))


def torch_flops_params(model: Any, sample: Any) -> tuple[int, int]:
    """(FLOPs, parameters) of one forward pass on ``sample``.

    FLOPs = 2 x multiply-accumulates of every convolution and matrix product for the whole input (so
    they scale with the batch), as torch's ``FlopCounterMode`` counts them: Conv2d, Linear and also the
    attention products of transformers, which are not modules; BN, activations, pooling and additions
    are not counted. Parameters = all trainable tensors of the module (BatchNorm affine included,
    running statistics not).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(sample)
    return int(counter.get_total_flops()), sum(p.numel() for p in model.parameters())


def _dist_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "missing"
