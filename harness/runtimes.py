"""What the coordinator knows about the runtimes beyond onnxruntime and LiteRT: OpenVINO, ExecuTorch, torch.

``preflight_new_runtimes`` refuses a measurement whose local device lacks its runtime (or whose
format this machine cannot export) before anything is exported or shipped; ``runtime_lines``
turns a fingerprint's ``runtimes`` into what ``hwlat devices check`` prints, with the ``pip
install`` line for every runtime the board lacks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.devices import DeviceProfile
from harness.errors import UsageError

#: runtime -> what to install on the board (the agent needs only the runtime, never hwlat).
INSTALL = {
    "onnxruntime": "pip install onnxruntime (onnxruntime-gpu on CUDA boards)",
    "litert": "pip install ai-edge-litert",
    "openvino": "pip install openvino",
    "executorch": "pip install executorch",
    "torch": "pip install torch (the CPU build: --index-url https://download.pytorch.org/whl/cpu)",
}
#: runtime -> the module whose presence means it is installed (checked without importing it).
_MODULES = {"openvino": "openvino", "executorch": "executorch", "torch": "torch"}


def preflight_new_runtimes(profiles: list[DeviceProfile], fmt: str | None, have: Callable[[str], bool]) -> None:
    """Raise ``UsageError`` (one line) when a device cannot run what it asks for; ``have(module)`` says
    whether a module is importable here.

    The exporter runs here for every device, so a ``pte`` format needs executorch on this machine
    whatever the board. The runtime itself is only checked for local devices: an SSH board is checked
    by the launcher's preflight on the board, also before any model is sent.
    """
    from harness.campaign import configure_device

    for profile in profiles:
        configured = configure_device(profile, fmt, None)
        runtime = configured.runtime
        if configured.format == "pte" and not have("executorch"):
            raise UsageError("ExecuTorch export (format pte) needs executorch: pip install 'hwlat[executorch]'")
        if not profile.is_local or runtime.runtime not in _MODULES:
            continue
        if not have(_MODULES[runtime.runtime]):
            raise UsageError(f"device {profile.name} ({profile.source}) asks for runtime {runtime.runtime}, which "
                             f"this machine lacks: {INSTALL[runtime.runtime]}")
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
            lines.append(f"{name}: not installed; {INSTALL.get(name, 'see docs/add-a-board.md')}")
            continue
        extras = {k: v for k, v in sorted(info.items())
                  if k not in ("available", "version") and v not in (None, [], {})}
        detail = "; ".join(f"{k} {v}" for k, v in extras.items())
        lines.append(f"{name} {info.get('version', '?')}" + (f" ({detail})" if detail else ""))
    return lines
