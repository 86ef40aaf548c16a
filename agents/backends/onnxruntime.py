"""onnxruntime backend: one ``InferenceSession`` per model, configured from ``RuntimeConfig``."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import numpy as np

from agents.backends import Backend, BackendConfigError, MissingRuntimeError, check_shape
from agents.records import RuntimeConfig

_LEVELS = ("disable", "basic", "extended", "all")
_MODES = ("sequential", "parallel")

#: onnxruntime's type strings -> numpy dtype names (types numpy cannot hold are left out).
_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
}


class OnnxRuntimeBackend(Backend):
    """onnxruntime ``InferenceSession`` with threads, optimisation level and providers set.

    ``run`` passes numpy inputs and fetches every output, so for GPU providers the latency
    includes the host-to-device input copy and the device-to-host output copy, as an application
    calling ``session.run`` would see.
    """

    name = "onnxruntime"

    def __init__(self, config: RuntimeConfig) -> None:
        super().__init__(config)
        self._session: Any = None
        self._path = ""
        self._shapes: dict[str, list[int]] = {}

    @classmethod
    def validate(cls, config: RuntimeConfig) -> None:
        super().validate(config)
        if config.graph_optimization_level not in _LEVELS:
            raise BackendConfigError(
                f"graph_optimization_level {config.graph_optimization_level!r} is not one of {', '.join(_LEVELS)}"
            )
        if config.execution_mode not in _MODES:
            raise BackendConfigError(f"execution_mode {config.execution_mode!r} is not one of {', '.join(_MODES)}")
        if not config.providers:
            raise BackendConfigError("providers is empty; list at least one execution provider")
        if config.provider_options and len(config.provider_options) != len(config.providers):
            raise BackendConfigError(
                f"provider_options has {len(config.provider_options)} entries for {len(config.providers)} "
                "providers; give one table per provider (or none)"
            )
        if config.threads < 0 or config.inter_op_threads < 0:
            raise BackendConfigError("threads and inter_op_threads must be >= 0 (0 = runtime default)")

    @staticmethod
    def import_runtime() -> Any:
        try:
            import onnxruntime
        except ImportError as exc:
            raise MissingRuntimeError(
                f"onnxruntime is not installed ({exc}); install it with: pip install onnxruntime "
                "(onnxruntime-gpu for CUDA/TensorRT)"
            ) from exc
        return onnxruntime

    @staticmethod
    def describe() -> dict[str, Any]:
        try:
            ort = OnnxRuntimeBackend.import_runtime()
        except MissingRuntimeError as exc:
            return {"available": False, "error": str(exc)}
        return {
            "available": True,
            "version": ort.__version__,
            "providers": list(ort.get_available_providers()),
            "device": ort.get_device(),
        }

    def load(self, path: str) -> None:
        self._path = path
        self._session = self._new_session(self._options())
        # onnxruntime silently falls back to the CPU provider when a requested one cannot start
        # (missing CUDA libraries, unsupported device); timing that would mislabel the result.
        used = self._session.get_providers()[0]
        if used != self.config.providers[0]:
            raise RuntimeError(
                f"requested execution provider {self.config.providers[0]} but the session runs on {used} "
                "(the provider failed to initialise; see the worker log)"
            )

    def _options(self) -> Any:
        ort = self.import_runtime()
        cfg = self.config
        so = ort.SessionOptions()
        so.intra_op_num_threads = cfg.threads
        so.inter_op_num_threads = cfg.inter_op_threads
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[cfg.graph_optimization_level]
        so.execution_mode = (
            ort.ExecutionMode.ORT_PARALLEL if cfg.execution_mode == "parallel" else ort.ExecutionMode.ORT_SEQUENTIAL
        )
        for library in cfg.custom_op_libraries:
            so.register_custom_ops_library(library)
        return so

    def _new_session(self, so: Any) -> Any:
        return self.import_runtime().InferenceSession(
            self._path,
            sess_options=so,
            providers=list(self.config.providers),
            provider_options=[dict(o) for o in self.config.provider_options] or None,
        )

    def set_input_shapes(self, shapes: dict[str, list[int]]) -> None:
        declared = {arg.name: [d if isinstance(d, int) and d > 0 else None for d in arg.shape]
                    for arg in self._session.get_inputs()}
        for name, shape in shapes.items():
            if name not in declared:
                raise ValueError(f"input {name!r} is not an input of the model (inputs: {', '.join(declared)})")
            check_shape(name, declared[name], shape)
        self._shapes = {name: list(shape) for name, shape in shapes.items()}

    def profile_ops(self, inputs: dict[str, np.ndarray], warmup: int, runs: int) -> list[dict[str, Any]]:
        """onnxruntime's profiler (``SessionOptions.enable_profiling``) on a second session of the same model.

        The timed session is never profiled. The profile covers every inference of the profiled session; only
        the node events inside the last ``runs`` ``model_run`` events are kept, so the first ones warm it up.
        """
        with tempfile.TemporaryDirectory(prefix="hwlat-ops-") as tmp:
            so = self._options()
            so.enable_profiling = True
            so.profile_file_prefix = os.path.join(tmp, "ort")
            session = self._new_session(so)
            for _ in range(warmup + max(runs, 1)):
                session.run(None, inputs)
            path = session.end_profiling()
            with open(path, encoding="utf-8") as fh:
                events = json.load(fh)
        return parse_ort_profile(events, runs)

    @property
    def session(self) -> Any:
        """The underlying ``InferenceSession`` (None before ``load``), for inspection."""
        return self._session

    def input_specs(self) -> dict[str, tuple[list[int], str]]:
        specs = {}
        for arg in self._session.get_inputs():
            if arg.type not in _DTYPES:
                raise TypeError(f"input {arg.name!r} has type {arg.type}, which the agent cannot generate")
            shape = self._shapes.get(arg.name) or [d if isinstance(d, int) and d > 0 else 1 for d in arg.shape]
            specs[arg.name] = (shape, _DTYPES[arg.type])
        return specs

    def run(self, inputs: dict[str, np.ndarray]) -> None:
        self._session.run(None, inputs)

    def version(self) -> str:
        return str(self.import_runtime().__version__)

    def provider(self) -> str:
        return str(self._session.get_providers()[0]) if self._session is not None else ""


def parse_ort_profile(events: list[dict[str, Any]], runs: int = 1) -> list[dict[str, Any]]:
    """Node kernel times of the last ``runs`` ``model_run`` events of an onnxruntime profile (Chrome trace JSON).

    Per node, in first-seen order: its kernel time in each of those inferences (summed where it runs several
    times in one, inside a loop), then the median over the inferences (a node missing from one counts 0 there).
    """
    windows = [(e["ts"], e["ts"] + e["dur"]) for e in events
               if e.get("cat") == "Session" and e.get("name") == "model_run"][-max(runs, 1):]
    per_run: list[dict[str, float]] = [{} for _ in windows]
    info: dict[str, dict[str, Any]] = {}
    for e in events:
        name = str(e.get("name", ""))
        if e.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        ts = e.get("ts", 0)
        k = next((i for i, (start, end) in enumerate(windows) if start <= ts <= end), None)
        if k is None:
            continue
        node = name[: -len("_kernel_time")]
        args = e.get("args", {})
        info.setdefault(node, {"op_name": node, "op_type": str(args.get("op_name", "")),
                               "provider": str(args.get("provider", ""))})
        per_run[k][node] = per_run[k].get(node, 0.0) + float(e.get("dur", 0))
    return [entry | {"duration_us": float(np.median([times.get(node, 0.0) for times in per_run])),
                     "runs": len(per_run)}
            for node, entry in info.items()]
