"""The coordinator's side of the runtime table (``agents/runtimes.py``): refuse early, say what to install.

``preflight_runtimes`` refuses a measurement whose local device lacks its runtime, or whose format this machine
cannot export, before anything is exported or shipped (an SSH board is checked by the launcher's preflight on
the board, also before any model is sent); ``runtime_lines`` turns a fingerprint's ``runtimes`` into what
``hwlat devices check`` prints, with the ``pip install`` line for every runtime the board lacks.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from agents.errors import UsageError
from agents.runtimes import RUNTIMES, install_hint
from harness.devices import DeviceProfile

#: Model format -> (module the exporter needs on this machine, the hwlat extra that installs it).
EXPORTERS = {"tflite": ("litert_torch", "tflite"), "pte": ("executorch", "executorch")}


def _have(module: str) -> bool:
    """Whether ``module`` is importable here, without importing it (a parent that fails to import: no)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def preflight_runtimes(profiles: list[DeviceProfile], fmt: str | None) -> None:
    """Raise ``UsageError`` (one line, with the install command) when a device cannot run what it asks for."""
    from harness.plan import configure_device

    for profile in profiles:
        configured = configure_device(profile, fmt, None)
        runtime = configured.runtime
        exporter = EXPORTERS.get(configured.format)
        if exporter is not None and not _have(exporter[0]):
            raise UsageError(f"{configured.format} export needs {exporter[0]}: pip install 'hwlat[{exporter[1]}]'")
        if not profile.is_local:
            continue
        if not any(_have(m) for m in RUNTIMES[runtime.runtime].modules):
            raise UsageError(f"device {profile.name} ({profile.source}) asks for runtime {runtime.runtime}, which "
                             f"this machine lacks: {install_hint(runtime.runtime)}")
        if runtime.runtime == "torch" and runtime.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise UsageError(f"device {profile.name} ({profile.source}) asks for torch on {runtime.device}, "
                                 f"but torch {torch.__version__} here sees no CUDA device "
                                 f"(torch.version.cuda = {torch.version.cuda})")


def runtime_lines(runtimes: dict[str, Any]) -> list[str]:
    """One line per runtime of a fingerprint: version and what it offers, or the install command."""
    lines = []
    for name in sorted(runtimes):
        info = runtimes[name] or {}
        if not info.get("available"):
            lines.append(f"{name}: not installed; {install_hint(name)}")
            continue
        extras = {k: v for k, v in sorted(info.items())
                  if k not in ("available", "version") and v not in (None, [], {})}
        detail = "; ".join(f"{k} {v}" for k, v in extras.items())
        lines.append(f"{name} {info.get('version', '?')}" + (f" ({detail})" if detail else ""))
    return lines
