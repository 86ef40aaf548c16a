"""Local transport: the agent runs as a child process on this machine (pyperf's runner/worker split).

The agent is the same program as on a board; only starting it and reading its journal differ. Models are
not copied: jobs point at the exporter's content-addressed cache. The agent is started with
``--exit-with-parent`` so that a killed coordinator never leaves a stray agent timing in the background.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from agents.errors import DeviceBusyError, TransportError, UsageError
from agents.files import atomic_write
from agents.journal import reply_object
from agents.records import RunSpec
from harness.records import ModelArtifact
from harness.transport.base import Transport

#: The lock every local campaign holds while it measures (see ``LocalTransport._take_machine_lock``).
LOCAL_LOCK = Path(tempfile.gettempdir()) / "hwlat-local-device.lock"


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
        if self._lock_fd is None:
            self._lock_fd = self._take_machine_lock()

    def _take_machine_lock(self) -> int:
        """One campaign at a time on this machine: two would time each other's load.

        Machine-wide, not per profile, because every local profile shares the same CPUs. flock dies with
        the process, so a killed coordinator never leaves the machine locked.
        """
        try:
            fd = os.open(LOCAL_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise UsageError(f"device {self.profile.name}: cannot open the machine lock {LOCAL_LOCK} "
                             f"({exc.strerror or exc}); remove it if another user left it") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise DeviceBusyError(f"device {self.profile.name}: another hwlat campaign (pid {holder}) is measuring "
                                  "on this machine; wait for it to finish or stop it") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        return fd

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
