"""User-facing errors: the CLI prints ``hwlat: <message>`` on one line and exits with code 2.

Raise ``UsageError`` (or a subclass) for anything the user can fix: bad arguments, unknown space
or device, malformed arch strings or profiles, unreadable models, unwritable outputs.
"""


class UsageError(Exception):
    """Bad input from the user; the message must be one line and say what to fix."""


class UnknownSpaceError(UsageError):
    """A search space name that no registered space answers to."""


class ArchError(UsageError):
    """A malformed or out-of-space architecture string."""


class ProfileError(UsageError):
    """A device profile that cannot be read or fails validation (names file and key)."""


class BusyError(UsageError):
    """Something another hwlat process holds (a device, a dataset): try again later (exit 3, not 2)."""


class DeviceBusyError(BusyError):
    """Another campaign is measuring on the device (its lock is held)."""


class TransportError(Exception):
    """The device could not be reached or the agent could not be started (retryable)."""


class ProtocolError(Exception):
    """The device sent something that breaks the protocol: a corrupt, oversized or forged journal line or
    reply (see ``agents.journal``). Not retryable: reconnecting brings back the same bytes."""


class DeviceFailedError(Exception):
    """A device could not do its part of a command (unreachable too long, busy, broken journal, full disk).

    Not bad input: the CLI exits with ``EXIT_FAILED`` (4), not 2; what was measured is saved."""
