"""``python -m agents run RUN_DIR``: the agent's run, its lock and its journal writer.

Process layout (why): the supervisor (agents/supervisor.py) never loads a model. It keeps one persistent worker
subprocess (agents/worker.py) that imports the runtime once and times the jobs one by one; a model that segfaults
or hangs the runtime takes down only the worker, which the supervisor records (``failed``/crash or ``timeout``)
and replaces before going on with the next job.

Durability: every event is one JSON line appended to ``journal.jsonl`` with a single ``write`` followed by
``fsync``, so after ``kill -9`` (or a power cut) the journal holds whole lines plus at most one torn last line.
On start the run drops a torn tail and skips every job that already has a result line (``agents.journal``
parses it), so re-running ``run`` measures exactly the remaining jobs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path
from typing import Any

from agents.backends import BackendConfigError, backend_class
from agents.errors import ProtocolError
from agents.files import fsync_dir
from agents.journal import iter_journal
from agents.records import RunSpec
from agents.supervisor import (
    JOURNAL_FILE,
    LOCK_FILE,
    PID_FILE,
    SPEC_FILE,
    AgentBusyError,
    AgentUsageError,
    Supervisor,
    WorkerStartError,
)
from agents.system import fingerprint, thread_warnings
from agents.worker import one_line


class Journal:
    """Append-only JSON-lines file; each append is one ``write`` + ``fsync``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._drop_torn_tail()
        created = not path.exists()
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if created:
            fsync_dir(path.parent)

    def _drop_torn_tail(self) -> None:
        """Cut an incomplete last line (the agent died mid-write) so the next append starts clean.

        Without this, the next line would be glued to the fragment and both would be lost. Reads
        backwards from the end in small blocks, never the whole file.
        """
        if not self.path.exists():
            return
        with open(self.path, "r+b") as f:
            end = f.seek(0, os.SEEK_END)
            if end == 0:
                return
            f.seek(end - 1)
            if f.read(1) == b"\n":
                return
            pos = end
            keep = 0
            while pos > 0:
                start = max(0, pos - 65536)
                f.seek(start)
                newline = f.read(pos - start).rfind(b"\n")
                if newline >= 0:
                    keep = start + newline + 1
                    break
                pos = start
            f.truncate(keep)
            os.fsync(f.fileno())

    def append(self, line: str) -> None:
        data = (line.rstrip("\n") + "\n").encode("utf-8")
        written = os.write(self._fd, data)
        while written < len(data):  # regular files only write short on errors such as a full disk
            written += os.write(self._fd, data[written:])
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


def load_spec(run_dir: Path) -> RunSpec:
    """Read and validate ``RUN_DIR/jobs.json``; every problem is an AgentUsageError."""
    path = run_dir / SPEC_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AgentUsageError(f"{path}: not found; the coordinator writes it before starting the agent") from None
    except OSError as exc:
        raise AgentUsageError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        spec = RunSpec.from_json(text)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise AgentUsageError(f"{path}: not a valid run spec ({one_line(exc)})") from None
    seen: set[str] = set()
    for job in spec.jobs:
        if job.job_id in seen:
            raise AgentUsageError(f"{path}: job_id {job.job_id!r} appears twice")
        seen.add(job.job_id)
    if spec.timeout_s <= 0:
        raise AgentUsageError(f"{path}: timeout_s must be > 0, got {spec.timeout_s}")
    try:
        backend_class(spec.runtime.runtime).validate(spec.runtime)
    except BackendConfigError as exc:
        raise AgentUsageError(f"{path}: runtime: {exc}") from None
    if spec.cpu_affinity:
        if not hasattr(os, "sched_setaffinity"):
            raise AgentUsageError(f"{path}: cpu_affinity is only supported on Linux")
        allowed = os.sched_getaffinity(0)
        missing = sorted(set(spec.cpu_affinity) - allowed)
        if missing:
            raise AgentUsageError(f"{path}: cpu_affinity CPUs {missing} are not available (allowed: {sorted(allowed)})")
    return spec


def _lock_run_dir(run_dir: Path) -> int:
    """Hold an exclusive flock on ``agent.lock`` for the process lifetime (released on any death)."""
    import fcntl

    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        owner = (run_dir / PID_FILE).read_text().strip() if (run_dir / PID_FILE).exists() else "unknown"
        raise AgentBusyError(f"another agent (pid {owner}) is already running on {run_dir}") from None
    return fd


def _write_pid(run_dir: Path) -> None:
    tmp = run_dir / f"{PID_FILE}.{os.getpid()}.tmp"
    tmp.write_text(f"{os.getpid()}\n")
    os.replace(tmp, run_dir / PID_FILE)


def run_agent(run_dir: str | os.PathLike[str], exit_with_parent: bool = False) -> int:
    """The ``run`` command: measure every job of RUN_DIR that has no result yet.

    Returns 0 when the run is complete (``done`` written). Raises AgentUsageError for bad input,
    AgentBusyError when another agent holds the run, ParentGone when ``exit_with_parent`` fires.
    """
    path = Path(run_dir).resolve()
    if not path.is_dir():
        raise AgentUsageError(f"{path}: run directory not found")
    spec = load_spec(path)
    lock_fd = _lock_run_dir(path)
    journal: Journal | None = None
    supervisor: Supervisor | None = None

    def on_term(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        _write_pid(path)
        journal = Journal(path / JOURNAL_FILE)
        measured: set[str] = set()
        already_done = False
        try:
            for event in iter_journal(journal.path):
                if event["type"] == "result":
                    measured.add(str(event.get("job_id")))
                already_done = already_done or event["type"] == "done"
        except ProtocolError as exc:
            raise AgentUsageError(f"{exc}; move the run directory away to measure it again") from None
        pending = [job for job in spec.jobs if job.job_id not in measured]
        supervisor = Supervisor(path, spec, exit_with_parent)
        worker: dict[str, Any] = {}
        if pending:
            try:
                supervisor.start_worker()
                worker = supervisor.worker_info
            except WorkerStartError as exc:  # the first job records the details
                worker = {"error": str(exc)}
        # The worker describes the runtime it imported; the supervisor never imports one itself.
        runtimes = {spec.runtime.runtime: worker["runtime"]} if "runtime" in worker else {}
        info = fingerprint(runtimes=runtimes)
        cpus = worker.get("cpu_affinity") or info.get("cpu_affinity") or []
        info["warnings"] += thread_warnings(spec.runtime.threads, len(cpus) if isinstance(cpus, list) else 0)
        event = {"type": "fingerprint", "run_id": spec.run_id, "pid": os.getpid(), **info, "worker": worker}
        journal.append(json.dumps(event))
        for job in pending:
            supervisor.check_parent()
            journal.append(supervisor.run_job(job).to_json())
        if not already_done:
            journal.append(json.dumps({"type": "done", "run_id": spec.run_id}))
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        if supervisor is not None:
            supervisor.stop_worker()
        if journal is not None:
            journal.close()
        with contextlib.suppress(OSError):
            (path / PID_FILE).unlink()
        os.close(lock_fd)
