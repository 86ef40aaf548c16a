"""Backends on real runtimes: onnxruntime sessions built from RuntimeConfig, LiteRT interpreters,
random inputs, and ``measure_job`` (the worker's per-job routine) run in-process."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from fixtures.agent_models import IR_VERSION, OPSET, conv_model, matmul_model
from onnx import TensorProto, helper

from agents.backends import BackendConfigError, get_backend
from agents.records import Job, RuntimeConfig, TimingConfig
from agents.worker import measure_job

ort = pytest.importorskip("onnxruntime")

FAST = TimingConfig(warmup_min_runs=2, warmup_min_s=0.0, min_runs=10, min_time_s=0.0, max_runs=30, max_time_s=0.5)


def mixed_dtype_model(path: Path) -> None:
    """y = where(flag, x + float(n), x): float, int64 and bool inputs, dynamic batch."""
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["n"], ["nf"], to=TensorProto.FLOAT),
            helper.make_node("Add", ["x", "nf"], ["s"]),
            helper.make_node("Where", ["flag", "s", "x"], ["y"]),
        ],
        "mixed",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("n", TensorProto.INT64, [1]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, ["batch", 3]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    onnx.save(model, path)


def test_onnxruntime_inputs_follow_model_shapes_and_dtypes(tmp_path: Path) -> None:
    mixed_dtype_model(tmp_path / "m.onnx")
    backend = get_backend(RuntimeConfig())
    backend.load(str(tmp_path / "m.onnx"))
    assert backend.input_specs() == {"x": ([1, 3], "float32"), "n": ([1], "int64"), "flag": ([1, 3], "bool")}
    inputs = backend.make_inputs(np.random.default_rng(0))
    assert {k: (list(v.shape), v.dtype.name) for k, v in inputs.items()} == {
        "x": ([1, 3], "float32"), "n": ([1], "int64"), "flag": ([1, 3], "bool")
    }
    assert np.all(inputs["x"] != 0) and np.all(inputs["n"] >= 1)
    again = backend.make_inputs(np.random.default_rng(0))
    assert all(np.array_equal(inputs[k], again[k]) for k in inputs)  # seeded: same inputs every run
    backend.run(inputs)


def test_onnxruntime_session_options_come_from_runtime_config(tmp_path: Path) -> None:
    conv_model(tmp_path / "c.onnx")
    config = RuntimeConfig(threads=2, inter_op_threads=2, graph_optimization_level="disable", execution_mode="parallel")
    backend = get_backend(config)
    backend.load(str(tmp_path / "c.onnx"))
    options = backend.session.get_session_options()
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 2
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert options.execution_mode == ort.ExecutionMode.ORT_PARALLEL
    assert backend.provider() == "CPUExecutionProvider"
    assert backend.threads() == 2 and backend.version() == ort.__version__


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA is available here, so no fallback happens"
)
def test_onnxruntime_refuses_silent_fallback_to_cpu(tmp_path: Path) -> None:
    matmul_model(tmp_path / "mm.onnx")
    backend = get_backend(RuntimeConfig(providers=["CUDAExecutionProvider", "CPUExecutionProvider"]))
    with pytest.raises(RuntimeError, match="requested execution provider CUDAExecutionProvider"):
        backend.load(str(tmp_path / "mm.onnx"))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (RuntimeConfig(graph_optimization_level="O3"), "graph_optimization_level"),
        (RuntimeConfig(execution_mode="async"), "execution_mode"),
        (RuntimeConfig(providers=[]), "providers is empty"),
        (RuntimeConfig(providers=["A", "B"], provider_options=[{}]), "one table per provider"),
        (RuntimeConfig(threads=-1), "threads"),
        (RuntimeConfig(runtime="tvm"), "unknown runtime"),
        (RuntimeConfig(runtime="litert", threads=-2), "threads"),
    ],
)
def test_invalid_runtime_config_is_rejected_before_loading(config: RuntimeConfig, message: str) -> None:
    with pytest.raises(BackendConfigError, match=message):
        get_backend(config)


def test_measure_job_reports_a_full_result(tmp_path: Path) -> None:
    sha = conv_model(tmp_path / "c.onnx")
    result = measure_job(Job("c", "c.onnx", sha), str(tmp_path / "c.onnx"), RuntimeConfig(), FAST)
    assert result.status in ("ok", "unstable"), result.error
    assert result.runtime == "onnxruntime" and result.runtime_version == ort.__version__
    assert result.input_shapes == {"x": [1, 8, 16, 16]}
    assert result.n_runs == len(result.raw_ms) >= 10
    assert result.warmup_runs >= 2 and result.stop_reason in ("ci", "max_runs", "max_time")
    assert result.ci95_low_ms <= result.median_ms <= result.ci95_high_ms
    assert result.started_at <= result.finished_at
    assert result.system_after["load1"] is not None


def test_measure_job_rejects_a_model_whose_hash_differs(tmp_path: Path) -> None:
    matmul_model(tmp_path / "mm.onnx")
    result = measure_job(Job("m", "mm.onnx", "0" * 64), str(tmp_path / "mm.onnx"), RuntimeConfig(), FAST)
    assert (result.status, result.error_type) == ("failed", "load")
    assert "job expects 0000" in result.error
    assert result.n_runs == 0 and result.load_ms is None


def test_measure_job_reports_run_errors_as_run(tmp_path: Path) -> None:
    """A model that loads but fails at inference: Reshape to a shape the input cannot take."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        "bad",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("shape", TensorProto.INT64, [2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION),
              tmp_path / "bad.onnx")
    sha = hashlib.sha256((tmp_path / "bad.onnx").read_bytes()).hexdigest()
    result = measure_job(Job("b", "bad.onnx", sha), str(tmp_path / "bad.onnx"), RuntimeConfig(), FAST)
    assert (result.status, result.error_type) == ("failed", "run")
    assert result.load_ms is not None and "\n" not in result.error


@pytest.mark.tflite
@pytest.mark.slow
def test_litert_backend_times_a_converted_torch_model(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    litert_torch = pytest.importorskip("litert_torch")
    pytest.importorskip("ai_edge_litert")
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(8, 4),
    ).eval()
    litert_torch.convert(model, (torch.randn(1, 3, 16, 16),)).export(str(tmp_path / "tiny.tflite"))

    backend = get_backend(RuntimeConfig(runtime="litert", threads=2))
    backend.load(str(tmp_path / "tiny.tflite"))
    ((name, (shape, dtype)),) = backend.input_specs().items()
    assert (shape, dtype) == ([1, 3, 16, 16], "float32")
    assert backend.provider() == "ai_edge_litert:CPU" and backend.threads() == 2
    backend.set_input_shapes({name: [1, 3, 16, 16]})
    with pytest.raises(ValueError, match="does not fit"):
        backend.set_input_shapes({name: [1, 3, 32, 32]})

    sha = hashlib.sha256((tmp_path / "tiny.tflite").read_bytes()).hexdigest()
    job = Job("t", "tiny.tflite", sha, format="tflite")
    result = measure_job(job, str(tmp_path / "tiny.tflite"), RuntimeConfig(runtime="litert", threads=1), FAST,
                         op_profile=True)
    assert result.status in ("ok", "unstable"), result.error
    assert result.op_times == [] and "not available for runtime litert" in result.op_profile_error
    assert result.runtime == "litert" and result.runtime_version
    assert result.input_shapes == {name: [1, 3, 16, 16]} and result.n_runs >= 10
