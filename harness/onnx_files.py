"""Models the user brings: every ``*.onnx`` file of a directory (``hwlat measure --models DIR``).

Each file becomes a ``ModelArtifact`` with ``search_space="onnx"``, ``arch`` = the file stem, the
sha256 of its bytes, input shapes from the graph inputs and, where shapes allow it, FLOPs and
parameters computed from the graph (same definitions as the exporter, see docs/spaces.md):

- ``params``: elements of all initializers (after export, BatchNorm is usually folded into convs).
- ``flops``: 2 x multiply-accumulates of Conv, ConvTranspose, Gemm and MatMul nodes; None (with a warning)
  when a needed shape cannot be inferred or an operator multiply-accumulates without a counting rule
  (``hwlat.spaces.graph.model_flops``).

Dynamic input dimensions (``batch``, ``N``, ``seq``, ...) must be given a size: ``--input-shape
NAME=1x3x224x224`` fixes a whole input, ``--batch`` a dynamic first dimension and ``--resolution`` dynamic
H/W of a 4-d (NCHW) input (``ShapeRequest``). A dynamic dimension left without a size is refused with a
one-line error naming the file, the input and the dimension, never silently measured at 1 (a transformer
block timed at sequence length 1 came out 7x faster than at 64). ``--batch``/``--resolution`` that a model's
fixed dimensions contradict are refused too, never ignored. Those rules live in ``hwlat.spaces.shapes``: the
predictor sizes the files it predicts by them too, so it predicts the network that was measured.
The sizes chosen are the artifact's
``input_shapes`` (and ``feed_shapes``, what the agent feeds), and the FLOPs are computed at them. The artifact's
``key`` is the network measured (``hwlat.spaces.graph.network_key``): the sha256 at the file's own shapes, else
the sha256 and a digest of the sizes, so one file measured at two sizes is two rows that resume tells apart.
"""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path

import onnx

from agents.errors import UsageError
from harness.records import ModelArtifact
from hwlat.spaces import one_line
from hwlat.spaces.graph import model_flops, network_key
from hwlat.spaces.shapes import ShapeRequest, check_names_used, graph_dims, resolve_shapes, shape_request

SPACE_NAME = "onnx"
log = logging.getLogger("hwlat")


def scan_models(directory: str | Path, request: ShapeRequest | None = None) -> list[ModelArtifact]:
    """One artifact per ``*.onnx`` file in ``directory`` (not recursive), sorted by file name.

    ``request`` sizes dynamic dimensions; an ``--input-shape`` name that no model has is refused (a typo
    would otherwise be ignored).
    """
    request = request or ShapeRequest()
    shape_request(request.input_shapes, request.batch, request.resolution)  # sizes >= 1, as on the command line
    root = Path(directory)
    if not root.is_dir():
        raise UsageError(f"--models {root}: not a directory")
    files = sorted(p for p in root.glob("*.onnx") if p.is_file())
    if not files:
        raise UsageError(f"--models {root}: no *.onnx files found")
    arts = [read_model(p, request) for p in files]
    check_names_used(request, (a.input_shapes for a in arts), str(root))
    return arts


def read_model(path: str | Path, request: ShapeRequest | None = None) -> ModelArtifact:
    """Artifact for one ONNX file; ``UsageError`` naming the file if it is not a readable model or its
    input sizes are not all known (see ``resolve_shapes``)."""
    path = Path(path)
    try:
        data = path.read_bytes()
        model = onnx.load_model_from_string(data)
    except Exception as exc:
        raise UsageError(f"{path}: not a readable ONNX model ({one_line(exc)})") from None
    if not model.graph.node:
        raise UsageError(f"{path}: not an ONNX model (no graph nodes)")
    if not graph_dims(model):
        raise UsageError(f"{path}: the ONNX graph has no inputs")
    shapes = resolve_shapes(path, model, request or ShapeRequest())
    first = next(iter(shapes.values()))
    sha = hashlib.sha256(data).hexdigest()
    return ModelArtifact(
        search_space=SPACE_NAME,
        arch=path.stem,
        path=str(path.resolve()),
        sha256=sha,
        key=network_key(model, sha, shapes),
        format="onnx",
        input_shapes=shapes,
        feed_shapes=shapes,
        batch=first[0] if first else 1,
        resolution=first[-1] if len(first) == 4 else 0,
        flops=onnx_flops(model, shapes, label=path.name),
        params=onnx_params(model),
        opset=_default_opset(model),
    )


def onnx_params(model: onnx.ModelProto) -> int:
    """Number of elements in all initializers."""
    return sum(math.prod(init.dims) for init in model.graph.initializer)


def onnx_flops(model: onnx.ModelProto, input_shapes: dict[str, list[int]] | None = None,
               label: str = "model") -> int | None:
    """2 x MACs of Conv/ConvTranspose/Gemm/MatMul nodes at ``input_shapes`` (dynamic dims already fixed;
    default ``graph_input_shapes``), or None -- with a warning naming ``label`` and why -- when they cannot
    be counted (``hwlat.spaces.graph.model_flops``, the one counter the graph encoder uses too)."""
    try:
        return model_flops(model, input_shapes)
    except ValueError as exc:
        log.warning("%s: flops not counted: %s", label, exc)
        return None


def _default_opset(model: onnx.ModelProto) -> int | None:
    return next((op.version for op in model.opset_import if op.domain in ("", "ai.onnx")), None)
