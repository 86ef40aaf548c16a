"""``hwlat devices list|check|trust``: see the shelf of boards, probe one, record its host key.

``check`` connects, runs the agent's ``fingerprint`` command (CPU, cores, RAM, OS, Python, runtimes and
their execution providers, GPUs from nvidia-smi, board model from /proc/device-tree/model) and prints it with
the warnings that matter for timing, without measuring anything, so a lab engineer can fix a board
(governor, throttling, a busy CPU, a missing runtime) before a campaign wastes hours on it. ``trust`` is the
only way a host key enters known_hosts: hwlat never accepts an unknown key on its own.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from agents.errors import ProfileError, ProtocolError, TransportError, UsageError
from harness.devices import DeviceProfile, available_profiles, load_profile_file, resolve_devices
from harness.runtimes import runtime_lines
from hwlat.cli.console import EXIT_FAILED, EXIT_OK, add_json_flag, emit_json

#: Fingerprint keys in the order ``check`` prints them; anything else follows alphabetically.
_FINGERPRINT_ORDER = (
    "host", "board", "cpu_model", "machine", "cores_logical", "cores_physical", "ram_mb", "os", "os_release",
    "python_version", "numpy_version", "runtimes", "gpus", "governors", "cpu_affinity", "agent_version",
)


def _fmt(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _cell(value: Any) -> str:
    """A list as the text table shows it: comma-joined, ``-`` when empty."""
    if isinstance(value, list):
        return ",".join(map(str, value)) or "-"
    return str(value)


def cmd_list(args: argparse.Namespace) -> int:
    rows = []
    for name, path in sorted(available_profiles().items()):
        try:
            p = load_profile_file(path)
        except ProfileError as exc:
            rows.append({"name": name, "error": str(exc), "source": str(path)})
            continue
        rows.append({
            "name": p.name, "host": "local" if p.is_local else f"{p.user}@{p.host}:{p.port}",
            "runtime": p.runtime.runtime,
            "providers": list(p.runtime.providers) if p.runtime.runtime == "onnxruntime"
            else [p.runtime.device] if p.runtime.device else [],
            "threads": p.runtime.threads, "affinity": list(p.cpu_affinity), "tags": list(p.tags),
            "source": str(path),
        })
    if args.json:
        emit_json(rows)
        return 0
    # Plain columns, never truncated (a rich table clips at 80 columns when piped).
    cols = ("name", "host", "runtime", "providers", "threads", "affinity", "tags", "source")
    cells = [[_cell(row.get(c, "")) for c in cols] if "error" not in row
             else [row["name"], f"INVALID: {row['error']}", "", "", "", "", "", row["source"]] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(cols)]
    for line in [list(cols), *cells]:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    return 0


def check_device(profile: DeviceProfile) -> dict[str, Any]:
    """Connect, fingerprint and collect timing warnings; raises TransportError/UsageError."""
    from harness.transport import open_transport

    transport = open_transport(profile)
    try:
        transport.connect()
        report: dict[str, Any] = {"device": profile.name, "source": profile.source}
        fp = transport.fingerprint()
        extra: list[str] = []
        if not profile.is_local:
            from harness.transport.ssh import SSHTransport

            assert isinstance(transport, SSHTransport)
            report["workdir"] = transport.workdir
            report["preflight"] = transport.preflight()
            holder = transport.device_lock_holder()
            if holder:
                extra.append(f"busy: campaign run {holder.get('run_id')} (pid {holder.get('pid')}) is measuring now")
        report["fingerprint"] = fp
        # The agent computes the timing warnings (governor, throttling, temperature, load, memory) from
        # what it reads on the board; the transport adds what only the coordinator knows.
        report["warnings"] = list(fp.get("warnings") or []) + extra
        return report
    finally:
        transport.close()


def _print_report(report: dict[str, Any]) -> None:
    fp = report["fingerprint"]
    print(f"{report['device']}  ({report['source']})")
    if "workdir" in report:
        pre = report["preflight"]
        versions = ", ".join(f"{k} {v}" for k, v in sorted(pre.get("versions", {}).items()))
        print(f"  {'workdir':<16} {report['workdir']}")
        print(f"  {'interpreter':<16} {pre.get('executable')} (Python {pre.get('python')}; {versions})")
    keys = [k for k in _FINGERPRINT_ORDER if k in fp] + sorted(
        k for k in fp if k not in _FINGERPRINT_ORDER and k not in ("type", "warnings"))
    for key in keys:
        if key == "runtimes" and isinstance(fp[key], dict):  # one line each, with the install line if missing
            for line in runtime_lines(fp[key]):
                print(f"  {'runtime':<16} {line}")
        elif fp[key] not in (None, "", [], {}):
            print(f"  {key:<16} {_fmt(fp[key])}")
    if report["warnings"]:
        for warning in report["warnings"]:
            print(f"  warning: {warning}")
    else:
        print("  no timing warnings")


def cmd_check(args: argparse.Namespace) -> int:
    profiles = resolve_devices(args.devices)
    failed = 0
    reports = []
    for profile in profiles:
        try:
            report = check_device(profile)
        except TransportError as exc:
            print(f"hwlat: {profile.name}: unreachable: {str(exc).splitlines()[0]}", file=sys.stderr)
            failed += 1
            continue
        except ProtocolError as exc:
            print(f"hwlat: {profile.name}: protocol error: {str(exc).splitlines()[0]}", file=sys.stderr)
            failed += 1
            continue
        reports.append(report)
        if not args.json:
            _print_report(report)
    if args.json:
        emit_json(reports)
    return EXIT_FAILED if failed else EXIT_OK


def cmd_trust(args: argparse.Namespace) -> int:
    from harness.transport.ssh import default_known_hosts, host_key_name, key_fingerprint, trust_host_key

    profiles = resolve_devices(args.devices)
    for profile in profiles:
        if profile.is_local:
            raise UsageError(f"{profile.name} is the local machine: there is no host key to trust")
    failed = 0
    for profile in profiles:
        try:
            key, action = trust_host_key(profile, replace=args.replace)
        except TransportError as exc:
            print(f"hwlat: {profile.name}: unreachable: {str(exc).splitlines()[0]}", file=sys.stderr)
            failed += 1
            continue
        print(f"{profile.name}: {action} host key {key_fingerprint(key)} for {host_key_name(profile)} "
              f"in {default_known_hosts(profile)}")
    return EXIT_FAILED if failed else EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``devices list|check|trust`` to the hwlat command line (called by hwlat.cli.main)."""
    d = subparsers.add_parser("devices", help="list device profiles, check a board, trust its SSH host key",
                              description="Device profiles live in device_profiles/*.toml (and $HWLAT_PROFILES).")
    dsub = d.add_subparsers(dest="devices_command", metavar="COMMAND", parser_class=type(d))
    dsub.required = True

    ls = dsub.add_parser("list", help="the known device profiles (no connection)")
    add_json_flag(ls)
    ls.set_defaults(func=cmd_list)

    check = dsub.add_parser("check", help="connect and print the fingerprint and timing warnings (measures nothing)")
    check.add_argument("devices", nargs="+", metavar="DEV", help="profile name, .toml path or tag:TAG")
    add_json_flag(check)
    check.set_defaults(func=cmd_check)

    trust = dsub.add_parser("trust", help="record the device's SSH host key in its known_hosts file")
    trust.add_argument("devices", nargs="+", metavar="DEV", help="profile name, .toml path or tag:TAG")
    trust.add_argument("--replace", action="store_true",
                       help="replace a host key that changed (only after verifying the board was re-installed)")
    trust.set_defaults(func=cmd_trust)
