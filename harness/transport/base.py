"""The one interface every transport implements (nn-Meter style: connect, push, run, stream).

The campaign drives any device through these calls only, so a new transport is one new file.
Run directories live under ``<workdir>/runs/<run_id>/`` on the device and hold ``jobs.json``
(an ``agents.records.RunSpec``) and ``journal.jsonl`` (the agent's append-only output).
Models live under ``<workdir>/models/<sha256>.<format>``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable

from agents.records import RunSpec
from harness.devices import DeviceProfile
from harness.records import ModelArtifact


class Transport(ABC):
    """Connection to one device. Methods raise ``TransportError`` when the device is unreachable
    (the campaign retries with back-off) and ``UsageError`` for problems the user must fix.

    For a remote device the campaign calls ``push_models`` from a background thread while its device
    thread starts runs and reads the journal (uploads overlap with measurement), so a remote transport
    must allow these calls concurrently. A local device is never driven that way.
    """

    def __init__(self, profile: DeviceProfile) -> None:
        self.profile = profile

    @abstractmethod
    def connect(self) -> None:
        """Open (or re-open) the connection; idempotent."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection; the agent keeps running where the transport allows it."""

    @abstractmethod
    def fingerprint(self) -> dict:
        """The agent's ``fingerprint`` JSON: host, CPU, cores, RAM, OS, Python, runtimes, GPU."""

    @abstractmethod
    def push_models(self, artifacts: Iterable[ModelArtifact]) -> dict[str, str]:
        """Make each model available on the device; returns sha256 -> path for ``Job.model_path``.

        Models already present with the right hash are not sent again.
        """

    @abstractmethod
    def start_run(self, spec: RunSpec) -> None:
        """Write ``jobs.json`` and start (or resume) the agent on that run, detached."""

    @abstractmethod
    def read_journal(self, run_id: str, offset: int, limit: int) -> bytes:
        """At most ``limit`` bytes of the run's journal from byte ``offset`` (b"" while it does not exist).

        Only bytes: the device runner parses and checks them with ``agents.journal``, the one parser.
        """

    @abstractmethod
    def agent_alive(self, run_id: str) -> bool:
        """Whether the agent for that run is still running."""

    @abstractmethod
    def stop_run(self, run_id: str) -> None:
        """Stop the agent of that run (used on Ctrl-C and at the end of a campaign)."""
