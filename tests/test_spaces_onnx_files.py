"""Models the user brings: scanning a directory of ONNX files."""

import hashlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from agents.errors import UsageError
from harness.onnx_files import ShapeRequest, onnx_flops, parse_input_shape, scan_models


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
