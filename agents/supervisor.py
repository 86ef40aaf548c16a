"""The supervisor side of a run: start the worker (agents/worker.py), send it one job at a time with a deadline,
and turn a crash, a hang or a malformed reply into that job's ``failed``/``timeout`` result before going on.

Wire protocol with the worker (one JSON object per line): the worker first prints ``{"type": "ready", ...}``;
then for each request ``{"job", "model_path", "runtime", "timing", "op_profile"}`` on its stdin it prints one
``MeasureResult`` line on its stdout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import signal
import subprocess
import sys
import time
import zipimport
from collections.abc import Callable
from pathlib import Path
from typing import Any

import agents
from agents.cooldown import cool_down
from agents.errors import ProtocolError
from agents.journal import parse_line, validate_result
from agents.records import Job, MeasureResult, RunSpec, TimingConfig
from agents.system import snapshot, utc_now

SPEC_FILE = "jobs.json"
JOURNAL_FILE = "journal.jsonl"
PID_FILE = "agent.pid"
LOCK_FILE = "agent.lock"
WORKER_LOG = "worker.log"

#: Exit codes of ``run`` besides 0 (done) and 2 (bad input).
EXIT_BUSY = 3
EXIT_PARENT_GONE = 4

#: How much of the worker's stderr goes into a crash result.
STDERR_TAIL_CHARS = 2000
#: How often the supervisor wakes while waiting on the worker (parent and signal checks).
POLL_S = 0.5
#: How long a new worker may take to import numpy and the runtime and say "ready" (a Pi Zero
#: importing TensorFlow can take a minute); never less than the run's ``timeout_s``.
WORKER_START_TIMEOUT_S = 120.0
#: A job that starts within this many seconds of the previous job's result follows a busy CPU: its warm-up
#: needs ``warmup_min_runs`` only, not also ``warmup_min_s`` (docs/timing.md, "Warm-up"). Below the ~32 ms
#: over which Linux's schedutil forgets a CPU's load, so the governor has not stepped the clock down yet.
BUSY_GAP_S = 0.03


class AgentUsageError(Exception):
    """Bad input the user must fix (missing or malformed jobs.json, bad config); exit code 2."""


class AgentBusyError(AgentUsageError):
    """Another agent already holds the run directory's lock; exit code 3."""


class ParentGone(Exception):
    """``--exit-with-parent`` and the process that started the agent has died."""


class WorkerDied(Exception):
    """The worker exited (crash or otherwise) before answering; carries its return code."""

    def __init__(self, returncode: int | None) -> None:
        super().__init__(f"worker exited with {returncode}")
        self.returncode = returncode


class WorkerTimeout(Exception):
    """The worker did not answer before the deadline."""


class WorkerStartError(Exception):
    """A new worker died or stalled before saying "ready"."""


def worker_command(*args: str) -> list[str]:
    """The command that starts a worker with this same agent code.

    From a zipapp (``python agent.pyz``) the archive is re-run with ``worker``; otherwise the
    package is run with ``-m agents``. ``sys.executable`` keeps the same interpreter/venv.
    """
    loader = getattr(agents.__spec__, "loader", None)
    if isinstance(loader, zipimport.zipimporter):
        return [sys.executable, os.path.abspath(loader.archive), "worker", *args]
    return [sys.executable, "-m", "agents", "worker", *args]


def worker_env(extra: dict[str, str]) -> dict[str, str]:
    """The worker's environment: ours, plus the run's ``env``, plus a PYTHONPATH that finds us.

    Prepending the directory that holds this ``agents`` package makes ``-m agents`` resolve to
    the same code even when the supervisor found it through its working directory.
    """
    env = dict(os.environ)
    env.update(extra)
    if not isinstance(getattr(agents.__spec__, "loader", None), zipimport.zipimporter):
        root = str(Path(agents.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH", "")])])
    return env


class WorkerProcess:
    """A running worker: send one request, wait for one line with a deadline."""

    def __init__(self, runtime: str, env: dict[str, str], cpu_affinity: list[int], log_path: Path) -> None:
        args = ["--runtime", runtime, "--parent-pid", str(os.getpid())]
        if cpu_affinity:
            args += ["--cpu-affinity", ",".join(str(c) for c in cpu_affinity)]
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                worker_command(*args), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                env=env, bufsize=0, close_fds=True,
            )
        self._buf = b""

    def read_event(self, deadline: float, poll: Callable[[], None]) -> dict[str, Any]:
        """The next JSON line from the worker; raises WorkerTimeout or WorkerDied."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerTimeout()
            readable, _, _ = select.select([fd], [], [], min(POLL_S, remaining))
            poll()
            if readable:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise WorkerDied(self._reap())
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return parse_line(line, "worker reply")

    def send(self, request: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode("utf-8"))
        except (BrokenPipeError, OSError) as exc:
            raise WorkerDied(self._reap()) from exc

    def _reap(self) -> int | None:
        try:
            return self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def _log_tail(path: Path, offset: int) -> str:
    """What the worker wrote to its log since ``offset``, last STDERR_TAIL_CHARS characters."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return text[-STDERR_TAIL_CHARS:].strip()


def _describe_exit(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return f"runtime crashed (signal {name})"
    return f"worker exited unexpectedly (exit code {returncode})"


class Supervisor:
    """Runs every pending job of a run through a worker, journaling one result per job."""

    def __init__(self, run_dir: Path, spec: RunSpec, exit_with_parent: bool) -> None:
        self.run_dir = run_dir
        self.workdir = run_dir.parent.parent
        self.spec = spec
        self.log_path = run_dir / WORKER_LOG
        self.worker: WorkerProcess | None = None
        #: The last worker's "ready" message (pid, agent_path, cpu_affinity, runtime description).
        self.worker_info: dict[str, Any] = {}
        self._parent = os.getppid() if exit_with_parent else None
        #: jobs the current worker has served (``timing.fresh_worker`` replaces it after each)
        self._served = 0
        #: ``time.monotonic()`` when the previous job's result arrived (None before the first job)
        self._last_end: float | None = None
        self._runtime = dataclasses.replace(
            spec.runtime, custom_op_libraries=[self.resolve(p) for p in spec.runtime.custom_op_libraries]
        )

    def resolve(self, path: str) -> str:
        """Absolute path; relative ones are relative to the workdir (``RUN_DIR/../..``)."""
        return path if os.path.isabs(path) else str(self.workdir / path)

    def check_parent(self) -> None:
        if self._parent is not None and os.getppid() != self._parent:
            raise ParentGone()

    def start_worker(self) -> WorkerProcess:
        """A ready worker (started now if needed); raises WorkerStartError on failure."""
        if self.worker is not None and self.worker.proc.poll() is None:
            if not (self.spec.timing.fresh_worker and self._served):
                return self.worker
            self.stop_worker()
        self._served = 0
        env = worker_env(self.spec.env)
        self.worker = WorkerProcess(self.spec.runtime.runtime, env, self.spec.cpu_affinity, self.log_path)
        limit = max(WORKER_START_TIMEOUT_S, self.spec.timeout_s)
        try:
            ready = self.worker.read_event(time.monotonic() + limit, self.check_parent)
        except WorkerTimeout:
            self.stop_worker()
            raise WorkerStartError(f"worker did not start within {limit:g} s") from None
        except WorkerDied as exc:
            self.stop_worker()
            raise WorkerStartError(f"worker failed to start: {_describe_exit(exc.returncode)}") from None
        self.worker_info = {k: v for k, v in ready.items() if k != "type"}
        return self.worker

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.kill()
            self.worker = None

    def run_job(self, job: Job) -> MeasureResult:
        """One job's result, whatever happens to the worker."""
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        started = utc_now()
        before: dict[str, Any] = {}
        waited: float | None = None
        start_temp: float | None = None
        try:
            worker = self.start_worker()
            waited, start_temp = cool_down(self.spec.timing, self.check_parent)
            before = snapshot()  # after the worker's start-up, so its imports do not count as load
            worker.send({
                "job": dataclasses.asdict(job),
                "model_path": self.resolve(job.model_path),
                "runtime": dataclasses.asdict(self._runtime),
                "timing": dataclasses.asdict(self._job_timing()),
                "op_profile": self.spec.op_profile,
            })
            self._served += 1
            event = worker.read_event(time.monotonic() + self.spec.timeout_s, self.check_parent)
            self._last_end = time.monotonic()
            result = validate_result(event, {job.job_id: job}, self.spec)
        except ProtocolError as exc:  # never journal what the coordinator would have to reject
            self.stop_worker()
            result = self._failure(job, "failed", "invalid_result", f"the worker's result was rejected: {exc}")
            result.started_at = started
        except WorkerTimeout:
            self.stop_worker()
            error = f"no result within timeout_s={self.spec.timeout_s:g}; worker killed (SIGKILL)"
            result = self._failure(job, "timeout", "timeout", error)
            result.started_at = started
        except (WorkerDied, WorkerStartError) as exc:
            self.stop_worker()
            message = _describe_exit(exc.returncode) if isinstance(exc, WorkerDied) else str(exc)
            tail = _log_tail(self.log_path, log_offset)
            error = f"{message}; worker stderr tail:\n{tail}" if tail else message
            result = self._failure(job, "failed", "crash", error)
            result.started_at = started
        result.system_before = before
        result.cooldown_s, result.start_temp_c = waited, start_temp
        return result

    def _job_timing(self) -> TimingConfig:
        """The run's timing, without the warm-up's time floor when the previous job ended just now.

        ``warmup_min_s`` is there for a CPU that may have idled (the first job of a run, after a cooldown or
        a worker start): its clock must ramp up. A job that follows another within ``BUSY_GAP_S`` runs on a
        CPU that was busy until now, and a fresh session needs its ``warmup_min_runs`` only: past 10 runs
        the timed median moves by less than its own noise on every runtime measured
        (benchmarks/warmup_curve.py, docs/benchmarks.md), while the floor cost ~30 ms per job of a
        sub-millisecond model, three times per model with rounds.
        """
        timing = self.spec.timing
        if self._last_end is not None and time.monotonic() - self._last_end <= BUSY_GAP_S:
            return dataclasses.replace(timing, warmup_min_s=0.0)
        return timing

    def _failure(self, job: Job, status: str, error_type: str, error: str) -> MeasureResult:
        return MeasureResult(
            job_id=job.job_id, sha256=job.sha256, role=job.role, status=status, error=error,
            error_type=error_type, runtime=self.spec.runtime.runtime, threads=self.spec.runtime.threads,
            finished_at=utc_now(), system_after=snapshot(),
        )
