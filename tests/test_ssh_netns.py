"""Several boards at once: one sshd per network namespace, each board with its own profile.

The boards share this machine's CPU and disk but not its network: each is reachable only through
its own veth pair, so ``ip link set ... down`` cuts exactly one board off, as pulling its Ethernet
cable would. Needs root and ``ip netns``; skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sshkit import NetnsBoard, ensure_openssh, netns_unavailable

from harness.store import read_dataset
from hwlat.cli.console import EXIT_FAILED

REPO = Path(__file__).resolve().parents[1]
FAST = {"warmup_min_runs": 2, "warmup_min_s": 0.0, "min_runs": 5, "min_time_s": 0.3, "max_runs": 100000,
        "max_time_s": 0.5}
pytestmark = [pytest.mark.ssh, pytest.mark.netns, pytest.mark.slow]


@pytest.fixture
def boards(tmp_path: Path) -> Iterator[list[NetnsBoard]]:
    """Three namespace boards, torn down (daemons, agents, veths, namespaces) whatever happens."""
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    try:
        ensure_openssh()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    made: list[NetnsBoard] = []
    try:
        for i in range(3):
            made.append(NetnsBoard(tmp_path / f"board{i}", i))
        yield made
    finally:
        for board in made:
            board.close()


def write_profiles(tmp_path: Path, boards: list[NetnsBoard], tag: str) -> Path:
    """One profile per board, each a different configuration (threads, CPU affinity)."""
    folder = tmp_path / "profiles"
    folder.mkdir()
    configs = [{"threads": 1, "cpu_affinity": [0]}, {"threads": 2}, {"threads": 1, "cpu_affinity": [1]}]
    for i, (board, config) in enumerate(zip(boards, configs, strict=True)):
        assert board.server is not None
        board.server.trust()
        board.server.profile(folder / f"board{i}.toml", f"board{i}", tmp_path / f"work{i}", tags=[tag], timing=FAST,
                             timeouts={"command_s": 4.0, "connect_s": 4.0}, **config)
    return folder


def measure(folder: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "HWLAT_PROFILES": str(folder), "COLUMNS": "400"}
    return subprocess.Popen([sys.executable, "-m", "hwlat", "measure", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def journal(workdir: Path) -> list[dict]:
    events: list[dict] = []
    for path in sorted(workdir.glob("runs/*/journal.jsonl")):
        text = path.read_text()
        events += [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines() if line.strip()]
    return events


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def finish(proc: subprocess.Popen, timeout: float = 400) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"campaign did not finish: {err[-2000:]}") from None
    return proc.returncode, err


def check_rows(out: Path, count: int) -> dict[str, list[dict]]:
    rows = read_dataset(out).to_pylist()
    by_device: dict[str, list[dict]] = {}
    for row in rows:
        by_device.setdefault(row["device"], []).append(row)
    for device, dev_rows in by_device.items():
        assert len(dev_rows) == count, (device, len(dev_rows))
        assert len({r["model_sha256"] for r in dev_rows}) == count, f"{device}: a model stored twice"
        assert all(r["status"] in ("ok", "unstable") for r in dev_rows), [r["error"] for r in dev_rows]
    return by_device


def test_three_boards_in_parallel_each_with_its_profile(boards: list[NetnsBoard], tmp_path: Path) -> None:
    folder = write_profiles(tmp_path, boards, "nsfleet")
    out = tmp_path / "ds"
    rc, err = finish(measure(folder, "--devices", "tag:nsfleet", "--count", "3", "--seed", "5", "--out", str(out),
                             "--cache", str(tmp_path / "cache")))
    assert rc == 0, err[-3000:]
    by_device = check_rows(out, 3)
    assert sorted(by_device) == ["board0", "board1", "board2"]
    assert {r["threads"] for r in by_device["board1"]} == {2}
    assert {r["device_host"] for r in by_device["board2"]} == {boards[2].address}
    for i, affinity in ((0, [0]), (2, [1])):
        worker = next(e for e in journal(tmp_path / f"work{i}") if e["type"] == "fingerprint")["worker"]
        assert worker["cpu_affinity"] == affinity, "the board's CPU affinity must reach its timing process"
    config_ids = {by_device[d][0]["config_id"] for d in by_device}
    assert len(config_ids) == 3, "different threads/affinity are different configurations"


def test_one_board_cut_off_while_the_others_finish(boards: list[NetnsBoard], tmp_path: Path) -> None:
    folder = write_profiles(tmp_path, boards, "nscut")
    out = tmp_path / "ds"
    proc = measure(folder, "--devices", "tag:nscut", "--count", "4", "--seed", "6", "--out", str(out),
                   "--cache", str(tmp_path / "cache"), "--max-reconnect", "200")
    cut = boards[1]
    try:
        wait_for(lambda: sum(e["type"] == "result" for e in journal(tmp_path / "work1")) >= 1, 300,
                 "board1's first result")
        cut.link_down()
        # The others carry on while board1 is unreachable; board1's detached agent keeps measuring too.
        for i in (0, 2, 1):
            wait_for(lambda i=i: any(e["type"] == "done" for e in journal(tmp_path / f"work{i}")), 300,
                     f"board{i} to finish its run")
        assert proc.poll() is None, "the campaign must wait for the cut-off board, not give up at once"
        cut.link_up()
        rc, err = finish(proc)
    finally:
        cut.link_up()
        proc.kill()
    assert rc == 0, err[-3000:]
    by_device = check_rows(out, 4)
    assert sorted(by_device) == ["board0", "board1", "board2"]
    results = [e["job_id"] for e in journal(tmp_path / "work1") if e["type"] == "result"]
    assert len(results) == len(set(results)), "nothing measured twice on the cut-off board"


def test_board_that_stays_down_is_reported_others_complete(boards: list[NetnsBoard], tmp_path: Path) -> None:
    folder = write_profiles(tmp_path, boards, "nsgone")
    boards[2].link_down()
    out = tmp_path / "ds"
    rc, err = finish(measure(folder, "--devices", "tag:nsgone", "--count", "2", "--seed", "7", "--out", str(out),
                             "--cache", str(tmp_path / "cache"), "--max-reconnect", "5"))
    assert rc == EXIT_FAILED, err[-3000:]
    assert "board2" in err and "cannot reach" in err
    by_device = check_rows(out, 2)
    assert sorted(by_device) == ["board0", "board1"]
