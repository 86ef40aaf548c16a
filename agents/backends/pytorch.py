"""PyTorch backend: a ``torch.export`` program (``.pt2``) run eagerly or through ``torch.compile``.

Named ``pytorch`` so the module never shadows the ``torch`` package. Compilation is lazy in torch,
so ``load`` runs the compiled module once: the compile time lands in ``load_ms``, like a session's
creation, and never inside the timed loop.
"""

from __future__ import annotations

import shutil
from typing import Any

import numpy as np

from agents.backends import Backend, BackendConfigError, MissingRuntimeError
from agents.records import RuntimeConfig


def _device_type(device: str) -> str:
    return (device or "cpu").split(":")[0]


class TorchBackend(Backend):
    """``torch.export.load(path).module()`` on ``device``, optionally ``torch.compile``d (inductor).

    ``threads`` is ``torch.set_num_threads`` (process-wide; the worker serves one configuration).
    ``run`` wraps the numpy inputs as tensors (no copy) and, on CUDA, copies them to the device and
    the output back, so the latency includes both transfers and the synchronisation that the copy
    back implies, as onnxruntime's CUDA provider does.
    """

    name = "torch"

    def __init__(self, config: RuntimeConfig) -> None:
        super().__init__(config)
        self._module: Any = None
        self._specs: dict[str, tuple[list[int], str]] = {}
        self._provider = ""

    @classmethod
    def validate(cls, config: RuntimeConfig) -> None:
        super().validate(config)
        if _device_type(config.device) not in ("cpu", "cuda"):
            raise BackendConfigError(f"device {config.device!r} is not cpu or cuda (or cuda:N)")

    @staticmethod
    def import_runtime() -> Any:
        try:
            import torch
        except ImportError as exc:
            raise MissingRuntimeError(
                f"PyTorch is not installed ({exc}); install it with: pip install torch "
                "(the CPU build: pip install torch --index-url https://download.pytorch.org/whl/cpu)"
            ) from exc
        return torch

    @staticmethod
    def describe() -> dict[str, Any]:
        try:
            torch = TorchBackend.import_runtime()
        except MissingRuntimeError as exc:
            return {"available": False, "error": str(exc)}
        cuda = torch.cuda.is_available()
        return {
            "available": True,
            "version": str(torch.__version__),
            "cuda": torch.version.cuda,
            "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
            "default_threads": torch.get_num_threads(),
            # inductor on the CPU writes and builds C++: without a compiler only eager mode works.
            "cxx_compiler": shutil.which("c++") or shutil.which("g++") or None,
        }

    def load(self, path: str) -> None:
        torch = self.import_runtime()
        cfg = self.config
        device = cfg.device or "cpu"
        if _device_type(device) == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                f"device {device!r} asked for, but torch {torch.__version__} sees no CUDA device "
                f"(torch.version.cuda = {torch.version.cuda}; a CPU-only build, or no driver/GPU)"
            )
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        program = torch.export.load(path)
        user_inputs = set(program.graph_signature.user_inputs)
        for node in program.graph.nodes:
            if node.op == "placeholder" and node.name in user_inputs:
                value = node.meta["val"]
                dtype = torch.empty((), dtype=value.dtype).numpy().dtype.name
                self._specs[node.name] = ([int(d) for d in value.shape], dtype)
        module = program.module().to(device)
        mode = "eager"
        if cfg.compile:
            module = torch.compile(module, backend="inductor")
            mode = "inductor"
        self._module = module
        if cfg.compile:
            self.run(self.make_inputs(np.random.default_rng(0)))  # compiles now, inside load_ms
        self._provider = f"{device}:{mode}"

    def input_specs(self) -> dict[str, tuple[list[int], str]]:
        return dict(self._specs)

    def run(self, inputs: dict[str, np.ndarray]) -> None:
        torch = self.import_runtime()
        device = self.config.device or "cpu"
        with torch.inference_mode():
            tensors = [torch.from_numpy(inputs[name]).to(device) for name in self._specs]
            out = self._module(*tensors)
            if _device_type(device) == "cuda":
                for tensor in out if isinstance(out, tuple | list) else [out]:
                    tensor.cpu()

    def version(self) -> str:
        return str(self.import_runtime().__version__)

    def provider(self) -> str:
        return self._provider

    def threads(self) -> int:
        return int(self.import_runtime().get_num_threads())
