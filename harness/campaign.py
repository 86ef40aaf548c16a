"""A measurement campaign: plan -> export -> push -> run -> collect, for one or many devices.

* plan: pick the candidate archs (sampled, from a file, or the user's ONNX files) and drop what the dataset
  already holds for each device and configuration (resume).
* export: torch -> ONNX/TFLite through the content-addressed cache (never twice for the same arch).
* push + run: each device's jobs are put in one order (shuffled, a reference model every K models) and run by
  its agent, detached, appending to a journal the coordinator streams. Devices run in parallel threads.
  A remote device gets its jobs in chunks, one agent run (``RunSpec``) per chunk: while chunk k is measured,
  a background thread uploads the models of the chunks after it, so only the first chunk's upload is waited for.
* collect: every candidate result becomes one Parquet row at once (atomic), with the latest reference
  measurement attached as drift fields.

On a local device, exporting is finished before timing starts and nothing else happens while it measures
(one run, no chunks): on a 2-core machine, export or copy work beside the timed loop would slow it down and
bias the numbers. Remote devices receive uploads while they measure; the coordinator's own CPU load does not
reach their timed loops.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agents.records import Job, MeasureResult, RunSpec
from harness import __version__
from harness.devices import DeviceProfile
from harness.errors import TransportError, UsageError
from harness.records import ModelArtifact, ModelSpec
from harness.store import DONE_STATUSES, DatasetStore, MeasuredKey, dumps_compact
from harness.transport import open_transport
from harness.transport.base import Transport

#: Back-off between reconnect attempts to a device that dropped (seconds).
BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)

#: Largest chunk of jobs (candidates and references) one agent run measures on a remote device. Each chunk
#: costs one agent start (Python, numpy and the runtime imported again: seconds on a Pi) and a journal poll
#: interval; 32 jobs of >= 1.6 s each keep that under ~10% on a Pi and a few % on a PC, while the next
#: chunk's upload (32 models) still finishes long before the current one is measured on any usual link.
CHUNK_JOBS = 32
#: Size of a remote device's first chunk, the only one whose upload is not hidden behind a measurement;
#: later chunks double up to ``CampaignRequest.chunk_jobs``, so measuring starts soon and the per-chunk
#: agent start is paid rarely.
FIRST_CHUNK_JOBS = 8


@dataclass
class CampaignRequest:
    """Everything ``hwlat measure`` asks for, after argument parsing."""

    devices: list[DeviceProfile]
    out: Path
    space: str = "nb201"
    count: int | None = None
    seed: int = 0
    archs: list[str] | None = None
    models_dir: Path | None = None
    fmt: str | None = None
    threads: int | None = None
    batch: int = 1
    resolution: int = 32
    remeasure: bool = False
    retry_failed: bool = False
    reference_every: int = 10
    cache_dir: Path | None = None
    workers: int | None = None
    max_reconnect_s: float = 300.0
    #: largest chunk of jobs per agent run on a remote device (see ``CHUNK_JOBS``)
    chunk_jobs: int = CHUNK_JOBS


@dataclass
class DeviceOutcome:
    """How one device's part of the campaign ended."""

    device: str
    planned: int = 0
    skipped: int = 0
    rows: int = 0
    status_counts: dict[str, int] = field(default_factory=dict)
    error: str = ""
    #: seconds the agent spent inside timed loops (candidates and drift references)
    timed_s: float = 0.0
    warnings: list[str] = field(default_factory=list)


@dataclass
class CampaignResult:
    session_id: str
    out: Path
    outcomes: list[DeviceOutcome]
    wall_s: float
    export_s: float
    measure_s: float


def configure_device(profile: DeviceProfile, fmt: str | None, threads: int | None) -> DeviceProfile:
    """Apply ``--format`` / ``--threads`` overrides: a new configuration of the same device."""
    runtime = dataclasses.replace(profile.runtime)
    new_fmt = profile.format
    if fmt is not None and fmt != profile.format:
        if fmt == "tflite":
            runtime.runtime, runtime.providers, runtime.provider_options = "litert", [], []
        elif fmt == "onnx":
            runtime.runtime, runtime.providers = "onnxruntime", ["CPUExecutionProvider"]
        else:
            raise UsageError(f"unknown format {fmt!r} (known: onnx, tflite)")
        new_fmt = fmt
    if threads is not None:
        if threads < 0:
            raise UsageError("--threads must be >= 0 (0 = runtime default)")
        runtime.threads = threads
    return dataclasses.replace(profile, runtime=runtime, format=new_fmt)


def read_arch_file(path: Path) -> list[str]:
    """One arch string per line; blank lines and '#' comments are ignored."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read arch file {path}: {exc.strerror or exc}") from None
    archs = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not archs:
        raise UsageError(f"arch file {path} holds no arch strings")
    return archs


def plan_specs(req: CampaignRequest) -> tuple[list[ModelSpec], ModelSpec]:
    """Candidate model specs and the session's reference model, all validated before anything runs."""
    from harness.spaces import get_space

    space = get_space(req.space)
    if req.archs is not None:
        archs = []
        seen = set()
        for arch in req.archs:
            canonical = space.validate(arch)
            if canonical not in seen:
                seen.add(canonical)
                archs.append(canonical)
    else:
        count = 10 if req.count is None else req.count
        if count < 1:
            raise UsageError("--count must be at least 1")
        archs = space.sample(count, req.seed)
    specs = [ModelSpec(space.name, a, req.batch, req.resolution, space.arch_index(a)) for a in archs]
    ref_arch = space.sample(1, seed=2**31 - 1)[0]
    reference = ModelSpec(space.name, ref_arch, req.batch, req.resolution, space.arch_index(ref_arch))
    return specs, reference


@dataclass(frozen=True)
class Slot:
    """One place in a device's measuring order: a job id, its role and the model, not yet on the device."""

    job_id: str
    role: str
    art: ModelArtifact


def plan_order(candidates: list[ModelArtifact], reference: ModelArtifact | None, seed: int,
               every: int) -> list[Slot]:
    """Shuffle candidates (seeded) and insert the reference model first, every ``every`` models, and last.

    The order is decided once per device, before any chunking, so the drift references keep their places
    whatever the chunk size.
    """
    order = list(candidates)
    random.Random(seed).shuffle(order)
    slots: list[Slot] = []

    def add_reference() -> None:
        if reference is not None:
            ref_count = sum(1 for s in slots if s.role == "reference")
            slots.append(Slot(f"r{ref_count:04d}-{reference.sha256[:12]}", "reference", reference))

    add_reference()
    for i, art in enumerate(order):
        if every > 0 and i > 0 and i % every == 0:
            add_reference()
        slots.append(Slot(f"c{i:05d}-{art.sha256[:12]}", "candidate", art))
    if order:
        add_reference()
    return slots


def build_jobs(slots: list[Slot], paths: dict[str, str]) -> list[Job]:
    """The agent's jobs for these slots; ``paths`` (sha256 -> path on the device) from ``push_models``."""
    return [Job(s.job_id, paths[s.art.sha256], s.art.sha256, s.art.format, s.role) for s in slots]


def chunk_slots(slots: list[Slot], largest: int) -> list[list[Slot]]:
    """Split a remote device's order into chunks: ``FIRST_CHUNK_JOBS``, then doubling up to ``largest``."""
    chunks: list[list[Slot]] = []
    size, start = min(FIRST_CHUNK_JOBS, largest), 0
    while start < len(slots):
        chunks.append(slots[start:start + size])
        start += size
        size = min(2 * size, largest)
    return chunks


def _num(state: dict[str, Any], key: str) -> float | None:
    value = state.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _gpu_names(gpus: Any) -> str | None:
    """The fingerprint's GPU list (nvidia-smi rows) as one readable string, None without a GPU."""
    if not gpus:
        return None
    names = [g.get("name", str(g)) if isinstance(g, dict) else str(g) for g in gpus]
    return ", ".join(names)


def make_row(*, session_id: str, run_id: str, order_index: int, profile: DeviceProfile, fingerprint: dict,
             art: ModelArtifact, result: MeasureResult, ref: dict[str, Any]) -> dict[str, Any]:
    """One Parquet row (see harness.store.SCHEMA) from the records of every stage."""
    before, after = result.system_before, result.system_after
    shapes = result.input_shapes or art.input_shapes
    first_shape = next(iter(shapes.values()), None)
    return {
        "schema_version": 1,
        "row_id": uuid.uuid4().hex,
        "session_id": session_id,
        "run_id": run_id,
        "job_id": result.job_id,
        "order_index": order_index,
        "config_id": profile.config_id(),
        "device_host": profile.host,
        "hostname": fingerprint.get("host"),
        "cpu_model": fingerprint.get("cpu_model"),
        "cores_logical": fingerprint.get("cores_logical"),
        "cores_physical": fingerprint.get("cores_physical"),
        "ram_mb": fingerprint.get("ram_mb"),
        "os": fingerprint.get("os"),
        "machine": fingerprint.get("machine"),
        "board_model": fingerprint.get("board"),
        "gpu": _gpu_names(fingerprint.get("gpus")),
        "python_version": fingerprint.get("python_version"),
        "fingerprint_json": dumps_compact(fingerprint),
        "arch": art.arch,
        "arch_index": art.arch_index,
        "model_sha256": art.sha256,
        "format": art.format,
        "input_shape": first_shape,
        "input_shapes_json": dumps_compact(shapes),
        "batch": art.batch,
        "resolution": art.resolution,
        "flops": art.flops,
        "params": art.params,
        "runtime": result.runtime or profile.runtime.runtime,
        "runtime_version": result.runtime_version,
        "provider": result.provider,
        "providers": list(profile.runtime.providers),
        "threads": result.threads or profile.runtime.threads,
        "inter_op_threads": profile.runtime.inter_op_threads,
        "graph_optimization_level": profile.runtime.graph_optimization_level,
        "status": result.status,
        "error_type": result.error_type or None,
        "error": result.error or None,
        "load_ms": result.load_ms,
        "first_ms": result.first_ms,
        "latency_ms": result.median_ms,
        "mean_ms": result.mean_ms,
        "std_ms": result.std_ms,
        "min_ms": result.min_ms,
        "max_ms": result.max_ms,
        "p90_ms": result.p90_ms,
        "p99_ms": result.p99_ms,
        "cv": result.cv,
        "robust_cv": result.robust_cv,
        "ci95_low_ms": result.ci95_low_ms,
        "ci95_high_ms": result.ci95_high_ms,
        "n_outliers": result.n_outliers,
        "n_runs": result.n_runs,
        "warmup_runs": result.warmup_runs,
        "stop_reason": result.stop_reason or None,
        "raw_ms": list(result.raw_ms),
        "timing_json": dumps_compact(dataclasses.asdict(profile.timing)),
        "load1_before": _num(before, "load1"),
        "load1_after": _num(after, "load1"),
        "busy_pct_before": _num(before, "busy_pct"),
        "busy_pct_after": _num(after, "busy_pct"),
        "cpu_freq_mhz_before": _num(before, "cpu_freq_mhz"),
        "cpu_freq_mhz_after": _num(after, "cpu_freq_mhz"),
        "temp_c_before": _num(before, "temp_c"),
        "temp_c_after": _num(after, "temp_c"),
        "mem_available_mb_before": _num(before, "mem_available_mb"),
        "mem_available_mb_after": _num(after, "mem_available_mb"),
        "governor": before.get("governor") if isinstance(before.get("governor"), str) else None,
        "system_before_json": dumps_compact(before),
        "system_after_json": dumps_compact(after),
        "ref_model_sha256": ref.get("sha256"),
        "ref_latency_ms": ref.get("latency_ms"),
        "ref_index": ref.get("index"),
        "ref_drift_pct": ref.get("drift_pct"),
        "started_at": result.started_at or None,
        "finished_at": result.finished_at or datetime.now(UTC).isoformat(),
        "hwlat_version": __version__,
        "agent_version": fingerprint.get("agent_version"),
    }


class DeviceRunner:
    """Drives one device through its runs (one per chunk): start, stream the journal, reconnect, resume, store.

    What the journal has told so far (results seen, the drift reference, the fingerprint) is kept across the
    device's runs, so a chunked campaign stores exactly what one long run would.
    """

    def __init__(self, *, profile: DeviceProfile, transport: Transport, store: DatasetStore, session_id: str,
                 space: str, max_reconnect_s: float, on_row: Callable[[str, str], None],
                 store_lock: threading.Lock) -> None:
        self.profile = profile
        self.transport = transport
        self.store = store
        self.session_id = session_id
        self.space = space
        self.max_reconnect_s = max_reconnect_s
        self.on_row = on_row
        self.store_lock = store_lock
        self.outcome = DeviceOutcome(profile.name)
        self.stop = threading.Event()
        #: The run the agent is on (or about to be), for Ctrl-C; changed only under ``launch_lock``.
        self.run_id = ""
        #: Held while a run is launched, so Ctrl-C stops either the run just launched or none is launched.
        self.launch_lock = threading.Lock()
        self.seen: set[str] = set()
        self.ref_state: dict[str, Any] = {}
        self.first_ref: float | None = None
        self.fingerprint: dict = {}

    def _reconnect(self, why: str) -> None:
        """Reconnect with back-off; gives up (TransportError) after ``max_reconnect_s``."""
        deadline = time.monotonic() + self.max_reconnect_s
        attempt = 0
        while not self.stop.is_set():
            delay = BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]
            if time.monotonic() + delay > deadline:
                raise TransportError(f"device {self.profile.name} unreachable for {self.max_reconnect_s:.0f} s "
                                     f"(last error: {why})")
            time.sleep(delay)
            attempt += 1
            try:
                self.transport.close()
                self.transport.connect()
                return
            except TransportError as exc:
                why = str(exc)
        raise TransportError("stopped")

    def with_reconnect(self, step: Callable[[], Any]) -> Any:
        """Connect and run one step, reconnecting with back-off while the device is unreachable."""
        try:
            self.transport.connect()
            return step()
        except TransportError as exc:
            why = str(exc)
        while True:
            self._reconnect(why)
            try:
                return step()
            except TransportError as exc:
                why = str(exc)

    def stop_agent(self) -> None:
        """Ctrl-C: no new run starts, and the current one is stopped on the device."""
        self.stop.set()
        # Bounded wait: a launch stuck on an unreachable device cannot be stopped anyway.
        if self.launch_lock.acquire(timeout=10.0):
            try:
                if self.run_id:
                    self.transport.stop_run(self.run_id)
            finally:
                self.launch_lock.release()

    def run(self, spec: RunSpec, by_id: dict[str, ModelArtifact], order: dict[str, int]) -> None:
        """Launch one run (unless stopped) and store its results until its agent reports ``done``.

        ``by_id`` and ``order`` cover every job of the device (all chunks); ``order`` gives a job's place
        in the device's whole order, stored as ``order_index``.
        """
        with self.launch_lock:
            if self.stop.is_set():
                return
            self.run_id = spec.run_id
            self.with_reconnect(lambda: self.transport.start_run(spec))
        offset = 0
        restarts = 0
        done = False
        while not done and not self.stop.is_set():
            try:
                events, offset = self.transport.read_journal(spec.run_id, offset)
                alive = True if events else self.transport.agent_alive(spec.run_id)
            except TransportError as exc:
                # Read the journal before judging the agent: it may have finished (written "done") while
                # the device was unreachable, and must not be started again for nothing.
                self._reconnect(str(exc))
                continue
            for event in events:
                kind = event.get("type")
                if kind == "fingerprint":
                    self.fingerprint = {k: v for k, v in event.items() if k != "type"}
                    self.outcome.warnings = list(self.fingerprint.get("warnings", []))
                elif kind == "result":
                    self._result(spec, MeasureResult.from_dict(event), by_id, order)
                elif kind == "done":
                    done = True
            if not events and not done:
                if not alive:
                    # The agent stopped without "done": killed or crashed. Resume it; it skips finished jobs.
                    restarts += 1
                    if restarts > 3:
                        raise TransportError(f"agent on {self.profile.name} keeps dying; see its agent.log")
                    self.transport.start_run(spec)
                time.sleep(0.1)
        if done:
            self._wait_exit(spec.run_id)

    def _wait_exit(self, run_id: str, limit_s: float = 30.0) -> None:
        """Wait until the agent that wrote ``done`` has exited and released the device lock.

        The next chunk's launch would otherwise find the lock still held by this run and be refused as busy.
        """
        deadline = time.monotonic() + limit_s
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                if not self.transport.agent_alive(run_id):
                    return
            except TransportError:
                return  # the next launch reconnects, and reports a lock that is still held
            time.sleep(0.05)

    def _result(self, spec: RunSpec, result: MeasureResult, by_id: dict[str, ModelArtifact],
                order: dict[str, int]) -> None:
        """Store a candidate's result once (the journal may be read twice after a reconnect); track drift."""
        if result.job_id in self.seen or result.job_id not in by_id:
            return
        self.seen.add(result.job_id)
        if result.role == "reference":
            self.outcome.timed_s += sum(result.raw_ms) / 1000.0
            if result.median_ms:
                self.first_ref = self.first_ref or result.median_ms
                self.ref_state = {
                    "sha256": result.sha256,
                    "latency_ms": result.median_ms,
                    "index": int(result.job_id[1:5]),
                    "drift_pct": 100.0 * (result.median_ms / self.first_ref - 1.0),
                }
            return
        self._store(spec, order[result.job_id], by_id[result.job_id], result)

    def _store(self, spec: RunSpec, order_index: int, art: ModelArtifact, result: MeasureResult) -> None:
        row = make_row(session_id=self.session_id, run_id=spec.run_id, order_index=order_index,
                       profile=self.profile, fingerprint=self.fingerprint, art=art, result=result,
                       ref=self.ref_state)
        with self.store_lock:
            self.store.append(self.profile.name, art.search_space, self.session_id, [row])
        self.outcome.rows += 1
        self.outcome.status_counts[result.status] = self.outcome.status_counts.get(result.status, 0) + 1
        self.outcome.timed_s += sum(result.raw_ms) / 1000.0
        self.on_row(self.profile.name, result.status)

    def measure(self, slots: list[Slot], chunk_jobs: int, make_spec: Callable[[int, list[Job]], RunSpec]) -> None:
        """Push and measure a device's whole order: one run locally, chunks with background uploads remotely.

        Remotely, after the first chunk is on the device one background thread uploads the later chunks in
        order while the agent measures; each chunk waits only for its own upload. An upload that failed in the
        background (device dropped) is redone here with reconnects; ``push_models`` skips what arrived intact.
        """
        by_id = {s.job_id: s.art for s in slots}
        order = {s.job_id: i for i, s in enumerate(slots)}
        self.outcome.planned = sum(1 for s in slots if s.role == "candidate")
        chunks = [slots] if self.profile.is_local else chunk_slots(slots, chunk_jobs)

        def push(chunk: list[Slot]) -> dict[str, str]:
            if self.stop.is_set():  # queued uploads after Ctrl-C end at once instead of reconnecting
                raise TransportError("stopped")
            return self.transport.push_models(list({s.art.sha256: s.art for s in chunk}.values()))

        uploader = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"upload-{self.profile.name}")
        later: list[Future[dict[str, str]]] = []
        try:
            for k, chunk in enumerate(chunks):
                if self.stop.is_set():
                    return
                if k == 0:
                    paths = self.with_reconnect(lambda chunk=chunk: push(chunk))
                    later = [uploader.submit(push, c) for c in chunks[1:]]
                else:
                    try:
                        paths = later[k - 1].result()
                    except TransportError:
                        paths = self.with_reconnect(lambda chunk=chunk: push(chunk))
                self.run(make_spec(k, build_jobs(chunk, paths)), by_id, order)
        finally:
            uploader.shutdown(wait=False, cancel_futures=True)


def new_session_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def default_cache_dir() -> Path:
    """Export cache shared by every dataset folder of this user ($HWLAT_CACHE overrides)."""
    return Path(os.environ.get("HWLAT_CACHE", "~/.cache/hwlat/exports")).expanduser()


@dataclass
class ModelPlan:
    """What a campaign will measure, validated before anything is written or measured."""

    specs: list[ModelSpec]
    reference: ModelSpec | None
    user_models: list[ModelArtifact] | None = None


def plan_models(req: CampaignRequest) -> ModelPlan:
    """Validate the request's models: arch strings, space name, or the user's ONNX files."""
    if req.models_dir is not None:
        from harness.spaces.onnx_files import scan_models

        return ModelPlan([], None, scan_models(req.models_dir))  # scan_models refuses an empty folder
    specs, reference = plan_specs(req)
    return ModelPlan(specs, reference)


def export_plan(req: CampaignRequest, plan: ModelPlan, formats: set[str], progress: Any) -> tuple[
        dict[str, list[ModelArtifact]], dict[str, ModelArtifact | None]]:
    """Candidates and reference per format: exported from a space, or the user's ONNX files as they are."""
    if plan.user_models is not None:
        if formats != {"onnx"}:
            raise UsageError("--models DIR holds ONNX files: every device must run onnxruntime (format onnx)")
        return {"onnx": plan.user_models}, {"onnx": plan.user_models[0]}
    from harness.export import export_models

    candidates: dict[str, list[ModelArtifact]] = {}
    references: dict[str, ModelArtifact | None] = {}
    specs = [*plan.specs, plan.reference] if plan.reference is not None else plan.specs
    for fmt in sorted(formats):
        task = progress.add_task(f"export {fmt}", total=len(specs)) if progress is not None else None

        def advance(_art: ModelArtifact, task: Any = task) -> None:
            if progress is not None:
                progress.advance(task)

        arts = export_models(specs, fmt, req.cache_dir or default_cache_dir(), workers=req.workers,
                             progress=advance)
        if plan.reference is not None:
            candidates[fmt], references[fmt] = arts[:-1], arts[-1]
        else:
            candidates[fmt], references[fmt] = arts, None
    return candidates, references


def save_graphs(out: Path, candidates: dict[str, list[ModelArtifact]]) -> None:
    """Store the graph encoding of every ONNX candidate beside the rows (``out/_graphs``), before anything
    is timed: the predictor then trains on any measured network without the model files. A model the
    encoder cannot read is still measured (a warning says its rows cannot train the graph predictor)."""
    from predictor.graph import save_dataset_graphs

    models = {a.sha256: a.path for a in candidates.get("onnx", [])}
    for warning in save_dataset_graphs(out, models.items()):
        logging.getLogger("hwlat").warning("%s", warning)


def run_campaign(req: CampaignRequest, progress: Any = None) -> CampaignResult:
    """Measure the requested models on every device; returns per-device outcomes.

    Bad input raises ``UsageError`` before anything is measured. A device that cannot be reached (or drops
    for longer than ``max_reconnect_s``) is reported in its outcome while the other devices finish.
    """
    t0 = time.monotonic()
    if req.chunk_jobs < 1:
        raise UsageError(f"chunk_jobs must be at least 1, got {req.chunk_jobs}")
    devices = [configure_device(p, req.fmt, req.threads) for p in req.devices]
    formats = {d.format for d in devices}
    plan = plan_models(req)
    store = DatasetStore(req.out)
    store.ensure_writable()
    candidates, references = export_plan(req, plan, formats, progress)
    save_graphs(req.out, candidates)
    export_s = time.monotonic() - t0
    session_id = new_session_id()
    statuses = DONE_STATUSES if not req.retry_failed else ("ok", "unstable")
    store_lock = threading.Lock()
    bars: dict[str, Any] = {}

    def on_row(device: str, _status: str) -> None:
        if progress is not None:
            progress.advance(bars[device])

    runners: list[tuple[DeviceRunner, list[ModelArtifact], ModelArtifact | None]] = []
    for dev in devices:
        done = set() if req.remeasure else store.measured_keys(dev.name, statuses)
        todo = [a for a in candidates[dev.format]
                if MeasuredKey(dev.name, dev.config_id(), a.sha256) not in done]
        runner = DeviceRunner(profile=dev, transport=open_transport(dev), store=store, session_id=session_id,
                              space=todo[0].search_space if todo else req.space,
                              max_reconnect_s=req.max_reconnect_s, on_row=on_row, store_lock=store_lock)
        runner.outcome.skipped = len(candidates[dev.format]) - len(todo)
        if progress is not None:
            bars[dev.name] = progress.add_task(f"measure {dev.name}", total=len(todo))
        runners.append((runner, todo, references[dev.format]))

    def drive(runner: DeviceRunner, todo: list[ModelArtifact], reference: ModelArtifact | None) -> None:
        if not todo:
            return
        prof = runner.profile

        def make_spec(k: int, jobs: list[Job]) -> RunSpec:
            return RunSpec(run_id=f"{session_id}-{prof.name}-{k:03d}", runtime=prof.runtime, timing=prof.timing,
                           jobs=jobs, timeout_s=prof.model_timeout_s, env=prof.env, cpu_affinity=prof.cpu_affinity)

        try:
            runner.measure(plan_order(todo, reference, req.seed, req.reference_every), req.chunk_jobs, make_spec)
        except (TransportError, UsageError) as exc:
            runner.outcome.error = str(exc)
        finally:
            with contextlib.suppress(TransportError):
                runner.transport.close()

    t1 = time.monotonic()
    threads = [threading.Thread(target=drive, args=item, name=f"device-{item[0].profile.name}", daemon=True)
               for item in runners]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=0.2)
    except KeyboardInterrupt:
        for runner, _, _ in runners:
            with contextlib.suppress(TransportError, UsageError):
                runner.stop_agent()
            runner.transport.close()
        raise
    finally:
        with store_lock:
            store.compact_session(session_id)
    return CampaignResult(session_id, req.out, [r.outcome for r, _, _ in runners],
                          wall_s=time.monotonic() - t0, export_s=export_s, measure_s=time.monotonic() - t1)
