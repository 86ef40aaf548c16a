"""Issue 15, classes 1-3: a campaign never exits 0 after losing a measurement.

Real parts only: a real sshd on loopback (tests/sshkit.py), real tmpfs disks that fill up (root only; the
tests skip with the reason otherwise), forged journals written into the real run directory on the "device"
while the real agent runs. Every test asserts: what was measured is stored intact, nothing is stored that
was not measured, and the exit code and the message say what happened.

1. A failure inside one device's work (full ``--out`` disk, corrupt journal line) is that device's failure:
   exit ``EXIT_FAILED``, the reason in the table and in the dataset's session log, other devices go on.
2. Everything the device sends is checked (``agents.journal``): a forged result or a ``done`` without the
   results is refused with its reason and never stored.
3. Reconnects are bounded: a device that takes the connection and then fails the same step every time
   (disk full under the model cache or the run folder) is given up after ``--max-reconnect`` seconds, and an
   upload that failed never appears under its final name.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sshkit import SSHServer, ensure_openssh, kill_agents

from agents.errors import ProtocolError
from agents.journal import validate_event
from agents.records import Job, RunSpec, RuntimeConfig, TimingConfig
from harness.store import read_dataset
from hwlat.cli.console import EXIT_FAILED

REPO = Path(__file__).resolve().parents[1]
FAST = {"warmup_min_runs": 2, "warmup_min_s": 0.0, "min_runs": 5, "min_time_s": 0.0, "max_runs": 20,
        "max_time_s": 1.0}
#: Long enough per model that a fault can be injected while the campaign runs.
SLOW = {**FAST, "min_time_s": 0.5, "max_runs": 100000, "max_time_s": 0.6}
pytestmark = [pytest.mark.ssh, pytest.mark.slow]


# ---------------------------------------------------------------------------------------------- helpers
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
        for workdir in tmp_path.glob("work*"):
            kill_agents(workdir)


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A real, small filesystem at ``path`` that fills up: ``mount -t tmpfs`` (root only)."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("a real full disk needs root to mount a tmpfs")
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def fill(path: Path) -> Path:
    """Write a file into ``path`` until its filesystem is full; returns the file (delete it to free the space)."""
    filler = path / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with contextlib.suppress(OSError):
            while os.write(fd, b"\0" * 4096):
                pass
    finally:
        os.close(fd)
    return filler


def start_measure(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hwlat", "measure", *args], cwd=REPO,
                            env={**os.environ, "COLUMNS": "400"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"campaign did not finish in {timeout:.0f} s: {err[-2000:]}") from None
    return proc.returncode, err


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def journal_results(workdir: Path) -> dict[tuple[str, str], dict]:
    """(run, job_id) -> the agent's first result line of that run, over every run of a device workdir (valid JSON
    lines only). Keyed by run too: a rerun plans its job ids afresh over the models still to measure, so the same
    model in the same pass can get the id it had in an earlier run, with a new measurement."""
    out: dict[tuple[str, str], dict] = {}
    for path in sorted(workdir.glob("runs/*/journal.jsonl")):
        for line in path.read_bytes().splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and event.get("type") == "result":
                    out.setdefault((path.parent.name, event["job_id"]), event)
    return out


def assert_rows_were_measured(out: Path, device: str, workdir: Path, forged: set[str] = frozenset()) -> list[dict]:
    """Every stored measurement of ``device`` is made of results its agent really journaled: each of a row's
    rounds (docs/timing.md, "Rounds") is a journaled result of the same model with the same median and samples.

    (``export_failed`` rows are not measurements: no device saw those models.)"""
    rows = [r for r in read_dataset(out).to_pylist() if r["device"] == device and r["status"] != "export_failed"
            ] if out.exists() else []
    by_model: dict[str, list[dict]] = {}
    for (_, job_id), result in journal_results(workdir).items():
        if job_id not in forged:
            by_model.setdefault(result["sha256"], []).append(result)
    for row in rows:
        assert row["job_id"] not in forged, f"a forged result was stored: {row['job_id']}"
        real = by_model.get(row["model_sha256"], [])
        samples = [x for result in real for x in result["raw_ms"]]
        for median in row["round_medians_ms"]:
            assert median in [result["median_ms"] for result in real], f"round {median} ms was never journaled"
        assert all(x in samples for x in row["raw_ms"]) and len(row["raw_ms"]) <= len(samples)
        assert row["status"] in ("ok", "unstable") and row["latency_ms"] > 0
    assert len({r["model_sha256"] for r in rows}) == len(rows), "a model was stored twice"
    return rows


def profile(server: SSHServer, tmp_path: Path, name: str, timing: dict, **extra: object) -> Path:
    return server.profile(tmp_path / f"{name}.toml", name, tmp_path / f"work-{name}", timing=timing, **extra)


# ---------------------------------------------------------------------------------------------- class 1
def test_full_out_disk_fails_the_device_keeps_its_rows_and_a_rerun_completes(server: SSHServer, tmp_path: Path,
                                                                            cache: Path) -> None:
    prof = profile(server, tmp_path, "disk", SLOW)
    with tmpfs(tmp_path / "outfs", "4m") as outfs:
        out = outfs / "ds"
        args = ("--device", str(prof), "--count", "6", "--seed", "5", "--out", str(out), "--cache", str(cache))
        proc = start_measure(*args)
        try:
            wait_for(lambda: len(list(out.rglob("part-*.parquet"))) >= 2, 240, "the first two rows")
            filler = fill(outfs)
            rc, err = finish(proc)
        finally:
            proc.kill()
        assert rc == EXIT_FAILED, err[-3000:]
        assert "error disk:" in err and "No space left on device" in err, err[-3000:]
        assert "1 of 1 devices failed" in err
        kept = assert_rows_were_measured(out, "disk", tmp_path / "work-disk")
        assert 2 <= len(kept) < 6
        filler.unlink()
        again = start_measure(*args)
        rc, err = finish(again)
        assert rc == 0, err[-3000:]
        rows = assert_rows_were_measured(out, "disk", tmp_path / "work-disk")
        assert len(rows) == 6
        assert {r["model_sha256"] for r in kept} <= {r["model_sha256"] for r in rows}


def test_corrupt_journal_line_fails_that_device_the_other_finishes(server: SSHServer, tmp_path: Path,
                                                                  cache: Path) -> None:
    folder = tmp_path / "profiles"
    folder.mkdir()
    for name, timing in (("good", FAST), ("bad", SLOW)):
        server.profile(folder / f"{name}.toml", name, tmp_path / f"work-{name}", tags=["pair"], timing=timing)
    out = tmp_path / "ds"
    proc = subprocess.Popen([sys.executable, "-m", "hwlat", "measure", "--devices", "tag:pair", "--count", "5",
                             "--seed", "6", "--out", str(out), "--cache", str(cache)],
                            cwd=REPO, env={**os.environ, "COLUMNS": "400", "HWLAT_PROFILES": str(folder)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    bad = tmp_path / "work-bad"
    try:
        wait_for(lambda: len(journal_results(bad)) >= 2, 240, "bad's first results")
        journal = sorted(bad.glob("runs/*/journal.jsonl"))[-1]
        with open(journal, "ab") as fh:
            fh.write(b"this is not json\n")
        rc, err = finish(proc)
    finally:
        proc.kill()
    assert rc == EXIT_FAILED, err[-3000:]
    assert "error bad: protocol error:" in err and "is not valid JSON" in err, err[-3000:]
    assert "error good" not in err
    good = assert_rows_were_measured(out, "good", tmp_path / "work-good")
    assert len(good) == 5
    assert_rows_were_measured(out, "bad", bad)
    logs = list((out / "_logs").glob("*.log"))
    assert len(logs) == 1 and "device bad failed" in logs[0].read_text() and "not valid JSON" in logs[0].read_text()


# ---------------------------------------------------------------------------------------------- class 2
def _first_run(workdir: Path) -> Path:
    wait_for(lambda: any(workdir.glob("runs/*/jobs.json")), 240, "the first run's jobs.json")
    return sorted(workdir.glob("runs/*"))[0]


def _forged_result(job: dict) -> dict:
    """A result that looks real (samples, stop reason) but claims a negative latency."""
    return {"type": "result", "job_id": job["job_id"], "sha256": job["sha256"], "role": job["role"],
            "status": "ok", "raw_ms": [1.0, 1.0, 1.0], "n_runs": 3, "stop_reason": "max_time",
            "median_ms": -5.0, "min_ms": 1.0, "max_ms": 1.0}


@pytest.mark.parametrize(("forge", "reason"), [
    (lambda spec: _forged_result(next(j for j in spec["jobs"] if j["role"] == "candidate")),
     "median_ms must be a finite number >= 0"),
    (lambda spec: {"type": "done", "run_id": spec["run_id"]}, "without results for"),
])
def test_forged_journal_is_refused_with_its_reason_nothing_stored(server: SSHServer, tmp_path: Path, cache: Path,
                                                                 forge: Callable[[dict], dict], reason: str) -> None:
    prof = profile(server, tmp_path, "forged", SLOW)
    out = tmp_path / "ds"
    proc = start_measure("--device", str(prof), "--count", "3", "--seed", "2", "--out", str(out),
                         "--cache", str(cache))
    workdir = tmp_path / "work-forged"
    try:
        run = _first_run(workdir)
        spec = json.loads((run / "jobs.json").read_text())
        line = forge(spec)
        with open(run / "journal.jsonl", "ab") as fh:  # the agent appends with O_APPEND too: whole lines
            fh.write(json.dumps(line).encode() + b"\n")
        rc, err = finish(proc)
    finally:
        proc.kill()
    assert rc == EXIT_FAILED, err[-3000:]
    assert "error forged: protocol error:" in err and reason in err, err[-3000:]
    forged = {line["job_id"]} if "job_id" in line else set()
    assert_rows_were_measured(out, "forged", workdir, forged=forged)
    log = next((out / "_logs").glob("*.log")).read_text()
    assert "device forged failed" in log and reason in log


def _spec(**timing: float) -> RunSpec:
    jobs = [Job("c00000-aaaa", "models/a.onnx", "a" * 64), Job("r0000-bbbb", "models/b.onnx", "b" * 64,
                                                                role="reference")]
    return RunSpec("run-1", RuntimeConfig(), TimingConfig(**{**FAST, **timing}), jobs, timeout_s=10.0)


def _result(**fields: object) -> dict:
    good = {"type": "result", "job_id": "c00000-aaaa", "sha256": "a" * 64, "role": "candidate", "status": "ok",
            "raw_ms": [2.0, 1.0, 3.0, 2.0, 2.0], "n_runs": 5, "stop_reason": "max_time", "median_ms": 2.0,
            "min_ms": 1.0, "max_ms": 3.0, "mean_ms": 2.0, "started_at": "2026-01-01T00:00:00.000Z"}
    return {**good, **fields}


@pytest.mark.parametrize(("event", "reason"), [
    (_result(median_ms=-5.0), "median_ms must be a finite number >= 0"),
    (_result(mean_ms=math.nan), "mean_ms must be a finite number"),
    (_result(status="pwned"), "status 'pwned' is not one of"),
    (_result(raw_ms=["1", "2", "3", "4", "5"]), "raw_ms must be a list of finite numbers"),
    (_result(median_ms="2.0"), "median_ms must be a finite number"),
    (_result(median_ms=7.0), "median_ms=7.0 does not match its samples"),
    (_result(n_runs=4), "raw_ms holds 5 samples but n_runs is 4"),
    (_result(job_id="c99999-ffff"), "which this run did not send"),
    (_result(sha256="f" * 64), "is not the job's model"),
    (_result(role="reference"), "is not the job's role"),
    (_result(raw_ms=[1.0], n_runs=1, median_ms=1.0, min_ms=1.0, max_ms=1.0, stop_reason="ci"),
     "stopped on the CI rule after 1 samples, below min_runs=5"),
    (_result(raw_ms=[1.0] * 21, n_runs=21, median_ms=1.0, min_ms=1.0, max_ms=1.0), "more than the run's max_runs"),
    (_result(raw_ms=[20000.0] * 5, median_ms=20000.0, min_ms=20000.0, max_ms=20000.0), "longer than the run"),
    (_result(started_at="yesterday"), "started_at must be an ISO 8601 time"),
    (_result(status="failed"), "a failed result carries 5 timed samples"),
    ({"type": "fingerprint", "cores_logical": "8"}, "cores_logical"),
    ({"type": "done", "run_id": "other"}, "'done' names run"),
    ({"type": "corrupt"}, "unknown event type"),
])
def test_every_forged_event_is_refused_with_a_reason(event: dict, reason: str) -> None:
    with pytest.raises(ProtocolError, match=re.escape(reason)):
        validate_event(event, _spec())


def test_a_real_looking_result_passes() -> None:
    result = validate_event(_result(), _spec())
    assert result.median_ms == 2.0 and result.raw_ms == [2.0, 1.0, 3.0, 2.0, 2.0]


# ---------------------------------------------------------------------------------------------- class 3
@pytest.mark.parametrize("full", ["models", "runs"])
def test_step_that_keeps_failing_after_each_connect_is_bounded(server: SSHServer, tmp_path: Path, cache: Path,
                                                               full: str) -> None:
    """The device takes every connection, then its full disk fails the upload (or the run folder) every time."""
    workdir = tmp_path / "work-full"
    prof = profile(server, tmp_path, "full", FAST)
    with tmpfs(workdir / full, "64k") as mount:
        fill(mount)
        log_before = server.log.stat().st_size
        started = time.monotonic()
        proc = start_measure("--device", str(prof), "--count", "2", "--seed", "9", "--out", str(tmp_path / "ds"),
                             "--cache", str(cache), "--max-reconnect", "4")
        rc, err = finish(proc, timeout=120)
        elapsed = time.monotonic() - started
        with open(server.log, "rb") as fh:
            fh.seek(log_before)
            logins = fh.read().count(b"Accepted publickey")
        assert rc == EXIT_FAILED, err[-3000:]
        assert "error full: device full failed for" in err and "(--max-reconnect 4 s)" in err, err[-3000:]
        assert elapsed < 100, "the reconnect loop must end near --max-reconnect"
        assert logins <= 8, f"{logins} SSH logins for a 4 s reconnect budget"
        if full == "models":
            landed = [p.name for p in mount.iterdir() if p.suffix == ".onnx"]
            assert not landed, f"an upload that failed landed under its final name: {landed}"
    assert not (tmp_path / "ds").exists() or read_dataset(tmp_path / "ds").num_rows == 0


# ---------------------------------------------------------------------------------------------- export
def test_failed_export_is_a_row_the_campaign_goes_on_and_a_rerun_retries(server: SSHServer, tmp_path: Path) -> None:
    """The export cache's disk fills up after two models (~1.3 MB each): the rest are ``export_failed`` rows."""
    prof = profile(server, tmp_path, "exp", FAST)
    out = tmp_path / "ds"
    args = ("--device", str(prof), "--count", "4", "--seed", "11", "--out", str(out), "--workers", "1",
            "--reference-every", "0")
    with tmpfs(tmp_path / "cachefs", "3m") as cachefs:
        rc, err = finish(start_measure(*args, "--cache", str(cachefs)))
        assert rc == 0, err[-3000:]
        rows = read_dataset(out).to_pylist()
        failed = [r for r in rows if r["status"] == "export_failed"]
        measured = assert_rows_were_measured(out, "exp", tmp_path / "work-exp")
        assert failed and measured and len(failed) + len(measured) == 4, [(r["arch"], r["status"]) for r in rows]
        for r in failed:
            assert "No space left on device" in r["error"] and r["error_type"] == "export"
            assert r["model_sha256"] is None and r["latency_ms"] is None and r["raw_ms"] == []
        show = subprocess.run([sys.executable, "-m", "hwlat", "datasets", "show", str(out)], cwd=REPO,
                              capture_output=True, text=True, check=False, env={**os.environ, "COLUMNS": "400"})
        assert show.returncode == 0 and "export_failed" in show.stdout
        subprocess.run(["mount", "-o", "remount,size=64m", str(cachefs)], check=True)
        rc, err = finish(start_measure(*args, "--cache", str(cachefs)))
        assert rc == 0, err[-3000:]
    rows = read_dataset(out).to_pylist()
    done = {r["arch"] for r in rows if r["status"] in ("ok", "unstable")}
    assert done == {r["arch"] for r in rows}, "the rerun must export and measure what failed to export"
    assert len(done) == 4
