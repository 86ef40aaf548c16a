"""The ``run`` supervisor end to end: real agent processes, real models, real crashes and hangs.

Nothing is faked: the hang is an onnxruntime Loop that never ends, the crash is a custom-op kernel
that dereferences NULL inside onnxruntime, ``kill -9`` is a real SIGKILL of a running agent.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from fixtures.agent_models import (
    REPO,
    agent_cmd,
    build_crash_library,
    conv_model,
    crash_model,
    loop_hang_model,
    matmul_model,
    write_run,
)

from agents.journal import read_journal
from agents.records import MeasureResult

pytestmark = pytest.mark.slow


def run_agent(run_dir: Path, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        agent_cmd("run", str(run_dir), *extra), cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def results(run_dir: Path) -> dict[str, dict]:
    """job_id -> result event; fails on duplicates (every job must have exactly one)."""
    events = [e for e in read_journal(run_dir / "journal.jsonl") if e["type"] == "result"]
    counts = Counter(e["job_id"] for e in events)
    assert all(c == 1 for c in counts.values()), f"duplicate results: {counts}"
    return {e["job_id"]: e for e in events}


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for a reaper counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def assert_measured(result: dict) -> None:
    """A successful measurement: status ok/unstable and self-consistent statistics."""
    assert result["status"] in ("ok", "unstable"), result["error"]
    assert result["n_runs"] == len(result["raw_ms"]) > 0
    assert result["min_ms"] <= result["median_ms"] <= result["max_ms"]
    assert result["load_ms"] > 0 and result["first_ms"] > 0
    assert result["system_before"]["mem_available_mb"] > 0
    assert result["system_after"]["mem_available_mb"] > 0


# ---------------------------------------------------------------------------------------------
# One run mixing good models with a segfault, a hang, a garbage file and a missing file
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("agent-mixed")
    (workdir / "models").mkdir()
    (workdir / "lib").mkdir()
    library = build_crash_library(workdir / "lib")
    if library is None:
        pytest.skip("no C compiler (gcc/cc) to build the crashing custom-op library")
    garbage = workdir / "models" / "garbage.onnx"
    garbage.write_bytes(b"this is not an onnx model\n" * 10)
    models = workdir / "models"
    jobs = [
        {"job_id": "mm", "model_path": "models/mm.onnx", "sha256": matmul_model(models / "mm.onnx")},
        {"job_id": "crash", "model_path": "models/crash.onnx", "sha256": crash_model(models / "crash.onnx")},
        {"job_id": "conv", "model_path": "models/conv.onnx", "sha256": conv_model(models / "conv.onnx")},
        {"job_id": "hang", "model_path": "models/hang.onnx", "sha256": loop_hang_model(models / "hang.onnx")},
        {"job_id": "garbage", "model_path": str(garbage), "sha256": hashlib.sha256(garbage.read_bytes()).hexdigest()},
        {"job_id": "missing", "model_path": "models/absent.onnx", "sha256": ""},
        {"job_id": "mm2", "model_path": "models/mm2.onnx", "sha256": matmul_model(models / "mm2.onnx", seed=2)},
    ]
    run_dir = write_run(
        workdir, "mixed", jobs, timeout_s=4.0,
        runtime={"custom_op_libraries": ["lib/libhwlat_crash_op.so"]},  # relative to the workdir
        cpu_affinity=[0],
    )
    proc = run_agent(run_dir)
    assert proc.returncode == 0, proc.stderr
    return run_dir


def test_journal_has_fingerprint_then_one_result_per_job_then_done(mixed_run: Path) -> None:
    events = read_journal(mixed_run / "journal.jsonl")
    assert events[0]["type"] == "fingerprint" and events[0]["run_id"] == "mixed"
    assert events[-1] == {"type": "done", "run_id": "mixed"}
    assert [e["job_id"] for e in events[1:-1]] == ["mm", "crash", "conv", "hang", "garbage", "missing", "mm2"]
    for event in events[1:-1]:  # every result line round-trips through the wire record
        assert MeasureResult.from_dict(event).job_id == event["job_id"]
    assert not (mixed_run / "agent.pid").exists()


def test_segfault_is_a_crash_and_the_next_job_is_measured(mixed_run: Path) -> None:
    by_id = results(mixed_run)
    crash = by_id["crash"]
    assert crash["status"] == "failed" and crash["error_type"] == "crash"
    assert crash["error"].startswith("runtime crashed (signal SIGSEGV)")
    assert "Segmentation fault" in crash["error"]  # the worker's faulthandler dump, from its stderr
    assert_measured(by_id["conv"])  # measured by a fresh worker


def test_hang_is_a_timeout_and_the_next_job_is_measured(mixed_run: Path) -> None:
    by_id = results(mixed_run)
    hang = by_id["hang"]
    assert hang["status"] == "timeout" and hang["error_type"] == "timeout"
    assert "timeout_s=4" in hang["error"]
    assert hang["n_runs"] == 0 and hang["system_after"]


def test_unreadable_models_fail_to_load_and_the_rest_is_measured(mixed_run: Path) -> None:
    by_id = results(mixed_run)
    for job_id in ("garbage", "missing"):
        assert by_id[job_id]["status"] == "failed"
        assert by_id[job_id]["error_type"] == "load"
        assert "\n" not in by_id[job_id]["error"]
    assert "absent.onnx" in by_id["missing"]["error"]
    assert_measured(by_id["mm"])
    assert_measured(by_id["mm2"])
    assert by_id["mm"]["input_shapes"] == {"x": [1, 64]} and by_id["mm"]["input_dtypes"] == {"x": "float32"}
    assert by_id["mm"]["provider"] == "CPUExecutionProvider"
    assert by_id["garbage"]["error"].startswith("InvalidProtobuf")


def test_worker_pinned_to_the_run_cpu_affinity(mixed_run: Path) -> None:
    fingerprint = read_journal(mixed_run / "journal.jsonl")[0]
    assert fingerprint["worker"]["cpu_affinity"] == [0]
    assert fingerprint["runtimes"]["onnxruntime"]["available"] is True


# ---------------------------------------------------------------------------------------------
# Durability and exclusivity
# ---------------------------------------------------------------------------------------------


def test_resume_after_kill_9_measures_each_job_exactly_once(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    sha = matmul_model(tmp_path / "models" / "mm.onnx")
    jobs = [{"job_id": f"j{i}", "model_path": "models/mm.onnx", "sha256": sha} for i in range(5)]
    slow = {"warmup_min_runs": 2, "warmup_min_s": 0.0, "min_runs": 10, "min_time_s": 0.4, "max_time_s": 0.6,
            "max_runs": 1_000_000}
    run_dir = write_run(tmp_path, "resume", jobs, timing=slow)
    journal = run_dir / "journal.jsonl"

    agent = subprocess.Popen(agent_cmd("run", str(run_dir)), cwd=REPO, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: any(e["type"] == "result" for e in read_journal(journal)), 60, "a first result")
        workers = children(agent.pid)
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
    finally:
        if agent.poll() is None:
            agent.kill()
        agent.stderr.close()
    before = results(run_dir)
    assert 1 <= len(before) < 5, "the agent must be killed mid-run"
    assert workers, "the supervisor had a worker"
    wait_for(lambda: not any(alive(p) for p in workers), 10, "the orphaned worker to die")
    # A line torn by the kill (simulated here, since a single write rarely tears) must not
    # corrupt what the resumed agent appends.
    with open(journal, "ab") as f:
        f.write(b'{"type": "result", "job_id": "j4", "status": "o')

    proc = run_agent(run_dir)
    assert proc.returncode == 0, proc.stderr
    after = results(run_dir)
    assert sorted(after) == [f"j{i}" for i in range(5)]
    for job_id, result in before.items():
        assert after[job_id] == result  # kept, not re-measured
    types = Counter(e["type"] for e in read_journal(journal))
    assert types == {"fingerprint": 2, "result": 5, "done": 1}
    assert journal.read_bytes().endswith(b"\n")

    # Running a finished run again measures nothing and does not repeat "done".
    assert run_agent(run_dir).returncode == 0
    assert Counter(e["type"] for e in read_journal(journal)) == {"fingerprint": 3, "result": 5, "done": 1}


def test_second_agent_on_same_run_is_refused_and_sigterm_stops_the_first(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    sha = loop_hang_model(tmp_path / "models" / "hang.onnx")
    run_dir = write_run(tmp_path, "busy", [{"job_id": "h", "model_path": "models/hang.onnx", "sha256": sha}])
    first = subprocess.Popen(agent_cmd("run", str(run_dir)), cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: bool(read_journal(run_dir / "journal.jsonl")), 60, "the first agent's fingerprint")
        assert (run_dir / "agent.pid").read_text().strip() == str(first.pid)
        worker_pid = read_journal(run_dir / "journal.jsonl")[0]["worker"]["pid"]

        second = run_agent(run_dir, timeout=60)
        assert second.returncode == 3
        assert f"another agent (pid {first.pid}) is already running" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1

        first.send_signal(signal.SIGTERM)
        assert first.wait(15) == 128 + signal.SIGTERM
    finally:
        if first.poll() is None:
            first.kill()
        first.stderr.close()
    wait_for(lambda: not alive(worker_pid), 10, "the worker to be killed")
    assert not (run_dir / "agent.pid").exists()
    assert [e["type"] for e in read_journal(run_dir / "journal.jsonl")] == ["fingerprint"]


def test_exit_with_parent_stops_agent_and_worker_when_parent_dies(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    sha = loop_hang_model(tmp_path / "models" / "hang.onnx")
    run_dir = write_run(tmp_path, "orphan", [{"job_id": "h", "model_path": "models/hang.onnx", "sha256": sha}])
    launcher = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen({agent_cmd('run', str(run_dir), '--exit-with-parent')!r}, cwd={str(REPO)!r},"
        " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", launcher], stdout=subprocess.PIPE, text=True)
    try:
        agent_pid = int(parent.stdout.readline())
        wait_for(lambda: bool(read_journal(run_dir / "journal.jsonl")), 60, "the agent's fingerprint")
        worker_pid = read_journal(run_dir / "journal.jsonl")[0]["worker"]["pid"]
        assert alive(agent_pid) and alive(worker_pid)
        parent.kill()
        parent.wait(10)
    finally:
        if parent.poll() is None:
            parent.kill()
        parent.stdout.close()
    wait_for(lambda: not alive(agent_pid), 10, "the agent to notice its parent died")
    wait_for(lambda: not alive(worker_pid), 10, "the worker to be killed")


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (None, "jobs.json: not found"),
        ("{not json", "not a valid run spec"),
        ({"run_id": "r", "runtime": {"graph_optimization_level": "max"}, "jobs": []}, "graph_optimization_level"),
        ({"run_id": "r", "runtime": {"runtime": "tvm"}, "jobs": []}, "unknown runtime 'tvm'"),
        ({"run_id": "r", "jobs": [{"job_id": "a", "model_path": "m", "sha256": ""}] * 2}, "appears twice"),
        ({"run_id": "r", "jobs": [], "cpu_affinity": [4096]}, "cpu_affinity CPUs [4096]"),
    ],
)
def test_bad_run_spec_exits_2_with_one_line(tmp_path: Path, spec: object, message: str) -> None:
    run_dir = tmp_path / "runs" / "r"
    run_dir.mkdir(parents=True)
    if spec is not None:
        (run_dir / "jobs.json").write_text(spec if isinstance(spec, str) else json.dumps(spec))
    proc = run_agent(run_dir)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (run_dir / "journal.jsonl").exists()


def test_every_command_has_help() -> None:
    for command in ("run", "fingerprint", "hash", "worker"):
        proc = subprocess.run(agent_cmd(command, "--help"), cwd=REPO, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and "usage:" in proc.stdout


def test_hash_prints_sha256_per_path_and_null_for_missing(tmp_path: Path) -> None:
    sha = matmul_model(tmp_path / "mm.onnx")
    missing = str(tmp_path / "nope.onnx")
    proc = subprocess.run(
        agent_cmd("hash", str(tmp_path / "mm.onnx"), missing), cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {str(tmp_path / "mm.onnx"): sha, missing: None}


def test_fingerprint_cli_reports_device_and_runtimes() -> None:
    proc = subprocess.run(agent_cmd("fingerprint"), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    for key in ("host", "cpu_model", "cores_logical", "cores_physical", "ram_mb", "os", "kernel", "machine",
                "board", "python_version", "python_implementation", "numpy_version", "runtimes", "gpus",
                "governors", "agent_version", "warnings"):
        assert key in info, key
    assert info["cores_logical"] == os.cpu_count()
    assert info["python_version"] == ".".join(map(str, sys.version_info[:3]))
    ort = info["runtimes"]["onnxruntime"]
    assert ort["available"] and "CPUExecutionProvider" in ort["providers"]
    assert info["runtimes"]["litert"]["available"] in (True, False)
    assert isinstance(info["warnings"], list) and all(isinstance(w, str) for w in info["warnings"])
