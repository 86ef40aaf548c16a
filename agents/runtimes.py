"""The runtimes hwlat can time with: the one table every layer reads. Standard library only (Python 3.8+).

For each runtime: the modules whose import means it is installed (tried in order), what to ``pip install`` on a
board that lacks it, the model format it reads, and its backend class in ``agents/backends/``. The launcher's
preflight (before numpy is imported on a board), the backend registry, profile validation, the coordinator's
preflight and ``--format`` all come from here, so a runtime is added in one place (plus its backend file).
"""

from __future__ import annotations

from collections import namedtuple

Runtime = namedtuple("Runtime", "modules pip format backend note")

RUNTIMES = {
    "onnxruntime": Runtime(("onnxruntime",), "onnxruntime", "onnx", "agents.backends.onnxruntime:OnnxRuntimeBackend",
                           "onnxruntime-gpu on CUDA boards"),
    "litert": Runtime(("ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow.lite"),
                      "ai-edge-litert", "tflite", "agents.backends.litert:LiteRTBackend", ""),
    "openvino": Runtime(("openvino",), "openvino", "onnx", "agents.backends.openvino:OpenVINOBackend", ""),
    "executorch": Runtime(("executorch.runtime",), "executorch", "pte", "agents.backends.executorch:ExecuTorchBackend",
                          ""),
    "torch": Runtime(("torch",), "torch", "pt2", "agents.backends.pytorch:TorchBackend",
                     "the CPU build: --index-url https://download.pytorch.org/whl/cpu"),
}


def install_hint(name):
    """What to run on a board that lacks runtime ``name``: ``pip install PACKAGE`` (and a note where one helps)."""
    runtime = RUNTIMES.get(name)
    if runtime is None:
        return f"pip install {name}"
    return f"pip install {runtime.pip}" + (f" ({runtime.note})" if runtime.note else "")


#: Model format -> the runtime ``--format`` switches a device to (onnx has two readers; onnxruntime is the default).
FORMAT_RUNTIMES = {"onnx": "onnxruntime", "tflite": "litert", "pte": "executorch", "pt2": "torch"}
FORMATS = tuple(FORMAT_RUNTIMES)
