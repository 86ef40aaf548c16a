"""The house rules that no single feature test would notice breaking: layers and a light command line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_import_contracts_hold() -> None:
    """pyproject.toml's import-linter contracts: layers point down, the agent and predictor stay apart."""
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if lint is None:
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    proc = subprocess.run([lint], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "BROKEN" not in proc.stdout


def test_help_imports_no_heavy_library() -> None:
    """`hwlat --help` (and building the whole parser) must not pay for torch, scikit-learn or pandas."""
    code = ("import sys; from hwlat.cli.main import build_parser; build_parser().format_help(); "
            "print(sorted(m for m in ('torch', 'sklearn', 'pandas', 'onnx', 'pyarrow') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout
