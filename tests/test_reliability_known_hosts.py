"""Issue 15, class 6: known_hosts is the user's file. Real sshd (tests/sshkit.py), real OpenSSH key files.

Promises (docs/reliability-store.md, "known_hosts"): ``hwlat devices trust`` keeps every line it does not
own byte for byte (comments, ``@cert-authority``, ``@revoked``, ``sk-`` keys, hashed names, a last line
without newline); connecting reads such a file without crashing; ``@revoked`` keys are refused, by
``trust`` and by the connection; ``trust --replace`` replaces hashed entries too; writes are atomic.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sshkit import SSHServer, ensure_openssh, keygen

from harness.devices import load_profile_file
from harness.transport.ssh import HostKeyError, SSHTransport

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.ssh


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SSHServer]:
    try:
        ensure_openssh()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    srv = SSHServer(tmp_path / "sshd").start()
    try:
        yield srv
    finally:
        srv.close()


def hwlat(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hwlat", *args], capture_output=True, text=True, timeout=120,
                          check=False, cwd=REPO)


def _pub(path: Path) -> str:
    """``type base64`` of a public key file."""
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


def _hashed(name: str, salt: bytes = b"0123456789abcdefghij") -> str:
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def _foreign_lines(tmp_path: Path) -> bytes:
    """Lines a real user's known_hosts holds and paramiko's HostKeys drops or raises on."""
    other = tmp_path / "other_key"
    keygen(other)
    return (
        b"# lab boards, managed by hand\n"
        + f"@cert-authority *.lab.example.org {_pub(other)}\n".encode()
        + f"@revoked 10.0.0.5 {_pub(other)}\n".encode()
        + b"yubi.lab sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAIO4 \n"
        + f"{_hashed('pi4.lab')} {_pub(other)}\n".encode()
        + b"\n"
        + f"gpu1.lab,10.0.0.9 {_pub(other)}".encode()  # no newline at the end of the file
    )


def _connect(profile_path: Path) -> None:
    """A real SSH connection with the profile's known_hosts (host key check + key authentication)."""
    client = SSHTransport(load_profile_file(profile_path))._open_client()
    client.close()


def test_trust_keeps_every_line_it_does_not_own_and_connect_reads_them(server: SSHServer,
                                                                       tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    foreign = _foreign_lines(tmp_path)
    known.write_bytes(foreign)
    profile = server.profile(tmp_path / "loop.toml", "loop", tmp_path / "work", known_hosts=str(known))

    with pytest.raises(HostKeyError, match=r"not in .*hwlat devices trust loop"):  # not a crash on @cert-authority
        _connect(profile)
    proc = hwlat("devices", "trust", str(profile))
    assert proc.returncode == 0, proc.stderr
    assert "added" in proc.stdout
    data = known.read_bytes()
    assert data.startswith(foreign + b"\n"), "a line the user wrote was changed or dropped"
    new = data[len(foreign) + 1:].decode()
    assert new.endswith("\n") and new.count("\n") == 1
    # the file hashes host names (pi4.lab): the new line is hashed too, and names this server
    assert new.startswith("|1|") and _pub(server.host_key) in new
    assert os.stat(known).st_mode & 0o777 == 0o600
    _connect(profile)  # the mixed file is read without a crash, and the new key is honoured
    again = hwlat("devices", "trust", str(profile))
    assert again.returncode == 0 and "unchanged" in again.stdout and known.read_bytes() == data


def test_trust_replace_works_with_hashed_entries(server: SSHServer, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    name = f"[{server.host}]:{server.port}"
    foreign = _foreign_lines(tmp_path) + b"\n"
    known.write_bytes(foreign + f"{_hashed(name)} {_pub(server.host_key)}\n".encode())
    profile = server.profile(tmp_path / "loop.toml", "loop", tmp_path / "work", known_hosts=str(known))
    _connect(profile)  # a hashed entry is honoured

    server.regenerate_host_key()  # re-installed board (or a man in the middle)
    with pytest.raises(HostKeyError, match="changed"):
        _connect(profile)
    refused = hwlat("devices", "trust", str(profile))
    assert refused.returncode == 2 and "--replace" in refused.stderr and len(refused.stderr.splitlines()) == 1
    replaced = hwlat("devices", "trust", str(profile), "--replace")
    assert replaced.returncode == 0 and "replaced" in replaced.stdout, replaced.stderr
    data = known.read_bytes()
    assert data.startswith(foreign) and data.count(b"\n") == foreign.count(b"\n") + 1  # old hashed line gone
    assert _pub(server.host_key).encode() in data[len(foreign):]
    _connect(profile)


def test_revoked_key_is_refused_by_connect_and_by_trust(server: SSHServer, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    name = f"[{server.host}]:{server.port}"
    content = (f"{name} {_pub(server.host_key)}\n@revoked * {_pub(server.host_key)}\n").encode()
    known.write_bytes(content)
    profile = server.profile(tmp_path / "loop.toml", "loop", tmp_path / "work", known_hosts=str(known))
    with pytest.raises(HostKeyError, match="@revoked"):
        _connect(profile)
    for args in (("devices", "trust", str(profile)), ("devices", "trust", str(profile), "--replace")):
        proc = hwlat(*args)
        assert proc.returncode == 2 and "@revoked" in proc.stderr and "Traceback" not in proc.stderr
    assert known.read_bytes() == content


def test_trust_through_a_symlink_keeps_the_link(server: SSHServer, tmp_path: Path) -> None:
    real = tmp_path / "dotfiles" / "known_hosts"
    real.parent.mkdir()
    real.write_bytes(b"# synced from my dotfiles repo\n")
    link = tmp_path / "known_hosts"
    link.symlink_to(real)
    profile = server.profile(tmp_path / "loop.toml", "loop", tmp_path / "work", known_hosts=str(link))
    assert hwlat("devices", "trust", str(profile)).returncode == 0
    assert link.is_symlink() and real.read_bytes().startswith(b"# synced from my dotfiles repo\n")
    assert not [p for p in real.parent.iterdir() if p.name.endswith(".tmp")]  # atomic: no temp file left
    _connect(profile)
