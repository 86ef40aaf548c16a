"""Export processes: killing the coordinator mid-export must not leave export workers running (they would skew
timings), and a leaking exporter runs in workers that are replaced."""

from __future__ import annotations

import json
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


RECYCLE_SCRIPT = """
import json, os, sys
from pathlib import Path
import harness.export as ex
from harness.records import ModelSpec
from hwlat.spaces import get_space


def traced(job, root):
    return os.getpid(), ex._export_one(job, root).path  # runs in a worker, where _export_one is the real one


if __name__ == "__main__":
    ex._export_one = traced  # what _run_jobs submits; the workers import the module unpatched
    cache = ex.ExportCache(sys.argv[1])
    archs = get_space("nb201").sample(5, seed=3)
    out = {}
    ex.TASKS_PER_WORKER["onnx"] = 2  # ONNX is made in this process by default; here it recycles every 2 exports
    for fmt, n in (("onnx", 5), ("pte", 1)):  # pte: recycled by default
        jobs = [ex._make_job(ModelSpec("nb201", a), fmt) for a in archs[:n]]
        out[fmt] = [v for _, v in ex._run_jobs(jobs, cache, workers=1)]
    print(json.dumps({"parent": os.getpid(), **out}))
"""


def test_export_workers_are_replaced_for_a_leaking_format(tmp_path: Path) -> None:
    """An exporter that leaks (ExecuTorch keeps ~55 MB per model) runs in workers replaced every few exports,
    even with one worker: one process that exported 350 OFA models grew to 23 GB and was killed."""
    script = tmp_path / "recycle.py"
    script.write_text(RECYCLE_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "cache")], capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    onnx_pids = [pid for pid, _ in got["onnx"]]
    assert len(onnx_pids) == 5 and got["parent"] not in onnx_pids
    assert len(set(onnx_pids)) == 3 and max(onnx_pids.count(p) for p in onnx_pids) == 2  # 2 + 2 + 1
    (pte_pid, pte_path), = got["pte"]
    assert pte_pid != got["parent"] and pte_path.endswith(".pte") and Path(pte_path).stat().st_size > 0
    assert all(Path(path).stat().st_size > 0 for _, path in got["onnx"])
