"""Killing the coordinator mid-export must not leave export workers running (they would skew timings)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = """
import sys
from pathlib import Path
from harness.export import export_models
from harness.records import ModelSpec
from hwlat.spaces import get_space

if __name__ == "__main__":
    archs = get_space("nb201").sample(40, seed=99)
    print("start", flush=True)
    export_models([ModelSpec("nb201", a) for a in archs], "onnx", Path(sys.argv[1]), workers=2)
"""


def _children_of(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-f", "multiprocessing.spawn"], capture_output=True, text=True).stdout
    kids = []
    for line in out.split():
        try:
            stat = Path(f"/proc/{line}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) in (pid, 1):
            kids.append(int(line))
    return kids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")
def test_export_workers_die_with_a_killed_coordinator(tmp_path: Path) -> None:
    script = tmp_path / "export.py"
    script.write_text(SCRIPT)
    before = set(_children_of(os.getpid()))
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "cache")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "start"
    deadline = time.monotonic() + 60
    workers: list[int] = []
    while len(workers) < 2 and time.monotonic() < deadline:
        workers = [p for p in _children_of(proc.pid) if p not in before]
        time.sleep(0.1)
    assert len(workers) == 2, "the export pool did not start"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{p}").exists() for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = [p for p in workers if Path(f"/proc/{p}").exists()
             and Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]
    assert alive == []
