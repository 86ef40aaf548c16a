"""Local transport: the agent runs as a child process on this machine (pyperf's runner/worker split).

The agent is the same program as on a board; only starting it and reading its journal differ. Models are
not copied: jobs point at the exporter's content-addressed cache. The agent is started with
``--exit-with-parent`` so that a killed coordinator never leaves a stray agent timing in the background.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from agents.errors import DeviceBusyError, TransportError, UsageError
from agents.files import atomic_write
from agents.journal import reply_object
from agents.records import RunSpec
from harness.records import ModelArtifact
from harness.transport.base import Transport

#: The lock every local campaign on this machine holds while it measures (``LocalTransport._take_machine_lock``).
#: A fixed path, not $TMPDIR: two users (or a user and root, or a shell with another TMPDIR) share the CPUs,
#: so they must find the same lock. /var/tmp exists on every Linux (FHS), is world-writable with the sticky
#: bit for root and every user alike, and is not cleaned at boot the way /tmp is; /run/lock is root-only on
#: some distributions (root:lock 0755 on Fedora).
LOCAL_LOCK = Path("/var/tmp/hwlat-local-device.lock")
#: Names another lock file instead of LOCAL_LOCK. For CPUs that are split on purpose (two campaigns pinned to
#: disjoint cores, each with its own lock), and for a test suite that must not queue behind, or be refused
#: by, a real campaign on the same machine.
LOCK_ENV = "HWLAT_MACHINE_LOCK"
#: Used only when LOCAL_LOCK cannot be opened at all (no /var/tmp, read-only): still one lock per user.
LOCAL_LOCK_FALLBACK = Path("~/.cache/hwlat/local-device.lock")


def machine_lock_path() -> Path:
    """The lock file local campaigns take: ``$HWLAT_MACHINE_LOCK`` when set, else LOCAL_LOCK."""
    return Path(os.environ.get(LOCK_ENV) or LOCAL_LOCK)


def open_machine_lock(path: Path | None = None) -> int:
    """A descriptor on the machine lock file (default ``machine_lock_path()``), for flock; created
    world-writable so every user records its pid.

    An existing file is opened without O_CREAT: with fs.protected_regular (Debian, Ubuntu) O_CREAT on another
    user's file in a sticky folder fails even for root. flock works on a read-only descriptor too.
    """
    path = path or machine_lock_path()
    for _ in range(3):
        try:
            return os.open(path, os.O_RDWR)
        except PermissionError:
            return os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                continue  # another process created it between our two opens
            os.fchmod(fd, 0o666)  # past the umask: the next user must be able to write its pid
            return fd
    return os.open(path, os.O_RDONLY)


#: Lock descriptors reserved by this process with ``reserve_machine`` (transports then take no lock of their own).
_RESERVED: list[int] = []


def lock_machine(device: str, wait_s: float | None = None,
                 on_wait: Callable[[str], None] | None = None) -> int:
    """Take the machine-wide measurement lock; returns its descriptor (closing it releases the lock).

    Machine-wide, not per profile, because every local profile shares the same CPUs. flock dies with
    the process, so a killed coordinator never leaves the machine locked. ``wait_s``: None or 0 refuses
    at once, a number waits at most that many seconds, ``math.inf`` waits as long as it takes; ``on_wait``
    hears once who is being waited for. Raises ``DeviceBusyError`` when the lock stays taken.
    """
    try:
        fd = open_machine_lock()
    except OSError:
        fallback = LOCAL_LOCK_FALLBACK.expanduser()
        fallback.parent.mkdir(parents=True, exist_ok=True)
        fd = open_machine_lock(fallback)
    deadline = time.monotonic() + (wait_s or 0.0)
    told = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            if time.monotonic() >= deadline:
                os.close(fd)
                advice = f"waited {wait_s:.0f} s" if wait_s else "queue with --wait [SECONDS], or stop it"
                raise DeviceBusyError(f"device {device}: another hwlat campaign (pid {holder}) is measuring on "
                                      f"this machine; {advice}") from None
            if on_wait is not None and not told:
                on_wait(f"device {device}: another hwlat campaign (pid {holder}) is measuring on this machine; "
                        "waiting for it to finish")
                told = True
            time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
    except OSError:
        pass  # a read-only descriptor: the lock holds, only the pid shown to the next campaign is missing
    return fd


@contextlib.contextmanager
def reserve_machine(device: str, wait_s: float | None = None,
                    on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the machine lock for a whole command (before exporting, so a busy machine is refused at once,
    or queued for with ``wait_s``); local transports opened meanwhile in this process share it."""
    fd = lock_machine(device, wait_s, on_wait)
    _RESERVED.append(fd)
    try:
        yield
    finally:
        _RESERVED.remove(fd)
        os.close(fd)


class LocalTransport(Transport):
    """Run the agent on this machine under ``<workdir>/runs/<run_id>``."""

    def __init__(self, profile) -> None:
        super().__init__(profile)
        self.workdir = Path(os.path.expanduser(profile.workdir))
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock_fd: int | None = None

    def connect(self) -> None:
        try:
            (self.workdir / "runs").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"device {self.profile.name}: cannot create workdir {self.workdir}: {exc}") from None
        if self._lock_fd is None and not _RESERVED:  # a reservation of this process already holds it
            self._lock_fd = self._take_machine_lock()

    def _take_machine_lock(self) -> int:
        """One campaign at a time on this machine: two would time each other's load (see ``lock_machine``)."""
        return lock_machine(self.profile.name)

    def close(self) -> None:
        for run_id in list(self._procs):
            self.stop_run(run_id)
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _agent_cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "agents", *args]

    def fingerprint(self) -> dict:
        proc = subprocess.run(self._agent_cmd("fingerprint"), capture_output=True, text=True,
                              timeout=self.profile.command_timeout_s, check=False)
        if proc.returncode != 0:
            raise TransportError(f"agent fingerprint failed: {proc.stderr.strip()[-300:]}")
        return reply_object(proc.stdout, "agent fingerprint")

    def push_models(self, artifacts: Iterable[ModelArtifact]) -> dict[str, str]:
        return {a.sha256: str(Path(a.path).resolve()) for a in artifacts}

    def run_dir(self, run_id: str) -> Path:
        return self.workdir / "runs" / run_id

    def start_run(self, spec: RunSpec) -> None:
        run_dir = self.run_dir(spec.run_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        jobs = run_dir / "jobs.json"
        if not jobs.exists():
            atomic_write(jobs, spec.to_json().encode("utf-8"))
        log = open(run_dir / "agent.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            self._procs[spec.run_id] = subprocess.Popen(
                self._agent_cmd("run", str(run_dir), "--exit-with-parent"),
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )
        finally:
            log.close()

    def read_journal(self, run_id: str, offset: int, limit: int) -> bytes:
        try:
            with open(self.run_dir(run_id) / "journal.jsonl", "rb") as fh:
                fh.seek(offset)
                return fh.read(limit)
        except FileNotFoundError:
            return b""

    def agent_alive(self, run_id: str) -> bool:
        proc = self._procs.get(run_id)
        return proc is not None and proc.poll() is None

    def stop_run(self, run_id: str) -> None:
        proc = self._procs.pop(run_id, None)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
