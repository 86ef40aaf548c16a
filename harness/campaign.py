"""A measurement campaign: plan -> export -> push -> run -> collect, for one or many devices.

The stages live in their own modules; this one only puts them in order:

* ``harness.plan``: the request, the models (sampled, from a file, or the user's ONNX files), the exports
  (a failed export is a per-model ``export_failed`` row, not the end of the campaign), resume and each
  device's measuring order;
* ``harness.device_runner``: one thread per device pushes its models, runs its chunks and checks every
  journal line before a row is stored; anything that goes wrong there is that device's failure;
* ``harness.rows`` / ``harness.store``: one Parquet row per result, appended atomically, merged per session.

On a local device, exporting is finished before timing starts and nothing else happens while it measures
(one agent run for every planned round of every model, no chunks): on a 2-core machine, export or copy
work beside the timed loop would slow it down and bias the numbers. Remote devices receive uploads while they
measure; the coordinator's own CPU load does not reach their timed loops.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agents.errors import DeviceBusyError, UsageError
from agents.records import Job, RunSpec
from harness.device_runner import DeviceOutcome, DeviceRunner, describe_failure
from harness.devices import DeviceProfile
from harness.export import ExportFailure
from harness.plan import (
    CampaignRequest,
    Exported,
    Slot,
    configure_device,
    export_plan,
    pending,
    plan_models,
    plan_order,
)
from harness.records import ModelArtifact
from harness.rounds import RoundBook, load_rounds, prune_round_logs
from harness.rows import export_failure_row
from harness.store import DatasetStore
from harness.transport import open_transport
from hwlat.spaces.graph import save_dataset_graphs

__all__ = ["CampaignRequest", "CampaignResult", "run_campaign"]


@dataclass
class CampaignResult:
    session_id: str
    out: Path
    outcomes: list[DeviceOutcome]
    wall_s: float
    export_s: float
    measure_s: float
    #: what went wrong outside any device (the session's part files could not be merged, ...)
    warnings: list[str] = field(default_factory=list)
    #: damaged part files moved aside before measuring: (was, now, why); their rows are gone from the dataset
    quarantined: list[tuple[Path, Path, str]] = field(default_factory=list)


def new_session_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def run_campaign(req: CampaignRequest, progress: Any = None,
                 on_row: Callable[[str, dict[str, Any]], None] | None = None) -> CampaignResult:
    """Measure the requested models on every device; returns per-device outcomes.

    ``on_row(device, row)`` hears every stored row as it is stored (the CLI warns of unstable rows with it).

    Bad input raises ``UsageError`` before anything is measured. Whatever ends one device's work (it
    cannot be reached for longer than ``max_reconnect_s``, it sends a corrupt or forged journal, the
    dataset disk fills up, ...) is reported in that device's outcome and in the dataset's session log,
    while the other devices finish.
    """
    t0 = time.monotonic()
    if req.chunk_jobs < 1:
        raise UsageError(f"chunk_jobs must be at least 1, got {req.chunk_jobs}")
    devices = [configure_device(p, req.fmt, req.threads) for p in req.devices]
    plan = plan_models(req)
    store = DatasetStore(req.out)
    store.ensure_writable()
    exported = export_plan(req, plan, {d.format for d in devices}, progress)
    save_graphs(req.out, exported.get("onnx"))
    export_s = time.monotonic() - t0
    session_id = new_session_id()
    store_lock = threading.Lock()
    bars: dict[str, Any] = {}

    def stored(device: str, row: dict[str, Any]) -> None:
        if progress is not None:
            progress.advance(bars[device])
        if on_row is not None:
            on_row(device, row)

    runners: list[tuple[DeviceRunner, list[ModelArtifact], Exported]] = []
    for dev in devices:
        todo = pending(store, dev, exported[dev.format].candidates, req)
        runner = DeviceRunner(profile=dev, transport=open_transport(dev), store=store, session_id=session_id,
                              max_reconnect_s=req.max_reconnect_s, on_row=stored, store_lock=store_lock)
        runner.outcome.skipped = len(exported[dev.format].candidates) - len(todo)
        runner.outcome.planned = len(todo)
        if progress is not None:
            bars[dev.name] = progress.add_task(f"measure {dev.name}", total=len(todo))
        runners.append((runner, todo, exported[dev.format]))

    def drive(runner: DeviceRunner, todo: list[ModelArtifact], formats: Exported) -> None:
        """One device's whole part; every exception ends here as the device's failure, never the thread's."""
        prof = runner.profile

        runs = iter(range(10**6))

        def make_spec(p: int, _k: int, jobs: list[Job]) -> RunSpec:
            # p: the first pass in this run. Run ids count on across runs; operator profiles are taken in the
            # first pass only, which then is a run of its own (measure_rounds' first_pass_alone)
            return RunSpec(run_id=f"{session_id}-{prof.name}-{next(runs):03d}", runtime=prof.runtime,
                           timing=prof.timing, jobs=jobs, timeout_s=prof.model_timeout_s, env=prof.env,
                           cpu_affinity=prof.cpu_affinity, op_profile=req.op_profile and p == 0)

        def order_for(p: int, models: list[ModelArtifact]) -> list[Slot]:
            return plan_order(models, formats.reference, req.seed + p, req.reference_every, f"p{p}-" if p else "")

        book: RoundBook | None = None
        try:
            _store_export_failures(runner, formats.failures)
            if todo:
                prior, prior_refs = ({}, {}) if req.remeasure else load_rounds(req.out, prof.name, prof.config_id())
                if prior:  # rounds of a model that has a row (kept by a kill before the journal was pruned) are done
                    stored = _stored(store, prof, store_lock)
                    prior = {key: rounds for key, rounds in prior.items() if key not in stored}
                book = RoundBook(root=req.out, device=prof.name, config_id=prof.config_id(), session_id=session_id,
                                 timing=prof.timing, models=todo, prior=prior, prior_refs=prior_refs)
                runner.measure_rounds(book, order_for, req.chunk_jobs, make_spec, first_pass_alone=req.op_profile)
                if not book.open:
                    prune_round_logs(req.out, prof.name, prof.config_id(), _stored(store, prof, store_lock))
        except Exception as exc:
            runner.outcome.error = describe_failure(exc)
            runner.outcome.busy = isinstance(exc, DeviceBusyError)
            with contextlib.suppress(Exception):  # best effort: leave a failed device idle, not timing for nobody
                runner.stop_agent()
            with store_lock:
                store.log(session_id, f"device {prof.name} failed after {runner.outcome.rows} rows: "
                                      f"{runner.outcome.error}")
        finally:
            if book is not None:
                book.close()
            with contextlib.suppress(Exception):  # closing a broken connection can fail any way it likes
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
            with contextlib.suppress(Exception):
                runner.stop_agent()
            with contextlib.suppress(Exception):
                runner.transport.close()
        raise
    finally:
        warnings = _compact(store, session_id, store_lock)
        store.close()
    return CampaignResult(session_id, req.out, [r.outcome for r, _, _ in runners], wall_s=time.monotonic() - t0,
                          export_s=export_s, measure_s=time.monotonic() - t1, warnings=warnings,
                          quarantined=store.quarantined)


def _stored(store: DatasetStore, profile: DeviceProfile, store_lock: threading.Lock) -> set[str]:
    """The networks (``MeasuredKey.model_key``) that have a row of any agent status on this device configuration."""
    with store_lock:
        keys = store.measured_keys(profile.name)
    return {k.model_key for k in keys if k.config_id == profile.config_id()}


def save_graphs(out: Path, onnx: Exported | None) -> None:
    """Store the graph of every ONNX candidate beside the rows (``out/_graphs``), before anything is timed:
    the predictor then trains on any measured network without the model files. A model whose graph cannot be
    read is still measured (a warning says its rows cannot train the graph predictor). Each graph is encoded at
    the input shapes the model is measured at (a file with dynamic dimensions is another network at each size),
    keyed by ``hwlat.spaces.graph.graph_key``."""
    if onnx is None:
        return
    for warning in save_dataset_graphs(out, [(a.sha256, a.path, a.input_shapes) for a in onnx.candidates]):
        logging.getLogger("hwlat").warning("%s", warning)


def _compact(store: DatasetStore, session_id: str, store_lock: threading.Lock) -> list[str]:
    """Merge the session's part files; a merge that fails (full disk) leaves them as they are, all readable."""
    try:
        with store_lock:
            store.compact_session(session_id)
    except OSError as exc:
        message = f"the session's part files were not merged ({exc}); they stay as they are, every row readable"
        store.log(session_id, message)
        return [message]
    return []


def _store_export_failures(runner: DeviceRunner, failures: list[ExportFailure]) -> None:
    """One ``export_failed`` row per model this device's format could not get (resume retries them)."""
    by_space: dict[str, list[dict[str, Any]]] = {}
    for failure in failures:
        row = export_failure_row(session_id=runner.session_id, profile=runner.profile, failure=failure)
        by_space.setdefault(failure.spec.search_space, []).append(row)
    for space, rows in by_space.items():
        runner.store_rows(space, rows)
        runner.outcome.status_counts["export_failed"] = runner.outcome.status_counts.get("export_failed", 0) + len(rows)
