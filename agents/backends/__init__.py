"""Runtime backends: one file per runtime, picked by ``RuntimeConfig.runtime``.

A backend wraps one model session. Backend modules import their runtime lazily (inside
``import_runtime``/``load``) so that the agent starts, fingerprints and reports
``missing_runtime`` cleanly on a board where a runtime is not installed.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from agents.records import RuntimeConfig
from agents.runtimes import RUNTIMES

#: runtime name -> "module:Class"; modules are imported only when that runtime is asked for.
_REGISTRY = {name: runtime.backend for name, runtime in RUNTIMES.items()}


class BackendConfigError(ValueError):
    """The runtime config cannot work on any device (unknown runtime, bad option value)."""


class MissingRuntimeError(RuntimeError):
    """The runtime's Python package is not installed; the message says how to install it."""


class Backend(ABC):
    """One model session on one runtime.

    Call order: ``load`` once, then ``input_specs``/``make_inputs``, then ``run`` many times.
    ``provider``/``threads``/``version`` describe what actually ran, for the result record.
    """

    name = ""

    def __init__(self, config: RuntimeConfig) -> None:
        self.config = config
        self.validate(config)

    @classmethod
    def validate(cls, config: RuntimeConfig) -> None:
        """Raise ``BackendConfigError`` for option values this backend can never accept.

        Runs in the supervisor before any worker starts, so a typo in a profile fails the run
        at once instead of failing every job. Every backend needs a non-negative thread count.
        """
        if config.threads < 0:
            raise BackendConfigError(f"threads must be >= 0 (0 = runtime default), got {config.threads}")

    @staticmethod
    @abstractmethod
    def import_runtime() -> Any:
        """Import the runtime module (or raise ``MissingRuntimeError``); cached by Python.

        The worker calls this at start-up so the import cost is paid once and never counted
        in a job's ``load_ms``.
        """

    @staticmethod
    @abstractmethod
    def describe() -> dict[str, Any]:
        """What the fingerprint reports for this runtime: whether it imports, version, extras.

        Never raises: a missing runtime is ``{"available": False, "error": ...}``.
        """

    @abstractmethod
    def load(self, path: str) -> None:
        """Create the session for the model at ``path`` (this is what ``load_ms`` times)."""

    @abstractmethod
    def input_specs(self) -> dict[str, tuple[list[int], str]]:
        """Input name -> (shape with dynamic dims set to 1, numpy dtype name)."""

    @abstractmethod
    def run(self, inputs: dict[str, np.ndarray]) -> None:
        """One inference, outputs discarded."""

    @abstractmethod
    def version(self) -> str:
        """Runtime version string."""

    @abstractmethod
    def provider(self) -> str:
        """What actually executes the model (e.g. the first onnxruntime execution provider)."""

    def set_input_shapes(self, shapes: dict[str, list[int]]) -> None:
        """Feed ``shapes`` from now on (call after ``load``): they size the model's dynamic dimensions.

        Raises ``ValueError`` for an unknown input name or a size that contradicts a fixed dimension: the
        job would otherwise time a different model size than the one recorded.
        """
        raise NotImplementedError(f"{self.name} cannot set input shapes")

    def profile_ops(self, inputs: dict[str, np.ndarray], warmup: int, runs: int) -> list[dict[str, Any]]:
        """Per-operator times on a separate profiled session: ``warmup`` inferences, then ``runs`` recorded ones.

        One dict per node: ``op_name``, ``op_type``, ``provider``, ``duration_us`` (its median over the recorded
        inferences), ``runs``. Called after the timed loop only. Raises ``NotImplementedError`` where the
        runtime offers no operator profiler to Python.
        """
        raise NotImplementedError(f"operator profiling is not available for runtime {self.name}")

    def threads(self) -> int:
        """Configured intra-op thread count; 0 means the runtime's own default."""
        return int(self.config.threads)

    def make_inputs(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Random inputs of the model's shapes and dtypes.

        Never zeros: zero tensors can hit fast paths (sparse kernels, skipped multiplies,
        denormal-free arithmetic) and under-report latency. Floats are standard normal; integers
        are drawn from [1, 8) so that index-like inputs stay small and valid for tiny dims;
        booleans are fair coin flips.
        """
        inputs = {}
        for name, (shape, dtype_name) in self.input_specs().items():
            dtype = np.dtype(dtype_name)
            if dtype.kind == "f":
                value = rng.standard_normal(shape).astype(dtype)
            elif dtype.kind in "iu":
                value = rng.integers(1, 8, size=shape).astype(dtype)
            elif dtype.kind == "b":
                value = rng.random(shape) < 0.5
            else:
                raise TypeError(f"input {name!r} has dtype {dtype_name}, which the agent cannot generate")
            inputs[name] = np.ascontiguousarray(value)
        return inputs


def check_shape(name: str, declared: list[int | None], wanted: list[int]) -> None:
    """``ValueError`` unless ``wanted`` has ``declared``'s rank and agrees with its fixed (not None) sizes."""
    if len(wanted) != len(declared) or any(d is not None and d != w for d, w in zip(declared, wanted, strict=False)):
        shown = ["?" if d is None else d for d in declared]
        raise ValueError(f"input {name!r}: shape {wanted} does not fit the model's {shown}")


def backend_class(runtime: str) -> type[Backend]:
    """The backend class registered for ``runtime`` (imports only the backend module)."""
    if runtime not in _REGISTRY:
        raise BackendConfigError(f"unknown runtime {runtime!r} (known: {', '.join(sorted(_REGISTRY))})")
    module_name, class_name = _REGISTRY[runtime].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def get_backend(runtime_config: RuntimeConfig) -> Backend:
    """A fresh, unloaded backend for ``runtime_config`` (validated; the runtime is not imported)."""
    return backend_class(runtime_config.runtime)(runtime_config)


def runtime_names() -> list[str]:
    """Every runtime the agent knows how to drive."""
    return sorted(_REGISTRY)
