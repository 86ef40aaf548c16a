"""SSH transport: the same agent and run directories as the local transport, reached over OpenSSH.

Security and robustness choices (each one is a gap in the tools people use today):

* **Authentication**: key only (``identity_file`` or the user's ssh-agent), and the device's host
  key must already be in the profile's ``known_hosts``. Unknown keys are refused (never
  ``AutoAddPolicy``) with a pointer to ``hwlat devices trust NAME``; a *changed* key is refused with a
  man-in-the-middle warning, an ``@revoked`` one as revoked. known_hosts is read and edited line by line
  by ``harness.transport.known_hosts`` (never through paramiko's ``HostKeys``, which drops or chokes on
  lines it does not model). TVM's RPC has no authentication at all.
* **Only JSON crosses the wire**; every remote command is an argv list joined with ``shlex.quote``.
* **Model cache by sha256**: ``<workdir>/models/<sha256>.<fmt>``; names are built here from
  validated hex, never from user input, so nothing can escape the workdir. Cached files are hashed
  *on the device* before they are trusted; a missing, partial or corrupt file is sent again.
  Uploads (models and the agent bundle) go to a temporary name and are renamed into place only after
  the device hashed them and the hash matched. nn-Meter re-pushes every model on every run.
* **Everything the device says is untrusted**: journal bytes are handed to ``agents.journal`` (the one
  parser and schema) by the device runner; replies to agent commands are parsed by
  ``agents.journal.reply_object`` (one JSON object, size-bounded) and checked before use. A reply or a
  journal read never holds more than ``MAX_LINE_BYTES`` (+ one byte) in memory.
* **Detached agent + journal**: the agent runs under the bundle's launcher, detached from the SSH
  session, and appends results to ``journal.jsonl``. A dropped connection loses nothing: the
  campaign reconnects (every network failure surfaces as ``TransportError``, retryable) and resumes
  reading the journal from its byte offset. nn-Meter loses the whole run when a device drops.
* **Per-device lock**: the launcher holds ``flock`` on ``<workdir>/device.lock`` for the agent's
  lifetime; a second campaign on the same board gets ``DeviceBusyError`` (a ``UsageError``: it is
  refused at once, it does not wait).

One SSH connection per device, reused for every command and for two SFTP sessions (uploads, and
journal polling, so a long upload never delays streaming results). Methods may be called from
different threads of the campaign: the campaign uploads the next chunk of models in a background
thread while the current chunk is measured. Connection (re)setup is serialised by a lock, and each
SFTP session is used by one thread at a time (paramiko's ``SFTPClient`` mixes up the replies of
concurrent requests), one file or listing at a time so that ``start_run`` never waits for a whole
chunk's upload.
"""

from __future__ import annotations

import contextlib
import json
import logging
import posixpath
import re
import shlex
import socket
import stat
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paramiko

from agents.errors import DeviceBusyError, ProfileError, ProtocolError, TransportError, UsageError
from agents.journal import MAX_LINE_BYTES, reply_object
from agents.launcher import is_agent_process
from agents.records import RUN_ID_RE, RunSpec
from harness.devices import DeviceProfile
from harness.records import ModelArtifact
from harness.transport.base import Transport
from harness.transport.bundle import Bundle, current_bundle
from harness.transport.known_hosts import KnownHosts

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_FMT_RE = re.compile(r"^[a-z0-9]{1,16}$")
#: Partial uploads older than this are removed (a live upload from this coordinator is younger).
_STALE_PART_S = 3600.0
_HASH_CHUNK = 200
#: Minimum interval between two journal polls that found nothing new (seconds).
POLL_S = 0.5
_NETWORK_ERRORS = (paramiko.SSHException, OSError, EOFError, socket.timeout)
#: Most stderr kept from a remote command (for its error message).
_STDERR_KEEP = 64 * 1024
#: Most bytes read from a small device file (the lock holder, /proc entries).
_SMALL_FILE = 64 * 1024

# paramiko's transport thread logs every failed handshake with a traceback; without a handler Python
# prints it on stderr. Each failure already reaches the user as one TransportError/HostKeyError line.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


class HostKeyError(UsageError):
    """The device's host key is unknown or changed; the user must verify and trust it."""


class MissingDependencyError(UsageError):
    """The device lacks Python, numpy or the runtime; the message says what to install."""


def default_known_hosts(profile: DeviceProfile) -> Path:
    """The known_hosts file a profile uses: its own, else the user's ``~/.ssh/known_hosts``."""
    return Path(profile.known_hosts or "~/.ssh/known_hosts").expanduser()


def host_key_name(profile: DeviceProfile) -> str:
    """The known_hosts entry name, as OpenSSH writes it (``[host]:port`` for a non-22 port)."""
    return profile.host if profile.port == 22 else f"[{profile.host}]:{profile.port}"


def key_fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style ``SHA256:...`` fingerprint, what ``ssh-keygen -lf`` prints."""
    return f"{key.get_name()} {key.fingerprint}"


def quote_argv(argv: list[str]) -> str:
    """Join an argv list into one shell command line, every argument quoted."""
    return " ".join(shlex.quote(a) for a in argv)


def fetch_host_key(profile: DeviceProfile) -> paramiko.PKey:
    """Connect just far enough to read the server's host key (no authentication)."""
    try:
        sock = socket.create_connection((profile.host, profile.port), timeout=profile.connect_timeout_s)
    except OSError as exc:
        raise TransportError(f"{profile.name}: cannot reach {profile.host}:{profile.port} ({exc})") from None
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=profile.connect_timeout_s)
        return transport.get_remote_server_key()
    except _NETWORK_ERRORS as exc:
        raise TransportError(
            f"{profile.name}: SSH handshake with {profile.host}:{profile.port} failed ({exc})"
        ) from None
    finally:
        transport.close()


def trust_host_key(profile: DeviceProfile, replace: bool = False) -> tuple[paramiko.PKey, str]:
    """Record the device's current host key in its known_hosts file (written atomically).

    Returns (key, what happened: ``added``, ``unchanged`` or ``replaced``). A key that differs from
    the recorded one is only replaced with ``replace=True``: a changed key is what an attacker in
    the middle looks like, so the user has to say they expected it (device re-installed).
    """
    key = fetch_host_key(profile)
    path = default_known_hosts(profile)
    hosts = _read_known_hosts(profile, path)
    name = host_key_name(profile)
    if hosts.is_revoked(name, key):
        raise HostKeyError(f"{profile.name}: the host key of {name} ({key_fingerprint(key)}) is marked @revoked in "
                           f"{path}; refusing to trust it")
    known = hosts.keys_for(name)
    if any(k == key for k in known):
        return key, "unchanged"
    if known and not replace:
        olds = ", ".join(key_fingerprint(k) for k in known)
        raise HostKeyError(
            f"{profile.name}: host key of {name} changed (known: {olds}; now: {key_fingerprint(key)}); "
            "refusing. If the device was re-installed, run `hwlat devices trust "
            f"{profile.name} --replace`"
        )
    # Only the lines naming exactly this host change (plain or hashed); comments, markers, other hosts'
    # lines and keys paramiko cannot read stay byte for byte.
    hosts.replace_host(name, key)
    try:
        hosts.write()
    except OSError as exc:
        raise ProfileError(f"{profile.source}: key 'known_hosts': cannot write {path} ({exc.strerror or exc})") \
            from None
    return key, "replaced" if known else "added"


def _read_known_hosts(profile: DeviceProfile, path: Path) -> KnownHosts:
    try:
        return KnownHosts.read(path)
    except OSError as exc:
        raise ProfileError(f"{profile.source}: key 'known_hosts': cannot read {path} ({exc.strerror or exc})") \
            from None


class _KnownHostsPolicy(paramiko.MissingHostKeyPolicy):
    """Called by paramiko when none of the host's recorded keys has the server key's type (or none is recorded)."""

    def __init__(self, profile: DeviceProfile, hosts: KnownHosts) -> None:
        self.profile, self.hosts = profile, hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        p = self.profile
        if self.hosts.is_revoked(hostname, key):
            raise HostKeyError(f"{p.name}: the host key of {hostname} ({key_fingerprint(key)}) is marked @revoked "
                               f"in {self.hosts.path}; refusing to connect")
        raise HostKeyError(f"{p.name}: host key of {hostname} is not in {self.hosts.path}; verify the device and "
                           f"run `hwlat devices trust {p.name}`")


class SSHTransport(Transport):
    """Drive an agent on a remote Linux board over SSH (see module docstring)."""

    def __init__(self, profile: DeviceProfile) -> None:
        super().__init__(profile)  # env names, like every profile value, are checked by harness.devices
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._poll_sftp: paramiko.SFTPClient | None = None
        self._conn_lock = threading.RLock()
        self._push_lock = threading.Lock()
        self._poll_lock = threading.Lock()
        #: Guards ``_sftp`` (uploads, listings, folders); always taken inside ``_conn_lock``, never around it.
        self._sftp_lock = threading.RLock()
        self._workdir: str | None = None
        self._agent_path: str | None = None
        self._preflight: dict[str, Any] | None = None
        self._last_empty_poll = 0.0
        #: Upload accounting for the last ``push_models`` call (the overhead benchmark reads it).
        self.last_push: dict[str, float] = {}

    # ------------------------------------------------------------------ connection
    def connect(self) -> None:
        with self._conn_lock:
            if self._client is not None and self._alive():
                return
            self._drop()
            self._client = self._open_client()
            try:
                self._sftp = self._client.open_sftp()
                self._poll_sftp = self._client.open_sftp()
                for sftp in (self._sftp, self._poll_sftp):
                    sftp.get_channel().settimeout(self.profile.command_timeout_s)
                if self._workdir is None:
                    self._workdir = self._resolve_workdir()
                self._ensure_agent()
            except _NETWORK_ERRORS as exc:
                self._drop()
                raise TransportError(f"{self.profile.name}: connection set-up failed ({exc})") from None

    def _open_client(self) -> paramiko.SSHClient:
        p = self.profile
        client = paramiko.SSHClient()
        known = default_known_hosts(p)
        # Our reader, not client.load_host_keys: paramiko raises on @cert-authority lines and ignores @revoked.
        hosts = _read_known_hosts(p, known)
        for key in reversed(hosts.keys_for(host_key_name(p))):  # paramiko keeps one key per type: last add wins
            client.get_host_keys().add(host_key_name(p), key.get_name(), key)
        client.set_missing_host_key_policy(_KnownHostsPolicy(p, hosts))
        identity = Path(p.identity_file).expanduser() if p.identity_file else None
        if identity is not None and not identity.is_file():
            raise ProfileError(f"{p.source}: key 'identity_file': {identity} does not exist")
        try:
            client.connect(
                hostname=p.host,
                port=p.port,
                username=p.user,
                key_filename=str(identity) if identity else None,
                look_for_keys=identity is None,
                allow_agent=True,
                timeout=p.connect_timeout_s,
                banner_timeout=p.connect_timeout_s,
                auth_timeout=p.connect_timeout_s,
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            if hosts.is_revoked(host_key_name(p), exc.key):
                raise HostKeyError(f"{p.name}: the host key of {host_key_name(p)} ({key_fingerprint(exc.key)}) is "
                                   f"marked @revoked in {known}; refusing to connect") from None
            raise HostKeyError(
                f"{p.name}: host key for {host_key_name(p)} changed (expected "
                f"{key_fingerprint(exc.expected_key)}, got {key_fingerprint(exc.key)}); refusing to connect "
                f"(possible man-in-the-middle). If the device was re-installed, verify the key and run "
                f"`hwlat devices trust {p.name} --replace`"
            ) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise UsageError(
                f"{p.name}: SSH authentication as {p.user!r} failed ({exc}); check identity_file in "
                f"{p.source} or load the key into ssh-agent"
            ) from None
        except HostKeyError:  # from _KnownHostsPolicy: unknown or revoked key
            client.close()
            raise
        except paramiko.SSHException as exc:
            client.close()
            raise TransportError(f"{p.name}: SSH connection to {p.host}:{p.port} failed ({exc})") from None
        except (OSError, EOFError) as exc:
            client.close()
            raise TransportError(f"{p.name}: cannot reach {p.host}:{p.port} ({exc})") from None
        transport = client.get_transport()
        assert transport is not None
        transport.set_keepalive(5)
        return client

    def _alive(self) -> bool:
        transport = self._client.get_transport() if self._client else None
        return bool(transport and transport.is_active())

    def _drop(self) -> None:
        """Forget the connection; the next call reconnects. Never raises."""
        for closable in (self._sftp, self._poll_sftp, self._client):
            if closable is not None:
                # Closing a dead connection can fail any way it likes.
                with contextlib.suppress(Exception):
                    closable.close()
        self._client = self._sftp = self._poll_sftp = None

    def close(self) -> None:
        with self._conn_lock:
            self._drop()

    @contextmanager
    def _wire(self, what: str) -> Iterator[None]:
        """Turn any network failure into a retryable ``TransportError`` and drop the connection."""
        try:
            yield
        except _NETWORK_ERRORS as exc:
            if isinstance(exc, FileNotFoundError | PermissionError):
                raise
            with self._conn_lock:
                self._drop()
            raise TransportError(f"{self.profile.name}: {what} failed ({type(exc).__name__}: {exc})") from None

    @contextmanager
    def _upload_sftp(self, what: str) -> Iterator[paramiko.SFTPClient]:
        """The upload SFTP session for one operation, held by this thread only.

        The lock is released before ``_wire`` handles a failure (which takes ``_conn_lock``), so a
        thread reconnecting under ``_conn_lock`` and a thread uploading can never wait on each other.
        """
        with self._wire(what), self._sftp_lock:
            sftp = self._sftp
            if sftp is None:
                raise EOFError("connection closed by another thread")
            yield sftp

    # ------------------------------------------------------------------ remote commands
    def _exec(self, argv: list[str], timeout: float | None = None, cwd: str | None = None) -> tuple[int, str, str]:
        """Run ``argv`` on the device (quoted), return (exit status, stdout, stderr)."""
        self.connect()
        command = quote_argv(argv)
        if cwd:
            command = f"cd {shlex.quote(cwd)} && {command}"
        timeout = timeout or self.profile.command_timeout_s
        with self._wire(f"command {argv[0]!r}"):
            assert self._client is not None
            transport = self._client.get_transport()
            if transport is None:
                raise EOFError("connection closed")
            channel = transport.open_session(timeout=timeout)
            try:
                channel.settimeout(timeout)
                channel.exec_command(command)
                out, err = bytearray(), bytearray()
                deadline = time.monotonic() + timeout
                while True:
                    progressed = False
                    while channel.recv_ready():
                        out += channel.recv(65536)
                        progressed = True
                        if len(out) > MAX_LINE_BYTES:
                            raise ProtocolError(f"{self.profile.name}: {argv[0]!r} printed more than "
                                                f"{MAX_LINE_BYTES} bytes")
                    while channel.recv_stderr_ready():
                        err += channel.recv_stderr(65536)
                        del err[:-_STDERR_KEEP]
                        progressed = True
                    if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"no answer within {timeout:.0f} s")
                    if not progressed:
                        time.sleep(0.01)
                status = channel.recv_exit_status()
            finally:
                channel.close()
        return status, out.decode(errors="replace"), err.decode(errors="replace")

    def _agent_argv(self, *args: str, bundle: str | None = None) -> list[str]:
        env = [f"{k}={v}" for k, v in sorted(self.profile.env.items())]
        path = bundle or self._agent_path
        assert path is not None
        return ["env", *env, self.profile.python, path, *args]

    def _agent_json(self, *args: str, timeout: float | None = None) -> dict[str, Any]:
        """The JSON object an agent command printed (``ProtocolError`` if it printed anything else)."""
        status, out, err = self._exec(self._agent_argv(*args), timeout=timeout, cwd=self._workdir)
        if status != 0:
            raise TransportError(
                f"{self.profile.name}: agent {args[0]!r} exited with {status}: {_last_line(err) or _last_line(out)}"
            )
        return reply_object(out, f"{self.profile.name}: agent {args[0]!r}")

    # ------------------------------------------------------------------ set-up
    def _resolve_workdir(self) -> str:
        """Absolute workdir on the device (``~`` expanded against the SFTP home), created."""
        with self._upload_sftp("resolving the home folder") as sftp:
            home = sftp.normalize(".")
        raw = self.profile.workdir
        if raw == "~" or raw.startswith("~/"):
            raw = posixpath.join(home, raw[2:])
        elif not raw.startswith("/"):
            raw = posixpath.join(home, raw)
        workdir = posixpath.normpath(raw)
        for sub in ("", "models", "runs", "agent"):
            self._sftp_mkdir(posixpath.join(workdir, sub) if sub else workdir)
        return workdir

    def _sftp_mkdir(self, path: str) -> None:
        parts = [p for p in path.split("/") if p]
        current = ""
        with self._upload_sftp("creating folders") as sftp:
            for part in parts:
                current += "/" + part
                try:
                    if not stat.S_ISDIR(sftp.stat(current).st_mode or 0):
                        raise ProfileError(
                            f"{self.profile.source}: key 'workdir': {current} exists and is not a folder"
                        )
                except FileNotFoundError:
                    sftp.mkdir(current)

    def _ensure_agent(self) -> None:
        """Upload the agent bundle unless the device already has this exact one, then preflight."""
        bundle = current_bundle()
        assert self._workdir is not None
        path = posixpath.join(self._workdir, "agent", bundle.remote_name)
        if self._agent_path == path and self._preflight is not None:
            return
        self._agent_path = path
        try:
            with self._upload_sftp("checking the agent bundle") as sftp:
                present = sftp.stat(path).st_size == len(bundle.data)
        except FileNotFoundError:
            present = False
        report = self._run_preflight(path) if present else {}
        if report.get("bundle_sha256") != bundle.sha256:
            report = self._install_bundle(bundle, path)
        self._check_dependencies(report, bundle)
        self._preflight = report

    def _install_bundle(self, bundle: Bundle, path: str) -> dict[str, Any]:
        """Upload the bundle under a temporary name, let it hash itself (preflight), rename it only if it matches."""
        tmp = self._upload_part(bundle.data, path)
        report = self._run_preflight(tmp)
        if report.get("bundle_sha256") == bundle.sha256:
            self._rename(tmp, path)
            return report
        self._remove(tmp)
        if "error" in report:
            return report  # the interpreter cannot run it: ``_check_dependencies`` says what is missing
        raise TransportError(f"{self.profile.name}: agent bundle hash mismatch after upload "
                             f"(device: {report.get('bundle_sha256')!r:.80}, sent: {bundle.sha256})")

    def _run_preflight(self, bundle: str) -> dict[str, Any]:
        status, out, err = self._exec(
            self._agent_argv("preflight", self.profile.runtime.runtime, bundle=bundle), cwd=self._workdir
        )
        if status == 127 or ("No such file or directory" in err and self.profile.python in err):
            raise MissingDependencyError(
                f"{self.profile.name}: python {self.profile.python!r} not found on the device; install "
                f"Python 3.8+ (e.g. `sudo apt install python3`) or set `python` in {self.profile.source}"
            )
        try:
            return reply_object(out, "preflight")
        except ProtocolError:
            return {"error": _last_line(err) or out[-300:], "status": status}

    def _check_dependencies(self, report: dict[str, Any], bundle: Bundle) -> None:
        p = self.profile
        if "error" in report:
            raise MissingDependencyError(f"{p.name}: the agent cannot start with {p.python!r}: {report['error']}")
        if not report.get("python_ok", False):
            raise MissingDependencyError(
                f"{p.name}: {p.python} is Python {report.get('python')}; the agent needs 3.8+ "
                f"(set `python` in {p.source})"
            )
        missing = report.get("missing") or []
        if missing:
            names = ", ".join(m["module"] for m in missing)
            pips = " ".join(m["pip"].split(" ")[0] for m in missing)
            raise MissingDependencyError(
                f"{p.name}: missing on the device for {p.python}: {names}; install with "
                f"`{p.python} -m pip install {pips}` (see docs/add-a-board.md)"
            )

    def _upload_part(self, data: bytes, path: str) -> str:
        """Upload ``data`` beside ``path`` under a temporary ``.part-`` name; returns that name."""
        tmp = f"{path}.part-{uuid.uuid4().hex[:12]}"
        with self._upload_sftp("upload") as sftp:
            with sftp.open(tmp, "wb") as fh:
                fh.set_pipelined(True)
                fh.write(data)
            # paramiko drops the error of a pipelined write still buffered at close (a full disk): check.
            size = sftp.stat(tmp).st_size
        if size != len(data):
            self._remove(tmp)
            raise TransportError(f"{self.profile.name}: upload of {posixpath.basename(path)} is incomplete "
                                 f"({size} of {len(data)} bytes): is the device's disk full?")
        return tmp

    def _rename(self, tmp: str, path: str) -> None:
        with self._upload_sftp("renaming an upload") as sftp:
            sftp.posix_rename(tmp, path)

    def _remove(self, path: str) -> None:
        with self._upload_sftp("removing a bad upload") as sftp, contextlib.suppress(FileNotFoundError):
            sftp.remove(path)

    def _upload_bytes(self, data: bytes, path: str) -> None:
        """Small files the agent validates itself (``jobs.json``): temporary name, then rename."""
        self._rename(self._upload_part(data, path), path)

    # ------------------------------------------------------------------ Transport API
    @property
    def workdir(self) -> str:
        """Absolute workdir on the device (connects if needed)."""
        self.connect()
        assert self._workdir is not None
        return self._workdir

    def preflight(self) -> dict[str, Any]:
        """Python/numpy/runtime versions found by the launcher (connects if needed)."""
        self.connect()
        assert self._preflight is not None
        return dict(self._preflight)

    def fingerprint(self) -> dict:
        return self._agent_json("fingerprint")

    def push_models(self, artifacts: Iterable[ModelArtifact]) -> dict[str, str]:
        names: dict[str, tuple[str, ModelArtifact]] = {}
        for art in artifacts:
            if not _SHA_RE.match(art.sha256) or not _FMT_RE.match(art.format):
                raise UsageError(f"model {art.path}: invalid sha256 {art.sha256!r} or format {art.format!r}")
            names[art.sha256] = (f"{art.sha256}.{art.format}", art)
        if not names:
            return {}
        self.connect()
        with self._push_lock:
            started = time.perf_counter()
            models = posixpath.join(self.workdir, "models")
            with self._upload_sftp("listing the model cache") as sftp:
                listing = sftp.listdir_attr(models)
            present = {a.filename for a in listing}
            self._remove_stale_parts(models, listing)
            cached = {posixpath.join(models, name): sha for sha, (name, _) in names.items() if name in present}
            good = set(self._verified(cached).values())
            to_send = [sha for sha in names if sha not in good]
            sent_bytes = 0
            parts: dict[str, str] = {}
            for sha in to_send:
                name, art = names[sha]
                data = Path(art.path).read_bytes()
                parts[self._upload_part(data, posixpath.join(models, name))] = sha
                sent_bytes += len(data)
            verified = self._verified(parts)
            for part, sha in parts.items():
                if part in verified:
                    self._rename(part, posixpath.join(models, names[sha][0]))
                else:
                    self._remove(part)
            bad = [names[sha][0] for part, sha in parts.items() if part not in verified]
            if bad:
                raise TransportError(f"{self.profile.name}: uploaded model(s) failed the hash check: {bad}")
            self.last_push = {
                "models": len(names),
                "cached": len(names) - len(to_send),
                "sent": len(to_send),
                "sent_bytes": sent_bytes,
                "seconds": time.perf_counter() - started,
            }
            return {sha: f"models/{name}" for sha, (name, _) in names.items()}

    def _verified(self, expected: dict[str, str]) -> dict[str, str]:
        """Hash the given files (path -> expected sha256) on the device; the entries whose content matches."""
        good: dict[str, str] = {}
        items = list(expected.items())
        for i in range(0, len(items), _HASH_CHUNK):
            paths = dict(items[i:i + _HASH_CHUNK])
            result = self._agent_json("hash", *paths)
            for path, sha in paths.items():
                if result.get(path) == sha:
                    good[path] = sha
        return good

    def _remove_stale_parts(self, models: str, listing: list[paramiko.SFTPAttributes]) -> None:
        """Partial uploads left by a dropped connection are garbage once old enough."""
        now = time.time()
        for attr in listing:
            if ".part-" in attr.filename and now - (attr.st_mtime or now) > _STALE_PART_S:
                with self._upload_sftp("cleaning partial uploads") as sftp:
                    sftp.remove(posixpath.join(models, attr.filename))

    def _run_dir(self, run_id: str) -> str:
        if not RUN_ID_RE.match(run_id):
            raise UsageError(f"invalid run id {run_id!r}")
        return posixpath.join(self.workdir, "runs", run_id)

    def start_run(self, spec: RunSpec) -> None:
        run_dir = self._run_dir(spec.run_id)
        self._sftp_mkdir(run_dir)
        self._upload_bytes(spec.to_json().encode(), posixpath.join(run_dir, "jobs.json"))
        reply = self._agent_json("launch", self.workdir, spec.run_id)
        if reply.get("status") == "busy":
            holder = reply.get("holder") if isinstance(reply.get("holder"), dict) else {}
            started = holder.get("started", 0)
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started if isinstance(started, int | float)
                                                                     and 0 <= started < 2**40 else 0))
            raise DeviceBusyError(
                f"{self.profile.name}: device is busy: run {holder.get('run_id', '?')} (agent pid "
                f"{holder.get('pid', '?')}, since {since}) holds {self.workdir}/device.lock; wait for that "
                "campaign to finish"
            )
        if reply.get("status") not in ("started", "running"):
            raise TransportError(f"{self.profile.name}: agent did not start: {str(reply.get('error', reply))[:300]}")

    def read_journal(self, run_id: str, offset: int, limit: int) -> bytes:
        path = posixpath.join(self._run_dir(run_id), "journal.jsonl")
        # Poll no faster than POLL_S when nothing is new: each poll is served by sshd on the board,
        # and the board is in the middle of timing a model.
        wait = self._last_empty_poll + POLL_S - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        with self._poll_lock:
            data = self._sftp_read(path, offset, limit) or b""
        self._last_empty_poll = 0.0 if b"\n" in data else time.monotonic()
        return data

    def _sftp_read(self, path: str, offset: int = 0, limit: int = _SMALL_FILE) -> bytes | None:
        """At most ``limit`` bytes of a remote file from ``offset`` (None if it does not exist), on the
        polling session."""
        with self._wire(f"reading {posixpath.basename(path)}"):
            sftp = self._poll_sftp
            if sftp is None:
                raise EOFError("connection closed by another thread")
            try:
                with sftp.open(path, "rb") as fh:
                    fh.seek(offset)
                    return fh.read(limit)
            except FileNotFoundError:
                return None

    def agent_alive(self, run_id: str) -> bool:
        """Whether the lock holder is this run's agent, read over SFTP from ``device.lock`` and ``/proc``.

        Deliberately not a remote command: the campaign asks this every poll, and starting a Python
        process on a board that is timing a model would disturb the measurement.
        """
        run_dir = self._run_dir(run_id)
        with self._poll_lock:
            holder = _holder(self._sftp_read(posixpath.join(self.workdir, "device.lock")))
            pid = holder.get("pid")
            if holder.get("run_id") != run_id or not isinstance(pid, int):
                return False
            stat, cmdline = self._sftp_read(f"/proc/{pid}/stat"), self._sftp_read(f"/proc/{pid}/cmdline")
        return is_agent_process(stat, cmdline, run_dir)

    def device_lock_holder(self) -> dict[str, Any]:
        """Who holds the device lock (``run_id``, ``pid``, ``started``), or {} if the device is free."""
        holder = _holder(self._sftp_read(posixpath.join(self.workdir, "device.lock")))
        run_id = str(holder.get("run_id", ""))
        return holder if RUN_ID_RE.match(run_id) and self.agent_alive(run_id) else {}

    def stop_run(self, run_id: str) -> None:
        self._agent_json("stop", self.workdir, run_id, timeout=30.0)

    def remove_workdir(self) -> None:
        """Delete the whole workdir on the device (agent, model cache, runs), then disconnect.

        For throw-away workdirs such as the overhead benchmark's cold-cache one. Refused while an agent
        holds the device lock, and for the login user's home or ``/``.
        """
        workdir = self.workdir
        holder = self.device_lock_holder()
        if holder:
            raise UsageError(f"{self.profile.name}: run {holder.get('run_id')} is using {workdir}; not removed")
        with self._upload_sftp("resolving the home folder") as sftp:
            home = sftp.normalize(".")
        if workdir in ("/", home):
            raise UsageError(f"{self.profile.name}: refusing to remove {workdir}")
        status, out, err = self._exec(["rm", "-rf", "--", workdir])
        if status != 0:
            raise TransportError(f"{self.profile.name}: rm -rf {workdir} failed: {_last_line(err) or _last_line(out)}")
        self.close()
        self._workdir = self._agent_path = self._preflight = None


def _holder(raw: bytes | None) -> dict[str, Any]:
    """The device lock's holder record; {} when absent or not a JSON object (never trusted further)."""
    try:
        holder = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""
