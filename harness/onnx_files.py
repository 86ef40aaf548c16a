"""Models the user brings: every ``*.onnx`` file of a directory (``hwlat measure --models DIR``).

Each file becomes a ``ModelArtifact`` with ``search_space="onnx"``, ``arch`` = the file stem, the
sha256 of its bytes, input shapes from the graph inputs and, where shapes allow it, FLOPs and
parameters computed from the graph (same definitions as the exporter, see docs/spaces.md):

- ``params``: elements of all initializers (after export, BatchNorm is usually folded into convs).
- ``flops``: 2 x multiply-accumulates of Conv, ConvTranspose, Gemm and MatMul nodes; None when a
  needed shape cannot be inferred.

Dynamic input dimensions (``batch``, ``N``, ...) are fixed to 1; each one is logged as a warning
on the ``hwlat`` logger, because the model is then measured at that size.
"""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path

import onnx
from onnx import shape_inference

from agents.errors import UsageError
from harness.records import ModelArtifact
from hwlat.spaces import one_line

log = logging.getLogger("hwlat")
SPACE_NAME = "onnx"


def scan_models(directory: str | Path) -> list[ModelArtifact]:
    """One artifact per ``*.onnx`` file in ``directory`` (not recursive), sorted by file name."""
    root = Path(directory)
    if not root.is_dir():
        raise UsageError(f"--models {root}: not a directory")
    files = sorted(p for p in root.glob("*.onnx") if p.is_file())
    if not files:
        raise UsageError(f"--models {root}: no *.onnx files found")
    return [read_model(p) for p in files]


def read_model(path: str | Path) -> ModelArtifact:
    """Artifact for one ONNX file; ``UsageError`` naming the file if it is not a readable model."""
    path = Path(path)
    try:
        data = path.read_bytes()
        model = onnx.load_model_from_string(data)
    except Exception as exc:
        raise UsageError(f"{path}: not a readable ONNX model ({one_line(exc)})") from None
    if not model.graph.node:
        raise UsageError(f"{path}: not an ONNX model (no graph nodes)")
    shapes, dynamic = graph_input_shapes(model)
    if not shapes:
        raise UsageError(f"{path}: the ONNX graph has no inputs")
    for name, dims in dynamic.items():
        log.warning("%s: input '%s' has dynamic dimension(s) %s; measured with 1", path.name, name, dims)
    first = next(iter(shapes.values()))
    return ModelArtifact(
        search_space=SPACE_NAME,
        arch=path.stem,
        path=str(path.resolve()),
        sha256=hashlib.sha256(data).hexdigest(),
        format="onnx",
        input_shapes=shapes,
        batch=first[0] if first else 1,
        resolution=first[-1] if len(first) == 4 else 0,
        flops=onnx_flops(model, shapes),
        params=onnx_params(model),
        opset=_default_opset(model),
    )


def graph_input_shapes(model: onnx.ModelProto) -> tuple[dict[str, list[int]], dict[str, list[str]]]:
    """({input name: shape with dynamic dims set to 1}, {input name: names of its dynamic dims}).

    Graph inputs that are also initializers (older exporters list weights as inputs) are skipped.
    """
    weights = {init.name for init in model.graph.initializer}
    shapes: dict[str, list[int]] = {}
    dynamic: dict[str, list[str]] = {}
    for inp in model.graph.input:
        if inp.name in weights:
            continue
        dims = []
        for i, d in enumerate(inp.type.tensor_type.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(d.dim_value)
            else:
                dims.append(1)
                dynamic.setdefault(inp.name, []).append(d.dim_param or f"dim{i}")
        shapes[inp.name] = dims
    return shapes, dynamic


def onnx_params(model: onnx.ModelProto) -> int:
    """Number of elements in all initializers."""
    return sum(math.prod(init.dims) for init in model.graph.initializer)


def onnx_flops(model: onnx.ModelProto, input_shapes: dict[str, list[int]] | None = None) -> int | None:
    """2 x MACs of Conv/ConvTranspose/Gemm/MatMul nodes, or None when a shape is unknown.

    ``input_shapes`` (dynamic dims already fixed) replace the graph's input dims before shape
    inference; by default they come from ``graph_input_shapes``.
    """
    if input_shapes is None:
        input_shapes = graph_input_shapes(model)[0]
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for inp in fixed.graph.input:
        if inp.name in input_shapes:
            for dim, value in zip(inp.type.tensor_type.shape.dim, input_shapes[inp.name], strict=False):
                dim.Clear()
                dim.dim_value = value
    try:
        inferred = shape_inference.infer_shapes(fixed)
    except Exception:
        return None
    shapes = {init.name: list(init.dims) for init in inferred.graph.initializer}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = [d.dim_value for d in dims]
    macs = 0
    for node in inferred.graph.node:
        counter = _MAC_COUNTERS.get(node.op_type)
        if counter is None:
            continue
        try:
            macs += counter(node, shapes)
        except (KeyError, IndexError, ValueError):
            return None
    return 2 * macs


def _conv_macs(node: onnx.NodeProto, shapes: dict[str, list[int]]) -> int:
    # weight [M, C/group, k...]; output [N, M, spatial...]: each output element does C/group*k MACs.
    weight, out = shapes[node.input[1]], shapes[node.output[0]]
    return math.prod(out) * math.prod(weight[1:])


def _conv_transpose_macs(node: onnx.NodeProto, shapes: dict[str, list[int]]) -> int:
    # weight [C, M/group, k...]; every input element is scattered through M/group * k MACs.
    weight, inp = shapes[node.input[1]], shapes[node.input[0]]
    return math.prod(inp) * math.prod(weight[1:])


def _gemm_macs(node: onnx.NodeProto, shapes: dict[str, list[int]]) -> int:
    a = shapes[node.input[0]]
    trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
    k = a[0] if trans_a else a[1]
    return math.prod(shapes[node.output[0]]) * k


def _matmul_macs(node: onnx.NodeProto, shapes: dict[str, list[int]]) -> int:
    a = shapes[node.input[0]]
    return math.prod(shapes[node.output[0]]) * a[-1]


_MAC_COUNTERS = {
    "Conv": _conv_macs,
    "ConvTranspose": _conv_transpose_macs,
    "Gemm": _gemm_macs,
    "MatMul": _matmul_macs,
}


def _default_opset(model: onnx.ModelProto) -> int | None:
    return next((op.version for op in model.opset_import if op.domain in ("", "ai.onnx")), None)
