"""Exporters for the torch-based formats: ``pt2`` (``torch.export``) and ``pte`` (ExecuTorch + XNNPACK).

Called by ``harness.export`` for one model in an export worker; the cache, hashing and atomic
placement stay there. Both programs are traced from the same eval-mode module with one input named
``input``, like the ONNX and TFLite exports, so every runtime sees the same graph. Both are
byte-for-byte reproducible here (torch 2.13, executorch 1.5), so the content address is stable.
"""

from __future__ import annotations

import warnings
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
    ExecuTorch's portable kernels (the agent reports which: ``XnnpackBackend+portable``)."""
    try:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower
    except ImportError:
        raise UsageError("ExecuTorch export needs executorch: pip install 'hwlat[executorch]'") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = to_edge_transform_and_lower(_exported(model, sample), partitioner=[XnnpackPartitioner()])
        path.write_bytes(program.to_executorch().buffer)
