"""ExecuTorch backend: a ``.pte`` program (lowered to XNNPACK by the coordinator) run through
ExecuTorch's Python runtime (``executorch.runtime``).

ExecuTorch never falls back silently: a program whose delegate is not compiled into the runtime
fails to load. What it does do is run the operators XNNPACK did not take with its portable CPU
kernels; ``provider`` says which delegates the program calls and whether portable operators remain.
"""

from __future__ import annotations

import struct
from importlib import metadata
from typing import Any

import numpy as np

from agents.backends import Backend, MissingRuntimeError
from agents.records import RuntimeConfig

#: ExecuTorch ScalarType codes (``TensorInfo.dtype()``, c10's numbering) -> numpy dtype names
#: (types numpy cannot hold are left out).
_DTYPES = {
    0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16", 6: "float32", 7: "float64",
    11: "bool",
}


def _flatbuffer_string(text: str) -> bytes:
    """How a flatbuffer stores a string: little-endian uint32 length, the bytes, a NUL."""
    data = text.encode()
    return struct.pack("<I", len(data)) + data + b"\x00"


def program_kernels(path: str, backends: list[str]) -> list[str]:
    """Which of ``backends`` the program delegates to, plus ``portable`` if it keeps ATen operators.

    Read from the ``.pte`` bytes (delegate ids and operator names are flatbuffer strings), because
    the Python runtime does not expose a method's delegates and the agent must not import the
    exporter (``executorch.exir``) to parse the program.
    """
    with open(path, "rb") as f:
        data = f.read()
    used = [name for name in backends if _flatbuffer_string(name) in data]
    if b"aten::" in data:
        used.append("portable")
    return used


class ExecuTorchBackend(Backend):
    """``Runtime.get().load_program(path).load_method("forward")``, timed with ``Method.execute``.

    ``threads`` sizes ExecuTorch's process-wide thread pool, which XNNPACK uses (0 = ExecuTorch's
    default, one thread per performance core). ``run`` wraps the numpy inputs as tensors without a
    copy; the method copies them into its planned memory, as onnxruntime's ``session.run`` copies.
    """

    name = "executorch"

    def __init__(self, config: RuntimeConfig) -> None:
        super().__init__(config)
        self._method: Any = None
        self._names: list[str] = []
        self._provider = ""
        self._threads = int(config.threads)

    @staticmethod
    def import_runtime() -> Any:
        try:
            from executorch import runtime
            from executorch.extension.pybindings import portable_lib
        except ImportError as exc:
            raise MissingRuntimeError(
                f"ExecuTorch is not installed ({exc}); install it with: pip install executorch"
            ) from exc
        return runtime, portable_lib

    @staticmethod
    def describe() -> dict[str, Any]:
        try:
            runtime, portable_lib = ExecuTorchBackend.import_runtime()
        except MissingRuntimeError as exc:
            return {"available": False, "error": str(exc)}
        registry = runtime.Runtime.get().backend_registry
        return {
            "available": True,
            "version": metadata.version("executorch"),
            "delegates": [n for n in registry.registered_backend_names if registry.is_available(n)],
            "default_threads": int(portable_lib._threadpool_get_thread_count()),
        }

    def load(self, path: str) -> None:
        runtime, portable_lib = self.import_runtime()
        threads = self.config.threads
        if threads and portable_lib._threadpool_get_thread_count() != threads:
            # "unsafe" only while a method runs on the pool; the worker loads between jobs.
            portable_lib._unsafe_reset_threadpool(threads)
        rt = runtime.Runtime.get()
        program = rt.load_program(path, verification=runtime.Verification.Minimal)
        self._method = program.load_method("forward")
        meta = self._method.metadata
        self._names = ["input"] if meta.num_inputs() == 1 else [f"input{i}" for i in range(meta.num_inputs())]
        self._provider = "+".join(program_kernels(path, list(rt.backend_registry.registered_backend_names)))
        self._threads = int(portable_lib._threadpool_get_thread_count())

    def input_specs(self) -> dict[str, tuple[list[int], str]]:
        meta = self._method.metadata
        specs = {}
        for i, name in enumerate(self._names):
            info = meta.input_tensor_meta(i)
            dtype = int(info.dtype())
            if dtype not in _DTYPES:
                raise TypeError(f"input {i} has ScalarType {dtype}, which the agent cannot generate")
            specs[name] = ([int(v) for v in info.sizes()], _DTYPES[dtype])
        return specs

    def make_inputs(self, rng: np.random.Generator) -> dict[str, Any]:
        """The base class's numpy inputs as torch tensors (no copy): ``Method.execute`` takes only tensors."""
        import torch  # ExecuTorch's Python runtime depends on torch and takes torch tensors

        return {name: torch.from_numpy(value) for name, value in super().make_inputs(rng).items()}

    def run(self, inputs: dict[str, Any]) -> None:
        self._method.execute([inputs[name] for name in self._names])

    def version(self) -> str:
        self.import_runtime()  # a missing runtime is MissingRuntimeError, with the install hint
        return metadata.version("executorch")

    def provider(self) -> str:
        return self._provider

    def threads(self) -> int:
        return self._threads
