"""The wheel works outside the repository: built with `python -m build`, installed into a fresh venv, run from
an empty folder (the shipped profiles, bundled datasets and bundled predictor come with it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{argv}: rc {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], Path]:
    """(venv bin folder, environment, empty work folder) with only the built wheel of hwlat installed.

    The venv is new and outside the checkout; its third-party dependencies come from the test's own environment
    through a .pth line (no downloads), but nothing of the checkout is importable: the editable install's
    finder lives in a .pth file of that site-packages, which Python does not process for an added path.
    """
    pytest.importorskip("build")
    root = tmp_path_factory.mktemp("wheel")
    dist = root / "dist"
    # Build from a copy: setuptools leaves build/ behind in the source folder, and a stale build/lib would
    # slip removed modules into later wheels.
    source = root / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info",
                                                                 "__pycache__", "out", ".pytest_cache", ".ruff_cache"))
    _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(source)], source,
         dict(os.environ))
    wheels = list(dist.glob("hwlat-*.whl"))
    assert len(wheels) == 1, wheels
    names = set(zipfile.ZipFile(wheels[0]).namelist())
    for folder in ("device_profiles", "datasets"):  # every shipped file of the checkout is in the wheel
        for path in (REPO / folder).rglob("*"):
            if path.is_file():
                rel = path.relative_to(REPO).as_posix()
                assert any(n.endswith(f".data/data/share/hwlat/{rel}") for n in names), f"{rel} missing from wheel"
    assert any(n.endswith("predictor/pretrained/hwlat-bundled.pt") for n in names)
    assert "hwlat/profiling/templates/report.html.j2" in names  # the report's template is package data

    venv = root / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], root, dict(os.environ))
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["HWLAT_CACHE"] = str(root / "cache")
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheels[0])],
         root, env)
    work = root / "empty"
    work.mkdir()
    return venv / "bin", env, work


def test_wheel_runs_outside_the_checkout(installed: tuple[Path, dict[str, str], Path]) -> None:
    bin_dir, env, work = installed
    where = _run([str(bin_dir / "python"), "-c", "import harness, hwlat, predictor, agents; "
                  "print(harness.__file__, hwlat.__file__, predictor.__file__, agents.__file__)"], work, env)
    assert str(REPO) not in where.stdout, where.stdout
    help_run = _run([str(bin_dir / "python"), "-c", "import sys; from hwlat.cli.main import build_parser; "
                     "build_parser().format_help(); print('torch' in sys.modules)"], work, env)
    assert help_run.stdout.strip() == "False"
    listing = _run([str(bin_dir / "hwlat"), "devices", "list"], work, env)
    for name in ("local", "rpi4", "epyc2c-ort-t1"):
        assert name in listing.stdout, listing.stdout
    shown = _run([str(bin_dir / "hwlat"), "datasets", "show", str(_shipped(bin_dir, env, work))], work, env)
    from harness.store import read_dataset

    rows = read_dataset(REPO / "datasets").num_rows  # every bundled row is installed, none lost on the way
    for config in ("epyc2c-ov-t1", "epyc2c-et-t1"):  # OpenVINO and ExecuTorch configurations are bundled (issue 14)
        assert config in shown.stdout, shown.stdout
    assert f"{rows} rows" in shown.stdout, shown.stdout

    out = work / "profile"
    _run([str(bin_dir / "hwlat"), "profile", "local", "--budget", "10", "--batch", "5", "--out", str(out)], work,
         env, timeout=900)
    assert (out / "report.html").is_file() and (out / "predictions.parquet").is_file()


def _shipped(bin_dir: Path, env: dict[str, str], work: Path) -> Path:
    proc = _run([str(bin_dir / "python"), "-c", "from harness.shipped import shipped_dir; "
                 "print(shipped_dir('datasets'))"], work, env)
    path = Path(proc.stdout.strip())
    assert path.is_dir() and REPO not in path.parents, path
    return path
