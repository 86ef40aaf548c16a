"""The graph of a measured network, read from its ONNX file (the file the harness times).

It sits low, beside the search spaces, because both sides need it: the coordinator stores every measured
model's graph beside the dataset's rows (``DATASET/_graphs/``), and the predictor (``predictor/graph.py``)
turns graphs into features. Neither imports the other.

Why: the dedicated encoders (``encode.py``) read arch strings of one known space; a network of any other
space -- a user's ONNX file, an OFA subnet, a ViT -- has no such string, but it has a graph. This module
turns the graph into

1. a ``GraphEncoding``: one record per operator (after fusing the activation patterns runtimes fuse)
   with a normalised op type (``OP_TYPES``), its attributes (kernel, stride, groups, dilation), input,
   weight and output shapes, FLOPs, bytes read/written and parameters, plus the edges between operators;
   stored as gzipped JSON keyed by the model file's sha256 (``model_sha256`` in the dataset) plus, when the
   network was measured at other input shapes than the file's own, a digest of those shapes (``graph_key``:
   one ONNX file with dynamic dimensions is another network at every size), both in a user cache and in
   ``DATASET/_graphs/`` so a dataset trains a predictor without its model files;
2. (in ``predictor/graph.py``) fixed-length features: per op type its FLOPs, bytes moved, launch count and parameters,
   plus totals. That is what a per-op-type additive cost model needs: latency ~ sum over op types of
   (a_t * FLOPs_t + b_t * bytes_t + c_t * launches_t).

Units: **FLOPs = 2 x multiply-accumulates of Conv, ConvTranspose, Gemm and MatMul**, the convention of
``harness.export.torch_flops_params`` and ``harness.onnx_files.onnx_flops`` (other operators count 0
FLOPs; their cost is in the bytes they move and their launch). Parameters are initializer elements,
counted at their first consumer, so both totals equal the dataset's ``flops``/``params`` columns.

Only ``onnx`` and numpy are needed (no torch): the coordinator encodes every model it measures.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from agents.errors import UsageError
from agents.files import atomic_write
from hwlat.spaces import one_line

log = logging.getLogger("hwlat")

FORMAT = "hwlat-graph/1"
#: where a dataset keeps the graph encodings of its models (pyarrow, pandas and the hive readers skip
#: names starting with '_'; the files are JSON, so ``DIR/**/*.parquet`` globs skip them too)
DATASET_GRAPHS = "_graphs"

#: Normalised op types: the fixed vocabulary of the features (append only: saved models depend on it).
OP_TYPES = (
    "conv",            # regular convolution (groups 1, kernel > 1)
    "conv_pw",         # pointwise: groups 1, every kernel dim 1
    "conv_dw",         # depthwise: groups == input channels
    "conv_group",      # grouped: 1 < groups < input channels
    "conv_transpose",
    "gemm",            # fully connected: Gemm, or MatMul with a constant operand
    "matmul",          # activation x activation (attention scores and context)
    "softmax",
    "layernorm",
    "batchnorm",
    "norm_other",      # instance / group / Lp normalisation
    "pool_max",
    "pool_avg",
    "pool_global",
    "relu",            # Relu, Clip (ReLU6), LeakyRelu, PRelu
    "hswish",          # HardSwish or x * HardSigmoid(x)
    "hsigmoid",
    "sigmoid",
    "swish",           # x * Sigmoid(x)
    "gelu",            # Gelu, or the erf pattern x * 0.5 * (1 + erf(x / sqrt 2))
    "act_other",       # Tanh, Elu, Selu, Softplus, Mish, ...
    "eltwise",         # Add, Mul, Div, Sqrt, Pow, Where, ...
    "reduce",
    "reshape",         # Reshape, Flatten, (Un)squeeze, Identity, Dropout, Expand
    "transpose",
    "concat",
    "slice",           # Slice, Split, Gather, Tile
    "pad",
    "resize",
    "shape",           # shape arithmetic: Shape, Cast to/from ints, Range, integer-only ops
)
TYPE_INDEX = {t: i for i, t in enumerate(OP_TYPES)}

_SIMPLE: dict[str, str] = {
    "ConvTranspose": "conv_transpose", "Gemm": "gemm",
    "Softmax": "softmax", "LogSoftmax": "softmax",
    "LayerNormalization": "layernorm", "BatchNormalization": "batchnorm",
    "InstanceNormalization": "norm_other", "GroupNormalization": "norm_other", "LpNormalization": "norm_other",
    "MaxPool": "pool_max", "AveragePool": "pool_avg", "LpPool": "pool_avg",
    "GlobalAveragePool": "pool_global", "GlobalMaxPool": "pool_global",
    "Relu": "relu", "Clip": "relu", "LeakyRelu": "relu", "PRelu": "relu",
    "HardSwish": "hswish", "HardSigmoid": "hsigmoid", "Sigmoid": "sigmoid", "Gelu": "gelu",
    "Tanh": "act_other", "Elu": "act_other", "Selu": "act_other", "Celu": "act_other", "Softplus": "act_other",
    "Softsign": "act_other", "Mish": "act_other", "Erf": "act_other", "ThresholdedRelu": "act_other",
    "Shrink": "act_other",
    **{op: "eltwise" for op in ("Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Neg", "Abs", "Exp", "Log",
                                "Reciprocal", "Max", "Min", "Sum", "Mean", "Where", "Equal", "Less",
                                "LessOrEqual", "Greater", "GreaterOrEqual", "Not", "And", "Or", "Xor",
                                "Floor", "Ceil", "Round", "Sign", "Mod", "Cast", "CastLike", "Sin", "Cos",
                                "IsNaN", "IsInf", "BitShift")},
    **{op: "reduce" for op in ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
                               "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp", "ArgMax",
                               "ArgMin", "CumSum")},
    **{op: "reshape" for op in ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Expand")},
    "Transpose": "transpose", "DepthToSpace": "transpose", "SpaceToDepth": "transpose",
    "Concat": "concat",
    **{op: "slice" for op in ("Slice", "Split", "Gather", "GatherElements", "GatherND", "Tile", "Trilu")},
    "Pad": "pad", "Resize": "resize", "Upsample": "resize",
    **{op: "shape" for op in ("Shape", "Size", "ConstantOfShape", "Range")},
}
_MAC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
#: standard operators that multiply-accumulate (or hold subgraphs that may) but have no counting rule here:
#: a model with one of them gets no FLOPs (``model_flops``) rather than a count that leaves them out
_UNCOUNTED_MAC_OPS = frozenset({"Einsum", "LSTM", "GRU", "RNN", "ConvInteger", "MatMulInteger", "QLinearConv",
                                "QLinearMatMul", "Attention", "Loop", "If", "Scan"})
_INT_TYPES = {onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.INT16, onnx.TensorProto.INT8,
              onnx.TensorProto.UINT8, onnx.TensorProto.BOOL}


def graph_key(sha256: str, input_shapes: dict[str, list[int]] | None = None) -> str:
    """The key of a network's encoding: the model file's sha256, followed by a digest of its graph inputs'
    shapes when they are not the file's own (``-`` and 16 hex digits).

    Why: a file with dynamic dimensions measured at two sizes (``hwlat measure --models --input-shape``) is two
    networks -- other FLOPs, bytes and shapes -- under one ``model_sha256``. A file at its own shapes (every
    static file; a dynamic one with those dims at 1, what ``encode_file`` encodes) keeps the bare sha256, so
    datasets written before sizes were keyed read as they did, and ``predict`` of the file finds the same key.
    ``input_shapes`` None: the file's own.
    """
    if not input_shapes:
        return sha256
    canon = json.dumps({str(k): [int(d) for d in v] for k, v in input_shapes.items()}, sort_keys=True,
                       separators=(",", ":"))
    return f"{sha256}-{hashlib.sha256(canon.encode()).hexdigest()[:16]}"


@dataclass
class GraphEncoding:
    """One network's operators (``ops``: dicts, see ``_record``) and edges (producer op, consumer op).

    ``sha256``: the model file's hash (or, for a traced network, its trace key); ``inputs``: the graph inputs'
    shapes it was encoded at (None in encodings written before they were recorded); ``key``: what it is stored
    and looked up by (``graph_key``; the sha256 when encoded at the file's own shapes); ``liveness``: whether
    dead operators were looked for (``mark_dead``: such ops carry ``"dead": True``). Encodings written before
    the analysis existed read with it False and every op live.
    """

    sha256: str
    ops: list[dict[str, Any]] = field(default_factory=list)
    edges: list[tuple[int, int]] = field(default_factory=list)
    inputs: dict[str, list[int]] | None = None
    key: str = ""
    liveness: bool = False

    def __post_init__(self) -> None:
        self.key = self.key or self.sha256

    def to_json(self) -> bytes:
        blob: dict[str, Any] = {"format": FORMAT, "sha256": self.sha256, "ops": self.ops,
                                "edges": [list(e) for e in self.edges]}
        if self.inputs is not None:
            blob["inputs"] = self.inputs
        if self.key != self.sha256:
            blob["key"] = self.key
        if self.liveness:
            blob["liveness"] = 1
        return gzip.compress(json.dumps(blob, separators=(",", ":")).encode(), mtime=0)

    @classmethod
    def from_json(cls, data: bytes) -> GraphEncoding:
        """Read an encoding; files without ``inputs``/``key`` (written before sizes were keyed) read as the
        file's own shapes, unknown (``inputs`` None)."""
        blob = json.loads(gzip.decompress(data))
        if blob.get("format") != FORMAT:
            raise ValueError(f"graph format {blob.get('format')!r}, expected {FORMAT}")
        inputs = blob.get("inputs")
        return cls(blob["sha256"], blob["ops"], [tuple(e) for e in blob["edges"]],
                   None if inputs is None else {str(k): [int(d) for d in v] for k, v in inputs.items()},
                   str(blob.get("key") or blob["sha256"]), bool(blob.get("liveness")))

    def total(self, key: str) -> int:
        """Sum of one per-op quantity (``flops``, ``params``, ``bytes_read``, ``bytes_written``)."""
        return int(sum(op[key] for op in self.ops))


# ----------------------------------------------------------------------------------------- encoding


def mark_dead(ops: list[dict[str, Any]], edges: list[tuple[int, int]], zeroing: set[int], outputs: set[int]
              ) -> None:
    """Set ``"dead": True`` on every operator whose result cannot matter because a multiplication by a constant
    zero cuts it off: it reaches no graph output except through such a product, or it computes on nothing but
    constants (everything upstream of it passes through one). ``zeroing``: the ops that multiply by a constant
    zero (themselves dead: their output is constant); ``outputs``: the ops that produce a graph output (empty:
    unknown, then the ops nothing reads).

    Why: a runtime that folds constants and removes unused results never executes this compute, one that
    does not executes all of it; the predictor keeps it apart (``predictor.graph``) and lets the device's data
    say which it is. NAS supernets build their ``none``/zero op as ``x * 0`` (NB201, DARTS-style spaces): on
    NB201, raspi4 and pixel3 report ~0 ms for cells whose output such edges cut off, while GPUs and x86 CPUs
    pay for every op. Ops read by nothing downstream at all (no path to an output) are dead too.
    """
    succ: list[list[int]] = [[] for _ in ops]
    pred: list[list[int]] = [[] for _ in ops]
    for u, v in edges:
        succ[u].append(v)
        pred[v].append(u)
    outputs = outputs or {k for k in range(len(ops)) if not succ[k]}
    # ops are in topological order and edges go forward
    varies = [False] * len(ops)  # depends on a graph input through no zeroing product
    for k in range(len(ops)):
        varies[k] = k not in zeroing and (not pred[k] or any(varies[u] for u in pred[k]))
    matters = [False] * len(ops)  # reaches a graph output through no zeroing product
    for k in reversed(range(len(ops))):
        matters[k] = k in outputs or any(matters[v] and v not in zeroing for v in succ[k])
    for k, op in enumerate(ops):
        if not (varies[k] and matters[k]):
            op["dead"] = True
        else:
            op.pop("dead", None)


def _zero_constants(model: onnx.ModelProto, names: set[str], limit: int = 1 << 16) -> set[str]:
    """Which of ``names`` are initializers or Constant outputs (of at most ``limit`` elements) that are all zeros
    (only those are read: a model's other constants are never converted)."""
    found: set[str] = set()
    tensors = [(t.name, t) for t in model.graph.initializer if t.name in names]
    tensors += [(n.output[0], _attr(n, "value")) for n in model.graph.node
                if n.op_type == "Constant" and n.output and n.output[0] in names]
    for name, tensor in tensors:
        if tensor is None or math.prod(tensor.dims) > limit:
            continue
        try:
            values = numpy_helper.to_array(tensor)
        except (ValueError, TypeError):
            continue
        if values.size and values.dtype.kind in "fiu" and not np.any(values):
            found.add(name)
    return found


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


class _Graph:
    """The inferred model with tensor shapes, dtypes, constants and producers/consumers indexed."""

    def __init__(self, model: onnx.ModelProto, params: dict[str, list[int]]) -> None:
        """``params``: the original model's initializers (what counts as parameters; folded shape
        constants do not)."""
        self.nodes = list(model.graph.node)
        self.shape: dict[str, list[int] | None] = {}
        self.itemsize: dict[str, int] = {}
        self.is_int: dict[str, bool] = {}
        self.initializers = params
        self.const: set[str] = {init.name for init in model.graph.initializer}
        for init in model.graph.initializer:
            self._set(init.name, list(init.dims), init.data_type)
        for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
            tt = vi.type.tensor_type
            dims = tt.shape.dim if tt.HasField("shape") else None
            known = dims is not None and all(d.HasField("dim_value") for d in dims)
            self._set(vi.name, [d.dim_value for d in dims] if known else None, tt.elem_type)
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = {}
        for i, node in enumerate(self.nodes):
            if node.op_type == "Constant":
                for out in node.output:
                    self.const.add(out)
                    value = _attr(node, "value")
                    if value is not None:
                        self._set(out, list(value.dims), value.data_type)
                continue
            for out in node.output:
                if out:
                    self.producer[out] = i
            for inp in node.input:
                if inp:
                    self.consumers.setdefault(inp, []).append(i)
        self.graph_outputs = {o.name for o in model.graph.output}

    def _set(self, name: str, shape: list[int] | None, elem_type: int) -> None:
        if shape is not None or name not in self.shape:
            self.shape[name] = shape
        if elem_type:
            self.itemsize[name] = np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).itemsize
            self.is_int[name] = elem_type in _INT_TYPES

    def nbytes(self, name: str) -> int:
        shape = self.shape.get(name)
        return 0 if shape is None else math.prod(shape) * self.itemsize.get(name, 4)

    def only_consumer(self, tensor: str) -> int | None:
        users = self.consumers.get(tensor, [])
        return users[0] if len(users) == 1 and tensor not in self.graph_outputs else None


def _fuse_gated(g: _Graph, i: int, gate_op: str) -> list[int] | None:
    """``x * gate(x)`` (hswish with HardSigmoid, swish with Sigmoid): the gate node and this Mul."""
    node = g.nodes[i]
    if node.op_type != "Mul" or len(node.input) != 2:
        return None
    for a, b in (node.input, node.input[::-1]):
        p = g.producer.get(a)
        if p is not None and g.nodes[p].op_type == gate_op and g.nodes[p].input[0] == b \
                and g.only_consumer(a) == i:
            return [p, i]
    return None


def _fuse_gelu(g: _Graph, e: int) -> list[int] | None:
    """The erf GELU as torch exports it: Div(x, sqrt2) -> Erf -> Add 1 -> Mul x -> Mul 0.5 (Mul order free)."""
    erf = g.nodes[e]
    p = g.producer.get(erf.input[0])
    if p is None or g.nodes[p].op_type not in ("Div", "Mul") or g.only_consumer(erf.input[0]) != e:
        return None
    pin = g.nodes[p].input
    consts = [t in g.const for t in pin]
    if sorted(consts) != [False, True]:
        return None
    x = pin[consts.index(False)]
    a = g.only_consumer(erf.output[0])
    if a is None or g.nodes[a].op_type != "Add" or not any(t in g.const for t in g.nodes[a].input):
        return None
    group, tail, saw_x = [p, e, a], g.nodes[a].output[0], False
    for _ in range(2):
        m = g.only_consumer(tail)
        if m is None or g.nodes[m].op_type != "Mul":
            break
        other = [t for t in g.nodes[m].input if t != tail]
        if len(other) != 1 or not (other[0] == x or other[0] in g.const):
            break
        saw_x = saw_x or other[0] == x
        group.append(m)
        tail = g.nodes[m].output[0]
    return group if saw_x and len(group) == 5 else None


def _groups(g: _Graph) -> tuple[list[list[int]], dict[int, str]]:
    """Nodes grouped into operators (fused patterns become one), in topological order, and fused types."""
    fused: dict[int, list[int]] = {}
    fused_type: dict[int, str] = {}
    taken: set[int] = set()
    for i, node in enumerate(g.nodes):
        pattern = None
        if node.op_type == "Erf":
            pattern, kind = _fuse_gelu(g, i), "gelu"
        elif node.op_type == "Mul":
            pattern, kind = _fuse_gated(g, i, "HardSigmoid"), "hswish"
            if pattern is None:
                pattern, kind = _fuse_gated(g, i, "Sigmoid"), "swish"
        if pattern and not taken.intersection(pattern):
            last = max(pattern)
            fused[last] = sorted(pattern)
            fused_type[last] = kind
            taken.update(pattern)
    groups, types = [], {}
    for i, node in enumerate(g.nodes):
        if node.op_type == "Constant":
            continue
        if i in fused:
            types[len(groups)] = fused_type[i]
            groups.append(fused[i])
        elif i not in taken:
            groups.append([i])
    return groups, types


def _conv_type(g: _Graph, node: onnx.NodeProto) -> str:
    weight = g.shape.get(node.input[1])
    x = g.shape.get(node.input[0])
    if weight is None or x is None:
        raise ValueError("input or weight shape unknown")
    groups = int(_attr(node, "group", 1))
    cin = x[1]
    if weight[1] * groups != cin:  # ONNX shape inference does not check this; onnxruntime fails at load
        raise ValueError(f"weight {weight} with group {groups} expects {weight[1] * groups} input channels, "
                         f"the input has {cin}")
    if groups > 1 and groups == cin:
        return "conv_dw"
    if groups > 1:
        return "conv_group"
    return "conv_pw" if all(k == 1 for k in weight[2:]) else "conv"


def _macs(g: _Graph, node: onnx.NodeProto) -> int:
    """Multiply-accumulates, with the counting rules of ``harness.onnx_files``."""
    s = g.shape
    if node.op_type == "Conv":
        return math.prod(s[node.output[0]]) * math.prod(s[node.input[1]][1:])
    if node.op_type == "ConvTranspose":
        return math.prod(s[node.input[0]]) * math.prod(s[node.input[1]][1:])
    if node.op_type == "Gemm":
        a = s[node.input[0]]
        return math.prod(s[node.output[0]]) * (a[0] if _attr(node, "transA", 0) else a[1])
    return math.prod(s[node.output[0]]) * s[node.input[0]][-1]  # MatMul


def _op_type(g: _Graph, node: onnx.NodeProto) -> str:
    op = node.op_type
    if node.domain not in ("", "ai.onnx"):
        raise ValueError(f"operator domain {node.domain!r} is not supported")
    outs = [o for o in node.output if o]
    if op not in _MAC_OPS and op not in ("Shape", "Size") and outs and all(g.is_int.get(o) for o in outs) \
            and all(g.is_int.get(t, True) for t in node.input if t):
        return "shape"  # integer-only arithmetic on shapes (ints in, ints out)
    if op == "Conv":
        return _conv_type(g, node)
    if op == "MatMul":
        return "gemm" if any(t in g.const for t in node.input) else "matmul"
    kind = _SIMPLE.get(op)
    if kind is None:
        raise ValueError("operator not supported by the graph encoder")
    return kind


def _record(g: _Graph, group: list[int], kind: str | None, counted: set[str]) -> dict[str, Any]:
    """One operator: type, ONNX ops, attributes, shapes, FLOPs, bytes, params (initializers seen first here)."""
    nodes = [g.nodes[i] for i in group]
    head = nodes[0]
    op_kind = kind or _op_type(g, head)
    inside = {o for n in nodes for o in n.output}
    ins = list(dict.fromkeys(t for n in nodes for t in n.input if t and t not in inside))
    acts = [t for t in ins if t not in g.const]
    weights = [t for t in ins if t in g.const]
    outs = [o for n in nodes for o in n.output if o and (o in g.graph_outputs or any(
        c not in group for c in g.consumers.get(o, [])))]
    if not outs:
        outs = [o for o in nodes[-1].output if o]
    # integer tensors are shape data (a few elements): their shapes may stay unknown without harm
    unknown = [t for t in (*acts, *weights, *outs) if g.shape.get(t) is None and not g.is_int.get(t)]
    if unknown and op_kind != "shape":
        raise ValueError(f"shape of {unknown[0]!r} could not be inferred")
    params = 0
    for w in weights:
        if w in g.initializers and w not in counted:
            counted.add(w)
            params += math.prod(g.initializers[w])
    attrs: dict[str, Any] = {}
    if head.op_type in ("Conv", "ConvTranspose"):
        attrs = {"kernel": list(g.shape[head.input[1]][2:]), "stride": list(_attr(head, "strides", []) or []),
                 "groups": int(_attr(head, "group", 1)), "dilation": list(_attr(head, "dilations", []) or [])}
    elif head.op_type in ("MaxPool", "AveragePool", "LpPool"):
        attrs = {"kernel": list(_attr(head, "kernel_shape", [])), "stride": list(_attr(head, "strides", []) or [])}
    return {
        "type": op_kind, "onnx": [n.op_type for n in nodes], "name": head.name, "attrs": attrs,
        "inputs": [g.shape.get(t) for t in acts], "weights": [g.shape.get(t) for t in weights],
        "outputs": [g.shape.get(t) for t in outs],
        "flops": 2 * _macs(g, head) if len(nodes) == 1 and head.op_type in _MAC_OPS else 0,
        "bytes_read": sum(g.nbytes(t) for t in ins), "bytes_written": sum(g.nbytes(t) for t in outs),
        "params": params, "_acts": acts, "_outs": outs,
    }


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    return shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)


def _fold_shapes(model: onnx.ModelProto, params: dict[str, list[int]], rounds: int = 8) -> _Graph:
    """Shape inference, with the integer shape arithmetic evaluated and replaced by constants.

    Why: exporters compute reshape targets at run time (``Shape -> Gather -> Concat -> Reshape``, as torch
    does for attention); ONNX's data propagation gives up on some of those ops, leaving the activations
    after them without shapes. With every graph input fixed, those integer tensors are constants: each
    round evaluates the integer-only nodes whose inputs are known (``onnx.reference``, a few elements
    each), turns their outputs into initializers and infers again. Onnxruntime folds the same subgraphs
    when it loads a model with static inputs, so dropping them from the operator list matches what runs.
    """
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    inferred = _infer(model)
    for _ in range(rounds):
        g = _Graph(inferred, params)
        values: dict[str, np.ndarray] = {}
        for init in inferred.graph.initializer:
            if init.data_type in _INT_TYPES:
                values[init.name] = numpy_helper.to_array(init)
        folded: dict[str, np.ndarray] = {}
        keep = []
        for node in inferred.graph.node:
            outs = [o for o in node.output if o]
            value: list[np.ndarray] | None = None
            if node.op_type == "Constant" and outs and g.is_int.get(outs[0]):
                value = [numpy_helper.to_array(_attr(node, "value"))] if _attr(node, "value") is not None \
                    else None
            elif node.op_type == "Shape" and g.shape.get(node.input[0]) is not None:
                dims = g.shape[node.input[0]]
                start, end = _attr(node, "start", 0), _attr(node, "end", len(dims))
                value = [np.asarray(dims[start:end], np.int64)]
            elif node.op_type not in _MAC_OPS and outs and all(g.is_int.get(o) for o in outs) \
                    and all(t in values for t in node.input if t):
                value = list(ReferenceEvaluator(node).run(None, {t: values[t] for t in node.input if t}))
            if value is None:
                keep.append(node)
                continue
            for name, v in zip(outs, value, strict=False):
                values[name] = folded[name] = np.asarray(v)
        if not [k for k in folded if k not in {i.name for i in inferred.graph.initializer}]:
            return g
        nxt = onnx.ModelProto()
        nxt.CopyFrom(inferred)
        del nxt.graph.node[:]
        nxt.graph.node.extend(keep)
        del nxt.graph.value_info[:]
        known = {i.name for i in nxt.graph.initializer}
        nxt.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in folded.items() if k not in known)
        inferred = _infer(nxt)
    return _Graph(inferred, params)


def model_flops(model: onnx.ModelProto, input_shapes: dict[str, list[int]] | None = None) -> int:
    """2 x multiply-accumulates of the Conv, ConvTranspose, Gemm and MatMul nodes at ``input_shapes`` (graph
    inputs by name, dynamic dims sized; default ``graph_input_shapes``); ``ValueError`` saying why they cannot
    be counted.

    Shapes come from ``_fold_shapes``, as for ``encode_model``, so the two totals agree: plain ONNX shape
    inference loses every shape after a run-time shape computation (ShuffleNet's ``x.chunk(2, dim=1)``
    is Shape -> Gather -> Div -> Slice), and a counter built on it returned nothing for such models.

    Every other standard operator counts 0 (docs/spaces.md: activations, pooling, reshapes, element-wise
    arithmetic are not FLOPs). An operator that does multiply-accumulate but has no rule here
    (``_UNCOUNTED_MAC_OPS``: Einsum, recurrent cells, quantised convolutions and matrix products, subgraphs)
    or whose arithmetic is unknown (a non-standard domain) raises instead of counting 0: a total that
    silently leaves out part of the network would sit in the ``flops`` column looking exact, while a missing
    value with the reason logged is visibly missing.
    """
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            raise ValueError(f"operator {node.domain}.{node.op_type} (node {node.name or '?'!r}) has unknown "
                             "arithmetic")
        if node.op_type in _UNCOUNTED_MAC_OPS:
            raise ValueError(f"operator {node.op_type} (node {node.name or '?'!r}) has no FLOPs counting rule")
    shapes = graph_input_shapes(model)[0] if input_shapes is None else input_shapes
    fixed = with_input_shapes(model, shapes)
    # Only integer tensors (shape data) are evaluated; of the weights, shape inference needs only dims and type.
    # Without their data, an inference round serialises kilobytes, not the model (ViT-B/32: 0.6 s, not 11 s).
    weights = [onnx.TensorProto(name=t.name, dims=t.dims, data_type=t.data_type) if t.data_type not in _INT_TYPES
               else t for t in fixed.graph.initializer]
    del fixed.graph.initializer[:]
    fixed.graph.initializer.extend(weights)
    try:
        g = _fold_shapes(fixed, {})
    except Exception as exc:  # onnx raises several types for a graph it cannot infer
        raise ValueError(f"shape inference failed: {one_line(exc)}") from None
    macs = 0
    for node in g.nodes:
        if node.op_type in _MAC_OPS:
            try:
                macs += _macs(g, node)
            except (KeyError, IndexError, TypeError):
                raise ValueError(f"a shape of {node.op_type} node {node.name or '?'!r} could not be inferred") from None
    return 2 * macs


def with_input_shapes(model: onnx.ModelProto, shapes: dict[str, list[int]]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph inputs have the given fixed shapes (every dimension a value, none a name),
    so shape inference can fold the whole graph; inputs not in ``shapes`` keep theirs."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for inp in fixed.graph.input:
        for dim, value in zip(inp.type.tensor_type.shape.dim, shapes.get(inp.name, []), strict=False):
            dim.Clear()
            dim.dim_value = value
    return fixed


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


def _sized_inputs(model: onnx.ModelProto, input_shapes: dict[str, list[int]] | None) -> dict[str, list[int]]:
    """Every graph input's shape: ``input_shapes`` where given (by name), else the file's own (dynamic dims 1)."""
    own, _dynamic = graph_input_shapes(model)
    return {**own, **{str(k): [int(d) for d in v] for k, v in (input_shapes or {}).items() if k in own}}


def network_key(model: onnx.ModelProto, sha256: str, input_shapes: dict[str, list[int]] | None = None) -> str:
    """The identity of the network a model file is at ``input_shapes`` (None: its own): ``graph_key`` of its
    sha256 and, when they differ from the file's own shapes (``graph_input_shapes``), those shapes.

    The one owner of "which network was measured": the key of its encoding in ``_graphs/``, the row's
    ``model_key`` column, what resume, the round journals and ``hwlat datasets compare`` match measurements by.
    Why the shapes: a file with dynamic dimensions measured at two sizes is two networks (other FLOPs, other
    latency). A static file, and every exported search-space network, is at its own shapes: its key is its
    sha256, as it was before sizes were keyed.
    """
    shapes = _sized_inputs(model, input_shapes)
    return graph_key(sha256, None if shapes == graph_input_shapes(model)[0] else shapes)


def encode_model(model: onnx.ModelProto, sha256: str, label: str = "model",
                 input_shapes: dict[str, list[int]] | None = None) -> GraphEncoding:
    """The graph encoding of a loaded model at ``input_shapes`` (graph inputs by name; inputs not named and
    every input without it: the file's own shapes, dynamic dimensions fixed to 1, ``graph_input_shapes``);
    ``UsageError`` naming the operator when it cannot be encoded. Its ``key`` is ``graph_key``: the sha256
    alone at the file's own shapes.
    """
    if not model.graph.node:
        raise UsageError(f"{label}: not an ONNX model (no graph nodes)")
    for node in model.graph.node:
        if node.op_type not in _SIMPLE and node.op_type not in (*_MAC_OPS, "Constant"):
            raise UsageError(f"{label}: operator {node.op_type} (node {node.name or '?'!r}) is not supported "
                             "by the graph encoder")
    shapes = _sized_inputs(model, input_shapes)
    fixed = with_input_shapes(model, shapes)
    params_of = {init.name: list(init.dims) for init in model.graph.initializer}
    try:
        onnx.checker.check_model(fixed)
        g = _fold_shapes(fixed, params_of)
    except Exception as exc:
        msg = one_line(exc)
        # shape inference says "(op_type:Conv, node name: c1)"; the checker "Name: c1 OpType: Conv" further down
        found = re.search(r"op_type:\s*(\w+)(?:,\s*node name:\s*([^)]*))?", str(exc))
        spec = re.search(r"Name:\s*(\S*)\s+OpType:\s*(\w+)", str(exc))
        where = (f"operator {found.group(1)} (node {found.group(2) or '?'!r})" if found
                 else f"operator {spec.group(2)} (node {spec.group(1) or '?'!r})" if spec else "the graph")
        raise UsageError(f"{label}: malformed ONNX graph at {where}: {msg}") from None
    groups, fused = _groups(g)
    ops: list[dict[str, Any]] = []
    counted: set[str] = set()
    for k, group in enumerate(groups):
        node = g.nodes[group[0]]
        try:
            ops.append(_record(g, group, fused.get(k), counted))
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise UsageError(f"{label}: cannot encode operator {node.op_type} (node {node.name or '?'!r}): "
                             f"{one_line(exc)}") from None
    made_by = {t: k for k, op in enumerate(ops) for t in op["_outs"]}
    edges = sorted({(made_by[t], k) for k, op in enumerate(ops) for t in op["_acts"] if t in made_by})
    products = {k: g.nodes[group[0]].input for k, (op, group) in enumerate(zip(ops, groups, strict=True))
                if op["onnx"] == ["Mul"]}
    zeros = _zero_constants(fixed, {t for inputs in products.values() for t in inputs if t in g.const})
    zeroing = {k for k, inputs in products.items() if zeros.intersection(inputs)}
    outputs = {k for k, op in enumerate(ops) if g.graph_outputs.intersection(op["_outs"])}
    for op in ops:
        del op["_acts"], op["_outs"]
    mark_dead(ops, edges, zeroing, outputs)
    return GraphEncoding(sha256, ops, edges, inputs=shapes, key=network_key(model, sha256, shapes), liveness=True)


def _cache_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / f"{key}.json.gz"


def default_cache_dir() -> Path:
    """The user's graph cache ($HWLAT_GRAPH_CACHE, default ~/.cache/hwlat/graphs)."""
    return Path(os.environ.get("HWLAT_GRAPH_CACHE", "~/.cache/hwlat/graphs")).expanduser()


def read_cached(cache_dir: Path, key: str) -> GraphEncoding | None:
    """A stored encoding by its ``graph_key``, or None when absent, unreadable or of another format version."""
    try:
        enc = GraphEncoding.from_json(_cache_path(cache_dir, key).read_bytes())
    except (OSError, ValueError, KeyError, EOFError, TypeError, AttributeError):
        return None
    return enc if enc.key == key else None


def find_cached(cache_dir: Path, sha256: str, input_shapes: dict[str, list[int]] | None) -> GraphEncoding | None:
    """The stored encoding of the file ``sha256`` at ``input_shapes`` (None: the file's own), or None.

    Looks under the sized key, then the bare sha256, which holds the file at its own shapes: taken when none
    are asked for, or when the shapes it was encoded at are the ones asked for. An encoding written before they
    were recorded (``inputs`` None; then always the file's own shapes, dynamic dimensions at 1) was encoded at
    the asked shapes when each of them is the shape of some operator's input: every graph input is read by an
    operator, so an encoding at another size shows that input at its other size.
    """
    if input_shapes:
        input_shapes = {str(k): [int(d) for d in v] for k, v in input_shapes.items()}
        hit = read_cached(cache_dir, graph_key(sha256, input_shapes))
        if hit is not None:
            return hit
    hit = read_cached(cache_dir, sha256)
    if hit is None or not input_shapes:
        return hit
    if hit.inputs is not None:
        return hit if hit.inputs == input_shapes else None
    seen = {tuple(shape) for op in hit.ops for shape in op.get("inputs", []) if shape is not None}
    return hit if all(tuple(dims) in seen for dims in input_shapes.values()) else None


def write_cached(cache_dir: Path, enc: GraphEncoding) -> None:
    """Store an encoding atomically under its key (a kill never leaves half a file under the final name)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(_cache_path(cache_dir, enc.key), enc.to_json())


@contextlib.contextmanager
def model_file_errors(path: Path) -> Iterator[None]:
    """A model file that is missing or unreadable ends as the one-line ``UsageError`` every command prints."""
    try:
        yield
    except FileNotFoundError:
        raise UsageError(f"model not found: {path}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


def encode_file(path: str | Path, cache_dir: str | Path | None = None,
                input_shapes: dict[str, list[int]] | None = None) -> GraphEncoding:
    """Encode an ONNX file at ``input_shapes`` (None: its own, ``encode_model``), cached by ``graph_key`` in
    ``cache_dir`` (default: the user cache)."""
    path = Path(path)
    with model_file_errors(path):
        data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    hit = find_cached(cache, sha, input_shapes)
    if hit is not None and hit.liveness:  # one written before the dead-op analysis is encoded again
        return hit
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:
        raise UsageError(f"{path}: not a readable ONNX model ({one_line(exc)})") from None
    enc = encode_model(model, sha, label=str(path), input_shapes=input_shapes)
    try:
        write_cached(cache, enc)
    except OSError as exc:
        log.warning("cannot write the graph cache %s: %s", cache, exc.strerror or exc)
    return enc


def save_dataset_graphs(dataset: str | Path,
                        models: Iterable[tuple[str, str, dict[str, list[int]] | None]]) -> list[str]:
    """Store the encoding of every (sha256, ONNX path, input shapes it is measured at) under ``DATASET/_graphs``
    (by ``graph_key``) unless already there.

    Returns one warning per model that cannot be encoded: its rows are still measured and stored, only
    the graph predictor will not be able to use them.
    """
    folder = Path(dataset) / DATASET_GRAPHS
    warnings: list[str] = []
    for sha, path, shapes in models:
        if find_cached(folder, sha, shapes or None) is not None:
            continue
        try:
            enc = encode_file(path, cache_dir=folder, input_shapes=shapes or None)
        except UsageError as exc:
            warnings.append(f"no graph encoding for {Path(path).name}: {exc}")
            continue
        if enc.sha256 != sha:  # the file changed since it was hashed: store nothing under the wrong key
            warnings.append(f"no graph encoding for {Path(path).name}: its bytes no longer match sha256 {sha[:12]}")
    return warnings
