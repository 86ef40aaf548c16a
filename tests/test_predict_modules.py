"""torch modules in the Python API: ``predictor.load(...).predict([module], device, input_shapes={...})`` encodes a
``torch.nn.Module`` with the tracer the built-in spaces use (``hwlat.spaces.trace.trace_module``), so a module and
its ONNX export predict the same latency; a module declares no inputs, so one without a shape is refused; and the
prediction Parquet records the network and the input shapes it was predicted at (``model_key``,
``input_shapes_json``), as the measured rows of that network record them.

Real modules (a small CNN with BN, depthwise conv and h-swish; a pre-norm attention block with GELU MLP), their real
ONNX exports (the harness's exporter settings), the shipped pretrained predictor (its ``ofa`` and ``autoformer``
spaces are graph-encoded), one real `hwlat measure --models` run and the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from profiles import fast_profile
from test_predict_shapes import hwlat

import predictor
from agents.errors import UsageError
from hwlat.spaces.graph import encode_file
from predictor.api import BUNDLED_MODEL, encode_networks
from predictor.predictions import write_predictions

DEVICE = "epyc2c-ort-t1"
D = 32  # attention width


class TinyCNN(torch.nn.Module):
    """conv-BN-ReLU, depthwise conv-BN-h-swish, pointwise conv, global pool, classifier."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.c1, self.b1 = torch.nn.Conv2d(3, width, 3, padding=1), torch.nn.BatchNorm2d(width)
        self.dw = torch.nn.Conv2d(width, width, 3, stride=2, padding=1, groups=width, bias=False)
        self.b2 = torch.nn.BatchNorm2d(width)
        self.pw = torch.nn.Conv2d(width, 2 * width, 1)
        self.fc = torch.nn.Linear(2 * width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.b1(self.c1(x)))
        x = torch.nn.functional.hardswish(self.b2(self.dw(x)))
        x = torch.nn.functional.adaptive_avg_pool2d(self.pw(x), 1)
        return self.fc(torch.flatten(x, 1))


class Attention(torch.nn.Module):
    """Pre-norm self-attention and a GELU MLP, on [batch, seq, D]."""

    def __init__(self) -> None:
        super().__init__()
        self.ln = torch.nn.LayerNorm(D)
        self.q, self.k, self.v = (torch.nn.Linear(D, D) for _ in range(3))
        self.mlp = torch.nn.Sequential(torch.nn.Linear(D, 4 * D), torch.nn.GELU(), torch.nn.Linear(4 * D, D))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln(x)
        x = x + torch.softmax(self.q(h) @ self.k(h).transpose(1, 2) / D ** 0.5, dim=-1) @ self.v(h)
        return x + self.mlp(x)


class CrossAttention(torch.nn.Module):
    """Two inputs, so ``input_shapes`` must name them (``forward``'s argument names)."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.kv = torch.nn.Linear(D, D), torch.nn.Linear(D, 2 * D)

    def forward(self, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        k, v = self.kv(memory).chunk(2, dim=-1)
        return torch.softmax(self.q(query) @ k.transpose(1, 2), dim=-1) @ v


class TokenClassifier(torch.nn.Module):
    """Integer token ids in: an embedding table, the attention block, mean over the sequence, a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.emb, self.block, self.head = torch.nn.Embedding(500, D), Attention(), torch.nn.Linear(D, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.emb(ids)).mean(1))


def _export(module: torch.nn.Module, shape: tuple[int, ...], path: Path, dynamic: dict | None = None) -> Path:
    """The harness's exporter settings (TorchScript exporter, opset 17), input named ``x``."""
    torch.onnx.export(module, (torch.randn(*shape),), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes=dynamic, opset_version=17, dynamo=False)
    return path


@pytest.fixture(scope="module")
def bundled() -> predictor.Predictor:
    return predictor.load(BUNDLED_MODEL)


@pytest.fixture(scope="module")
def nets(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A CNN and an attention block (in train mode, as a user may hand them over) and their ONNX exports."""
    folder = tmp_path_factory.mktemp("modules")
    torch.manual_seed(0)
    cnn, attn = TinyCNN().train(), Attention().train()
    return {"cnn": cnn, "attn": attn,
            "cnn.onnx": _export(cnn, (1, 3, 32, 32), folder / "cnn.onnx"),
            "attn.onnx": _export(attn, (1, 16, D), folder / "attn.onnx", {"x": {1: "seq"}, "y": {1: "seq"}})}


@pytest.fixture(autouse=True)
def _graph_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "graph-cache"
    monkeypatch.setenv("HWLAT_GRAPH_CACHE", str(cache))
    return cache


CASES = (("cnn", "ofa", {"x": (1, 3, 32, 32)}), ("attn", "autoformer", {"x": (1, 16, D)}))


@pytest.mark.parametrize(("name", "space", "shapes"), CASES)
def test_a_module_predicts_as_its_onnx_export(bundled: predictor.Predictor, nets: dict, name: str, space: str,
                                              shapes: dict, _graph_cache: Path) -> None:
    """The traced module and the exported graph are the same operators, edges, FLOPs and bytes; the one difference
    by design is parameters (the tracer counts BatchNorm's affine vectors, as the dataset's ``params`` does; the
    export folds BN into the conv), so a CNN's predictions agree within 0.5 %, a block without BN's within 1e-4."""
    module, path = nets[name], nets[f"{name}.onnx"]
    before = {k: v.clone() for k, v in module.state_dict().items()}
    traced, exported = encode_networks([module, path], input_shapes=shapes)
    assert [op["type"] for op in traced.ops] == [op["type"] for op in exported.ops]
    assert traced.edges == exported.edges
    assert [op["inputs"] for op in traced.ops] == [op["inputs"] for op in exported.ops]
    assert traced.total("flops") == exported.total("flops") > 0
    assert traced.total("bytes_written") == exported.total("bytes_written")
    assert traced.total("bytes_read") == pytest.approx(exported.total("bytes_read"), rel=1e-3)
    # BN after a conv: torch counts its weight and bias (2C); the export folds it into the conv, whose bias (C) is
    # the conv's own where it had one (c1) and new where not (dw): 2*16 + 2*16 - 16 for the CNN
    assert traced.total("params") == sum(p.numel() for p in module.parameters())
    assert traced.total("params") - exported.total("params") == {"cnn": 48, "attn": 0}[name]
    assert traced.key.startswith("torch-") and traced.inputs == exported.inputs == {"x": list(shapes["x"])}

    for device in bundled.devices(space):
        (ms_m, ms_f), (sd_m, sd_f) = bundled.predict_with_uncertainty([module, path], device, space,
                                                                      input_shapes=shapes)
        assert ms_m == pytest.approx(ms_f, rel=5e-3 if name == "cnn" else 1e-4), device
        assert sd_m == pytest.approx(sd_f, rel=5e-3 if name == "cnn" else 1e-4), device

    # the module is left as it was handed over: train mode, its weights untouched; nothing of it cached on disk
    assert module.training and all(m.training for m in module.modules())
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    assert sorted(p.name for p in _graph_cache.iterdir()) == [f"{exported.key}.json.gz"]


def test_two_input_shapes_of_one_module_are_two_networks(bundled: predictor.Predictor, nets: dict) -> None:
    """Each shape is traced as its own network (own key, FLOPs of that size), and the larger predicts slower."""
    for name, space, small, large in (("cnn", "ofa", (1, 3, 32, 32), (1, 3, 128, 128)),
                                      ("attn", "autoformer", (1, 16, D), (1, 256, D))):
        module = nets[name]
        lo, = encode_networks([module], {"x": small})
        hi, = encode_networks([module], {"x": large})
        again, = encode_networks([module], {"x": list(large)})
        assert lo.key != hi.key == again.key  # a digest of what was traced: the same network, the same key
        assert hi.total("flops") > 4 * lo.total("flops")
        for device in bundled.devices(space):
            ms_lo, = bundled.predict([module], device, space, input_shapes={"x": small})
            ms_hi, = bundled.predict([module], device, space, input_shapes={"x": large})
            assert ms_hi > ms_lo, (name, device, ms_lo, ms_hi)


def test_a_module_needs_its_input_shapes(bundled: predictor.Predictor, nets: dict, _graph_cache: Path) -> None:
    """A module declares no inputs: without a shape for each forward argument it is refused with one line."""
    cnn = nets["cnn"]

    def refused(*args: object, **kwargs: object) -> str:
        with pytest.raises(UsageError) as info:
            bundled.predict(*args, **kwargs)
        msg = str(info.value)
        assert "\n" not in msg, msg
        return msg

    assert refused([cnn], DEVICE, "ofa") == ("torch module TinyCNN declares no input shapes: give the full shape "
                                             "of its forward argument x with input_shapes={'x': (...)}")
    assert "batch and resolution size dynamic dimensions of ONNX files" in refused([cnn], DEVICE, "ofa", batch=4)
    assert "not both" in refused([cnn, "some-arch"], DEVICE, "ofa")
    assert "takes arch strings, not networks" in refused([cnn], DEVICE, "nb201", input_shapes={"x": (1, 3, 8, 8)})
    assert "several graph-encoded spaces" in refused([cnn], DEVICE, input_shapes={"x": (1, 3, 8, 8)})
    # two inputs: each by its forward argument name; a missing one and a name nothing has are refused
    cross = CrossAttention()
    both = {"query": (1, 4, D), "memory": (1, 64, D)}
    assert "forward arguments memory with input_shapes={'query': (...), 'memory': (...)}" in refused(
        [cross], DEVICE, "autoformer", input_shapes={"query": (1, 4, D)})
    assert "--input-shape x: no model in the given networks" in refused(
        [cross], DEVICE, "autoformer", input_shapes={**both, "x": (1, 4, D)})
    short, = bundled.predict([cross], DEVICE, "autoformer", input_shapes=both)
    long, = bundled.predict([cross], DEVICE, "autoformer", input_shapes={**both, "memory": (1, 1024, D)})
    assert 0 < short < long
    # a single-input module takes the only shape given, whatever its name: one dict serves a module and its export
    assert bundled.predict([cnn], DEVICE, "ofa", input_shapes={"input": (1, 3, 32, 32)}) == pytest.approx(
        bundled.predict([cnn], DEVICE, "ofa", input_shapes={"x": (1, 3, 32, 32)}))
    # a module that fails at that shape is one line naming it
    assert refused([cnn], DEVICE, "ofa", input_shapes={"x": (1, 5, 32, 32)}).startswith(
        "cannot trace torch module TinyCNN at input shapes {\"x\": [1, 5, 32, 32]}: RuntimeError: ")
    # a function the tracer has no operator type for: one line naming the module and the function
    assert refused([Flipped()], DEVICE, "ofa", input_shapes={"x": (1, 3, 8, 8)}) == (
        "torch module Flipped: operator flip is not supported by the graph encoder's tracer (hwlat.spaces.trace)")
    assert not _graph_cache.exists()


class Flipped(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(-1)


class Scaled(torch.nn.Module):
    """Holds a plain CPU tensor (not a buffer): it cannot run on the meta device, so it is run on zeros instead."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.scale = torch.nn.Conv2d(3, 8, 3), torch.full((8, 1, 1), 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * self.scale


def test_a_module_that_cannot_run_on_meta_is_traced_on_zeros(tmp_path: Path) -> None:
    module = Scaled()
    with pytest.raises(RuntimeError, match="device"):
        module(torch.empty(1, 3, 16, 16, device="meta"))
    traced, = encode_networks([module], {"x": (1, 3, 16, 16)})
    exported, = encode_networks([_export(module, (1, 3, 16, 16), tmp_path / "scaled.onnx")], {"x": (1, 3, 16, 16)})
    assert [op["type"] for op in traced.ops] == [op["type"] for op in exported.ops] == ["conv", "eltwise"]
    assert traced.total("flops") == exported.total("flops") == 2 * 8 * 14 * 14 * 3 * 9
    assert traced.total("bytes_read") == exported.total("bytes_read")


def test_modules_transfer_and_are_suggested(nets: dict) -> None:
    """A new device from measured modules; ``suggest`` over module candidates answers with the modules."""
    p = predictor.load(BUNDLED_MODEL)
    torch.manual_seed(1)
    pool = [TinyCNN(w) for w in (8, 12, 16, 24, 32, 48)]
    shapes = {"x": (1, 3, 64, 64)}
    p.transfer("board", pool[:4], [1.0, 1.4, 2.0, 3.5], "ofa", input_shapes=shapes)
    ms = p.predict(pool, "board", "ofa", input_shapes=shapes)
    assert ms.shape == (6,) and (ms > 0).all()
    picks = p.suggest("board", 3, "random", measured=pool[:2], candidates=pool, space="ofa", input_shapes=shapes)
    assert len(picks) == 3 and all(any(m is q for q in pool[2:]) for m in picks)  # the module objects, none measured


def test_the_prediction_parquet_records_the_shapes(bundled: predictor.Predictor, nets: dict,
                                                   tmp_path: Path) -> None:
    """`predict --models DIR --input-shape` rows carry ``model_key`` and ``input_shapes_json`` equal to the rows
    `hwlat measure --models DIR` with the same flag wrote for that file; a module's table row (the API's
    ``prediction_table``) carries its shapes in the same form and its trace digest as ``model_key``."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "attn.onnx").write_bytes(nets["attn.onnx"].read_bytes())
    flag = f"x=1x64x{D}"
    data = tmp_path / "ds"
    hwlat("measure", "--device", str(fast_profile(tmp_path)), "--models", str(models), "--out", str(data),
          "--input-shape", flag, root=tmp_path)
    row = pd.read_parquet(data).iloc[0]
    out = tmp_path / "pred.parquet"
    proc = hwlat("predictor", "predict", "--model", str(BUNDLED_MODEL), "--device", DEVICE, "--space", "autoformer",
                 "--models", str(models), "--input-shape", flag, "--out", str(out), "--json", root=tmp_path)
    pred = pd.read_parquet(out).iloc[0]
    summary = json.loads(proc.stdout)
    assert (summary["space"], summary["archs"], summary["out"]) == ("autoformer", 1, str(out))
    assert summary["median_ms"] == pytest.approx(pred["latency_ms"])
    assert pred["arch"] == row["arch"] == "attn"
    assert pred["model_sha256"] == row["model_sha256"]
    assert pred["model_key"] == row["model_key"] != row["model_sha256"]  # a dynamic file at a size of its own
    assert pred["input_shapes_json"] == row["input_shapes_json"] == json.dumps({"x": [1, 64, D]}, separators=(",", ":"))
    assert pred["flops"] == row["flops"] == encode_file(models / "attn.onnx", input_shapes={"x": [1, 64, D]}
                                                        ).total("flops")

    # the module and its file in one table, written and read back through the one writer
    table = bundled.prediction_table([nets["attn"], models / "attn.onnx"], DEVICE, "autoformer",
                                     input_shapes={"x": (1, 64, D)})
    write_predictions(tmp_path / "api.parquet", table)
    both = pd.read_parquet(tmp_path / "api.parquet")
    assert list(both["arch"]) == ["Attention", "attn"]
    assert list(both["input_shapes_json"]) == [row["input_shapes_json"]] * 2
    assert both["model_key"][0].startswith("torch-") and both["model_key"][1] == row["model_key"]
    assert both["model_sha256"].isna().tolist() == [True, False] and both["path"].isna().tolist() == [True, False]
    assert both["latency_ms"][1] == pytest.approx(pred["latency_ms"], rel=1e-6)
    assert both["latency_ms"][0] == pytest.approx(both["latency_ms"][1], rel=1e-4)
    assert np.isfinite(both["log_std"]).all() and both["flops"][0] == both["flops"][1]


def test_a_module_with_integer_inputs_is_traced_at_the_example_tensors_dtype(bundled: predictor.Predictor,
                                                                              tmp_path: Path) -> None:
    """Token ids are integers: an example tensor in ``input_shapes`` gives the dtype (a shape alone traces float
    inputs, which an embedding refuses: one line that says what to give), and the module predicts as its export."""
    module = TokenClassifier()
    ids = torch.zeros(1, 12, dtype=torch.long)
    path = tmp_path / "tokens.onnx"
    torch.onnx.export(module, (ids,), str(path), input_names=["ids"], output_names=["y"], opset_version=17,
                      dynamo=False)
    traced, exported = encode_networks([module, path], input_shapes={"ids": ids})
    assert [op["type"] for op in traced.ops] == [op["type"] for op in exported.ops] and traced.ops[0]["type"] == "slice"
    assert traced.edges == exported.edges
    for total in ("flops", "bytes_written", "params"):
        assert traced.total(total) == exported.total(total) > 0, total
    assert traced.total("bytes_read") == pytest.approx(exported.total("bytes_read"), rel=1e-3)
    assert traced.inputs == exported.inputs == {"ids": [1, 12]}
    ms = bundled.predict([module, path], "epyc2c-ort-t1", "autoformer", input_shapes={"ids": ids})
    assert ms[0] == pytest.approx(ms[1], rel=1e-4) and ms[0] > 0

    with pytest.raises(UsageError) as info:
        bundled.predict([module], "epyc2c-ort-t1", "autoformer", input_shapes={"ids": (1, 12)})
    msg = str(info.value)
    assert "\n" not in msg and "embedding" in msg and "example tensor" in msg and "input ids was float32" in msg
