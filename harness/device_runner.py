"""One device's part of a campaign: push its models, run its chunks, stream and check its journal, store rows.

Failure model (docs/reliability.md):

* Whatever goes wrong in a device's work ends as that device's failure (``DeviceOutcome.error``, typed by
  the exception's class), never as a dead thread: ``DeviceRunner.drive`` catches every ``Exception``.
  Rows already stored stay stored; the other devices go on; the command's exit code says a device failed.
* Everything read from the device is checked by ``agents.journal`` (one parser, one schema) before it
  touches the store. A journal that says ``done`` without a result for every job it was sent is an error.
* A dropped device is retried with back-off, but the whole outage is bounded: ``Outage`` measures from the
  first failed step to the next successful one, so a device that accepts the connection and then fails the
  same step every time (full disk, hash that never matches) gives up after ``max_reconnect_s`` too.

A remote device gets its jobs in chunks, one agent run (``RunSpec``) per chunk: while chunk k is measured, a
background thread uploads the models of the chunks after it, so only the first chunk's upload is waited for.
On a local device the whole order is one run and there are no uploads (nothing runs beside the timed loop).

Rounds (``measure_rounds``, harness/rounds.py): the device's models are measured in passes, one round of each
model per pass; every result goes to the ``RoundBook`` (journaled in the dataset folder at once), and a model's
row is stored when its rounds are complete and judged (at the next drift-reference measurement). The passes
known before anything is measured (R rounds of every new model) are concatenated into one order, so a local
campaign starts the agent once for them (Python and the runtime imported once, not once per pass); only the
re-measure passes, decided when those rounds are judged, are runs of their own. A model whose round failed is
settled as that failure at once, and its later rounds are never measured: the run holding them is stopped and
the rest of its order goes on in a new run (a failure can cost up to the model timeout, and would only repeat).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from agents.errors import ProtocolError, TransportError, UsageError
from agents.journal import MAX_LINE_BYTES, iter_lines, validate_event
from agents.records import Job, MeasureResult, RunSpec
from harness.devices import DeviceProfile
from harness.ops import append_ops, op_rows
from harness.plan import Slot
from harness.records import ModelArtifact
from harness.rounds import RoundBook
from harness.rows import rounds_row
from harness.store import DatasetStore
from harness.transport.base import Transport

#: Back-off between reconnect attempts to a device that dropped (seconds).
BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
#: Size of a remote device's first chunk, the only one whose upload is not hidden behind a measurement;
#: later chunks double up to ``CampaignRequest.chunk_jobs``, so measuring starts soon and the per-chunk
#: agent start is paid rarely.
FIRST_CHUNK_JOBS = 8
#: Most journal bytes read per poll: one longest line and one byte more, so an over-long line is detected
#: without ever holding more than this.
READ_BYTES = MAX_LINE_BYTES + 1
#: How many times a run's agent may die without writing ``done`` before the device is given up.
MAX_AGENT_RESTARTS = 3

T = TypeVar("T")


@dataclass
class DeviceOutcome:
    """How one device's part of the campaign ended; ``error`` is empty unless the device failed."""

    device: str
    planned: int = 0
    skipped: int = 0
    rows: int = 0
    status_counts: dict[str, int] = field(default_factory=dict)
    error: str = ""
    #: seconds the agent spent inside timed loops (candidates and drift references)
    timed_s: float = 0.0
    warnings: list[str] = field(default_factory=list)
    #: the error was "another campaign holds the device" (the CLI's busy exit code), not a failure
    busy: bool = False
    #: one ``model_summary`` per row stored in this campaign, in measuring order
    models: list[dict[str, Any]] = field(default_factory=list)


def model_summary(row: dict[str, Any]) -> dict[str, Any]:
    """What the end-of-campaign table shows of one stored row (docs/cli.md, ``hwlat measure --json``)."""
    low, high = row.get("ci95_low_ms"), row.get("ci95_high_ms")
    return {
        "space": row.get("search_space"), "arch": row["arch"], "arch_index": row.get("arch_index"),
        "status": row["status"], "median_ms": row.get("latency_ms"), "p90_ms": row.get("p90_ms"),
        "p99_ms": row.get("p99_ms"),
        "ci95_half_ms": (high - low) / 2 if low is not None and high is not None else None,
        "robust_cv": row.get("robust_cv"), "n_runs": row.get("n_runs"), "stop_reason": row.get("stop_reason"),
        "error": row.get("error"), "ref_drift_pct": row.get("ref_drift_pct"),
    }


def describe_failure(exc: BaseException) -> str:
    """One line naming what kind of failure ended a device's work, and its message."""
    message = " ".join(str(exc).split()) or "(no message)"
    if isinstance(exc, UsageError | TransportError):
        return message
    if isinstance(exc, ProtocolError):
        return f"protocol error: {message}"
    return f"{type(exc).__name__}: {message}"


class Outage:
    """Time since a device last completed a step; gives up after ``limit_s`` of failing steps in a row.

    A successful connect does not end an outage, only a successful step does: otherwise a device that
    takes the connection and fails every step would be retried for ever.
    """

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self.since: float | None = None
        self.attempts = 0

    def ok(self) -> None:
        self.since, self.attempts = None, 0

    def next_delay(self, why: str, device: str) -> float:
        """Seconds to wait before the next try; raises ``TransportError`` once the outage is too long."""
        now = time.monotonic()
        if self.since is None:
            self.since = now
        delay = BACKOFF_S[min(self.attempts, len(BACKOFF_S) - 1)]
        self.attempts += 1
        if now + delay > self.since + self.limit_s:
            raise TransportError(f"device {device} failed for {now - self.since:.0f} s, {self.attempts} tries "
                                 f"(--max-reconnect {self.limit_s:g} s); last error: {why}")
        return delay


def chunk_slots(slots: list[Slot], largest: int) -> list[list[Slot]]:
    """Split a remote device's order into chunks: ``FIRST_CHUNK_JOBS``, then doubling up to ``largest``."""
    chunks: list[list[Slot]] = []
    size, start = min(FIRST_CHUNK_JOBS, largest), 0
    while start < len(slots):
        chunks.append(slots[start:start + size])
        start += size
        size = min(2 * size, largest)
    return chunks


def concat_passes(orders: list[list[Slot]]) -> tuple[list[Slot], set[str]]:
    """One order from consecutive passes' orders, and the job ids that end each pass.

    Where a pass ends with the drift reference and the next one begins with it, the second is left out: in one
    run the two would be measured back to back, and the first already closes one pass and opens the next.
    """
    slots: list[Slot] = []
    ends: set[str] = set()
    for pass_order in orders:
        if slots and pass_order and slots[-1].role == pass_order[0].role == "reference":
            pass_order = pass_order[1:]
        slots.extend(pass_order)
        if slots:
            ends.add(slots[-1].job_id)
    return slots, ends


def build_jobs(slots: list[Slot], paths: dict[str, str]) -> list[Job]:
    """The agent's jobs for these slots; ``paths`` (sha256 -> path on the device) from ``push_models``."""
    return [Job(s.job_id, paths[s.art.sha256], s.art.sha256, s.art.format, s.role, dict(s.art.feed_shapes))
            for s in slots]


class DeviceRunner:
    """Drives one device through its runs (one per chunk): start, stream the journal, reconnect, resume, store.

    What the journal has told so far (results seen, the drift reference, the fingerprint) is kept across the
    device's runs, so a chunked campaign stores exactly what one long run would.
    """

    def __init__(self, *, profile: DeviceProfile, transport: Transport, store: DatasetStore, session_id: str,
                 max_reconnect_s: float, on_row: Callable[[str, dict[str, Any]], None],
                 store_lock: threading.Lock) -> None:
        self.profile = profile
        self.transport = transport
        self.store = store
        self.session_id = session_id
        self.on_row = on_row
        self.store_lock = store_lock
        self.outcome = DeviceOutcome(profile.name)
        self.outage = Outage(max_reconnect_s)
        self.stop = threading.Event()
        #: The run the agent is on (or about to be), for Ctrl-C; changed only under ``launch_lock``.
        self.run_id = ""
        #: Held while a run is launched, so Ctrl-C stops either the run just launched or none is launched.
        self.launch_lock = threading.Lock()
        self.seen: set[str] = set()
        self.ref_state: dict[str, Any] = {}
        self.first_ref: float | None = None
        self.ref_count = 0
        self.fingerprint: dict = {}
        #: the device's rounds (``measure_rounds``): every candidate result is a round, journaled and judged there
        self.book: RoundBook | None = None
        #: the job that ends each pass of the order being measured: its result settles the pass's models
        self.pass_ends: set[str] = set()

    def with_reconnect(self, step: Callable[[], T]) -> T:
        """Connect and run one step, retrying with back-off while it fails with ``TransportError``.

        Bounded by ``Outage``: the time counts from the first failure until a step succeeds.
        """
        while True:
            if self.stop.is_set():
                raise TransportError("stopped")
            try:
                self.transport.connect()
                result = step()
            except TransportError as exc:
                delay = self.outage.next_delay(str(exc), self.profile.name)
                self.stop.wait(delay)
                self.transport.close()
                continue
            self.outage.ok()
            return result

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
        """Launch one run (unless stopped) and store its results until its agent reports ``done``, or until a
        model is settled while the run still holds a round of it to measure (``_holds_settled``: a round of it
        failed): then the agent is stopped, what it journaled before it stopped is read, and ``measure`` goes
        on without that model.

        ``by_id`` and ``order`` cover every job of the device (all chunks); ``order`` gives a job's place
        in the device's whole order, stored as ``order_index``. Every journal line is parsed and checked
        against ``spec`` (``agents.journal``); the first that fails ends the device with ``ProtocolError``.
        """
        with self.launch_lock:
            if self.stop.is_set():
                return
            self.run_id = spec.run_id
            self.with_reconnect(lambda: self.transport.start_run(spec))
        offset = 0
        restarts = 0
        done = cut = False
        assert self.book is not None
        open_models = len(self.book.open)
        while not done and not self.stop.is_set():
            # Read the journal before judging the agent: it may have finished (written "done") while the
            # device was unreachable, and must not be started again for nothing.
            data = self.with_reconnect(lambda at=offset: self.transport.read_journal(spec.run_id, at, READ_BYTES))
            events, used = iter_lines(data, offset)
            offset += used
            for event in events:
                checked = validate_event(event, spec)
                if isinstance(checked, MeasureResult):
                    self._result(spec, checked, by_id, order)
                elif checked["type"] == "fingerprint":
                    self.fingerprint = {k: v for k, v in checked.items() if k != "type"}
                    self.outcome.warnings = list(self.fingerprint.get("warnings", []))
                else:
                    done = True
                    self._check_complete(spec)
            if not done and not cut and len(self.book.open) < open_models and self._holds_settled(spec, by_id):
                cut = True
                self.with_reconnect(lambda: self.transport.stop_run(spec.run_id))
                self._wait_exit(spec.run_id)
                continue  # read to the end of what the agent journaled before it stopped
            open_models = len(self.book.open)
            if events or done:
                continue
            if cut:
                return
            if not self.with_reconnect(lambda: self.transport.agent_alive(spec.run_id)):
                # The agent stopped without "done": killed or crashed. Resume it; it skips finished jobs.
                restarts += 1
                if restarts > MAX_AGENT_RESTARTS:
                    raise TransportError(f"agent on {self.profile.name} keeps dying; see "
                                         f"{self.profile.workdir}/runs/{spec.run_id}/agent.log on the device")
                self.with_reconnect(lambda: self.transport.start_run(spec))
            time.sleep(0.1)
        if done:
            self._wait_exit(spec.run_id)

    def _holds_settled(self, spec: RunSpec, by_id: dict[str, ModelArtifact]) -> bool:
        """Whether the run has a round still to measure of a model already settled (a round of it failed)."""
        assert self.book is not None
        return any(job.role == "candidate" and job.job_id not in self.seen
                   and by_id[job.job_id].key not in self.book.open for job in spec.jobs)

    def _live(self, slots: list[Slot]) -> list[Slot]:
        """The slots still to measure: no result yet, and not a round of a settled model."""
        assert self.book is not None
        return [s for s in slots if s.job_id not in self.seen
                and (s.role == "reference" or s.art.key in self.book.open)]

    def _check_complete(self, spec: RunSpec) -> None:
        """``done`` must come after a result for every job the run was sent."""
        missing = [job.job_id for job in spec.jobs if job.job_id not in self.seen]
        if missing:
            more = ", ..." if len(missing) > 3 else ""
            raise ProtocolError(f"the agent ended run {spec.run_id} without results for {len(missing)} of "
                                f"{len(spec.jobs)} jobs ({', '.join(missing[:3])}{more})")

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
        """Journal a result once (a restarted agent may journal a job twice) as a round or a drift reference;
        a reference measurement settles the models whose rounds it closes."""
        if result.job_id in self.seen:
            return
        assert self.book is not None, "measure() runs inside measure_rounds()"
        self.seen.add(result.job_id)
        self.outcome.timed_s += sum(result.raw_ms) / 1000.0
        if result.role == "reference":
            self.book.add_reference(spec.run_id, order[result.job_id], result)
            if result.median_ms:
                self.first_ref = self.first_ref or result.median_ms
                self.ref_state = {
                    "sha256": result.sha256,
                    "latency_ms": result.median_ms,
                    "index": self.ref_count,
                    "drift_pct": 100.0 * (result.median_ms / self.first_ref - 1.0),
                }
            self.ref_count += 1
            self.settle(pass_over=result.job_id in self.pass_ends)
            return
        self.book.add_round(spec.run_id, order[result.job_id], result, dict(self.ref_state), by_id[result.job_id].key)
        if result.job_id in self.pass_ends:  # a pass without a drift reference (its export failed) ends here
            self.settle(pass_over=True)

    def settle(self, pass_over: bool, force: bool = False) -> None:
        """Store one row for every model whose rounds are complete and judged (``RoundBook.settle``)."""
        assert self.book is not None
        for verdict in self.book.settle(pass_over, force):
            art = self.book.art(verdict)
            row = rounds_row(session_id=self.session_id, profile=self.profile, fingerprint=self.fingerprint,
                             art=art, verdict=verdict)
            self.store_rows(art.search_space, [row])
            ops = next((r.result.op_times for r in verdict.rounds if r.result.op_times), [])
            append_ops(self.store.root, op_rows(row, self.profile.name, art.search_space, ops))
            self.outcome.status_counts[row["status"]] = self.outcome.status_counts.get(row["status"], 0) + 1
            self.on_row(self.profile.name, row)

    def measure_rounds(self, book: RoundBook, order_for: Callable[[int, list[ModelArtifact]], list[Slot]],
                       chunk_jobs: int, make_spec: Callable[[int, int, list[Job]], RunSpec],
                       first_pass_alone: bool = False) -> None:
        """Measure every model of ``book`` in passes: pass p holds one round of each model that still needs
        one (``order_for(p, models)`` shuffles them and places the references), until none does.

        The passes planned up front (``RoundBook.planned_passes``) are measured as one order (``concat_passes``),
        so locally as one agent run; ``first_pass_alone`` gives pass 0 a run of its own (``make_spec``'s first
        argument is the first pass of the run: operator profiles are taken in pass 0 only, and an agent run
        profiles all of its jobs or none). Each re-measure pass, decided once the planned ones are judged, is
        an order and a run of its own. At most ``rounds + remeasure_max`` passes: each adds at most one round
        per model and at most ``remeasure_max`` of a model's rounds are ever discarded. After each order every
        model is settled.
        """
        self.book = book
        planned = book.planned_passes()
        groups = [planned[:1], planned[1:]] if first_pass_alone else [planned]
        first = offset = 0
        for passes in filter(None, groups):
            offset = self._measure_passes(first, passes, order_for, chunk_jobs, make_spec, offset)
            first += len(passes)
            if self.stop.is_set():
                return
        for p in range(len(planned), book.timing.rounds + book.timing.remeasure_max):
            todo = book.next_pass()
            if not todo:
                break
            offset = self._measure_passes(p, [todo], order_for, chunk_jobs, make_spec, offset)
            if self.stop.is_set():
                return
        self.settle(pass_over=True, force=True)

    def _measure_passes(self, first: int, passes: list[list[ModelArtifact]],
                        order_for: Callable[[int, list[ModelArtifact]], list[Slot]], chunk_jobs: int,
                        make_spec: Callable[[int, int, list[Job]], RunSpec], offset: int) -> int:
        """Measure passes ``first``, ``first + 1``, ... as one order starting at ``offset`` in the device's whole
        order, then settle; returns the offset after it."""
        slots, ends = concat_passes([order_for(first + i, models) for i, models in enumerate(passes)])
        # models whose rounds a killed campaign completed are settled at the first reference measurement,
        # once the agent's fingerprint is known
        self.measure(slots, chunk_jobs, lambda k, jobs: make_spec(first, k, jobs), offset, ends)
        if not self.stop.is_set():
            self.settle(pass_over=True)
        return offset + len(slots)

    def store_rows(self, space: str, rows: list[dict[str, Any]]) -> None:
        """Append rows of this device to the dataset (one part file, atomic) and count them."""
        with self.store_lock:
            self.store.append(self.profile.name, space, self.session_id, rows)
        self.outcome.rows += len(rows)
        self.outcome.models.extend(model_summary({**row, "search_space": space}) for row in rows)

    def measure(self, slots: list[Slot], chunk_jobs: int, make_spec: Callable[[int, list[Job]], RunSpec],
                offset: int = 0, pass_ends: set[str] | None = None) -> None:
        """Push and measure a device's whole order: one run locally, chunks with background uploads remotely.

        Remotely, after the first chunk is on the device one background thread uploads the later chunks in
        order while the agent measures; each chunk waits only for its own upload. An upload that failed in the
        background (device dropped) is redone here with reconnects; ``push_models`` skips what arrived intact.
        A run is launched with the jobs of its chunk that are still to measure (``_live``): rounds of a model
        settled meanwhile (it failed) are left out, and a run stopped for them goes on as a new run.
        ``pass_ends``: the jobs whose result ends a pass (``concat_passes``).
        """
        by_id = {s.job_id: s.art for s in slots}
        order = {s.job_id: offset + i for i, s in enumerate(slots)}
        self.pass_ends = set(pass_ends or ())
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
                while live := self._live(chunk):
                    self.run(make_spec(k, build_jobs(live, paths)), by_id, order)
                    if self.stop.is_set():
                        return
        finally:
            uploader.shutdown(wait=False, cancel_futures=True)
