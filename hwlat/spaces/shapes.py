"""Input sizes of a user's ONNX file: the one owner of ``--input-shape NAME=DIMS``, ``--batch`` and
``--resolution`` for ``--models`` (``hwlat measure`` and ``hwlat predictor predict``) and of the Python API's
``input_shapes=``/``batch=``/``resolution=``.

Why here, beside the search spaces: the coordinator (``harness.onnx_files``, what is measured) and the predictor
(``predictor.api``, what is predicted) must size a file's dynamic dimensions by exactly the same rules, or a user
would predict another network than the one measured; neither may import the other, and this is the lowest layer
both import. Only ``onnx`` is needed.

Dynamic input dimensions (``batch``, ``N``, ``seq``, ...) must be given a size: ``--input-shape
NAME=1x3x224x224`` fixes a whole input, ``--batch`` a dynamic first dimension and ``--resolution`` dynamic
H/W of a 4-d (NCHW) input (``ShapeRequest``). A dynamic dimension left without a size is refused with a
one-line error naming the file, the input and the dimension, never silently taken as 1 (a transformer
block timed at sequence length 1 came out 7x faster than at 64). ``--batch``/``--resolution`` that a model's
fixed dimensions contradict are refused too, never ignored.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from agents.errors import UsageError


def shapes_json(shapes: Mapping[str, Sequence[int]] | None) -> str | None:
    """``{"name": [dims]}`` as the ``input_shapes_json`` text of a measured row (``harness.rows``) and of a
    prediction (``predictor.api``): sorted keys, compact, so the same network's shapes compare equal as strings
    and a prediction joins to its measured rows. None for None."""
    if shapes is None:
        return None
    return json.dumps({str(k): [int(d) for d in v] for k, v in shapes.items()}, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class ShapeRequest:
    """The input sizes the user asked for: ``--input-shape NAME=AxBxC`` (per input name), ``--batch`` and
    ``--resolution`` (None when not given, so "not given" and "1" differ)."""

    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    batch: int | None = None
    resolution: int | None = None
    #: {input name: dtype name ("int64")} of the inputs given as example tensors: what a torch module is traced
    #: with (an ONNX file declares its own)
    dtypes: dict[str, str] = field(default_factory=dict)


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


def shape_request(input_shapes: Iterable[str] | Mapping[str, Any] | None = None,
                  batch: int | None = None, resolution: int | None = None) -> ShapeRequest:
    """A checked ``ShapeRequest`` from the command line's repeatable ``--input-shape NAME=DIMS`` texts, or from
    the Python API's ``{name: dims}``, where dims may be an example tensor (its shape, and its dtype for a torch
    module: integer token ids); ``UsageError`` for a malformed size, an input named twice, or a
    ``batch``/``resolution`` below 1."""
    given: list[tuple[str, list[int]]] = []
    dtypes: dict[str, str] = {}
    if isinstance(input_shapes, Mapping):
        for name, dims in input_shapes.items():
            if hasattr(dims, "shape") and hasattr(dims, "dtype"):  # an example tensor (torch or numpy)
                dtypes[str(name)] = str(dims.dtype).removeprefix("torch.")
                dims = tuple(dims.shape)
            try:
                shape = [int(d) for d in dims]
            except (TypeError, ValueError):
                shape = []
            if not shape or any(d < 1 or d != orig for d, orig in zip(shape, dims, strict=True)):
                raise UsageError(f"input_shapes[{name!r}] = {dims!r}: expected a sequence of positive integer "
                                 "sizes, e.g. (1, 3, 224, 224)")
            given.append((str(name), shape))
    else:
        given = [parse_input_shape(text) for text in input_shapes or ()]
    twice = sorted({name for name, _ in given if sum(n == name for n, _ in given) > 1})
    if twice:
        raise UsageError(f"--input-shape {twice[0]} is given more than once")
    for value in (batch, resolution):
        if value is not None and value < 1:
            raise UsageError(f"--batch and --resolution must be at least 1, got {value}")
    return ShapeRequest(dict(given), batch, resolution, dtypes)


def check_names_used(request: ShapeRequest, resolved: Iterable[Mapping[str, list[int]]], where: str) -> None:
    """Refuse an ``--input-shape`` name that none of the ``resolved`` models has (a typo would otherwise be
    ignored); ``where`` names the models in the message."""
    unused = set(request.input_shapes) - {name for shapes in resolved for name in shapes}
    if unused:
        raise UsageError(f"--input-shape {sorted(unused)[0]}: no model in {where} has an input of that name")


def graph_dims(model: onnx.ModelProto) -> dict[str, list[int | str]]:
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
    """Every input's shape: the graph's fixed sizes, with dynamic ones taken from ``request``.

    ``--input-shape`` gives a whole input (same rank; fixed sizes must agree), ``--batch`` the first
    dimension of every input, ``--resolution`` the last two of a 4-d input. A flag that contradicts a fixed
    size, a ``--resolution`` for a model without a 4-d input, or a dynamic size nobody gave is a
    ``UsageError`` naming the file, the input and the dimension.
    """
    return resolve_dims(path, graph_dims(model), request)


def resolve_dims(path: Path, inputs: Mapping[str, list[int | str]], request: ShapeRequest) -> dict[str, list[int]]:
    """``resolve_shapes`` from the model's ``graph_dims`` (a caller that keeps them need not parse the file
    again)."""
    shapes: dict[str, list[int]] = {}
    four_d = False
    for name, dims in inputs.items():
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
