"""SSH transport against a real OpenSSH server on loopback: host keys, quoting, bundle, dependencies.

Every test talks to a real ``sshd`` (tests/sshkit.py); nothing about SSH is mocked.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sshkit import SSHServer, ensure_openssh

from agents.errors import UsageError
from harness.devices import load_profile_file
from harness.transport.bundle import build_bundle, current_bundle
from harness.transport.ssh import HostKeyError, MissingDependencyError, SSHTransport, quote_argv

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.ssh


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    try:
        ensure_openssh()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    srv = SSHServer(tmp_path_factory.mktemp("sshd")).start()
    try:
        yield srv
    finally:
        srv.close()


def hwlat(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hwlat", *args], capture_output=True, text=True,
                          timeout=300, check=False, cwd=REPO)


def test_unknown_key_refused_until_trusted(server: SSHServer, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    path = server.profile(tmp_path / "loop.toml", "loop", tmp_path / "work", known_hosts=str(known))
    profile = load_profile_file(path)
    with pytest.raises(HostKeyError, match=r"not in .*known_hosts.*hwlat devices trust loop"):
        SSHTransport(profile).connect()
    assert not known.exists(), "an unknown key must never be recorded on its own"
    proc = hwlat("devices", "trust", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "added host key ssh-ed25519 SHA256:" in proc.stdout
    expected = (server.root / "ssh_host_ed25519_key.pub").read_text().split()[1]
    assert expected in known.read_text()
    again = hwlat("devices", "trust", str(path))
    assert again.returncode == 0 and "unchanged" in again.stdout
    transport = SSHTransport(profile)
    try:
        transport.connect()
        assert transport.workdir == str(tmp_path / "work")
    finally:
        transport.close()


def test_changed_host_key_refused_with_clear_message(tmp_path: Path) -> None:
    try:
        ensure_openssh()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    srv = SSHServer(tmp_path / "sshd").start()
    try:
        srv.trust()
        path = srv.profile(tmp_path / "moved.toml", "moved", tmp_path / "work")
        profile = load_profile_file(path)
        ok = SSHTransport(profile)
        ok.connect()
        ok.close()
        srv.regenerate_host_key()
        with pytest.raises(HostKeyError, match=r"host key for \[127\.0\.0\.1\]:\d+ changed .* refusing"):
            SSHTransport(profile).connect()
        proc = hwlat("devices", "check", str(path))
        assert proc.returncode == 2
        assert proc.stderr.count("\n") == 1 and "changed" in proc.stderr and "Traceback" not in proc.stderr
        refused = hwlat("devices", "trust", str(path))
        assert refused.returncode == 2 and "--replace" in refused.stderr
        replaced = hwlat("devices", "trust", str(path), "--replace")
        assert replaced.returncode == 0 and "replaced" in replaced.stdout
        fresh = SSHTransport(profile)
        fresh.connect()
        fresh.close()
    finally:
        srv.close()


def test_commands_are_quoted(server: SSHServer, tmp_path: Path) -> None:
    server.trust()
    profile = load_profile_file(server.profile(tmp_path / "q.toml", "q", tmp_path / "work dir"))
    transport = SSHTransport(profile)
    tricky = ["a b", "$(touch pwned)", "`id`", "x; rm -rf /", "it's", "\"q\"", "*", "\\n"]
    try:
        status, out, _ = transport._exec(["printf", "%s\\n", *tricky], cwd=str(tmp_path))
        assert status == 0
        assert out.splitlines() == tricky
        assert not (tmp_path / "pwned").exists()
        assert transport.workdir == str(tmp_path / "work dir")
    finally:
        transport.close()
    assert quote_argv(["a b", "c"]) == "'a b' c"


def test_missing_numpy_is_named_with_install_command(server: SSHServer, tmp_path: Path) -> None:
    bare = "/usr/bin/python3"
    probe = subprocess.run([bare, "-c", "import numpy"], capture_output=True, check=False)
    if probe.returncode == 0:
        pytest.skip("the system python has numpy; no interpreter without it to test against")
    server.trust()
    profile = load_profile_file(server.profile(tmp_path / "bare.toml", "bare", tmp_path / "work", python=bare))
    with pytest.raises(MissingDependencyError, match=r"numpy, onnxruntime.*-m pip install numpy onnxruntime"):
        SSHTransport(profile).connect()
    nopy = load_profile_file(server.profile(tmp_path / "nopy.toml", "nopy", tmp_path / "w2",
                                            python="/nonexistent/python3"))
    with pytest.raises(MissingDependencyError, match="not found on the device"):
        SSHTransport(nopy).connect()


def test_bundle_is_deterministic_and_cached_by_hash(server: SSHServer, tmp_path: Path) -> None:
    first, second = build_bundle(), build_bundle()
    assert first.data == second.data and first.sha256 == second.sha256
    assert current_bundle().sha256 == first.sha256
    server.trust()
    profile = load_profile_file(server.profile(tmp_path / "b.toml", "b", tmp_path / "work"))
    transport = SSHTransport(profile)
    try:
        transport.connect()
        shipped = tmp_path / "work" / "agent" / first.remote_name
        assert shipped.read_bytes() == first.data
        assert transport.preflight()["bundle_sha256"] == first.sha256
        transport.close()
        shipped.write_bytes(first.data[:-10] + b"corrupted!")
        fresh = SSHTransport(profile)
        fresh.connect()
        fresh.close()
        assert shipped.read_bytes() == first.data, "a corrupt cached agent must be shipped again"
    finally:
        transport.close()


def test_bad_run_id_and_model_names_cannot_escape(server: SSHServer, tmp_path: Path) -> None:
    from agents.records import RunSpec, RuntimeConfig, TimingConfig
    from harness.records import ModelArtifact

    server.trust()
    profile = load_profile_file(server.profile(tmp_path / "e.toml", "e", tmp_path / "work"))
    transport = SSHTransport(profile)
    try:
        with pytest.raises(UsageError, match="invalid run id"):
            transport.start_run(RunSpec("../../etc", RuntimeConfig(), TimingConfig(), []))
        art = ModelArtifact("nb201", "x", str(tmp_path / "m.onnx"), "../" + "a" * 61, "onnx")
        with pytest.raises(UsageError, match="invalid sha256"):
            transport.push_models([art])
        art = ModelArtifact("nb201", "x", str(tmp_path / "m.onnx"), "a" * 64, "../x")
        with pytest.raises(UsageError, match="invalid sha256"):
            transport.push_models([art])
    finally:
        transport.close()


def test_devices_list_shows_shipped_and_user_profiles(tmp_path: Path) -> None:
    import json
    import os

    (tmp_path / "mine.toml").write_text('name = "mine"\nhost = "10.9.9.9"\nuser = "pi"\ntags = ["edge"]\n')
    (tmp_path / "broken.toml").write_text('name = "broken"\nport = 0\n')
    env = {**os.environ, "HWLAT_PROFILES": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "hwlat", "devices", "list", "--json"], capture_output=True,
                          text=True, timeout=120, check=False, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert {"local", "rpi4", "jetson-orin", "x86-gpu", "mine", "broken"} <= set(rows)
    assert rows["mine"]["host"] == "pi@10.9.9.9:22" and rows["mine"]["tags"] == ["edge"]
    assert rows["rpi4"]["runtime"] == "litert" and "TensorrtExecutionProvider" in rows["jetson-orin"]["providers"]
    assert "key 'port'" in rows["broken"]["error"], "one bad profile must not hide the others"
