"""Device profiles: one TOML file per board (``device_profiles/*.toml``), read with tomllib.

A profile says how to reach the device (``host`` empty or ``"local"`` means this machine, no SSH),
which runtime to use and how, and optional timing-protocol overrides. Validation errors name the
file and the key, so a lab engineer can fix a profile without reading code. Passwords are refused
on purpose: key authentication (identity file or the user's ssh-agent) only.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.errors import ProfileError
from agents.records import RuntimeConfig, TimingConfig
from agents.runtimes import RUNTIMES
from harness.shipped import shipped_dir

#: runtime -> the model format it runs (OpenVINO reads the ONNX export).
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
_ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DAY_S = 86400.0

#: Every number a profile may hold: (type, smallest, largest, smallest excluded). Floats must also be finite.
#: The ranges are what the agent can act on: a negative run count, a zero timeout or a NaN CI target would
#: reach the device's timed loop or its watchdog and fail there, after the campaign has started.
_NUMBERS: dict[str, tuple[type, float, float, bool]] = {
    "port": (int, 1, 65535, False),
    "threads": (int, 0, 4096, False),
    "inter_op_threads": (int, 0, 4096, False),
    "cpu_affinity": (int, 0, 65535, False),
    "timing.warmup_min_runs": (int, 0, 10**7, False),
    "timing.warmup_min_s": (float, 0.0, _DAY_S, False),
    "timing.warmup_max_runs": (int, 0, 10**7, False),
    "timing.min_runs": (int, 1, 10**7, False),
    "timing.min_time_s": (float, 0.0, _DAY_S, False),
    "timing.max_runs": (int, 1, 10**7, False),
    "timing.max_time_s": (float, 0.0, _DAY_S, True),
    "timing.ci_rel_target": (float, 0.0, 1.0, True),
    "timing.unstable_cv": (float, 0.0, 100.0, True),
    "timing.seed": (int, 0, 2**32 - 1, False),
    "timing.cooldown_s": (float, 0.0, _DAY_S, False),
    "timing.cooldown_below_c": (float, 0.0, 200.0, False),
    "timing.cooldown_max_s": (float, 0.0, _DAY_S, False),
    "timing.fresh_worker": (bool, 0, 1, False),
    "timing.rounds": (int, 1, 100, False),
    "timing.remeasure_max": (int, 0, 100, False),
    "timing.remeasure_far_pct": (float, 0.0, 10**6, True),
    "timing.remeasure_busy_pct": (float, 0.0, 100.0, True),
    "timing.remeasure_drift_pct": (float, 0.0, 10**6, True),
    "timeouts.connect_s": (float, 0.0, _DAY_S, True),
    "timeouts.model_s": (float, 0.0, 7 * _DAY_S, True),
    "timeouts.command_s": (float, 0.0, _DAY_S, True),
}


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


def _expect(source: str, data: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any,
            path: str | None = None) -> Any:
    """``data[key]`` of type ``kind`` (``default`` when absent); errors name ``path`` (e.g. ``timing.seed``)."""
    if key not in data:
        return default
    value = data[key]
    where = path or key
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) and kind is not bool:
        raise _fail(source, where, f"expected {getattr(kind, '__name__', kind)}, got a boolean")
    if not isinstance(value, kind):
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise _fail(source, where, f"expected {name}, got {type(value).__name__} {value!r}")
    return value


def _check_number(source: str, key: str, value: float) -> None:
    """``value`` (already of the right type) lies in ``_NUMBERS[key]``; NaN and infinities never do."""
    _kind, lo, hi, lo_open = _NUMBERS[key]
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(source, key, f"must be a finite number, got {value}")
    if value < lo or value > hi or (lo_open and value == lo):
        raise _fail(source, key, f"must be {'>' if lo_open else '>='} {lo:g} and <= {hi:g}, got {value!r}")


def _number(source: str, data: dict[str, Any], key: str, default: Any, rule: str | None = None) -> Any:
    """A number from the profile, type and range checked against ``_NUMBERS[rule or key]``."""
    rule = rule or key
    value = _expect(source, data, key, _NUMBERS[rule][0], default, rule)
    if key in data:
        _check_number(source, rule, value)
    return value


def _check_text(source: str, data: dict[str, Any], prefix: str = "") -> None:
    """No NUL anywhere (keys or values): it would cut a path, an argv or an environment entry short."""
    for key, value in data.items():
        name = f"{prefix}{key}"
        items = value if isinstance(value, list) else [value]
        if "\0" in key or any(isinstance(v, str) and "\0" in v for v in items):
            raise _fail(source, name, "contains a NUL character")
        for item in items:
            if isinstance(item, dict):
                _check_text(source, item, f"{name}.")


def _expect_list(source: str, data: dict[str, Any], key: str, kind: type, default: list, what: str) -> list:
    """A list whose every item is ``kind`` (profiles are hand-written: say which key is wrong and how)."""
    value = _expect(source, data, key, list, default)
    if not all(isinstance(v, kind) and not isinstance(v, bool) for v in value):
        raise _fail(source, key, f"must be a list of {what}")
    return value


def parse_profile(data: dict[str, Any], source: str) -> DeviceProfile:
    """Validate a profile dict (already parsed TOML) and build a ``DeviceProfile``."""
    _check_text(source, data)
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
    port = _number(source, data, "port", 22)
    runtime_name = _expect(source, data, "runtime", str, "onnxruntime")
    if runtime_name not in RUNTIMES:
        raise _fail(source, "runtime", f"{runtime_name!r} is not one of {', '.join(RUNTIMES)}")
    fmt = _expect(source, data, "format", str, RUNTIMES[runtime_name].format)
    if fmt != RUNTIMES[runtime_name].format:
        raise _fail(source, "format", f"{fmt!r} cannot run on runtime {runtime_name!r} (it runs "
                    f"{RUNTIMES[runtime_name].format!r})")
    providers = _expect_list(source, data, "providers", str, ["CPUExecutionProvider"], "execution provider names")
    provider_options = _expect_list(source, data, "provider_options", dict, [], "tables, one per provider")
    threads = _number(source, data, "threads", 1)
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
        inter_op_threads=_number(source, data, "inter_op_threads", 1),
        graph_optimization_level=level,
        **_runtime_options(source, data, runtime_name),
    )
    timing_data = _expect(source, data, "timing", dict, {})
    known_timing = set(TimingConfig.__dataclass_fields__)
    for key in timing_data:
        if key not in known_timing:
            raise _fail(source, f"timing.{key}", f"unknown timing key (known: {', '.join(sorted(known_timing))})")
    timing_values = {key: _number(source, timing_data, key, None, f"timing.{key}") for key in timing_data}
    timing = TimingConfig(**timing_values)
    for low, high in (("min_runs", "max_runs"), ("warmup_min_runs", "warmup_max_runs")):
        if getattr(timing, high) < getattr(timing, low):
            raise _fail(source, f"timing.{high}", f"{getattr(timing, high)} is below timing.{low} "
                                                  f"({getattr(timing, low)})")
    timeouts = _expect(source, data, "timeouts", dict, {})
    for key in timeouts:
        if key not in _TIMEOUT_KEYS:
            raise _fail(source, f"timeouts.{key}", f"unknown (known: {', '.join(sorted(_TIMEOUT_KEYS))})")
    affinity = _expect_list(source, data, "cpu_affinity", int, [], "CPU numbers")
    for cpu in affinity:
        _check_number(source, "cpu_affinity", cpu)
    env = _expect(source, data, "env", dict, {})
    if not all(isinstance(v, str) for v in env.values()):
        raise _fail(source, "env", "values must be strings")
    for key in env:
        if not _ENV_KEY_RE.match(key):
            raise _fail(source, f"env.{key}", "not an environment variable name (letters, digits and '_', "
                                              "not starting with a digit)")
    workdir = _expect(source, data, "workdir", str, "~/.cache/hwlat/agent")
    python = _expect(source, data, "python", str, "python3")
    for key, value in (("workdir", workdir), ("python", python)):
        if not value.strip():
            raise _fail(source, key, "is empty")
    tags = _expect_list(source, data, "tags", str, [], "strings")
    profile = DeviceProfile(
        name=name,
        source=source,
        host=host,
        port=port,
        user=_expect(source, data, "user", str, ""),
        identity_file=os.path.expanduser(_expect(source, data, "identity_file", str, "")),
        known_hosts=os.path.expanduser(_expect(source, data, "known_hosts", str, "")),
        python=python,
        workdir=workdir,
        runtime=runtime,
        timing=timing,
        cpu_affinity=affinity,
        env=env,
        tags=tags,
        format=fmt,
        connect_timeout_s=float(_number(source, timeouts, "connect_s", 15.0, "timeouts.connect_s")),
        model_timeout_s=float(_number(source, timeouts, "model_s", 300.0, "timeouts.model_s")),
        command_timeout_s=float(_number(source, timeouts, "command_s", 120.0, "timeouts.command_s")),
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
    except UnicodeDecodeError as exc:
        raise ProfileError(f"{path}: not UTF-8 text (byte {exc.start}); profiles are TOML files") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: not valid TOML ({exc})") from None
    return parse_profile(data, str(path))


def profile_dirs() -> list[Path]:
    """Folders searched for profiles by name: $HWLAT_PROFILES (colon-separated) first."""
    extra = [Path(p) for p in os.environ.get("HWLAT_PROFILES", "").split(os.pathsep) if p]
    shipped = shipped_dir("device_profiles")
    return [*extra, *([shipped] if shipped else [])]


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
    """Expand ``tag:NAME`` selectors and resolve each device; the same profile twice counts once.

    Two different profiles with one name are refused: rows are stored under the device name, so the two
    devices' measurements would mix (and resume would skip one device's work as done by the other).
    """
    result: dict[str, DeviceProfile] = {}

    def add(profile: DeviceProfile) -> None:
        other = result.setdefault(profile.name, profile)
        if other.source != profile.source and \
                Path(other.source).resolve() != Path(profile.source).resolve():
            raise _fail(profile.source, "name", f"{profile.name!r} is also the name of {other.source}; device "
                                                "names must be unique in one campaign")

    for spec in specs:
        if spec.startswith("tag:"):
            tag = spec[4:]
            matched = [load_profile_file(p) for p in available_profiles().values()]
            matched = [p for p in matched if tag in p.tags]
            if not matched:
                raise ProfileError(f"no device profile has tag {tag!r}")
            for profile in matched:
                add(profile)
        else:
            add(resolve_device(spec))
    return list(result.values())
