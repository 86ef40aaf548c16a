"""Device profile validation: errors name the file and the key; passwords are refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agents.errors import ProfileError
from harness.devices import available_profiles, load_profile_file, resolve_device, resolve_devices

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, text: str, name: str = "board.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_profiles_all_validate() -> None:
    profiles = available_profiles()
    assert "local" in profiles
    for path in sorted((REPO / "device_profiles").glob("*.toml")):
        profile = load_profile_file(path)
        assert profile.name == path.stem


def test_local_is_the_embedded_default() -> None:
    profile = resolve_device("local")
    assert profile.is_local and profile.runtime.runtime == "onnxruntime" and profile.format == "onnx"


def test_full_profile_round_trip(tmp_path: Path) -> None:
    path = _write(tmp_path, """
name = "pi4"
host = "10.0.0.7"
port = 2222
user = "pi"
identity_file = "~/.ssh/id_ed25519"
known_hosts = "~/.ssh/known_hosts"
python = "/usr/bin/python3"
workdir = "/tmp/hwlat"
runtime = "litert"
threads = 4
cpu_affinity = [2, 3]
env = { OMP_NUM_THREADS = "4" }
tags = ["edge", "arm"]
[timing]
min_runs = 50
max_time_s = 20
[timeouts]
model_s = 600
""")
    p = load_profile_file(path)
    assert (p.name, p.host, p.port, p.user, p.format) == ("pi4", "10.0.0.7", 2222, "pi", "tflite")
    assert p.runtime.threads == 4 and p.cpu_affinity == [2, 3] and p.env == {"OMP_NUM_THREADS": "4"}
    assert p.timing.min_runs == 50 and p.timing.max_time_s == 20.0 and p.model_timeout_s == 600.0
    assert not p.identity_file.startswith("~")
    assert not p.is_local


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('name = "x"\nport = "22"', "port"),
        ('name = "x"\nruntime = "tensorrt"', "runtime"),
        ('name = "x"\npassword = "hunter2"', "password"),
        ('name = "x"\nthreds = 2', "threds"),
        ('host = "a"', "name"),
        ('name = "x"\nhost = "h"', "user"),
        ('name = "x"\n[timing]\nmin_run = 3', "timing.min_run"),
        ('name = "x"\ncpu_affinity = ["a"]', "cpu_affinity"),
        ('name = "bad name!"', "name"),
    ],
)
def test_validation_names_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ProfileError) as info:
        load_profile_file(path)
    message = str(info.value)
    assert str(path) in message and f"'{key}'" in message and "\n" not in message


def test_not_toml_and_unknown_device(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile_file(_write(tmp_path, "name = \n"))
    with pytest.raises(ProfileError, match="unknown device 'nope'"):
        resolve_device("nope")
    with pytest.raises(ProfileError, match="no such profile file"):
        resolve_device(str(tmp_path / "missing.toml"))


def test_tag_selection_and_dedup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for n in ("a", "b"):
        _write(tmp_path, f'name = "{n}"\ntags = ["lab"]\n', f"{n}.toml")
    monkeypatch.setenv("HWLAT_PROFILES", str(tmp_path))
    names = [p.name for p in resolve_devices(["tag:lab", "a"])]
    assert names == ["a", "b"]
    with pytest.raises(ProfileError, match="no device profile has tag"):
        resolve_devices(["tag:none-such"])


def test_config_id_changes_with_threads_only_when_they_change() -> None:
    import dataclasses

    base = resolve_device("local")
    same = dataclasses.replace(base)
    other = dataclasses.replace(base, runtime=dataclasses.replace(base.runtime, threads=2))
    assert base.config_id() == same.config_id() != other.config_id()


def test_cli_malformed_profile_is_one_line_exit_2(tmp_path: Path) -> None:
    path = _write(tmp_path, 'name = "x"\nport = -1\n')
    proc = subprocess.run([sys.executable, "-m", "hwlat", "measure", "--device", str(path), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "port" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
