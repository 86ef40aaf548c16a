"""Exporters for the torch-based formats: ``pt2`` (``torch.export``) and ``pte`` (ExecuTorch + XNNPACK).

Called by ``harness.export`` for one model in an export worker; the cache, hashing and atomic
placement stay there. Both programs are traced from the same eval-mode module with one input named
``input``, like the ONNX and TFLite exports, so every runtime sees the same graph. Both are
byte-for-byte reproducible here (torch 2.13, executorch 1.5), so the content address is stable.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agents.errors import UsageError


def named_input(model: Any) -> Any:
    """``model`` wrapped so the exported program's (or TFLite signature's) one input is called ``input``,
    like the ONNX graph's."""
    import torch

    class NamedInput(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input: torch.Tensor) -> torch.Tensor:
            return self.inner(input)

    return NamedInput(model).eval()


def _exported(model: Any, sample: Any) -> Any:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.export.export(named_input(model), (sample,))


def export_pt2(model: Any, sample: Any, path: Path) -> None:
    """``torch.export`` program saved with ``torch.export.save`` (what the torch backend loads)."""
    import torch

    torch.export.save(_exported(model, sample), str(path))


def export_pte(model: Any, sample: Any, path: Path) -> None:
    """ExecuTorch program: every operator XNNPACK supports is delegated to it, the rest run on
    ExecuTorch's portable kernels (the agent reports which: ``XnnpackBackend+portable``).

    Lowered with ``to_edge`` + ``to_backend`` rather than ``to_edge_transform_and_lower``, told up front
    which operators the partitioner keeps whole: the same program byte for byte, ~1.6x faster
    (docs/benchmarks.md, "ExecuTorch export cost"). ``to_edge_transform_and_lower`` decomposes the
    graph three times (once to functionalize, once keeping every operator XNNPACK might take whole,
    once more after asking the partitioner which of those it really takes), each a full retrace, ~40 %
    of the lowering together. Asking the partitioner first, on the exported graph, lets one
    decomposition do all three. A graph where the partitioner takes some calls of an operator and
    not others cannot be decomposed in one go, and goes the long way.
    """
    try:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import EdgeCompileConfig, to_edge, to_edge_transform_and_lower
    except ImportError:
        raise UsageError("ExecuTorch export needs executorch: pip install 'hwlat[executorch]'") from None
    program = _exported(model, sample)
    partitioner = XnnpackPartitioner()
    kept = xnnpack_kept_ops(partitioner, program)
    with warnings.catch_warnings(), _quiet_partitioner():
        warnings.simplefilter("ignore")
        if kept is None:
            lowered = to_edge_transform_and_lower(program, partitioner=[partitioner])
        else:
            # No IR validity check: it re-verifies every node after each step and changes nothing
            # in the program (the to_edge_transform_and_lower path keeps it as the reference).
            config = EdgeCompileConfig(preserve_ops=kept, _check_ir_validity=False)
            lowered = to_edge(program, compile_config=config).to_backend(partitioner)
        path.write_bytes(lowered.to_executorch().buffer)


def xnnpack_kept_ops(partitioner: Any, program: Any) -> list[Any] | None:
    """The operators ``partitioner`` keeps from decomposition in ``program`` (those it takes whole,
    like ``aten.linear``): what ``to_edge_transform_and_lower`` works out with two extra
    decompositions. None when it takes some calls of an operator and rejects others (only the long
    way handles that)."""
    ops, check = partitioner.ops_to_not_decompose(program)
    verdicts: dict[Any, set[bool]] = {}
    for node in program.graph.nodes:
        if node.op == "call_function" and node.target in ops:
            verdicts.setdefault(node.target, set()).add(bool(check(node)) if check else True)
    if any(len(v) > 1 for v in verdicts.values()):
        return None
    return [op for op, v in verdicts.items() if v == {True}]


@contextlib.contextmanager
def _quiet_partitioner() -> Iterator[None]:
    """Drop the XNNPACK partitioner's "deprecated to_edge() + to_backend() workflow" warning, logged once
    per model: ``export_pte`` passes it the operators to keep itself, which is what the warning is about."""
    logger = logging.getLogger("executorch.backends.xnnpack.partition.xnnpack_partitioner")

    def keep(record: logging.LogRecord) -> bool:
        return "to_edge() + to_backend()" not in record.getMessage()

    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)
