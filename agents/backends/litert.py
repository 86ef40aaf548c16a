"""LiteRT (TensorFlow Lite) backend: whichever interpreter package the board has.

Tried in order: ``ai_edge_litert`` (the current package), ``tflite_runtime`` (the slim wheel many
boards still ship), ``tensorflow.lite`` (full TensorFlow; slow to import, last resort).
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any

import numpy as np

from agents.backends import Backend, MissingRuntimeError, check_shape
from agents.records import RuntimeConfig

#: (module holding ``Interpreter``, distribution name for the version, flavour reported)
_FLAVOURS = (
    ("ai_edge_litert.interpreter", "ai-edge-litert", "ai_edge_litert"),
    ("tflite_runtime.interpreter", "tflite-runtime", "tflite_runtime"),
    ("tensorflow.lite", "tensorflow", "tensorflow.lite"),
)


def _find_interpreter() -> tuple[Any, str, str]:
    """(Interpreter class, flavour, version) of the first LiteRT flavour that imports."""
    errors = []
    for module_name, dist, flavour in _FLAVOURS:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            errors.append(f"{module_name}: {exc}")
            continue
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = str(getattr(module, "__version__", ""))
        return module.Interpreter, flavour, version
    raise MissingRuntimeError(
        "no LiteRT interpreter found (" + "; ".join(errors) + "); install it with: pip install ai-edge-litert "
        "(or pip install tflite-runtime on boards without an ai-edge-litert wheel)"
    )


class LiteRTBackend(Backend):
    """LiteRT ``Interpreter`` with ``num_threads = RuntimeConfig.threads`` (0 = runtime default).

    ``run`` copies the inputs in (``set_tensor``) and calls ``invoke``; the copy is part of the
    latency, as it is for onnxruntime's ``session.run``. The default delegate (XNNPACK for float
    models) is whatever the interpreter applies on its own.
    """

    name = "litert"

    def __init__(self, config: RuntimeConfig) -> None:
        super().__init__(config)
        self._interpreter: Any = None
        self._flavour = ""
        self._version = ""
        self._inputs: dict[str, int] = {}

    @staticmethod
    def import_runtime() -> Any:
        return _find_interpreter()[0]

    @staticmethod
    def describe() -> dict[str, Any]:
        try:
            _, flavour, version = _find_interpreter()
        except MissingRuntimeError as exc:
            return {"available": False, "error": str(exc)}
        return {"available": True, "flavour": flavour, "version": version}

    def load(self, path: str) -> None:
        interpreter_cls, self._flavour, self._version = _find_interpreter()
        threads = self.config.threads or None
        interpreter = interpreter_cls(model_path=path, num_threads=threads)
        details = interpreter.get_input_details()
        # Dynamic dimensions (-1 in shape_signature) are pinned to 1, as for onnxruntime.
        for d in details:
            signature = d.get("shape_signature")
            if signature is not None and any(int(v) < 0 for v in signature):
                interpreter.resize_tensor_input(d["index"], [max(int(v), 1) for v in signature])
        interpreter.allocate_tensors()
        self._interpreter = interpreter
        self._inputs = {d["name"]: d["index"] for d in interpreter.get_input_details()}

    def set_input_shapes(self, shapes: dict[str, list[int]]) -> None:
        details = {d["name"]: d for d in self._interpreter.get_input_details()}
        for name, shape in shapes.items():
            if name not in details:
                raise ValueError(f"input {name!r} is not an input of the model (inputs: {', '.join(details)})")
            signature = details[name].get("shape_signature")
            if signature is None:
                signature = details[name]["shape"]
            check_shape(name, [int(v) if int(v) > 0 else None for v in signature], shape)
            self._interpreter.resize_tensor_input(details[name]["index"], list(shape))
        self._interpreter.allocate_tensors()

    def input_specs(self) -> dict[str, tuple[list[int], str]]:
        return {
            d["name"]: ([int(v) for v in d["shape"]], np.dtype(d["dtype"]).name)
            for d in self._interpreter.get_input_details()
        }

    def run(self, inputs: dict[str, np.ndarray]) -> None:
        for name, value in inputs.items():
            self._interpreter.set_tensor(self._inputs[name], value)
        self._interpreter.invoke()

    def version(self) -> str:
        return self._version or _find_interpreter()[2]

    def provider(self) -> str:
        return f"{self._flavour}:CPU" if self._flavour else ""
