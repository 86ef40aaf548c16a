"""OpenVINO backend: reads the ONNX export and compiles it for one OpenVINO device.

The profile's ``device`` (CPU, GPU, NPU, AUTO), ``threads``, ``streams``, ``performance_hint`` and
``precision_hint`` become the compile properties. What actually ran is read back from the compiled
model (``EXECUTION_DEVICES``, ``INFERENCE_PRECISION_HINT``, ``INFERENCE_NUM_THREADS``): a CPU that
silently computes in bf16, or AUTO that picked the CPU, is then visible in every result row.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agents.backends import Backend, BackendConfigError, MissingRuntimeError, check_shape
from agents.records import RuntimeConfig

#: Device families a profile may name; "GPU.1" or "AUTO:GPU,CPU" name one member or a priority list.
DEVICES = ("CPU", "GPU", "NPU", "AUTO")
PERFORMANCE_HINTS = ("", "LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")
PRECISION_HINTS = ("", "f32", "f16", "bf16")


def device_family(device: str) -> str:
    """``GPU.1`` -> ``GPU``, ``AUTO:GPU,CPU`` -> ``AUTO``, "" -> ``CPU`` (OpenVINO's own default here)."""
    return (device or "CPU").split(":")[0].split(".")[0].upper()


class OpenVINOBackend(Backend):
    """``openvino.Core().compile_model`` of the ONNX file, timed through one ``InferRequest``.

    ``run`` calls ``InferRequest.infer`` with numpy inputs, which copies them in and the outputs
    out, as onnxruntime's ``session.run`` does. Threads and streams are CPU properties: they are
    passed to the CPU device (directly, or through AUTO's ``DEVICE_PROPERTIES``), never to a GPU
    or NPU plugin, which would refuse them.
    """

    name = "openvino"

    def __init__(self, config: RuntimeConfig) -> None:
        super().__init__(config)
        self._core: Any = None
        self._model: Any = None
        self._compiled: Any = None
        self._request: Any = None
        self._provider = ""
        self._threads = int(config.threads)

    @classmethod
    def validate(cls, config: RuntimeConfig) -> None:
        super().validate(config)
        if device_family(config.device) not in DEVICES:
            raise BackendConfigError(f"device {config.device!r} is not one of {', '.join(DEVICES)} (or e.g. GPU.1)")
        if config.streams < 0:
            raise BackendConfigError(f"streams must be >= 0 (0 = OpenVINO's choice), got {config.streams}")
        if config.performance_hint not in PERFORMANCE_HINTS:
            raise BackendConfigError(
                f"performance_hint {config.performance_hint!r} is not one of {', '.join(PERFORMANCE_HINTS[1:])}"
            )
        if config.precision_hint not in PRECISION_HINTS:
            raise BackendConfigError(
                f"precision_hint {config.precision_hint!r} is not one of {', '.join(PRECISION_HINTS[1:])}"
            )

    @staticmethod
    def import_runtime() -> Any:
        try:
            import openvino
        except ImportError as exc:
            raise MissingRuntimeError(
                f"OpenVINO is not installed ({exc}); install it with: pip install openvino"
            ) from exc
        return openvino

    @staticmethod
    def describe() -> dict[str, Any]:
        try:
            ov = OpenVINOBackend.import_runtime()
        except MissingRuntimeError as exc:
            return {"available": False, "error": str(exc)}
        core = ov.Core()
        devices = {}
        for device in core.available_devices:
            try:
                devices[device] = str(core.get_property(device, "FULL_DEVICE_NAME"))
            except RuntimeError as exc:  # a plugin that lists a device but cannot describe it
                devices[device] = f"unknown ({str(exc).splitlines()[0]})"
        return {"available": True, "version": str(ov.__version__), "devices": devices}

    def _properties(self) -> dict[str, Any]:
        """Compile properties for the configured device (see the class docstring for who gets what)."""
        cfg = self.config
        props: dict[str, Any] = {}
        if cfg.performance_hint:
            props["PERFORMANCE_HINT"] = cfg.performance_hint
        if cfg.precision_hint:
            props["INFERENCE_PRECISION_HINT"] = cfg.precision_hint
        cpu: dict[str, Any] = {}
        if cfg.threads:
            cpu["INFERENCE_NUM_THREADS"] = cfg.threads
        if cfg.streams:
            cpu["NUM_STREAMS"] = cfg.streams
        family = device_family(cfg.device)
        if family == "CPU":
            props.update(cpu)
        elif family == "GPU" and cfg.streams:
            props["NUM_STREAMS"] = cfg.streams
        elif family == "AUTO":
            # AUTO's default starts on the CPU while the GPU compiles and then switches: two devices
            # inside one timed loop. Without the startup fallback it picks one device and stays.
            props["ENABLE_STARTUP_FALLBACK"] = False
            if cpu:
                props["DEVICE_PROPERTIES"] = {"CPU": cpu}
        return props

    def load(self, path: str) -> None:
        ov = self.import_runtime()
        self._core = ov.Core()
        self._model = self._core.read_model(path)
        self._compile()

    def _compile(self) -> None:
        """Compile the read model for the profile's device and read back what OpenVINO actually chose."""
        device = self.config.device or "CPU"
        self._compiled = self._core.compile_model(self._model, device, self._properties())
        self._request = self._compiled.create_infer_request()
        used = [str(d) for d in self._compiled.get_property("EXECUTION_DEVICES")]
        family = device_family(device)
        # OpenVINO lets AUTO pick; any other request must run where it asked, or the row would be mislabelled.
        if family != "AUTO" and not all(device_family(d) == family for d in used):
            raise RuntimeError(f"requested OpenVINO device {device} but the model runs on {', '.join(used)}")
        precision = self._read("INFERENCE_PRECISION_HINT")
        self._provider = "+".join(used) + (f":{precision}" if precision else "")
        threads = self._read("INFERENCE_NUM_THREADS")
        if threads:
            self._threads = int(threads)

    def set_input_shapes(self, shapes: dict[str, list[int]]) -> None:
        """OpenVINO compiles for one shape: inputs already fixed at these sizes keep the compiled model; dynamic
        sizes are fixed by reshaping the read model and compiling it again (``load_ms`` covers the first compile).
        """
        declared = {}
        for i, port in enumerate(self._model.inputs):
            name = port.get_any_name() if port.get_names() else f"input{i}"
            declared[name] = [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
        for name, shape in shapes.items():
            if name not in declared:
                raise ValueError(f"input {name!r} is not an input of the model (inputs: {', '.join(declared)})")
            check_shape(name, declared[name], shape)
        if any(None in declared[name] for name in shapes):
            ov = self.import_runtime()
            self._model.reshape({name: ov.PartialShape(list(shape)) for name, shape in shapes.items()})
            self._compile()

    def _read(self, key: str) -> str:
        """A property of the compiled model as text; "" where the device does not report it (AUTO, NPU)."""
        try:
            value = self._compiled.get_property(key)
        except RuntimeError:
            return ""
        return str(getattr(value, "to_string", lambda: value)())

    def input_specs(self) -> dict[str, tuple[list[int], str]]:
        specs = {}
        for i, port in enumerate(self._compiled.inputs):
            names = port.get_names()
            name = port.get_any_name() if names else f"input{i}"
            shape = [d.get_length() if d.is_static else 1 for d in port.get_partial_shape()]
            specs[name] = (shape, np.dtype(port.get_element_type().to_dtype()).name)
        return specs

    def run(self, inputs: dict[str, np.ndarray]) -> None:
        self._request.infer(inputs)

    def version(self) -> str:
        return str(self.import_runtime().__version__)

    def provider(self) -> str:
        return self._provider

    def threads(self) -> int:
        return self._threads
