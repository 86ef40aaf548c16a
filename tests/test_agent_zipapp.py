"""The agent shipped as one zipapp file (how it reaches a board): ``fingerprint`` and ``run``,
with the project's interpreter and with a bare interpreter that has numpy but no onnxruntime."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.agent_models import REPO, matmul_model, write_run

from agents.journal import read_journal

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m zipapp`` of a folder holding the agents package and a top-level __main__.py."""
    root = tmp_path_factory.mktemp("zipapp")
    src = root / "src"
    shutil.copytree(REPO / "agents", src / "agents", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (src / "__main__.py").write_text("import sys\n\nfrom agents.__main__ import main\n\nsys.exit(main())\n")
    out = root / "hwlat-agent.pyz"
    subprocess.run([sys.executable, "-m", "zipapp", str(src), "-o", str(out)], check=True, timeout=60)
    return out


def bare_python() -> str | None:
    """An interpreter (>= 3.9) with numpy but without onnxruntime, like a freshly set-up board."""
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3")))
    candidates += [shutil.which(f"python3.{minor}") for minor in range(9, 15)] + [shutil.which("python3")]
    probe = (
        "import sys, importlib.util as u; "
        "sys.exit(0 if sys.version_info >= (3, 9) and u.find_spec('numpy') and not u.find_spec('onnxruntime') else 1)"
    )
    for exe in filter(None, candidates):
        try:
            if subprocess.run([exe, "-c", probe], capture_output=True, timeout=30).returncode == 0:
                return exe
        except (OSError, subprocess.TimeoutExpired):
            continue
    return None


def test_zipapp_fingerprint_and_run(pyz: Path, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(pyz), "fingerprint"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["agent_path"] == str(pyz / "agents")
    assert info["runtimes"]["onnxruntime"]["available"] is True

    (tmp_path / "models").mkdir()
    sha = matmul_model(tmp_path / "models" / "mm.onnx")
    run_dir = write_run(tmp_path, "zip", [{"job_id": "mm", "model_path": "models/mm.onnx", "sha256": sha}],
                        env={"PYTHONVERBOSE": "1"})
    proc = subprocess.run([sys.executable, str(pyz), "run", str(run_dir)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    fingerprint, result, done = read_journal(run_dir / "journal.jsonl")
    assert fingerprint["agent_path"] == str(pyz / "agents")
    assert fingerprint["worker"]["agent_path"] == str(pyz / "agents")  # the worker re-ran the archive
    assert result["status"] in ("ok", "unstable") and result["n_runs"] > 0
    assert done["type"] == "done"
    # spec.env reached the worker: PYTHONVERBOSE makes it log its imports, including from the archive.
    log = (run_dir / "worker.log").read_text(errors="replace")
    assert "zipimport: found" in log and str(pyz) in log


def test_zipapp_on_bare_python_reports_missing_runtime(pyz: Path, tmp_path: Path) -> None:
    exe = bare_python()
    if exe is None:
        pytest.skip("no Python >= 3.9 with numpy but without onnxruntime on this machine")
    proc = subprocess.run([exe, str(pyz), "fingerprint"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["runtimes"]["onnxruntime"]["available"] is False
    assert "pip install onnxruntime" in info["runtimes"]["onnxruntime"]["error"]

    (tmp_path / "models").mkdir()
    sha = matmul_model(tmp_path / "models" / "mm.onnx")
    jobs = [{"job_id": f"mm{i}", "model_path": "models/mm.onnx", "sha256": sha} for i in range(2)]
    run_dir = write_run(tmp_path, "bare", jobs)
    proc = subprocess.run([exe, str(pyz), "run", str(run_dir)], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    events = read_journal(run_dir / "journal.jsonl")
    assert [e["type"] for e in events] == ["fingerprint", "result", "result", "done"]
    for result in events[1:3]:
        assert (result["status"], result["error_type"]) == ("failed", "missing_runtime")
        assert "pip install onnxruntime" in result["error"]
        assert result["system_before"]["mem_available_mb"] > 0  # /proc fallbacks when psutil is absent
