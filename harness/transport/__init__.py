"""Transports: how the coordinator reaches an agent. One file per transport (local, ssh)."""

from __future__ import annotations

from harness.devices import DeviceProfile
from harness.transport.base import Transport


def open_transport(profile: DeviceProfile) -> Transport:
    """Pick the transport for a profile: local subprocess or SSH."""
    if profile.is_local:
        from harness.transport.local import LocalTransport

        return LocalTransport(profile)
    from harness.transport.ssh import SSHTransport

    return SSHTransport(profile)
