"""The user's known_hosts file, read and edited line by line in OpenSSH's format (sshd(8), "SSH_KNOWN_HOSTS").

known_hosts belongs to the user and to OpenSSH: it holds comments, ``@cert-authority`` and ``@revoked``
lines, keys of types paramiko cannot parse (``sk-ssh-ed25519@openssh.com``, certificates) and hashed host
names. paramiko's ``HostKeys`` drops every line it does not model when it saves, and raises on some of
them when it loads (an ``@cert-authority`` line is an ``InvalidHostKey``). So hwlat never round-trips the
file through paramiko: this module keeps every line as it was (bytes included) and only

* looks up the keys recorded for one host (plain, wildcard and hashed names, as OpenSSH matches them),
* says whether a key is ``@revoked`` for that host (honoured: such a key is refused),
* removes the lines that name exactly that host (``trust --replace``) and appends one line.

``@cert-authority`` lines are ignored: hwlat (paramiko) does not verify host certificates, so a device
known only through a CA is "not in known_hosts" until ``hwlat devices trust`` records its key.
Writes go through ``agents.files.atomic_write`` (temp file, fsync, rename): a crash never leaves half a file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path

import paramiko

from agents.files import atomic_write

MARKERS = ("@cert-authority", "@revoked")


@dataclass(frozen=True)
class Entry:
    """One line of the file. ``hosts`` is None for comments, blank and unparseable lines (kept verbatim)."""

    raw: bytes
    marker: str | None = None
    hosts: str | None = None
    key_type: str | None = None
    key_b64: str | None = None

    @classmethod
    def parse(cls, raw: bytes) -> Entry:
        text = raw.decode("utf-8", errors="replace").strip()
        if not text or text.startswith("#"):
            return cls(raw)
        fields = text.split()
        marker = fields.pop(0) if fields[0].startswith("@") else None
        if len(fields) < 3 or (marker is not None and marker not in MARKERS):
            return cls(raw)
        return cls(raw, marker, fields[0], fields[1], fields[2])

    def names(self, host: str) -> bool:
        """Does this line's host field name ``host`` (OpenSSH rules: hashes, wildcards, ``!`` negation)?"""
        return self.hosts is not None and host_matches(self.hosts, host)

    def names_exactly(self, host: str) -> bool:
        """Named without a wildcard: the lines ``trust --replace`` may rewrite."""
        if self.hosts is None:
            return False
        if self.hosts.startswith("|1|"):
            return _hashed_match(self.hosts, host)
        return host.lower() in (p.lower() for p in self.hosts.split(","))

    def key(self) -> paramiko.PKey | None:
        """The key as paramiko knows it, None for a type paramiko cannot load (sk-, certificates)."""
        try:
            return paramiko.PKey.from_type_string(self.key_type, base64.b64decode(self.key_b64 or "", validate=True))
        except (paramiko.SSHException, ValueError, binascii.Error, TypeError):
            return None

    def same_key(self, key: paramiko.PKey) -> bool:
        return self.key_type == key.get_name() and self.key_b64 == key.get_base64()


def _hashed_match(field: str, host: str) -> bool:
    """``|1|salt|hmac-sha1(salt, host)`` as written by ``HashKnownHosts yes`` / ``ssh-keygen -H``."""
    parts = field.split("|")
    if len(parts) != 4 or parts[1] != "1":
        return False
    try:
        salt, digest = base64.b64decode(parts[2]), base64.b64decode(parts[3])
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(hmac.new(salt, host.encode(), hashlib.sha1).digest(), digest)


def _glob(pattern: str, host: str) -> bool:
    """OpenSSH's ``*`` and ``?`` wildcards, case-insensitive; ``[`` and ``]`` are literal (``[host]:port``)."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, host, flags=re.IGNORECASE) is not None


def host_matches(field: str, host: str) -> bool:
    """A host field (comma-separated patterns or one hash) names ``host``: a positive pattern matches and
    no negated one does."""
    if field.startswith("|1|"):
        return _hashed_match(field, host)
    matched = False
    for pattern in field.split(","):
        if pattern.startswith("!"):
            if _glob(pattern[1:], host):
                return False
        elif _glob(pattern, host):
            matched = True
    return matched


class KnownHosts:
    """A known_hosts file in memory, every line kept; ``write`` puts it back atomically."""

    def __init__(self, path: Path, entries: list[Entry]) -> None:
        self.path = path
        self.entries = entries

    @classmethod
    def read(cls, path: Path) -> KnownHosts:
        """The file's lines (a missing file is empty). OSError propagates: the caller names profile and key."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = b""
        return cls(path, [Entry.parse(line) for line in data.splitlines(keepends=True)])

    def keys_for(self, host: str) -> list[paramiko.PKey]:
        """Keys recorded for ``host`` that paramiko can check, exact names before wildcards, revoked ones left out."""
        lines = [e for e in self.entries if e.marker is None and e.names(host)]
        lines.sort(key=lambda e: not e.names_exactly(host))
        keys = [k for e in lines if (k := e.key()) is not None]
        return [k for k in keys if not self.is_revoked(host, k)]

    def is_revoked(self, host: str, key: paramiko.PKey) -> bool:
        return any(e.marker == "@revoked" and e.names(host) and e.same_key(key) for e in self.entries)

    def replace_host(self, host: str, key: paramiko.PKey) -> None:
        """Drop the plain lines that name exactly ``host`` (the host is removed from a multi-host line, whose
        other hosts keep their key) and append one line for ``key``; every other line stays as it was."""
        kept: list[Entry] = []
        for e in self.entries:
            if e.marker is not None or not e.names_exactly(host):
                kept.append(e)
                continue
            others = [] if e.hosts is None or e.hosts.startswith("|1|") else \
                [p for p in e.hosts.split(",") if p.lower() != host.lower()]
            if others:
                text = f"{','.join(others)} {e.key_type} {e.key_b64}\n".encode()
                kept.append(Entry.parse(text))
        self.entries = kept
        self.add(host, key)

    def add(self, host: str, key: paramiko.PKey) -> None:
        """Append a line for ``host``; hashed if the file already hashes its host names (the user's choice)."""
        hashed = any(e.hosts is not None and e.hosts.startswith("|1|") for e in self.entries)
        name = paramiko.HostKeys.hash_host(host) if hashed else host
        if self.entries and not self.entries[-1].raw.endswith(b"\n"):
            self.entries[-1] = Entry.parse(self.entries[-1].raw + b"\n")
        self.entries.append(Entry.parse(f"{name} {key.get_name()} {key.get_base64()}\n".encode()))

    def write(self) -> None:
        """Atomically replace the file (through a symlink, the file it points to); mode 0600 (mkstemp's)."""
        target = self.path.resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, b"".join(e.raw for e in self.entries))
