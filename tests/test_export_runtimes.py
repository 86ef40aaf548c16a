"""The pte and pt2 exports, and OpenVINO on the ONNX export, give torch's outputs (one arch per space).

pte lowering to XNNPACK takes 10-20 s per model here, hence ``slow``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.export import export_models
from harness.records import ModelSpec
from hwlat.spaces import get_space

pytestmark = pytest.mark.slow

#: nb201 index 9 has none, skip, avg_pool and a 3x3 conv; fbnet's first sample has every block kind it draws.
ARCHS = {"nb201": lambda s: s.arch_at(9), "fbnet": lambda s: s.sample(1, 0)[0]}


def reference(space_name: str) -> tuple[str, np.ndarray, np.ndarray]:
    space = get_space(space_name)
    arch = ARCHS[space_name](space)
    x = space.sample_input(seed=3)
    with torch.no_grad():
        return arch, x.numpy(), space.build(arch)(x).numpy()


@pytest.mark.parametrize("space_name", ["nb201", "fbnet"])
def test_pt2_matches_torch(tmp_path, space_name: str) -> None:
    arch, x, ref = reference(space_name)
    (art,) = export_models([ModelSpec(space_name, arch)], "pt2", tmp_path, workers=1)
    assert art.format == "pt2" and art.path.endswith(f"{art.sha256}.pt2") and art.opset is None
    program = torch.export.load(art.path)
    assert list(program.graph_signature.user_inputs) == ["input"]
    with torch.no_grad():
        out = program.module()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    assert export_models([ModelSpec(space_name, arch)], "pt2", tmp_path, workers=1)[0] == art  # cached


@pytest.mark.parametrize("space_name", ["nb201", "fbnet"])
def test_pte_xnnpack_matches_torch(tmp_path, space_name: str) -> None:
    pytest.importorskip("executorch.exir")
    from executorch.runtime import Runtime, Verification

    from agents.backends.executorch import program_kernels

    arch, x, ref = reference(space_name)
    (art,) = export_models([ModelSpec(space_name, arch)], "pte", tmp_path, workers=1)
    assert art.format == "pte" and art.path.endswith(f"{art.sha256}.pte")
    assert "XnnpackBackend" in program_kernels(art.path, ["XnnpackBackend", "OpenvinoBackend"])
    method = Runtime.get().load_program(art.path, verification=Verification.Minimal).load_method("forward")
    (out,) = method.execute([torch.from_numpy(x)])
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-3, atol=1e-4)
    onnx_art = export_models([ModelSpec(space_name, arch)], "onnx", tmp_path, workers=1)[0]
    assert onnx_art.sha256 != art.sha256  # the format is part of the model's identity
    assert export_models([ModelSpec(space_name, arch)], "pte", tmp_path, workers=1)[0] == art  # cached


@pytest.mark.parametrize("space_name", ["nb201", "fbnet"])
def test_openvino_on_the_onnx_export_matches_torch(tmp_path, space_name: str) -> None:
    ov = pytest.importorskip("openvino")
    arch, x, ref = reference(space_name)
    (art,) = export_models([ModelSpec(space_name, arch)], "onnx", tmp_path, workers=1)
    compiled = ov.Core().compile_model(art.path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    out = compiled.create_infer_request().infer({"input": x})
    np.testing.assert_allclose(next(iter(out.values())), ref, rtol=1e-4, atol=1e-5)


def test_pte_export_is_byte_identical_to_the_one_call_lowering(tmp_path) -> None:
    """``export_pte`` lowers with ``to_edge`` + ``to_backend`` (faster); the program must stay the one
    ``to_edge_transform_and_lower`` writes, byte for byte."""
    pytest.importorskip("executorch.exir")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from harness.export_torch import _exported, export_pte

    space = get_space("nb201")
    arch, x, _ = reference("nb201")
    model = space.build(arch)
    export_pte(model, torch.from_numpy(x), tmp_path / "new.pte")
    one_call = to_edge_transform_and_lower(_exported(model, torch.from_numpy(x)), partitioner=[XnnpackPartitioner()])
    assert (tmp_path / "new.pte").read_bytes() == one_call.to_executorch().buffer


class _Linear(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class _MixedLinear(_Linear):
    """Two linears: XNNPACK takes the one with a weight parameter whole, not the one whose weight is the input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(self.fc(x), x)


@pytest.mark.parametrize(("module", "kept"), [(_Linear, ["aten.linear.default"]), (_MixedLinear, None)])
def test_pte_kept_ops_and_the_mixed_fallback(tmp_path, module: type, kept: list[str] | None) -> None:
    """The operators XNNPACK keeps whole are found before lowering; a graph where it keeps some calls of an
    operator and rejects others goes the one-call way. Both programs give torch's output."""
    pytest.importorskip("executorch.exir")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.runtime import Runtime, Verification

    from harness.export_torch import _exported, export_pte, xnnpack_kept_ops

    model, x = module().eval(), torch.randn(8, 8)
    found = xnnpack_kept_ops(XnnpackPartitioner(), _exported(model, x))
    assert (found if found is None else [str(op) for op in found]) == kept
    export_pte(model, x, tmp_path / "m.pte")
    method = Runtime.get().load_program(str(tmp_path / "m.pte"), verification=Verification.Minimal)
    (out,) = method.load_method("forward").execute([x])
    with torch.no_grad():
        np.testing.assert_allclose(out.numpy(), model(x).numpy(), rtol=1e-4, atol=1e-5)
