"""`hwlat predictor predict --models` on a graph the encoder does not support: one line naming the operator, exit 2,
nothing written (issue 9's acceptance; the malformed-Conv case is in test_predictor_graph.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnx
import pandas as pd
import torch
from onnx import TensorProto, helper
from torch import nn

from hwlat.spaces.graph import DATASET_GRAPHS, encode_file

REPO = Path(__file__).resolve().parents[1]


def hwlat(*args: str, root: Path, rc: int) -> subprocess.CompletedProcess:
    env = {**__import__("os").environ, "HWLAT_GRAPH_CACHE": str(root / "graph-cache")}
    proc = subprocess.run([sys.executable, "-m", "hwlat", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == rc, proc.stderr[-2000:]
    return proc


def graph_dataset(root: Path) -> tuple[Path, Path]:
    """(a dataset of 4 ONNX networks with their graph encodings in _graphs/, as `measure --models` writes it,
    the folder of the files)."""
    models, ds = root / "models", root / "ds"
    models.mkdir()
    rows = []
    for width in (8, 16, 24, 32):
        path = models / f"w{width}.onnx"
        net = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                            nn.Linear(width, 10)).eval()
        torch.onnx.export(net, (torch.zeros(1, 3, 16, 16),), str(path), dynamo=False, opset_version=17)
        enc = encode_file(path, cache_dir=ds / DATASET_GRAPHS)
        rows.append({"search_space": "onnx", "arch": path.stem, "device": "dev", "latency_ms": 0.1 * width,
                     "model_sha256": enc.sha256, "status": "ok"})
    pd.DataFrame(rows).to_parquet(ds / "rows.parquet", index=False)
    return ds, models


def test_predict_models_names_an_unsupported_operator(tmp_path: Path) -> None:
    ds, models = graph_dataset(tmp_path)
    model = tmp_path / "m.pt"
    hwlat("predictor", "train", "--data", str(ds / "rows.parquet"), "--out", str(model), "--steps", "20",
          root=tmp_path, rc=0)
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Einsum", ["r"], ["y"], name="swap", equation="ij->ji")]
    graph = helper.make_graph(nodes, "custom", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), models / "einsum.onnx")
    out = tmp_path / "pred.parquet"
    proc = hwlat("predictor", "predict", "--model", str(model), "--device", "dev", "--models", str(models), "--out",
                 str(out), root=tmp_path, rc=2)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hwlat: ") and "einsum.onnx" in lines[0], lines
    assert "Einsum" in lines[0] and "swap" in lines[0]  # the operator and its node
    assert not out.exists()
    (models / "einsum.onnx").unlink()  # the same command on supported graphs works
    hwlat("predictor", "predict", "--model", str(model), "--device", "dev", "--models", str(models), "--out",
          str(out), root=tmp_path, rc=0)
    assert sorted(pd.read_parquet(out)["arch"]) == ["w16", "w24", "w32", "w8"]
