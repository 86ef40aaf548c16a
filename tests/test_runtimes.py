"""OpenVINO, ExecuTorch (XNNPACK) and torch end to end: real exports, the real agent, the real runtimes.

Each runtime measures 5 NB201 archs through `hwlat measure` with a short timing protocol; the refusals
(missing runtime, CUDA on a CPU-only torch, bad profile keys) are checked through the same CLI.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from profiles import fast_profile

from agents.errors import ProfileError
from harness.devices import load_profile_file
from harness.store import read_dataset

REPO = Path(__file__).resolve().parents[1]
#: Blocks one import in the coordinator, as on a machine where the package was never installed
#: (``sys.modules[name] = None`` makes ``import name`` fail and ``find_spec`` refuse it).
HIDE = "import sys; sys.modules[{name!r}] = None; from hwlat.cli.main import main; sys.exit(main(sys.argv[1:]))"


def hwlat(*args: str, hide: str = "", check_rc: int | None = 0, timeout: float = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", HIDE.format(name=hide)] if hide else [sys.executable, "-m", "hwlat"]
    proc = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO)
    if check_rc is not None:
        assert proc.returncode == check_rc, proc.stderr[-2000:]
    return proc


def profile(tmp_path: Path, runtime: str, extra: str = "", name: str = "") -> Path:
    """A local profile for ``runtime`` with a short timing protocol, so the tests stay quick."""
    return fast_profile(tmp_path, name or f"fast-{runtime}", extra=f'runtime = "{runtime}"\n{extra}')


@pytest.mark.slow
@pytest.mark.parametrize(("runtime", "extra", "fmt", "provider"), [
    ("openvino", 'device = "CPU"\nprecision_hint = "f32"', "onnx", "CPU:f32"),
    ("executorch", "", "pte", "XnnpackBackend"),
    ("torch", "", "pt2", "cpu:eager"),
])
def test_five_rows_on_each_runtime(tmp_path: Path, cache: Path, runtime: str, extra: str, fmt: str,
                                   provider: str) -> None:
    pytest.importorskip({"openvino": "openvino", "executorch": "executorch.runtime", "torch": "torch"}[runtime])
    out = tmp_path / "ds"
    hwlat("measure", "--device", str(profile(tmp_path, runtime, extra)), "--space", "nb201", "--count", "5",
          "--seed", "3", "--out", str(out), "--cache", str(cache))
    rows = read_dataset(out).to_pylist()
    assert len(rows) == 5 and len({r["model_sha256"] for r in rows}) == 5
    for r in rows:
        # measured; "unstable" (spread over 10%) is the timing verdict of a busy machine, not a runtime failure
        assert r["status"] in ("ok", "unstable"), r["error"]
        assert (r["runtime"], r["format"], r["threads"]) == (runtime, fmt, 1)
        assert r["runtime_version"] and r["provider"].startswith(provider)
        assert r["latency_ms"] > 0 and r["load_ms"] > 0 and len(r["raw_ms"]) == r["n_runs"] >= 5


@pytest.mark.slow
def test_torch_compile_counts_compilation_as_load(tmp_path: Path) -> None:
    """inductor compiles inside load (load_ms) and the result says it ran compiled; one model through
    the agent's own measure_job, since every compile costs tens of seconds here."""
    from agents.records import Job, RuntimeConfig, TimingConfig
    from agents.worker import measure_job
    from harness.export import export_models
    from harness.records import ModelSpec
    from hwlat.spaces import get_space

    (art,) = export_models([ModelSpec("nb201", get_space("nb201").arch_at(9))], "pt2", tmp_path, workers=1)
    timing = TimingConfig(min_runs=5, min_time_s=0.0, warmup_min_runs=2, warmup_min_s=0.0, max_time_s=1.0)
    eager = measure_job(Job("e", art.path, art.sha256, "pt2"), art.path, RuntimeConfig(runtime="torch"), timing)
    compiled = measure_job(Job("c", art.path, art.sha256, "pt2"), art.path,
                           RuntimeConfig(runtime="torch", compile=True), timing)
    assert compiled.status in ("ok", "unstable"), compiled.error
    assert (eager.provider, compiled.provider) == ("cpu:eager", "cpu:inductor")
    # compiling takes seconds; had it been left lazy, it would have landed in first_ms instead
    assert compiled.load_ms > 1000 and compiled.load_ms > 5 * eager.load_ms
    assert compiled.first_ms < compiled.load_ms


@pytest.mark.parametrize(("hide", "runtime", "needle"), [
    ("openvino", "openvino", "pip install openvino"),
    ("executorch", "executorch", "pip install 'hwlat[executorch]'"),
])
def test_missing_runtime_refused_before_anything_ships(tmp_path: Path, hide: str, runtime: str, needle: str) -> None:
    out = tmp_path / "ds"
    proc = hwlat("measure", "--device", str(profile(tmp_path, runtime)), "--space", "nb201", "--count", "2",
                 "--out", str(out), "--cache", str(tmp_path / "cache"), hide=hide, check_rc=2)
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("hwlat: ") and needle in proc.stderr
    assert not out.exists() and not (tmp_path / "agent").exists() and not (tmp_path / "cache").exists()


def test_cuda_on_cpu_only_torch_refused(tmp_path: Path) -> None:
    """No GPU here: the CUDA path is checked for its refusal only (docs/runtimes.md)."""
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = hwlat("measure", "--device", str(profile(tmp_path, "torch", 'device = "cuda"')), "--count", "1",
                 "--out", str(tmp_path / "ds"), check_rc=2)
    assert "sees no CUDA device" in proc.stderr and proc.stderr.count("\n") == 1


def test_agent_refuses_cuda_on_cpu_only_torch(tmp_path: Path) -> None:
    """On a remote board the agent finds out at load: a failed/load row that says why, never a CPU timing."""
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from agents.records import Job, RuntimeConfig, TimingConfig
    from agents.worker import measure_job
    from harness.export import export_models
    from harness.records import ModelSpec
    from hwlat.spaces import get_space

    (art,) = export_models([ModelSpec("nb201", get_space("nb201").arch_at(9))], "pt2", tmp_path, workers=1)
    result = measure_job(Job("j", art.path, art.sha256, "pt2"), art.path, RuntimeConfig(runtime="torch", device="cuda"),
                         TimingConfig(min_runs=2, min_time_s=0.0, warmup_min_runs=1, warmup_min_s=0.0))
    assert (result.status, result.error_type) == ("failed", "load")
    assert "sees no CUDA device" in result.error


@pytest.mark.parametrize(("body", "key", "needle"), [
    ('runtime = "openvino"\ndevice = "TPU"', "device", "is not one of CPU, GPU, NPU, AUTO"),
    ('runtime = "openvino"\nperformance_hint = "FAST"', "performance_hint", "is not one of LATENCY"),
    ('runtime = "openvino"\nprecision_hint = "int4"', "precision_hint", "is not one of f32, f16, bf16"),
    ('runtime = "openvino"\nstreams = -1', "streams", "must be >= 0"),
    ('runtime = "openvino"\nformat = "tflite"', "format", "'tflite' cannot run on runtime 'openvino'"),
    ('runtime = "executorch"\nformat = "onnx"', "format", "it runs 'pte'"),
    ('runtime = "executorch"\ndevice = "CPU"', "device", "applies to runtime openvino or torch only"),
    ('runtime = "torch"\ncompile = "yes"', "compile", "expected bool"),
    ('runtime = "torch"\ndevice = "mps"', "device", "is not cpu, cuda or cuda:N"),
    ('runtime = "onnxruntime"\ncompile = true', "compile", "applies to runtime torch only"),
    ('runtime = "tensorrt"', "runtime", "is not one of onnxruntime, litert, openvino, executorch, torch"),
])
def test_profile_errors_name_file_and_key(tmp_path: Path, body: str, key: str, needle: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f'name = "bad"\n{body}\n')
    with pytest.raises(ProfileError) as err:
        load_profile_file(path)
    assert str(err.value).startswith(f"{path}: key '{key}': ") and needle in str(err.value)


def test_bad_profile_through_the_cli_is_one_line_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('name = "bad"\nruntime = "openvino"\nprecision_hint = "int4"\n')
    proc = hwlat("measure", "--device", str(path), "--count", "1", "--out", str(tmp_path / "ds"), check_rc=2)
    assert proc.stderr == f"hwlat: {path}: key 'precision_hint': 'int4' is not one of f32, f16, bf16 or \"\"\n"
    assert not (tmp_path / "ds").exists()


def test_shipped_runtime_profiles_are_valid() -> None:
    for name, runtime in (("intel-laptop-openvino", "openvino"), ("rpi5-executorch", "executorch"),
                          ("gpu-server-torch", "torch")):
        prof = load_profile_file(REPO / "device_profiles" / f"{name}.toml")
        assert prof.runtime.runtime == runtime


def test_config_id_of_existing_runtimes_unchanged() -> None:
    """The new keys must not re-key existing datasets: the local profile's id is what it was before."""
    prof = load_profile_file(REPO / "device_profiles" / "local.toml")
    assert prof.config_id() == "4efcc1af2175"  # computed by the code before this change


def test_devices_check_lists_runtimes_and_install_lines() -> None:
    proc = hwlat("devices", "check", "local")
    lines = [line.split(None, 1)[1] for line in proc.stdout.splitlines() if line.strip().startswith("runtime ")]
    for name in ("openvino", "executorch", "torch", "onnxruntime"):
        pytest.importorskip({"executorch": "executorch.runtime"}.get(name, name))
        assert any(line.startswith(f"{name} ") and "not installed" not in line for line in lines), lines
    # and on a board without OpenVINO the agent reports it with the install line
    code = ("import sys, json; sys.modules['openvino'] = None; from agents.system import fingerprint; "
            "from harness.runtimes import runtime_lines; print(json.dumps(runtime_lines(fingerprint()['runtimes'])))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert "openvino: not installed; pip install openvino" in json.loads(out.stdout.splitlines()[-1])
