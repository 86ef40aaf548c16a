"""The worker: the process that times. One per run (replaced after a crash); it imports the runtime once,
then serves one job request per line on stdin with one ``MeasureResult`` line on its stdout.

Kept apart from the supervisor (agents/supervisor.py), as pyperf keeps its worker apart from its runner: a model
that segfaults or hangs the runtime takes down only this process. Runtime chatter that C libraries write to fd 1
is redirected to stderr, which goes to ``worker.log`` in the run directory.
"""

from __future__ import annotations

import contextlib
import faulthandler
import gc
import json
import os
import signal
import sys
import time

import numpy as np

import agents
from agents import memory
from agents.backends import MissingRuntimeError, backend_class, get_backend
from agents.files import sha256_file
from agents.records import Job, MeasureResult, RuntimeConfig, TimingConfig
from agents.system import busy_pct_own_cpus, snapshot, utc_now
from agents.timing import summarize, time_inference


def one_line(exc: BaseException, limit: int = 500) -> str:
    """``Type: first line of message``, trimmed: results carry a one-line error."""
    text = str(exc).strip().splitlines()
    message = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return message if len(message) <= limit else message[: limit - 3] + "..."


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
        result.error, result.error_type = one_line(exc), "load"
    else:
        try:
            busy_pct_own_cpus()  # starts the window that system_after's busy_pct_own_cpus covers: the timed loop
            outcome = time_inference(lambda: backend.run(inputs), timing)
        except Exception as exc:
            result.error, result.error_type = one_line(exc), "run"
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
                    result.op_profile_error = one_line(exc)
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
