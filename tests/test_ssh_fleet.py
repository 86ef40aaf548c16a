"""``hwlat measure`` over real SSH (sshd on loopback): the command contract and the fault tests.

Each fault is real: the sshd we started is SIGKILLed (with its sessions) and restarted on the same
port, the agent process on the "device" gets ``kill -9``, a custom-op kernel dereferences NULL inside
onnxruntime, a Loop runs for ever, a cached model file is overwritten on the device. Every fault test
asserts nothing lost (every planned model has a row), nothing duplicated (one row per model, one
journal result per job) and a clear status.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from sshkit import SSHServer, ensure_openssh, kill_agents

from agents.errors import DeviceBusyError
from harness.devices import load_profile_file
from harness.records import ModelArtifact
from harness.store import read_dataset
from harness.transport.ssh import SSHTransport

REPO = Path(__file__).resolve().parents[1]
FAST = {"warmup_min_runs": 2, "warmup_min_s": 0.0, "min_runs": 5, "min_time_s": 0.0, "max_runs": 20,
        "max_time_s": 1.0}
#: Long enough per model that a fault can be injected while the campaign is running. One round per model and no
#: re-measures: these tests count agent runs and results of one pass (the rounds protocol's passes over SSH are
#: the loopback tests' FAST profiles).
SLOW = {**FAST, "min_time_s": 0.6, "max_runs": 100000, "max_time_s": 0.8, "rounds": 1, "remeasure_max": 0}
pytestmark = [pytest.mark.ssh, pytest.mark.slow]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SSHServer]:
    try:
        ensure_openssh()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    srv = SSHServer(tmp_path / "sshd").start()
    srv.trust()
    try:
        yield srv
    finally:
        srv.close()
        kill_agents(tmp_path / "work")


def hwlat(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "400"}
    return subprocess.run([sys.executable, "-m", "hwlat", *args], capture_output=True, text=True,
                          timeout=timeout, check=False, cwd=REPO, env=env)


def start_measure(*args: str) -> subprocess.Popen:
    env = {**os.environ, "COLUMNS": "400"}
    return subprocess.Popen([sys.executable, "-m", "hwlat", "measure", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def journal_events(workdir: Path) -> list[dict]:
    events: list[dict] = []
    for path in sorted(workdir.glob("runs/*/journal.jsonl")):
        text = path.read_text()
        events += [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines() if line.strip()]
    return events


def results(workdir: Path) -> list[dict]:
    return [e for e in journal_events(workdir) if e["type"] == "result"]


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"campaign did not finish in {timeout:.0f} s: {err[-2000:]}") from None
    return proc.returncode, out, err


def assert_complete(out: Path, device: str, count: int, workdir: Path) -> list[dict]:
    """Every planned model has exactly one row; every job exactly one journal result."""
    rows = [r for r in read_dataset(out).to_pylist() if r["device"] == device]
    assert len(rows) == count, [(r["arch"], r["status"]) for r in rows]
    assert len({r["model_sha256"] for r in rows}) == count, "a model was stored twice"
    job_ids = [e["job_id"] for e in results(workdir)]
    assert len(job_ids) == len(set(job_ids)), "the journal holds a job twice"
    return rows


def test_contract_check_and_measure_loopback(server: SSHServer, tmp_path: Path, cache: Path) -> None:
    profile = server.profile(tmp_path / "loopback.toml", "loopback", tmp_path / "work", timing=FAST)
    check = hwlat("devices", "check", str(profile))
    assert check.returncode == 0, check.stderr
    assert "cpu_model" in check.stdout and "onnxruntime" in check.stdout and "interpreter" in check.stdout
    assert not results(tmp_path / "work"), "check must not measure anything"
    out = tmp_path / "ds"
    run = hwlat("measure", "--device", str(profile), "--space", "nb201", "--count", "5", "--seed", "1",
                "--out", str(out), "--cache", str(cache))
    assert run.returncode == 0, run.stderr[-3000:]
    rows = assert_complete(out, "loopback", 5, tmp_path / "work")
    local_profile = tmp_path / "local.toml"
    local_profile.write_text(f'name = "loopback"\nhost = "local"\nworkdir = "{tmp_path / "lw"}"\n[timing]\n'
                             + "".join(f"{k} = {v!r}\n" for k, v in FAST.items()))
    local = hwlat("measure", "--device", str(local_profile), "--space", "nb201", "--count", "5", "--seed", "1",
                  "--out", str(tmp_path / "local"), "--cache", str(cache))
    assert local.returncode == 0, local.stderr[-3000:]
    local_rows = read_dataset(tmp_path / "local").to_pylist()
    assert set(rows[0]) == set(local_rows[0]), "SSH rows must have the local path's schema"
    same = ("arch", "model_sha256", "input_shape", "flops", "params", "config_id", "runtime", "threads")
    assert sorted(tuple(str(r[k]) for k in same) for r in rows) == sorted(
        tuple(str(r[k]) for k in same) for r in local_rows)
    for r in rows:
        assert r["status"] in ("ok", "unstable") and r["latency_ms"] > 0 and len(r["raw_ms"]) == r["n_runs"]
        fingerprint = json.loads(r["fingerprint_json"])
        assert fingerprint["host"] == socket.gethostname() and r["cpu_model"]
        assert fingerprint["python_executable"] == sys.executable
        assert r["device_host"] == "127.0.0.1"
    again = hwlat("measure", "--device", str(profile), "--space", "nb201", "--count", "5", "--seed", "1",
                  "--out", str(out), "--cache", str(cache))
    assert again.returncode == 0 and read_dataset(out).num_rows == 5


def test_sshd_killed_mid_campaign_then_restarted(server: SSHServer, tmp_path: Path, cache: Path) -> None:
    workdir = tmp_path / "work"
    profile = server.profile(tmp_path / "p.toml", "flaky", workdir, timing=SLOW, timeouts={"command_s": 5.0})
    out = tmp_path / "ds"
    proc = start_measure("--device", str(profile), "--count", "6", "--seed", "3", "--out", str(out),
                         "--cache", str(cache))
    try:
        wait_for(lambda: len(results(workdir)) >= 2, 240, "the first results")
        server.kill()
        with pytest.raises(OSError):
            socket.create_connection((server.host, server.port), timeout=1).close()
        time.sleep(3)
        log_before = server.log.stat().st_size
        server.start()
        rc, _, err = finish(proc)
        with open(server.log, "rb") as fh:
            fh.seek(log_before)
            assert b"Accepted publickey" in fh.read(), "the coordinator must have reconnected"
    finally:
        proc.kill()
    assert rc == 0, err[-3000:]
    rows = assert_complete(out, "flaky", 6, workdir)
    assert all(r["status"] in ("ok", "unstable") for r in rows)
    starts = [e for e in journal_events(workdir) if e["type"] == "fingerprint"]
    assert len(starts) == 1, "the detached agent must survive the SSH daemon dying"


def test_agent_kill9_mid_model_resumes(server: SSHServer, tmp_path: Path, cache: Path) -> None:
    workdir = tmp_path / "work"
    profile = server.profile(tmp_path / "p.toml", "killed", workdir, timing=SLOW)
    out = tmp_path / "ds"
    proc = start_measure("--device", str(profile), "--count", "5", "--seed", "4", "--out", str(out),
                         "--cache", str(cache))
    try:
        wait_for(lambda: len(results(workdir)) >= 2, 240, "the first results")
        pid = json.loads((workdir / "device.lock").read_text())["pid"]
        os.kill(pid, signal.SIGKILL)
        rc, _, err = finish(proc)
    finally:
        proc.kill()
    assert rc == 0, err[-3000:]
    rows = assert_complete(out, "killed", 5, workdir)
    assert all(r["status"] in ("ok", "unstable") for r in rows)
    starts = [e for e in journal_events(workdir) if e["type"] == "fingerprint"]
    assert len(starts) == 2 and starts[0]["pid"] == pid != starts[1]["pid"]


# ---------------------------------------------------------------------------------------------- pipelining
def _epoch(stamp: str) -> float:
    """The agent's ``finished_at`` (UTC ISO with milliseconds and a Z) as a Unix time."""
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def test_next_chunk_is_uploaded_while_the_current_one_is_measured(server: SSHServer, tmp_path: Path,
                                                                   cache: Path) -> None:
    from harness.campaign import CampaignRequest, run_campaign

    workdir = tmp_path / "work"
    profile = load_profile_file(server.profile(tmp_path / "p.toml", "piped", workdir, timing=SLOW))
    req = CampaignRequest(devices=[profile], out=tmp_path / "ds", count=5, seed=8, cache_dir=cache, workers=1,
                          chunk_jobs=2)
    result = run_campaign(req)
    assert not result.outcomes[0].error, result.outcomes[0].error
    rows = assert_complete(tmp_path / "ds", "piped", 5, workdir)
    # One agent run per chunk, in the device's single order: reference, 5 candidates, reference.
    runs = sorted(workdir.glob("runs/*"))
    chunks = [json.loads((run / "jobs.json").read_text())["jobs"] for run in runs]
    assert [len(c) for c in chunks] == [2, 2, 2, 1]
    roles = [job["role"] for chunk in chunks for job in chunk]
    assert roles == ["reference", *["candidate"] * 5, "reference"]
    assert sorted(r["order_index"] for r in rows) == [1, 2, 3, 4, 5]
    assert all(r["ref_latency_ms"] for r in rows), "the drift reference must carry over between chunks"
    # Overlap: every model of chunk 2 was on the device before chunk 1 produced its last result.
    first_shas = {job["sha256"] for job in chunks[0]}
    second = [workdir / job["model_path"] for job in chunks[1] if job["sha256"] not in first_shas]
    chunk1_events = [json.loads(line) for line in (runs[0] / "journal.jsonl").read_text().splitlines()]
    last_result = max(_epoch(e["finished_at"]) for e in chunk1_events if e["type"] == "result")
    assert second and max(path.stat().st_mtime for path in second) < last_result, \
        "the next chunk must be uploaded while the current one is measured, not after"
    # Resume: everything is in the dataset, so a second campaign measures nothing.
    again = run_campaign(req)
    assert again.outcomes[0].skipped == 5 and again.outcomes[0].rows == 0
    assert read_dataset(tmp_path / "ds").num_rows == 5


# ---------------------------------------------------------------------------------------------- crash & hang
def _save(model: onnx.ModelProto, path: Path) -> Path:
    if not any(o.domain == "hwlat.test" for o in model.opset_import):  # the checker rejects unknown domains
        onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def conv_model(path: Path, channels: int) -> Path:
    """A small real network (Conv + Relu) on a 1x3x16x16 input."""
    weight = helper.make_tensor("w", TensorProto.FLOAT, [channels, 3, 3, 3],
                                np.random.default_rng(channels).standard_normal(channels * 27).astype(np.float32))
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 16, 16])], [weight])
    return _save(helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17)]), path)


def segfault_model(path: Path) -> Path:
    """Relu then hwlat.test::NullDeref, whose kernel (tests/fixtures/agent_crash_op.c) writes to NULL."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("NullDeref", ["r"], ["y"], domain="hwlat.test")],
        "segv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 16, 16])])
    return _save(helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17),
                                                         helper.make_opsetid("hwlat.test", 1)]), path)


def hang_model(path: Path) -> Path:
    """A Loop with 2**62 iterations over a graph input: onnxruntime spins in it for ever."""
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["v_in", "one"], ["v_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1])], [one])
    trips = helper.make_tensor("trips", TensorProto.INT64, [], [2**62])
    cond = helper.make_tensor("cond", TensorProto.BOOL, [], [True])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trips", "cond", "x"], ["y"], body=body)], "hang",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], [trips, cond])
    return _save(helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17)]), path)


def crash_op_library(tmp_path: Path) -> Path:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler to build the crashing custom-op library")
    lib = tmp_path / "libcrashop.so"
    subprocess.run([gcc, "-shared", "-fPIC", "-O0", "-o", str(lib), str(REPO / "tests/fixtures/agent_crash_op.c")],
                   check=True, capture_output=True)
    return lib


def test_segfault_and_hang_are_typed_failures_rest_measured(server: SSHServer, tmp_path: Path) -> None:
    lib = crash_op_library(tmp_path)
    models = tmp_path / "models"
    models.mkdir()
    conv_model(models / "a_ok.onnx", 4)
    segfault_model(models / "b_segfault.onnx")
    hang_model(models / "c_hang.onnx")
    conv_model(models / "d_ok.onnx", 8)
    conv_model(models / "e_ok.onnx", 16)
    workdir = tmp_path / "work"
    # The .so lives on this machine, which is the device; on a board it is a path on the board.
    # One round and no re-measures: one agent run, whose fingerprint count says whether a crash took it down.
    profile = server.profile(tmp_path / "p.toml", "crashy", workdir, timing={**FAST, "rounds": 1, "remeasure_max": 0},
                             timeouts={"model_s": 8.0},
                             custom_op_libraries=[str(lib)])
    out = tmp_path / "ds"
    run = hwlat("measure", "--device", str(profile), "--models", str(models), "--out", str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    rows = {r["arch"]: r for r in read_dataset(out).to_pylist()}
    assert sorted(rows) == ["a_ok", "b_segfault", "c_hang", "d_ok", "e_ok"]
    assert rows["b_segfault"]["status"] == "failed" and rows["b_segfault"]["error_type"] == "crash"
    assert "SIGSEGV" in rows["b_segfault"]["error"]
    assert rows["c_hang"]["status"] == "timeout"
    for name in ("a_ok", "d_ok", "e_ok"):
        assert rows[name]["status"] in ("ok", "unstable") and rows[name]["latency_ms"] > 0
    job_ids = [e["job_id"] for e in results(workdir)]
    assert len(job_ids) == len(set(job_ids))
    starts = [e for e in journal_events(workdir) if e["type"] == "fingerprint"]
    assert len(starts) == 1, "a crashing model must not take the agent down"


# ---------------------------------------------------------------------------------------------- model cache
def _artifacts(paths: list[Path]) -> list[ModelArtifact]:
    import hashlib

    return [ModelArtifact("onnx", p.stem, str(p), hashlib.sha256(p.read_bytes()).hexdigest(), "onnx")
            for p in paths]


def test_model_cache_only_missing_and_corrupt_are_reshipped(server: SSHServer, tmp_path: Path) -> None:
    local = [conv_model(tmp_path / f"m{c}.onnx", c) for c in (2, 3, 4, 5)]
    arts = _artifacts(local)
    workdir = tmp_path / "work"
    transport = SSHTransport(load_profile_file(server.profile(tmp_path / "p.toml", "cache", workdir)))
    try:
        paths = transport.push_models(arts)
        assert transport.last_push["sent"] == 4 and transport.last_push["cached"] == 0
        assert paths == {a.sha256: f"models/{a.sha256}.onnx" for a in arts}
        for art in arts:
            assert (workdir / paths[art.sha256]).read_bytes() == Path(art.path).read_bytes()
        transport.push_models(arts)
        assert transport.last_push["sent"] == 0 and transport.last_push["cached"] == 4
        corrupt, partial, gone = (workdir / paths[a.sha256] for a in arts[:3])
        data = bytearray(corrupt.read_bytes())
        data[len(data) // 2] ^= 0xFF
        corrupt.write_bytes(bytes(data))
        partial.write_bytes(partial.read_bytes()[:100])
        gone.unlink()
        transport.push_models(arts)
        assert transport.last_push["sent"] == 3 and transport.last_push["cached"] == 1
        for art in arts:
            assert (workdir / paths[art.sha256]).read_bytes() == Path(art.path).read_bytes()
        assert not list((workdir / "models").glob("*.part-*")), "no temporary upload may be left behind"
    finally:
        transport.close()


def test_corrupted_cached_model_is_reshipped_by_measure(server: SSHServer, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    for c in (2, 3, 4):
        conv_model(models / f"net{c}.onnx", c)
    workdir = tmp_path / "work"
    profile = server.profile(tmp_path / "p.toml", "cached", workdir, timing=FAST)
    first = hwlat("measure", "--device", str(profile), "--models", str(models), "--out", str(tmp_path / "a"))
    assert first.returncode == 0, first.stderr[-2000:]
    victim = workdir / "models" / f"{_artifacts([models / 'net3.onnx'])[0].sha256}.onnx"
    victim.write_bytes(b"\0" * victim.stat().st_size)
    second = hwlat("measure", "--device", str(profile), "--models", str(models), "--out", str(tmp_path / "b"))
    assert second.returncode == 0, second.stderr[-2000:]
    assert victim.read_bytes() == (models / "net3.onnx").read_bytes()
    rows = read_dataset(tmp_path / "b").to_pylist()
    assert sorted(r["arch"] for r in rows) == ["net2", "net3", "net4"]
    assert all(r["status"] in ("ok", "unstable") for r in rows), [(r["arch"], r["error"]) for r in rows]


# ---------------------------------------------------------------------------------------------- device lock
def test_second_campaign_on_a_busy_device_is_refused(server: SSHServer, tmp_path: Path) -> None:
    from agents.records import Job, RunSpec, TimingConfig

    art = _artifacts([hang_model(tmp_path / "hang.onnx")])[0]
    workdir = tmp_path / "work"
    profile = load_profile_file(server.profile(tmp_path / "p.toml", "shared", workdir, timing=FAST))
    first, second = SSHTransport(profile), SSHTransport(profile)
    try:
        path = first.push_models([art])[art.sha256]
        # Campaign A sits in a model that never finishes, so it holds the device for the whole test.
        spec_a = RunSpec("campaign-a", profile.runtime, TimingConfig(**FAST), [Job("j0", path, art.sha256)],
                         timeout_s=300)
        spec_b = RunSpec("campaign-b", profile.runtime, TimingConfig(**FAST), [Job("j0", path, art.sha256)],
                         timeout_s=300)
        first.start_run(spec_a)
        assert first.agent_alive("campaign-a")
        first.start_run(spec_a)  # idempotent for the run that holds the lock
        with pytest.raises(DeviceBusyError, match=r"device is busy: run campaign-a .* wait for that campaign"):
            second.start_run(spec_b)
        assert second.device_lock_holder()["run_id"] == "campaign-a"
        assert first.agent_alive("campaign-a"), "the refused campaign must not disturb the running one"
        first.stop_run("campaign-a")
        assert not first.agent_alive("campaign-a")
        second.start_run(spec_b)
        assert second.agent_alive("campaign-b") and second.device_lock_holder()["run_id"] == "campaign-b"
        second.stop_run("campaign-b")
        assert not second.agent_alive("campaign-b") and not second.device_lock_holder()
    finally:
        first.close()
        second.close()


# ---------------------------------------------------------------------------------------------- bad profile
@pytest.mark.parametrize(("body", "needle"), [
    ('name = "x"\nhost = "127.0.0.1"\nuser = "root"\nport = "22"\n', "key 'port'"),
    ('name = "x"\nhost = "127.0.0.1"\nuser = "root"\npassword = "hunter2"\n', "key 'password'"),
    ('name = "x"\nhost = "127.0.0.1"\n', "key 'user'"),
    ('name = "x"\nhost = \n', "not valid TOML"),
])
def test_malformed_profile_one_line_exit_2(tmp_path: Path, body: str, needle: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(body)
    for args in (("devices", "check", str(bad)), ("measure", "--device", str(bad), "--count", "1",
                                                   "--out", str(tmp_path / "ds"))):
        proc = hwlat(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.count("\n") == 1 and needle in proc.stderr and str(bad) in proc.stderr
    assert not (tmp_path / "ds").exists()


def test_bad_env_name_in_profile_one_line_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "env.toml"
    bad.write_text('name = "x"\nhost = "127.0.0.1"\nuser = "root"\nenv = { "A B" = "1" }\n')
    proc = hwlat("devices", "check", str(bad))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "key 'env.A B'" in proc.stderr


def test_openvino_over_ssh_loopback(server: SSHServer, tmp_path: Path, cache: Path) -> None:
    """A runtime other than onnxruntime over the real SSH path: the launcher's preflight finds OpenVINO on the
    board, the bundle's OpenVINO backend times the ONNX exports, and the rows say what actually ran."""
    pytest.importorskip("openvino")
    profile = server.profile(tmp_path / "ov.toml", "ovloop", tmp_path / "work", timing=FAST, runtime="openvino",
                             device="CPU")
    out = tmp_path / "ds"
    run = hwlat("measure", "--device", str(profile), "--space", "nb201", "--count", "5", "--seed", "2",
                "--out", str(out), "--cache", str(cache))
    assert run.returncode == 0, run.stderr[-3000:]
    rows = assert_complete(out, "ovloop", 5, tmp_path / "work")
    for r in rows:
        assert r["status"] in ("ok", "unstable"), r["error"]  # unstable: a busy machine's verdict, still timed
        assert (r["runtime"], r["format"]) == ("openvino", "onnx") and r["provider"].startswith("CPU")
        assert r["runtime_version"] and len(r["raw_ms"]) == r["n_runs"] >= 5
