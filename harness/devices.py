"""Device profiles: one TOML file per board (``device_profiles/*.toml``), read with tomllib.

A profile says how to reach the device (``host`` empty or ``"local"`` means this machine, no SSH),
which runtime to use and how, and optional timing-protocol overrides. Validation errors name the
file and the key, so a lab engineer can fix a profile without reading code. Passwords are refused
on purpose: key authentication (identity file or the user's ssh-agent) only.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.records import RuntimeConfig, TimingConfig
from harness.errors import ProfileError

#: Where the shipped example profiles live (the repo's top-level folder; also installed as
#: package data so ``--device local`` works from a wheel).
PROFILE_DIRS = (
    Path(__file__).resolve().parent.parent / "device_profiles",
    Path(__file__).resolve().parent / "profiles",
)

#: runtime -> the model format it runs (OpenVINO reads the ONNX export).
RUNTIME_FORMATS = {"onnxruntime": "onnx", "litert": "tflite", "openvino": "onnx", "executorch": "pte", "torch": "pt2"}
RUNTIMES = tuple(RUNTIME_FORMATS)
#: Profile keys that configure one runtime only (a key given for another runtime is a mistake).
_RUNTIME_KEYS = {
    "device": ("openvino", "torch"), "streams": ("openvino",), "performance_hint": ("openvino",),
    "precision_hint": ("openvino",), "compile": ("torch",),
}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_FORBIDDEN = ("password", "passphrase")
_TOP_KEYS = {
    "name", "host", "port", "user", "identity_file", "known_hosts", "python", "workdir", "runtime",
    "providers", "provider_options", "threads", "inter_op_threads", "graph_optimization_level",
    "cpu_affinity", "env", "tags", "timing", "timeouts", "description", "format", "custom_op_libraries",
    *_RUNTIME_KEYS,
}
_TIMEOUT_KEYS = {"connect_s", "model_s", "command_s"}


@dataclass
class DeviceProfile:
    """A validated device profile. ``is_local`` devices run the agent as a local subprocess."""

    name: str
    source: str
    host: str = "local"
    port: int = 22
    user: str = ""
    identity_file: str = ""
    known_hosts: str = ""
    python: str = "python3"
    workdir: str = "~/.cache/hwlat/agent"
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    timing: TimingConfig = field(default_factory=TimingConfig)
    cpu_affinity: list[int] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    format: str = "onnx"
    connect_timeout_s: float = 15.0
    model_timeout_s: float = 300.0
    command_timeout_s: float = 120.0
    description: str = ""

    @property
    def is_local(self) -> bool:
        return self.host in ("", "local")

    def config_id(self) -> str:
        """Short stable id of everything that changes a timing on the same device.

        Two rows with the same device and config_id are repeat measurements of one configuration;
        anything else (threads, providers, format, optimisation level) is a different one.
        """
        import hashlib
        import json

        rt = self.runtime
        key = {
            "runtime": rt.runtime,
            "providers": rt.providers,
            "provider_options": rt.provider_options,
            "threads": rt.threads,
            "inter_op_threads": rt.inter_op_threads,
            "graph_optimization_level": rt.graph_optimization_level,
            "execution_mode": rt.execution_mode,
            "format": self.format,
            "cpu_affinity": self.cpu_affinity,
            "custom_op_libraries": rt.custom_op_libraries,
        }
        if rt.runtime in ("openvino", "torch"):  # only these read them; other runtimes' ids stay as they were
            key.update(device=rt.device, streams=rt.streams, performance_hint=rt.performance_hint,
                       precision_hint=rt.precision_hint, compile=rt.compile)
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def _fail(source: str, key: str, why: str) -> ProfileError:
    return ProfileError(f"{source}: key '{key}': {why}")


def _expect(source: str, data: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    if key not in data:
        return default
    value = data[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) and kind is not bool:
        raise _fail(source, key, f"expected {getattr(kind, '__name__', kind)}, got a boolean")
    if not isinstance(value, kind):
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise _fail(source, key, f"expected {name}, got {type(value).__name__} {value!r}")
    return value


def _expect_list(source: str, data: dict[str, Any], key: str, kind: type, default: list, what: str) -> list:
    """A list whose every item is ``kind`` (profiles are hand-written: say which key is wrong and how)."""
    value = _expect(source, data, key, list, default)
    if not all(isinstance(v, kind) and not isinstance(v, bool) for v in value):
        raise _fail(source, key, f"must be a list of {what}")
    return value


def parse_profile(data: dict[str, Any], source: str) -> DeviceProfile:
    """Validate a profile dict (already parsed TOML) and build a ``DeviceProfile``."""
    for key in data:
        if any(word in key.lower() for word in _FORBIDDEN):
            raise _fail(source, key, "passwords are not allowed in profiles; use identity_file or ssh-agent")
        if key not in _TOP_KEYS:
            raise _fail(source, key, f"unknown key (known: {', '.join(sorted(_TOP_KEYS))})")
    name = _expect(source, data, "name", str, "")
    if not name:
        raise _fail(source, "name", "missing; every profile needs a name")
    if not _NAME_RE.match(name):
        raise _fail(source, "name", f"{name!r} must be 1-64 letters, digits, '.', '_' or '-'")
    host = _expect(source, data, "host", str, "local")
    port = _expect(source, data, "port", int, 22)
    if not 0 < port < 65536:
        raise _fail(source, "port", f"{port} is not a TCP port")
    runtime_name = _expect(source, data, "runtime", str, "onnxruntime")
    if runtime_name not in RUNTIMES:
        raise _fail(source, "runtime", f"{runtime_name!r} is not one of {', '.join(RUNTIMES)}")
    fmt = _expect(source, data, "format", str, RUNTIME_FORMATS[runtime_name])
    if fmt != RUNTIME_FORMATS[runtime_name]:
        raise _fail(source, "format", f"{fmt!r} cannot run on runtime {runtime_name!r} (it runs "
                    f"{RUNTIME_FORMATS[runtime_name]!r})")
    providers = _expect_list(source, data, "providers", str, ["CPUExecutionProvider"], "execution provider names")
    provider_options = _expect_list(source, data, "provider_options", dict, [], "tables, one per provider")
    threads = _expect(source, data, "threads", int, 1)
    if threads < 0:
        raise _fail(source, "threads", "must be >= 0 (0 = runtime default)")
    level = _expect(source, data, "graph_optimization_level", str, "all")
    if level not in ("disable", "basic", "extended", "all"):
        raise _fail(source, "graph_optimization_level", "must be disable, basic, extended or all")
    custom_ops = _expect_list(source, data, "custom_op_libraries", str, [], "shared-library paths")
    runtime = RuntimeConfig(
        runtime=runtime_name,
        custom_op_libraries=custom_ops,
        providers=providers,
        provider_options=provider_options,
        threads=threads,
        inter_op_threads=_expect(source, data, "inter_op_threads", int, 1),
        graph_optimization_level=level,
        **_runtime_options(source, data, runtime_name),
    )
    timing_data = _expect(source, data, "timing", dict, {})
    known_timing = set(TimingConfig.__dataclass_fields__)
    for key in timing_data:
        if key not in known_timing:
            raise _fail(source, f"timing.{key}", f"unknown timing key (known: {', '.join(sorted(known_timing))})")
    defaults = TimingConfig()
    timing_values = {}
    for key, _value in timing_data.items():
        kind = type(getattr(defaults, key))
        timing_values[key] = _expect(source, timing_data, key, kind, getattr(defaults, key))
    timeouts = _expect(source, data, "timeouts", dict, {})
    for key in timeouts:
        if key not in _TIMEOUT_KEYS:
            raise _fail(source, f"timeouts.{key}", f"unknown (known: {', '.join(sorted(_TIMEOUT_KEYS))})")
    affinity = _expect_list(source, data, "cpu_affinity", int, [], "CPU numbers")
    if any(c < 0 for c in affinity):
        raise _fail(source, "cpu_affinity", "must be a list of CPU numbers")
    env = _expect(source, data, "env", dict, {})
    if not all(isinstance(v, str) for v in env.values()):
        raise _fail(source, "env", "values must be strings")
    tags = _expect_list(source, data, "tags", str, [], "strings")
    profile = DeviceProfile(
        name=name,
        source=source,
        host=host,
        port=port,
        user=_expect(source, data, "user", str, ""),
        identity_file=os.path.expanduser(_expect(source, data, "identity_file", str, "")),
        known_hosts=os.path.expanduser(_expect(source, data, "known_hosts", str, "")),
        python=_expect(source, data, "python", str, "python3"),
        workdir=_expect(source, data, "workdir", str, "~/.cache/hwlat/agent"),
        runtime=runtime,
        timing=TimingConfig(**timing_values),
        cpu_affinity=affinity,
        env=env,
        tags=tags,
        format=fmt,
        connect_timeout_s=float(_expect(source, timeouts, "connect_s", float, 15.0)),
        model_timeout_s=float(_expect(source, timeouts, "model_s", float, 300.0)),
        command_timeout_s=float(_expect(source, timeouts, "command_s", float, 120.0)),
        description=_expect(source, data, "description", str, ""),
    )
    if not profile.is_local and not profile.user:
        raise _fail(source, "user", "required for a remote (SSH) device")
    return profile


def _runtime_options(source: str, data: dict[str, Any], runtime_name: str) -> dict[str, Any]:
    """The OpenVINO/torch keys (``_RUNTIME_KEYS``), checked against the runtime and their allowed values.

    The allowed values come from the agent's backends, so the profile and the agent never disagree.
    """
    from agents.backends.openvino import DEVICES, PERFORMANCE_HINTS, PRECISION_HINTS, device_family

    for key, runtimes in _RUNTIME_KEYS.items():
        if key in data and runtime_name not in runtimes:
            raise _fail(source, key, f"applies to runtime {' or '.join(runtimes)} only, not {runtime_name!r}")
    defaults = RuntimeConfig()
    device = _expect(source, data, "device", str, "")
    if runtime_name == "openvino" and device_family(device) not in DEVICES:
        raise _fail(source, "device", f"{device!r} is not one of {', '.join(DEVICES)} (or e.g. GPU.1, AUTO:GPU,CPU)")
    if runtime_name == "torch" and device.split(":")[0] not in ("", "cpu", "cuda"):
        raise _fail(source, "device", f"{device!r} is not cpu, cuda or cuda:N")
    streams = _expect(source, data, "streams", int, defaults.streams)
    if streams < 0:
        raise _fail(source, "streams", "must be >= 0 (0 = OpenVINO's choice for the performance hint)")
    hint = _expect(source, data, "performance_hint", str, defaults.performance_hint)
    if hint not in PERFORMANCE_HINTS:
        raise _fail(source, "performance_hint", f"{hint!r} is not one of {', '.join(PERFORMANCE_HINTS[1:])} or \"\"")
    precision = _expect(source, data, "precision_hint", str, defaults.precision_hint)
    if precision not in PRECISION_HINTS:
        raise _fail(source, "precision_hint", f"{precision!r} is not one of {', '.join(PRECISION_HINTS[1:])} or \"\"")
    return {"device": device, "streams": streams, "performance_hint": hint, "precision_hint": precision,
            "compile": _expect(source, data, "compile", bool, False)}


def load_profile_file(path: Path) -> DeviceProfile:
    """Read and validate one profile file; any problem is a one-line ``ProfileError``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read profile ({exc.strerror or exc})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: not valid TOML ({exc})") from None
    return parse_profile(data, str(path))


def profile_dirs() -> list[Path]:
    """Folders searched for profiles by name: $HWLAT_PROFILES (colon-separated) first."""
    extra = [Path(p) for p in os.environ.get("HWLAT_PROFILES", "").split(os.pathsep) if p]
    return [*extra, *PROFILE_DIRS]


def available_profiles() -> dict[str, Path]:
    """Profile name -> file, first folder wins (so a user's folder overrides the shipped ones)."""
    found: dict[str, Path] = {}
    for folder in profile_dirs():
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.toml")):
            found.setdefault(path.stem, path)
    return found


def resolve_device(spec: str) -> DeviceProfile:
    """``local``, a profile name, or a path to a TOML file -> validated profile."""
    path = Path(spec).expanduser()
    if spec.endswith(".toml") or os.sep in spec:
        if not path.is_file():
            raise ProfileError(f"{spec}: no such profile file")
        return load_profile_file(path)
    profiles = available_profiles()
    if spec in profiles:
        return load_profile_file(profiles[spec])
    if spec == "local":
        return parse_profile({"name": "local", "host": "local"}, "<embedded local>")
    known = ", ".join(sorted(profiles)) or "none"
    raise ProfileError(f"unknown device {spec!r} (known profiles: {known}; or give a path to a .toml)")


def resolve_devices(specs: list[str]) -> list[DeviceProfile]:
    """Expand ``tag:NAME`` selectors and resolve each device; duplicates are dropped."""
    result: dict[str, DeviceProfile] = {}
    for spec in specs:
        if spec.startswith("tag:"):
            tag = spec[4:]
            matched = [load_profile_file(p) for p in available_profiles().values()]
            matched = [p for p in matched if tag in p.tags]
            if not matched:
                raise ProfileError(f"no device profile has tag {tag!r}")
            for profile in matched:
                result.setdefault(profile.name, profile)
        else:
            profile = resolve_device(spec)
            result.setdefault(profile.name, profile)
    return list(result.values())
