"""The worker feeds the job's input shapes, records its peak RSS and, on request, per-operator times after the
timed loop (real onnxruntime, ``measure_job`` in-process)."""

from __future__ import annotations

from pathlib import Path

from fixtures.agent_models import FAST_TIMING, conv_model, matmul_model

from agents.backends.onnxruntime import parse_ort_profile
from agents.records import Job, RuntimeConfig, TimingConfig
from agents.worker import measure_job

FAST = TimingConfig(**FAST_TIMING)


def test_job_shapes_size_the_dynamic_batch_and_ops_come_after_the_timed_loop(tmp_path: Path) -> None:
    sha = matmul_model(tmp_path / "mm.onnx", size=256)  # x: [N, 256]
    job = Job("j", "mm.onnx", sha, input_shapes={"x": [32, 256]})
    result = measure_job(job, str(tmp_path / "mm.onnx"), RuntimeConfig(), FAST, op_profile=True)
    assert result.status in ("ok", "unstable"), result.error
    assert result.input_shapes == {"x": [32, 256]}
    assert result.peak_rss_mb >= result.base_rss_mb > 0
    (op,) = result.op_times
    assert op["op_type"] == "MatMul" and op["duration_us"] > 0 and op["provider"] == "CPUExecutionProvider"
    assert not result.op_profile_error
    plain = measure_job(Job("p", "mm.onnx", sha), str(tmp_path / "mm.onnx"), RuntimeConfig(), FAST)
    assert plain.input_shapes == {"x": [1, 256]} and plain.op_times == []  # no profile unless asked


def test_shapes_that_contradict_the_model_fail_the_load(tmp_path: Path) -> None:
    sha = conv_model(tmp_path / "c.onnx")  # fixed [1, 8, 16, 16]
    for shapes, needle in (({"x": [1, 8, 32, 32]}, "does not fit"), ({"nope": [1]}, "not an input")):
        result = measure_job(Job("c", "c.onnx", sha, input_shapes=shapes), str(tmp_path / "c.onnx"),
                             RuntimeConfig(), FAST)
        assert (result.status, result.error_type) == ("failed", "load") and needle in result.error


def test_parse_keeps_the_last_model_run_only() -> None:
    def node(name: str, ts: int, dur: int) -> dict:
        return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur,
                "args": {"op_name": "Conv", "provider": "CPUExecutionProvider"}}

    events = [
        {"cat": "Session", "name": "model_run", "ts": 0, "dur": 100}, node("a", 10, 50), node("a_fence", 11, 1),
        {"cat": "Session", "name": "model_run", "ts": 200, "dur": 100}, node("a", 210, 7), node("b", 220, 3),
        node("b", 230, 2),
        {"cat": "Session", "name": "model_run", "ts": 400, "dur": 100}, node("a", 410, 9), node("b", 420, 4),
        {"cat": "Session", "name": "model_run", "ts": 600, "dur": 100}, node("a", 610, 900), node("b", 620, 6),
    ]
    ops = parse_ort_profile(events, runs=1)
    assert [(o["op_name"], o["duration_us"]) for o in ops] == [("a", 900.0), ("b", 6.0)]
    # median over the last three inferences: a 7, 9, 900 -> 9 (one slow inference does not move it); b 5, 4, 6
    ops = parse_ort_profile(events, runs=3)
    assert [(o["op_name"], o["duration_us"], o["runs"]) for o in ops] == [("a", 9.0, 3), ("b", 5.0, 3)]
