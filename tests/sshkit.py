"""Real OpenSSH servers for the SSH transport tests: on loopback, or one per network namespace.

No mocked SSH anywhere: each ``SSHServer`` is a real ``sshd`` started in the foreground (``-D``)
with generated host and client keys, ``UsePAM no`` and ``StrictModes no`` (no systemd, no PAM),
so the tests exercise the same code path as a lab board. ``NetnsBoard`` puts an sshd in its own
network namespace behind a veth pair (addresses exist only on that pair), which lets a test cut one
board's link while the others keep going.

Everything started here is torn down by ``close()``: daemons, their session processes, agents
started inside a namespace (``ip netns pids``), veth pairs and namespaces.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/bin/sshd")


def find_sshd() -> str | None:
    return shutil.which("sshd") or next((p for p in SSHD_CANDIDATES if os.path.exists(p)), None)


def ensure_openssh() -> str:
    """Path to sshd, installing openssh-server with apt-get if missing (root only).

    Returns the path, or raises ``RuntimeError`` with the reason a test should skip.
    """
    sshd = find_sshd()
    if sshd and shutil.which("ssh-keygen"):
        return sshd
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError("sshd is not installed and cannot be installed (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", "openssh-server"]
    if subprocess.run(cmd, env=env, capture_output=True, timeout=600).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600)
        subprocess.run(cmd, env=env, capture_output=True, timeout=600)
    sshd = find_sshd()
    if not sshd:
        raise RuntimeError("apt-get install openssh-server did not provide sshd")
    return sshd


def netns_unavailable() -> str | None:
    """Why namespace tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root for ip netns"
    if not shutil.which("ip"):
        return "iproute2 (ip) is not installed"
    probe = f"hwlat-probe-{secrets.token_hex(3)}"
    if subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode != 0:
        return "ip netns add is not permitted in this sandbox"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hwlat-test", "-f", str(path)],
        check=True, capture_output=True,
    )


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def write_toml(path: Path, data: dict[str, Any]) -> Path:
    """Write a flat profile (nested dicts as inline tables) without a TOML writer dependency."""
    path.write_text("".join(f"{k} = {_toml_value(v)}\n" for k, v in data.items()), encoding="utf-8")
    return path


class SSHServer:
    """One foreground sshd with its own host key, client key and known_hosts file."""

    def __init__(self, root: Path, host: str = "127.0.0.1", port: int | None = None,
                 netns: str | None = None) -> None:
        self.sshd = ensure_openssh()
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = (port or free_port()) if netns is None else (port or 2222)
        self.netns = netns
        self.host_key = root / "ssh_host_ed25519_key"
        self.client_key = root / "client_key"
        self.known_hosts = root / "known_hosts"
        self.log = root / "sshd.log"
        self.proc: subprocess.Popen | None = None
        keygen(self.host_key)
        keygen(self.client_key)
        (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
        (root / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress {host}\nHostKey {self.host_key}\n"
            f"PidFile {root / 'sshd.pid'}\nAuthorizedKeysFile {root / 'authorized_keys'}\n"
            "UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nSubsystem sftp internal-sftp\n"
            "MaxSessions 50\nMaxStartups 50\nPrintMotd no\nUseDNS no\nLogLevel VERBOSE\n"
        )

    def start(self) -> SSHServer:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        cmd = [self.sshd, "-D", "-e", "-f", str(self.root / "sshd_config")]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        log = open(self.log, "ab")  # noqa: SIM115 - handed to the daemon for its lifetime
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.5):
                return self
            time.sleep(0.1)
        raise RuntimeError(f"sshd did not listen on {self.host}:{self.port}: {self.log.read_text()[-2000:]}")

    def trust(self) -> None:
        """Write the host key to known_hosts the way OpenSSH would (tests of `trust` do it via hwlat)."""
        name = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        kind, blob = (self.root / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        self.known_hosts.write_text(f"{name} {kind} {blob}\n")

    def kill(self) -> None:
        """SIGKILL the daemon and every session it forked: the network side of a crashed board.

        Agents are not touched: they were detached (double fork) and no longer descend from sshd.
        """
        if self.proc is None:
            return
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def regenerate_host_key(self) -> None:
        """New host key on the same address (a re-installed board, or an attacker in the middle)."""
        for path in (self.host_key, self.host_key.with_suffix(".pub")):
            path.unlink()
        keygen(self.host_key)
        if self.proc is not None:
            self.restart()

    def profile(self, path: Path, name: str, workdir: Path, **extra: Any) -> Path:
        """Write a device profile for this server (the command contract's loopback profile)."""
        import sys

        data: dict[str, Any] = {
            "name": name, "host": self.host, "port": self.port, "user": "root",
            "identity_file": str(self.client_key), "known_hosts": str(self.known_hosts),
            "python": sys.executable, "workdir": str(workdir), "runtime": "onnxruntime",
        }
        data.update(extra)
        return write_toml(path, data)

    def close(self) -> None:
        self.kill()


def kill_agents(workdir: Path) -> None:
    """Kill the agent (process group) recorded in a device workdir's lock file, if still running."""
    try:
        holder = json.loads((workdir / "device.lock").read_text() or "{}")
    except (OSError, ValueError):
        return
    pid = holder.get("pid")
    if pid:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _free_subnet() -> int:
    used = _ip("-o", "addr").stdout + _ip("route").stdout
    for k in range(10, 250):
        if f"10.250.{k}." not in used:
            return k
    raise RuntimeError("no free 10.250.x.0/30 subnet for a test namespace")


class NetnsBoard:
    """A board in its own network namespace: veth pair 10.250.K.1 (host) <-> 10.250.K.2 (board)."""

    def __init__(self, root: Path, index: int) -> None:
        token = secrets.token_hex(2)
        self.ns = f"hwlat-t-{token}-{index}"
        self.veth = f"hwt{token}{index}h"
        peer = f"hwt{token}{index}n"
        self.subnet = _free_subnet()
        self.address = f"10.250.{self.subnet}.2"
        self.net = f"10.250.{self.subnet}.0/30"
        self.server: SSHServer | None = None
        _ip("netns", "add", self.ns)
        try:
            _ip("link", "add", self.veth, "type", "veth", "peer", "name", peer)
            _ip("link", "set", peer, "netns", self.ns)
            # With the link down the connected route goes away; this route keeps the board's traffic
            # local then (an immediate "network unreachable") instead of following the default route.
            _ip("route", "add", "unreachable", self.net, "metric", "4000")
            _ip("addr", "add", f"10.250.{self.subnet}.1/30", "dev", self.veth)
            _ip("link", "set", self.veth, "up")
            _ip("netns", "exec", self.ns, "ip", "addr", "add", f"{self.address}/30", "dev", peer)
            _ip("netns", "exec", self.ns, "ip", "link", "set", peer, "up")
            _ip("netns", "exec", self.ns, "ip", "link", "set", "lo", "up")
            self.server = SSHServer(root, host=self.address, port=2222, netns=self.ns).start()
        except Exception:
            self.close()
            raise

    def link_down(self) -> None:
        _ip("link", "set", self.veth, "down")

    def link_up(self) -> None:
        _ip("link", "set", self.veth, "up")

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        pids = _ip("netns", "pids", self.ns, check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        _ip("link", "del", self.veth, check=False)
        _ip("route", "del", "unreachable", self.net, "metric", "4000", check=False)
        _ip("netns", "del", self.ns, check=False)
