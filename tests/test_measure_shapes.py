"""Issue 12 end to end on this machine: a transformer block with a dynamic sequence length (real torch export,
real agent, real onnxruntime) is refused without a size and measured at the size given by ``--input-shape``,
with its operator times (``--op-profile``), peak memory and a short cooldown recorded."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from profiles import fast_profile
from test_measure_local import hwlat

from harness.store import read_dataset

SEQ, WIDTH = 64, 32


def _export_block(path: Path, dynamic: bool = True) -> None:
    """Single-head attention + output projection on [1, seq, 32], ``seq`` exported as a dynamic axis (or fixed
    at ``SEQ``)."""
    import torch

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q, self.k, self.v, self.o = (torch.nn.Linear(WIDTH, WIDTH) for _ in range(4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            attn = torch.softmax(self.q(x) @ self.k(x).transpose(1, 2), dim=-1)
            return self.o(attn @ self.v(x))

    torch.onnx.export(Block().eval(), (torch.randn(1, 8 if dynamic else SEQ, WIDTH),), str(path), input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {1: "seq"}, "y": {1: "seq"}} if dynamic else None,
                      opset_version=17, dynamo=False)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    _export_block(folder / "block.onnx")
    return folder


def test_dynamic_dimension_without_size_is_refused(tmp_path: Path, models: Path) -> None:
    out = tmp_path / "ds"
    proc = hwlat("measure", "--device", str(fast_profile(tmp_path)), "--models", str(models), "--out", str(out),
                 check_rc=2)
    line = proc.stderr.strip()
    assert "\n" not in line and line.startswith("hwlat: block.onnx: input 'x' has dynamic dimension 'seq'"), line
    assert not out.exists()
    proc = hwlat("measure", "--models", str(models), "--out", str(out), "--input-shape", "x=1x64x32",
                 "--resolution", "64", check_rc=2)
    assert "--resolution 64 cannot apply" in proc.stderr and not out.exists()


def test_input_shape_op_profile_peak_memory_cooldown(tmp_path: Path, models: Path) -> None:
    profile = fast_profile(tmp_path)
    profile.write_text(profile.read_text() + "cooldown_s = 0.3\n")
    out = tmp_path / "ds"
    hwlat("measure", "--device", str(profile), "--models", str(models), "--out", str(out),
          "--input-shape", f"x=1x{SEQ}x{WIDTH}", "--op-profile")
    (row,) = read_dataset(out).to_pylist()
    assert row["status"] in ("ok", "unstable") and row["input_shape"] == [1, SEQ, WIDTH]
    # 2 x MACs at seq 64: four 32x32 projections of 64 tokens, Q @ K^T and attn @ V (64 x 64 x 32 each)
    assert row["flops"] == 2 * (4 * SEQ * WIDTH * WIDTH + 2 * SEQ * SEQ * WIDTH)
    assert row["peak_rss_mb"] >= row["base_rss_mb"] > 0
    assert row["cooldown_s"] >= 0.3

    ops = pd.read_parquet(out / "_ops")
    assert set(ops["model_sha256"]) == {row["model_sha256"]} and set(ops["config_id"]) == {row["config_id"]}
    assert {"MatMul", "Softmax"} <= set(ops["op_type"]) and (ops["duration_us"] > 0).all()
    assert list(ops["node_index"]) == list(range(len(ops)))
    total_ms = duckdb.sql(f"select sum(duration_us) / 1000 from read_parquet('{out}/_ops/*.parquet')").fetchall()[0][0]
    assert row["latency_ms"] / 100 < total_ms < row["latency_ms"] * 10  # one inference's operators, same order
    # the measurement readers never see the operator table
    assert duckdb.sql(f"select count(*) from read_parquet('{out}/device=*/**/*.parquet', "
                      "hive_partitioning=true)").fetchall()[0][0] == 1
    assert len(pd.read_parquet(out)) == 1


def test_openvino_measures_user_models_at_the_given_size(tmp_path: Path, models: Path) -> None:
    """OpenVINO compiles for one shape: the dynamic block is reshaped to ``--input-shape`` and compiled again,
    and a model whose inputs are already fixed is measured as it is (both were refused before: the backend
    had no ``set_input_shapes``)."""
    pytest.importorskip("openvino")

    both = tmp_path / "models"
    both.mkdir()
    shutil.copy(models / "block.onnx", both / "block.onnx")
    _export_block(both / "fixed.onnx", dynamic=False)
    profile = fast_profile(tmp_path, "fast-openvino", extra='runtime = "openvino"\nprecision_hint = "f32"')
    out = tmp_path / "ds"
    hwlat("measure", "--device", str(profile), "--models", str(both), "--out", str(out),
          "--input-shape", f"x=1x{SEQ}x{WIDTH}")
    rows = {r["arch"]: r for r in read_dataset(out).to_pylist()}
    assert set(rows) == {"block", "fixed"}
    for r in rows.values():
        assert r["status"] in ("ok", "unstable"), r["error"]
        assert r["runtime"] == "openvino" and r["input_shape"] == [1, SEQ, WIDTH]
        assert r["flops"] == 2 * (4 * SEQ * WIDTH * WIDTH + 2 * SEQ * SEQ * WIDTH)
