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
fixed dimensions contradict are refused too, never ignored. The sizes chosen are the artifact's
``input_shapes`` (and ``feed_shapes``, what the agent feeds), and the FLOPs are computed at them. The artifact's
``key`` is the network measured (``hwlat.spaces.graph.network_key``): the sha256 at the file's own shapes, else
the sha256 and a digest of the sizes, so one file measured at two sizes is two rows that resume tells apart.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from agents.errors import UsageError
from harness.records import ModelArtifact
from hwlat.spaces import one_line
from hwlat.spaces.graph import model_flops, network_key

SPACE_NAME = "onnx"
log = logging.getLogger("hwlat")


@dataclass(frozen=True)
class ShapeRequest:
    """The input sizes the user asked for: ``--input-shape NAME=AxBxC`` (per input name), ``--batch`` and
    ``--resolution`` (None when not given on the command line, so "not given" and "1" differ)."""

    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    batch: int | None = None
    resolution: int | None = None


def parse_input_shape(text: str) -> tuple[str, list[int]]:
    """``NAME=1x3x224x224`` -> ("NAME", [1, 3, 224, 224]); ``UsageError`` for anything else."""
    name, sep, dims = text.rpartition("=")
    try:
        shape = [int(d) for d in dims.lower().split("x")]
    except ValueError:
        shape = []
    if not sep or not name or not shape or any(d < 1 for d in shape):
        raise UsageError(f"--input-shape {text!r}: expected NAME=DIMxDIMx... with positive sizes, "
                         "e.g. input=1x3x224x224")
    return name, shape


def scan_models(directory: str | Path, request: ShapeRequest | None = None) -> list[ModelArtifact]:
    """One artifact per ``*.onnx`` file in ``directory`` (not recursive), sorted by file name.

    ``request`` sizes dynamic dimensions; an ``--input-shape`` name that no model has is refused (a typo
    would otherwise be ignored).
    """
    request = request or ShapeRequest()
    for value in (request.batch, request.resolution):
        if value is not None and value < 1:
            raise UsageError(f"--batch and --resolution must be at least 1, got {value}")
    root = Path(directory)
    if not root.is_dir():
        raise UsageError(f"--models {root}: not a directory")
    files = sorted(p for p in root.glob("*.onnx") if p.is_file())
    if not files:
        raise UsageError(f"--models {root}: no *.onnx files found")
    arts = [read_model(p, request) for p in files]
    unused = set(request.input_shapes) - {name for a in arts for name in a.input_shapes}
    if unused:
        raise UsageError(f"--input-shape {sorted(unused)[0]}: no model in {root} has an input of that name")
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
    if not _graph_dims(model):
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


def _graph_dims(model: onnx.ModelProto) -> dict[str, list[int | str]]:
    """{input name: [size, or the dynamic dimension's name ('dim<i>' when unnamed)]}, weights skipped."""
    weights = {init.name for init in model.graph.initializer}
    out: dict[str, list[int | str]] = {}
    for inp in model.graph.input:
        if inp.name in weights:
            continue
        out[inp.name] = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or f"dim{i}")
                         for i, d in enumerate(inp.type.tensor_type.shape.dim)]
    return out


def resolve_shapes(path: Path, model: onnx.ModelProto, request: ShapeRequest) -> dict[str, list[int]]:
    """Every input's measured shape: the graph's fixed sizes, with dynamic ones taken from ``request``.

    ``--input-shape`` gives a whole input (same rank; fixed sizes must agree), ``--batch`` the first
    dimension of every input, ``--resolution`` the last two of a 4-d input. A flag that contradicts a fixed
    size, a ``--resolution`` for a model without a 4-d input, or a dynamic size nobody gave is a
    ``UsageError`` naming the file, the input and the dimension.
    """
    shapes: dict[str, list[int]] = {}
    four_d = False
    for name, dims in _graph_dims(model).items():
        given = request.input_shapes.get(name)
        if given is not None and len(given) != len(dims):
            raise UsageError(f"{path.name}: --input-shape {name}: {len(given)} dimensions given, the input has "
                             f"{len(dims)} ({_show(dims)})")
        wanted: list[int | None] = list(given) if given is not None else [None] * len(dims)
        flag: dict[int, str] = {}
        if request.batch is not None and dims:
            flag[0] = f"--batch {request.batch}"
            wanted[0] = _agree(path, name, 0, wanted[0], request.batch, "--batch")
        if len(dims) == 4:
            four_d = True
            if request.resolution is not None:
                for axis in (2, 3):
                    flag[axis] = f"--resolution {request.resolution}"
                    wanted[axis] = _agree(path, name, axis, wanted[axis], request.resolution, "--resolution")
        shape = []
        for axis, (dim, want) in enumerate(zip(dims, wanted, strict=True)):
            if isinstance(dim, int):
                if want is not None and want != dim:
                    what = flag.get(axis, f"--input-shape {name}={'x'.join(str(w) for w in wanted)}")
                    raise UsageError(f"{path.name}: input '{name}' has a fixed size {dim} in dimension {axis} "
                                     f"({_show(dims)}); {what} cannot apply")
                shape.append(dim)
            elif want is None:
                raise UsageError(f"{path.name}: input '{name}' has dynamic dimension '{dim}' (axis {axis} of "
                                 f"{_show(dims)}); give its size with --input-shape {name}=" +
                                 "x".join(str(d) if isinstance(d, int) else "N" for d in dims))
            else:
                shape.append(want)
        shapes[name] = shape
    if request.resolution is not None and not four_d:
        raise UsageError(f"{path.name}: no 4-d (NCHW) input, so --resolution {request.resolution} cannot apply; "
                         "use --input-shape")
    return shapes


def _agree(path: Path, name: str, axis: int, given: int | None, value: int, flag: str) -> int:
    """``value`` (from ``flag``), unless ``--input-shape`` gave this dimension another size."""
    if given is not None and given != value:
        raise UsageError(f"{path.name}: input '{name}' dimension {axis}: --input-shape says {given}, "
                         f"{flag} says {value}")
    return value


def _show(dims: list[int | str]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


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
