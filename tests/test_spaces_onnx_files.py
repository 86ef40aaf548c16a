"""Models the user brings: scanning a directory of ONNX files."""

import hashlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from agents.errors import UsageError
from harness.onnx_files import ShapeRequest, onnx_flops, scan_models
from hwlat.spaces.shapes import parse_input_shape


def _tiny_model(batch_dim="N") -> onnx.ModelProto:
    """Conv(3->8, 3x3, pad 1) on 3x16x16 -> GlobalAveragePool -> Flatten -> Gemm(8->5)."""
    w = numpy_helper.from_array(np.zeros((8, 3, 3, 3), np.float32), "w")
    fc = numpy_helper.from_array(np.zeros((5, 8), np.float32), "fc")
    fc_b = numpy_helper.from_array(np.zeros((5,), np.float32), "fc_b")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc", "fc_b"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch_dim, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch_dim, 5])],
        initializer=[w, fc, fc_b],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_scan_reads_shapes_hash_flops_params(tmp_path):
    onnx.save(_tiny_model(4), tmp_path / "b_other.onnx")
    onnx.save(_tiny_model(2), tmp_path / "a_static.onnx")
    (tmp_path / "notes.txt").write_text("ignored")
    arts = scan_models(tmp_path)
    assert [a.arch for a in arts] == ["a_static", "b_other"]
    static, other = arts
    assert static.search_space == "onnx" and static.format == "onnx"
    assert static.sha256 == hashlib.sha256((tmp_path / "a_static.onnx").read_bytes()).hexdigest()
    assert static.input_shapes == static.feed_shapes == {"x": [2, 3, 16, 16]}
    assert (static.batch, static.resolution, static.opset) == (2, 16, 17)
    assert static.params == 8 * 3 * 9 + 5 * 8 + 5
    assert static.flops == 2 * (2 * 8 * 16 * 16 * 27 + 2 * 5 * 8)
    assert other.flops == 2 * static.flops


def test_dynamic_dimension_is_sized_or_refused(tmp_path):
    onnx.save(_tiny_model("N"), tmp_path / "dyn.onnx")
    with pytest.raises(UsageError, match=r"dyn\.onnx: input 'x' has dynamic dimension 'N' \(axis 0"):
        scan_models(tmp_path)
    static_flops = 2 * (2 * 8 * 16 * 16 * 27 + 2 * 5 * 8)
    for request in (ShapeRequest(batch=2), ShapeRequest({"x": [2, 3, 16, 16]})):
        (art,) = scan_models(tmp_path, request)
        assert art.input_shapes == art.feed_shapes == {"x": [2, 3, 16, 16]} and art.batch == 2
        assert art.flops == static_flops
    # a fixed size contradicted, a wrong rank, an input no model has, a resolution the model fixes: refused
    bad = [
        (ShapeRequest({"x": [2, 3, 8, 8]}), r"fixed size 16 in dimension 2"),
        (ShapeRequest({"x": [2, 3]}), r"2 dimensions given, the input has 4"),
        (ShapeRequest({"y": [1, 3, 16, 16]}, batch=1), r"--input-shape y: no model"),
        (ShapeRequest(batch=1, resolution=32), r"--resolution 32 cannot apply"),
        (ShapeRequest({"x": [2, 3, 16, 16]}, batch=3), r"--input-shape says 2, --batch says 3"),
    ]
    for request, needle in bad:
        with pytest.raises(UsageError, match=needle):
            scan_models(tmp_path, request)
    onnx.save(_tiny_model(2), tmp_path / "dyn.onnx")
    with pytest.raises(UsageError, match=r"fixed size 2 in dimension 0 .*--batch 4 cannot apply"):
        scan_models(tmp_path, ShapeRequest(batch=4))
    assert scan_models(tmp_path, ShapeRequest(batch=2, resolution=16))[0].input_shapes == {"x": [2, 3, 16, 16]}


def test_parse_input_shape():
    assert parse_input_shape("input_ids=1x64") == ("input_ids", [1, 64])
    assert parse_input_shape("a=b=2X3") == ("a=b", [2, 3])
    for text in ("x", "=1x2", "x=1x0", "x=1xa", "x="):
        with pytest.raises(UsageError, match="--input-shape"):
            parse_input_shape(text)


def test_flops_none_when_shapes_unknown():
    model = _tiny_model(2)
    model.graph.initializer.pop(0)  # conv weight no longer known
    assert onnx_flops(model) is None


def test_unreadable_file_names_the_file(tmp_path):
    onnx.save(_tiny_model(1), tmp_path / "good.onnx")
    (tmp_path / "broken.onnx").write_bytes(b"\x00\x01 definitely not protobuf \xff" * 10)
    with pytest.raises(UsageError, match=r"broken\.onnx"):
        scan_models(tmp_path)


def test_empty_or_missing_directory(tmp_path):
    with pytest.raises(UsageError, match=r"no \*\.onnx"):
        scan_models(tmp_path)
    with pytest.raises(UsageError, match="not a directory"):
        scan_models(tmp_path / "missing")


def _shuffle_block():
    """ShuffleNet V2's stride-1 unit (torchvision's ``InvertedResidual``) and a linear head: ``x.chunk(2, dim=1)``,
    1x1 / depthwise 3x3 / 1x1 convs on one half, concat, channel shuffle (view, transpose, view). Exported, the
    chunk is Shape -> Gather -> Div -> Slice: plain ONNX shape inference knows no shape after it."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.branch = nn.Sequential(nn.Conv2d(8, 8, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8),
                                        nn.Conv2d(8, 8, 1), nn.ReLU())
            self.head = nn.Linear(16, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a, b = x.chunk(2, dim=1)
            x = torch.cat((a, self.branch(b)), dim=1)
            n, c, h, w = x.shape
            x = x.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
            return self.head(x.mean((2, 3)))

    return Block().eval()


def test_flops_counted_through_run_time_shape_arithmetic(tmp_path):
    """The ShuffleNet case: FLOPs after a computed Slice are counted, equal to torch's count of the module."""
    import warnings

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from harness.export import torch_flops_params

    module, x = _shuffle_block(), torch.randn(2, 16, 12, 12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), str(tmp_path / "shuffle.onnx"), opset_version=17, dynamo=False,
                          do_constant_folding=True, input_names=["input"], output_names=["output"])
    with FlopCounterMode(display=False) as counter:
        module(x)
    model = onnx.load(tmp_path / "shuffle.onnx")
    assert {"Shape", "Slice", "Transpose"} <= {n.op_type for n in model.graph.node}
    assert onnx_flops(model) == torch_flops_params(module, x)[0] == counter.get_total_flops() > 0
    assert scan_models(tmp_path)[0].flops == counter.get_total_flops()


def _with_node(node: onnx.NodeProto, extra: list) -> onnx.ModelProto:
    """``_tiny_model`` with one more node reading the Gemm output ``y`` (and the initializers ``extra``)."""
    model = _tiny_model(1)
    model.graph.node.append(node)
    model.graph.initializer.extend(extra)
    del model.graph.output[:]
    model.graph.output.extend([helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, None)])
    return model


def test_operators_without_arithmetic_count_zero_and_uncounted_ones_blank_with_a_warning(caplog):
    base = onnx_flops(_tiny_model(1))
    assert base == 2 * (8 * 16 * 16 * 3 * 9 + 5 * 8)
    k = numpy_helper.from_array(np.array([2], np.int64), "k")
    topk = helper.make_node("TopK", ["y", "k"], ["top", "idx"], name="pick")  # no graph-encoder type, no MACs
    assert onnx_flops(_with_node(topk, [k])) == base
    m = numpy_helper.from_array(np.ones((5, 7), np.float32), "m")
    einsum = helper.make_node("Einsum", ["y", "m"], ["z"], name="mix", equation="bi,ij->bj")  # MACs, no rule
    with caplog.at_level("WARNING", logger="hwlat"):
        assert onnx_flops(_with_node(einsum, [m]), label="mix.onnx") is None
    assert "mix.onnx: flops not counted: operator Einsum (node 'mix') has no FLOPs counting rule" in caplog.text
