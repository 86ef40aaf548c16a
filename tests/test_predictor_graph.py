"""Graph encoding of real exported networks (FLOPs by hand), its errors, and the graph predictor end to end:
a real `hwlat measure --models DIR`, then `predictor train` and `predict --models` through the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import predictor
from agents.errors import UsageError
from harness.export import torch_flops_params
from harness.onnx_files import onnx_flops, onnx_params
from hwlat.cli.main import main
from hwlat.spaces.graph import DATASET_GRAPHS, OP_TYPES, encode_file, encode_model
from predictor.encode import GraphEncoder
from predictor.graph import FLAT_DIM, KERNEL_NAMES, LINEAR_UNITS, N_DEAD, N_KERNEL, K, features, linear

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "predictor_small.parquet"


def export(model: nn.Module, shape: tuple[int, ...], path: Path) -> Path:
    """The harness's ONNX export settings (TorchScript exporter, opset 17, constant folding)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.randn(*shape),), str(path), opset_version=17, dynamo=False,
                          do_constant_folding=True, input_names=["input"], output_names=["output"])
    return path


def types_of(enc) -> list[str]:
    return [op["type"] for op in enc.ops]


class ConvZoo(nn.Module):
    """Depthwise 3x3, pointwise 1x1, grouped 3x3 stride 2, regular 3x3 on 1x8x16x16."""

    def __init__(self) -> None:
        super().__init__()
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 16, 1)
        self.gr = nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=4, bias=False)
        self.reg = nn.Conv2d(16, 4, 3, padding=2, dilation=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reg(torch.relu(self.gr(self.pw(self.dw(x)))))


def test_depthwise_pointwise_grouped_convs(tmp_path: Path) -> None:
    path = export(ConvZoo(), (1, 8, 16, 16), tmp_path / "convs.onnx")
    model = onnx.load(path)
    enc = encode_model(model, "x")
    convs = [op for op in enc.ops if op["type"].startswith("conv")]
    assert [op["type"] for op in convs] == ["conv_dw", "conv_pw", "conv_group", "conv"]
    dw, pw, gr, reg = convs
    # FLOPs = 2 x MACs = 2 x output elements x (C_in / groups) x kh x kw
    assert dw["flops"] == 2 * (8 * 16 * 16) * 1 * 9
    assert pw["flops"] == 2 * (16 * 16 * 16) * 8
    assert gr["flops"] == 2 * (16 * 8 * 8) * 4 * 9
    assert reg["flops"] == 2 * (4 * 8 * 8) * 16 * 9
    assert gr["attrs"] == {"kernel": [3, 3], "stride": [2, 2], "groups": 4, "dilation": [1, 1]}
    assert reg["attrs"]["dilation"] == [2, 2]
    assert dw["inputs"] == [[1, 8, 16, 16]] and dw["weights"] == [[8, 1, 3, 3], [8]]
    assert gr["outputs"] == [[1, 16, 8, 8]]
    assert dw["params"] == 8 * 9 + 8 and gr["params"] == 16 * 4 * 9
    # float32: bytes read = input + weights, written = output
    assert dw["bytes_read"] == 4 * (8 * 16 * 16 + 8 * 9 + 8) and dw["bytes_written"] == 4 * 8 * 16 * 16
    # the one FLOPs/params convention: equal to the exporter's torch count and the ONNX-file count
    flops, params = torch_flops_params(ConvZoo().eval(), torch.randn(1, 8, 16, 16))
    assert enc.total("flops") == flops == onnx_flops(model)
    assert enc.total("params") == params == onnx_params(model)
    # a chain: every op feeds the next
    assert enc.edges == [(i, i + 1) for i in range(len(enc.ops) - 1)]


class SEBlock(nn.Module):
    """MobileNetV3-style: h-swish (op), x * hardsigmoid(x) (pattern), squeeze-excite with a hard-sigmoid gate."""

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.Hardswish()
        self.fc1 = nn.Conv2d(16, 4, 1)
        self.fc2 = nn.Conv2d(4, 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(x)
        x = x * nn.functional.hardsigmoid(x)
        s = nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
        return x * s


def test_se_block_and_hswish_patterns(tmp_path: Path) -> None:
    enc = encode_file(export(SEBlock(), (1, 16, 8, 8), tmp_path / "se.onnx"), cache_dir=tmp_path / "cache")
    assert types_of(enc) == ["hswish", "hswish", "reduce", "conv_pw", "relu", "conv_pw", "hsigmoid", "eltwise"]
    assert enc.ops[1]["onnx"] == ["HardSigmoid", "Mul"]  # x * hardsigmoid(x) is one fused op
    assert enc.ops[-1]["onnx"] == ["Mul"]  # the SE gate multiplies x by a *different* tensor: not h-swish
    assert enc.total("flops") == 2 * (16 * 4 + 4 * 16)
    # the SE branch and the skip both feed the last Mul; the reduce reads the second h-swish
    assert (1, 7) in enc.edges and (6, 7) in enc.edges and (1, 2) in enc.edges


class TinyAttention(nn.Module):
    """Pre-norm single-head attention plus a GELU MLP on 6 tokens of width 8."""

    def __init__(self) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(8)
        self.q, self.k, self.v, self.o = (nn.Linear(8, 8) for _ in range(4))
        self.mlp = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln(x)
        att = torch.softmax(self.q(h) @ self.k(h).transpose(-1, -2) / 8**0.5, dim=-1)
        x = x + self.o(att @ self.v(h))
        return x + self.mlp(x)


def test_tiny_attention_block(tmp_path: Path) -> None:
    path = export(TinyAttention(), (1, 6, 8), tmp_path / "att.onnx")
    enc = encode_model(onnx.load(path), "x")
    kinds = types_of(enc)
    assert kinds.count("gemm") == 6 and kinds.count("matmul") == 2
    assert kinds.count("softmax") == kinds.count("layernorm") == kinds.count("gelu") == 1
    gelu = next(op for op in enc.ops if op["type"] == "gelu")
    assert sorted(gelu["onnx"]) == ["Add", "Div", "Erf", "Mul", "Mul"]
    scores, context = (op for op in enc.ops if op["type"] == "matmul")
    assert scores["flops"] == 2 * (6 * 6) * 8 and context["flops"] == 2 * (6 * 8) * 6
    linears = 4 * 2 * (6 * 8) * 8 + 2 * 2 * (6 * 16) * 8
    assert enc.total("flops") == linears + scores["flops"] + context["flops"]


def test_features_are_additive_per_op_type(tmp_path: Path) -> None:
    enc = encode_model(onnx.load(export(ConvZoo(), (1, 8, 16, 16), tmp_path / "c.onnx")), "x")
    flat, nodes, adj = features(enc)
    full = linear(flat[None])[0]
    assert (full[3 * K:] == 0).all()  # every kernel is 3x3 or 1x1: no kernel sub-type columns
    lin = full[:3 * K].reshape(3, K)
    dw = OP_TYPES.index("conv_dw")
    assert lin[0, dw] == pytest.approx(2 * 8 * 16 * 16 * 9 / LINEAR_UNITS[0], rel=1e-5)
    assert lin[2, dw] == pytest.approx(1 / LINEAR_UNITS[2], rel=1e-5)
    assert lin[0].sum() * LINEAR_UNITS[0] == pytest.approx(enc.total("flops"), rel=1e-5)
    moved = enc.total("bytes_read") + enc.total("bytes_written")
    assert lin[1].sum() * LINEAR_UNITS[1] == pytest.approx(moved, rel=1e-5)
    assert nodes[dw, dw] == 1 and nodes[OP_TYPES.index("gelu")].sum() == 0
    assert adj[dw, OP_TYPES.index("conv_pw")] == 1 and adj.sum() == len(enc.edges)


class BigKernels(nn.Module):
    """A 7x7 stem, depthwise 3x3, 5x5 and 7x7, a grouped 5x5: the kernel sizes a runtime may specialise on."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 7, stride=2, padding=3)
        self.dw3 = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.dw5 = nn.Conv2d(8, 8, 5, padding=2, groups=8)
        self.dw7 = nn.Conv2d(8, 8, 7, padding=3, groups=8)
        self.gr5 = nn.Conv2d(8, 8, 5, padding=2, groups=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gr5(self.dw7(self.dw5(self.dw3(self.stem(x)))))


def test_convolutions_beyond_3x3_get_kernel_columns(tmp_path: Path) -> None:
    """Each convolution with a kernel beyond 3x3 counts its FLOPs and bytes once more in its (type, kernel
    bucket) column, after the per-type ones; 3x3 kernels only in their type's."""
    enc = encode_model(onnx.load(export(BigKernels(), (1, 3, 32, 32), tmp_path / "k.onnx")), "x")
    lin = linear(features(enc)[0][None])[0]
    convs = [op for op in enc.ops if op["type"].startswith("conv")]
    assert [op["type"] for op in convs] == ["conv", "conv_dw", "conv_dw", "conv_dw", "conv_group"]
    stem, dw3, dw5, dw7, gr5 = convs
    flops, moved = lin[3 * K:3 * K + N_KERNEL], lin[3 * K + N_KERNEL:3 * K + 2 * N_KERNEL]
    col = {name: i for i, name in enumerate(KERNEL_NAMES)}
    assert flops[col["conv_klarge"]] == pytest.approx(stem["flops"] / LINEAR_UNITS[0], rel=1e-5)
    assert flops[col["conv_dw_k5"]] == pytest.approx(dw5["flops"] / LINEAR_UNITS[0], rel=1e-5)
    assert flops[col["conv_dw_klarge"]] == pytest.approx(dw7["flops"] / LINEAR_UNITS[0], rel=1e-5)
    assert flops[col["conv_group_k5"]] == pytest.approx(gr5["flops"] / LINEAR_UNITS[0], rel=1e-5)
    assert flops[col["conv_k5"]] == 0 and flops[col["conv_group_klarge"]] == 0
    assert moved[col["conv_dw_k5"]] * LINEAR_UNITS[1] == pytest.approx(dw5["bytes_read"] + dw5["bytes_written"],
                                                                       rel=1e-5)
    # the per-type column still holds every depthwise conv, the 3x3 one included
    dw = OP_TYPES.index("conv_dw")
    assert lin[dw] * LINEAR_UNITS[0] == pytest.approx(dw3["flops"] + dw5["flops"] + dw7["flops"], rel=1e-5)


def _bad_conv_model() -> onnx.ModelProto:
    """A Conv whose weight expects 4 input channels on a 3-channel input."""
    w = numpy_helper.from_array(np.zeros((8, 4, 3, 3), np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv1")
    graph = helper.make_graph([node], "bad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 6, 6])], initializer=[w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _custom_op_model() -> onnx.ModelProto:
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Einsum", ["r"], ["y"], name="e1",
                                                                          equation="ij->ji")]
    graph = helper.make_graph(nodes, "custom", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_malformed_or_unsupported_graph_names_the_operator(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as err:
        encode_model(_bad_conv_model(), "x", label="bad.onnx")
    assert "\n" not in str(err.value) and "Conv" in str(err.value) and "bad.onnx" in str(err.value)
    with pytest.raises(UsageError, match=r"operator Einsum \(node 'e1'\) is not supported") as err:
        encode_model(_custom_op_model(), "x")
    assert "\n" not in str(err.value)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(UsageError, match=r"junk\.onnx"):
        encode_file(tmp_path / "junk.onnx", cache_dir=tmp_path / "cache")


def test_cache_is_keyed_by_sha256(tmp_path: Path) -> None:
    path = export(ConvZoo(), (1, 8, 16, 16), tmp_path / "c.onnx")
    cache = tmp_path / "cache"
    first = encode_file(path, cache_dir=cache)
    stored = cache / f"{first.sha256}.json.gz"
    assert stored.exists() and not [p for p in cache.iterdir() if p.name.startswith(".")]
    # a second call reads the stored encoding instead of re-encoding: doctor it and see it come back
    first.ops[0]["flops"] = 123
    stored.write_bytes(first.to_json())
    assert encode_file(path, cache_dir=cache).ops[0]["flops"] == 123


# ------------------------------------------------------------------------------------------- end to end


def _net(width: int, depth: int) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1), nn.ReLU()]
    for _ in range(depth):
        layers += [nn.Conv2d(width, width, 3, padding=1, groups=width), nn.Hardswish(), nn.Conv2d(width, width, 1)]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10)]
    return nn.Sequential(*layers)


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(models dir, dataset, fast profile): 8 small ONNX files measured by a real `hwlat measure --models`."""
    root = tmp_path_factory.mktemp("graph-e2e")
    models = root / "models"
    models.mkdir()
    torch.manual_seed(0)
    for i, (w, d) in enumerate([(8, 1), (16, 1), (8, 2), (24, 2), (16, 3), (32, 1), (12, 2), (8, 3)]):
        export(_net(w, d), (1, 3, 32, 32), models / f"net{i}.onnx")
    profile = root / "fast.toml"
    profile.write_text(f'name = "fastlocal"\nhost = "local"\nworkdir = "{root / "agent"}"\nthreads = 1\n'
                       "[timing]\nwarmup_min_runs = 2\nwarmup_min_s = 0.0\nmin_runs = 5\nmin_time_s = 0.0\n"
                       "max_runs = 20\nmax_time_s = 0.5\n")
    data = root / "ds"
    hwlat("measure", "--device", str(profile), "--models", str(models), "--out", str(data), env_root=root)
    return models, data, profile


def hwlat(*args: str, env_root: Path, rc: int = 0) -> subprocess.CompletedProcess:
    env = {**__import__("os").environ, "HWLAT_GRAPH_CACHE": str(env_root / "graph-cache")}
    proc = subprocess.run([sys.executable, "-m", "hwlat", *args], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=300, check=False)
    assert proc.returncode == rc, proc.stderr[-2000:]
    return proc


def test_measure_models_then_train_and_predict_through_the_cli(measured: tuple[Path, Path, Path],
                                                               tmp_path: Path) -> None:
    models, data, _ = measured
    rows = pd.read_parquet(data)
    assert len(rows) == 8 and set(rows["search_space"].astype(str)) == {"onnx"}
    graphs = sorted(p.name for p in (data / DATASET_GRAPHS).iterdir())
    assert graphs == sorted(f"{sha}.json.gz" for sha in rows["model_sha256"])  # one encoding per measured model
    # the dataset carries what training needs: train on a copy without the model files around
    model = tmp_path / "m.pt"
    hwlat("predictor", "train", "--data", str(data), "--out", str(model), "--steps", "40", env_root=tmp_path)
    out = tmp_path / "pred.parquet"
    proc = hwlat("predictor", "predict", "--model", str(model), "--device", "fastlocal", "--models", str(models),
                 "--out", str(out), env_root=tmp_path)
    assert "predicted 8 ONNX models" in proc.stdout
    pred = pd.read_parquet(out)
    assert pred["arch"].tolist() == [f"net{i}" for i in range(8)]
    assert (pred["latency_ms"] > 0).all() and (pred["log_std"] >= 0).all()
    assert set(pred["model_sha256"]) == set(rows["model_sha256"]) and set(pred["search_space"]) == {"onnx"}

    # the Python API takes ONNX paths; a transfer from 4 measured files adds a device
    p = predictor.load(model)
    files = sorted(models.glob("*.onnx"))
    ms, std = p.predict_with_uncertainty(files, "fastlocal")
    assert np.allclose(ms, pred["latency_ms"].to_numpy(), rtol=1e-5) and (std >= 0).all()
    lat = rows.set_index("arch").loc[[f.stem for f in files], "latency_ms"].to_numpy()
    info = p.transfer("board", [str(f) for f in files[:4]], 3.0 * lat[:4])
    assert info["best_source"] == "fastlocal"
    on_board = p.predict(files, "board")
    assert on_board.shape == (8,) and (on_board > 0).all()
    assert set(p.suggest("board", 2, candidates=files, measured=files[:4])) <= {str(f) for f in files[4:]}
    with pytest.raises(UsageError, match="ONNX files or arch strings"):
        p.predict([str(files[0]), "|nor_conv_3x3~0|"], "fastlocal")


def test_any_space_without_an_encoder_trains_from_its_graphs(measured: tuple[Path, Path, Path],
                                                             tmp_path: Path) -> None:
    """Rows of a space neither hwlat.spaces nor the predictor knows (here relabelled 'zoo') train a graph model
    from their graphs, which a fresh process loads and queries with ONNX files. (Spaces hwlat can build, such as
    ofa, are traced from their arch strings instead: tests/test_predictor_traced.py.)"""
    models, data, _ = measured
    folder = tmp_path / "zoo"
    shutil.copytree(data / DATASET_GRAPHS, folder / DATASET_GRAPHS)
    pd.read_parquet(data).assign(search_space="zoo").to_parquet(folder / "rows.parquet", index=False)
    model = tmp_path / "zoo.pt"
    assert main(["predictor", "train", "--data", str(folder / "rows.parquet"), "--out", str(model),
                 "--steps", "20"]) == 0
    assert predictor.load(model).spaces() == ["zoo"]
    out = tmp_path / "p.parquet"
    hwlat("predictor", "predict", "--model", str(model), "--device", "fastlocal", "--space", "zoo", "--models",
          str(models), "--out", str(out), env_root=tmp_path)
    assert len(pd.read_parquet(out)) == 8


def test_graph_errors_exit_2_with_one_line(measured: tuple[Path, Path, Path], tmp_path: Path) -> None:
    models, data, _ = measured
    # a dataset whose graph encodings are gone cannot train the graph predictor
    bare = tmp_path / "bare"
    bare.mkdir()
    pd.read_parquet(data).to_parquet(bare / "rows.parquet")
    proc = hwlat("predictor", "train", "--data", str(bare / "rows.parquet"), "--out", str(tmp_path / "m.pt"),
                 env_root=tmp_path, rc=2)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no graph encoding" in lines[0] and not (tmp_path / "m.pt").exists()
    # a malformed model among the files: one line naming the operator
    bad = tmp_path / "bad"
    bad.mkdir()
    onnx.save(_bad_conv_model(), bad / "broken.onnx")
    nb201 = tmp_path / "nb.pt"
    assert main(["predictor", "train", "--data", str(FIXTURE), "--out", str(nb201), "--steps", "20"]) == 0
    proc = hwlat("predictor", "predict", "--model", str(nb201), "--device", "dev1", "--models", str(bad), "--out",
                 str(tmp_path / "p.parquet"), env_root=tmp_path, rc=2)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "broken.onnx" in lines[0] and "Conv" in lines[0]
    # good files, but the model was trained on NB201 arch strings only
    proc = hwlat("predictor", "predict", "--model", str(nb201), "--device", "dev1", "--models", str(models),
                 "--out", str(tmp_path / "p.parquet"), env_root=tmp_path, rc=2)
    assert "no graph-encoded space" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_bench_ignores_spaces_the_tasks_do_not_use(tmp_path: Path) -> None:
    mixed = pd.concat([pd.read_parquet(FIXTURE),
                       pd.DataFrame([{"search_space": "darts", "arch": "whatever", "device": "dev0",
                                      "latency_ms": 1.0, "status": "ok"}])])
    path = tmp_path / "mixed.parquet"
    mixed.to_parquet(path, index=False)
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps({"tasks": [{"search_space": "nasbench201", "paper_name": "T1",
                                            "train_devices": ["dev0", "dev1", "dev2"], "test_devices": ["dev4"]}]}))
    assert main(["predictor", "train", "--data", str(path), "--out", str(tmp_path / "m.pt")]) == 2  # darts: unknown
    assert main(["predictor", "bench", "--data", str(path), "--tasks", str(tasks), "--samples", "5", "--seeds", "1",
                 "--steps", "20", "--json", str(tmp_path / "b.json")]) == 0
    assert np.isfinite(json.loads((tmp_path / "b.json").read_text())["tasks"]["T1"]["spearman"])


def test_graph_encoder_is_a_space_encoder() -> None:
    enc = GraphEncoder()
    assert enc.encode([enc.example()]).flat.shape[1] == FLAT_DIM == 4 * K + 5 + 2 * N_KERNEL + N_DEAD
    with pytest.raises(UsageError, match="no graph encoding"):
        enc.encode(["0" * 64])
