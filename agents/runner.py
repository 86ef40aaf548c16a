"""The ``run`` supervisor, its worker, and the journal they share.

Process layout (why): the supervisor never loads a model. It keeps one persistent worker
subprocess that imports the runtime once and times the jobs one by one; a model that segfaults
or hangs the runtime takes down only the worker, which the supervisor records (``failed``/crash
or ``timeout``) and replaces before going on with the next job.

Durability: every event is one JSON line appended to ``journal.jsonl`` with a single ``write``
followed by ``fsync``, so after ``kill -9`` (or a power cut) the journal holds whole lines plus at
most one torn last line. On start the supervisor drops a torn tail and skips every job that already
has a result line, so re-running ``run`` measures exactly the remaining jobs.

Wire protocol with the worker (one JSON object per line): the worker first prints
``{"type": "ready", ...}``; then for each request ``{"job", "model_path", "runtime", "timing", "op_profile"}``
on its stdin it prints one ``MeasureResult`` line on its stdout. Runtime chatter that C libraries
write to fd 1 is redirected to stderr, which goes to ``worker.log`` in the run directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import faulthandler
import gc
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

import numpy as np

import agents
from agents import memory
from agents.backends import BackendConfigError, MissingRuntimeError, backend_class, get_backend
from agents.cooldown import cool_down
from agents.errors import ProtocolError
from agents.files import fsync_dir, sha256_file
from agents.journal import iter_journal, parse_line, validate_result
from agents.records import Job, MeasureResult, RunSpec, RuntimeConfig, TimingConfig
from agents.system import fingerprint, snapshot, utc_now
from agents.timing import summarize, time_inference

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


# --------------------------------------------------------------------------------------------
# Small helpers shared by the CLI commands
# --------------------------------------------------------------------------------------------


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


def _one_line(exc: BaseException, limit: int = 500) -> str:
    """``Type: first line of message``, trimmed: results carry a one-line error."""
    text = str(exc).strip().splitlines()
    message = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return message if len(message) <= limit else message[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------
# Journal
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Worker side
# --------------------------------------------------------------------------------------------


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this worker when the supervisor dies (even by ``kill -9``).

    Otherwise an orphaned worker would keep timing a model and disturb the resumed run.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if parent_pid and os.getppid() != parent_pid:  # the supervisor died before prctl took effect
        os._exit(1)


#: ``--op-profile``: warm-up and recorded inferences of the profiled session. One profiled inference on a busy
#: machine can be 10x off (seen on the 2-core dev VM); the per-operator median of 10 is not.
OP_PROFILE_WARMUP, OP_PROFILE_RUNS = 5, 10


def measure_job(job: Job, model_path: str, runtime: RuntimeConfig, timing: TimingConfig,
                op_profile: bool = False) -> MeasureResult:
    """Load, time and summarise one model in this process. Never raises for model problems.

    A Python exception while loading (or preparing inputs) gives ``failed``/``load``, while
    running gives ``failed``/``run``; a missing runtime gives ``failed``/``missing_runtime``.
    ``system_after`` and the peak RSS are taken right after the last timed run, before the session is
    released and before the optional operator profile (a second, profiled session: never inside the timed
    loop; its failure is recorded in ``op_profile_error`` and leaves the timing valid).
    """
    result = MeasureResult(
        job_id=job.job_id, sha256=job.sha256, role=job.role, status="failed",
        runtime=runtime.runtime, threads=runtime.threads, started_at=utc_now(),
    )
    backend = None
    gc.collect()  # what the previous model left is freed before the peak is reset
    peak_known = memory.reset_peak()
    result.base_rss_mb = memory.rss_mb()
    try:
        backend = get_backend(runtime)
        result.runtime_version = backend.version()
        if job.sha256:
            actual = sha256_file(model_path)
            if actual != job.sha256:
                raise ValueError(f"model file {model_path} has sha256 {actual}, job expects {job.sha256}")
        t0 = time.perf_counter_ns()
        backend.load(model_path)
        result.load_ms = round((time.perf_counter_ns() - t0) / 1e6, 6)
        result.provider = backend.provider()
        result.threads = backend.threads()
        if job.input_shapes:
            backend.set_input_shapes(job.input_shapes)
        specs = backend.input_specs()
        result.input_shapes = {name: shape for name, (shape, _) in specs.items()}
        result.input_dtypes = {name: dtype for name, (_, dtype) in specs.items()}
        inputs = backend.make_inputs(np.random.default_rng(timing.seed))
    except MissingRuntimeError as exc:
        result.error, result.error_type = str(exc), "missing_runtime"
    except Exception as exc:
        result.error, result.error_type = _one_line(exc), "load"
    else:
        try:
            outcome = time_inference(lambda: backend.run(inputs), timing)
        except Exception as exc:
            result.error, result.error_type = _one_line(exc), "run"
        else:
            result.system_after = snapshot()
            result.peak_rss_mb = memory.peak_mb() if peak_known else None
            stats = summarize(outcome.raw_ms, timing.unstable_cv)
            unstable = stats.pop("unstable")
            for key, value in stats.items():
                setattr(result, key, value)
            result.first_ms = outcome.first_ms
            result.warmup_runs = outcome.warmup_runs
            result.raw_ms = outcome.raw_ms
            result.stop_reason = outcome.stop_reason
            result.status = "unstable" if unstable else "ok"
            if op_profile:
                try:
                    result.op_times = backend.profile_ops(inputs, OP_PROFILE_WARMUP, OP_PROFILE_RUNS)
                except Exception as exc:
                    result.op_profile_error = _one_line(exc)
    if not result.system_after:
        result.system_after = snapshot()
    result.finished_at = utc_now()
    backend = inputs = None
    gc.collect()  # free the session (and its arena) before the next model is loaded
    return result


def worker_main(runtime: str, parent_pid: int, cpu_affinity: list[int]) -> int:
    """Serve job requests from stdin until EOF (the supervisor closed the pipe or died)."""
    faulthandler.enable()  # a segfault dumps the Python stack into worker.log
    _die_with_parent(parent_pid)
    if cpu_affinity:
        os.sched_setaffinity(0, cpu_affinity)  # before the runtime creates its thread pools
    proto = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # anything printed by runtimes lands in the log, not in the protocol
    sys.stdout = sys.stderr
    cls = backend_class(runtime)
    with contextlib.suppress(MissingRuntimeError):  # then every job reports it with the install hint
        cls.import_runtime()
    ready = {
        "type": "ready",
        "pid": os.getpid(),
        "agent_path": os.path.dirname(os.path.abspath(agents.__file__)),
        "cpu_affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "runtime": cls.describe(),
    }
    proto.write(json.dumps(ready) + "\n")
    proto.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        result = measure_job(
            Job.from_dict(request["job"]),
            request["model_path"],
            RuntimeConfig.from_dict(request["runtime"]),
            TimingConfig.from_dict(request["timing"]),
            op_profile=bool(request.get("op_profile", False)),
        )
        proto.write(result.to_json() + "\n")
        proto.flush()
    return 0


# --------------------------------------------------------------------------------------------
# Supervisor side
# --------------------------------------------------------------------------------------------


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
            return self.worker
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
                "timing": dataclasses.asdict(self.spec.timing),
                "op_profile": self.spec.op_profile,
            })
            event = worker.read_event(time.monotonic() + self.spec.timeout_s, self.check_parent)
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

    def _failure(self, job: Job, status: str, error_type: str, error: str) -> MeasureResult:
        return MeasureResult(
            job_id=job.job_id, sha256=job.sha256, role=job.role, status=status, error=error,
            error_type=error_type, runtime=self.spec.runtime.runtime, threads=self.spec.runtime.threads,
            finished_at=utc_now(), system_after=snapshot(),
        )


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
        raise AgentUsageError(f"{path}: not a valid run spec ({_one_line(exc)})") from None
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
