"""The traced graph encoding (hwlat.spaces.trace): totals equal the exporter's counts, operators the ONNX path's."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from agents.errors import ArchError
from harness.export import export_models, torch_flops_params
from harness.records import ModelSpec
from hwlat.spaces import get_space
from hwlat.spaces.graph import encode_file
from hwlat.spaces.trace import trace_encoding, trace_key

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_SPEC = f"{REPO / 'docs' / 'examples' / 'my_space.py'}:TinyConvSpace"
OFA_LARGEST = json.dumps({"ks": [7] * 20, "e": [6] * 20, "d": [4] * 5, "r": 224})


@pytest.mark.parametrize(("name", "archs"), [
    ("ofa", [OFA_LARGEST, *get_space("ofa").sample(2, seed=3)]),
    ("autoformer", get_space("autoformer").sample(2, seed=3)),
    (EXAMPLE_SPEC, ["64x3,32x1,16x2"]),
])
def test_traced_totals_equal_torch_flops_params(name: str, archs: list[str]) -> None:
    """FLOPs (2 x MACs) and parameters of the trace equal FlopCounterMode's and the module's own counts, i.e. the
    dataset's ``flops``/``params`` columns, although the trace builds nothing but meta tensors."""
    space = get_space(name)
    for arch in archs:
        enc = trace_encoding(space, arch)
        resolution = space.resolution_for(space.validate(arch))
        flops, params = torch_flops_params(space.build(arch), space.sample_input(1, resolution))
        assert (enc.total("flops"), enc.total("params")) == (flops, params), arch
        assert enc.ops and all(0 <= u < v < len(enc.ops) for u, v in enc.edges)


def test_traced_key_and_errors() -> None:
    """One network, one key: spellings of one OFA arch (inactive positions differ) trace to the same key; a bad
    arch is the space's own one-line ArchError."""
    space = get_space("ofa")
    arch = space.sample(1, seed=0)[0]
    loose = arch.replace(",", ", ")
    assert trace_encoding(space, loose).sha256 == trace_key(space, arch, 1, space.resolution_for(arch))
    with pytest.raises(ArchError, match="ofa arch"):
        trace_encoding(space, '{"ks": [3]}')


@pytest.mark.parametrize("name", ["ofa", "autoformer"])
def test_traced_operators_equal_the_onnx_graph(name: str, tmp_path: Path) -> None:
    """Per op type, the trace has the operators of the exported ONNX graph read by ``graph.encode_model`` (BN folded
    into convs, MatMul + Add for a 3-D linear layer, Split + Squeezes for unbind), with the same edges."""
    space = get_space(name)
    arch = space.sample(1, seed=5)[0]
    art = export_models([ModelSpec(name, arch)], "onnx", tmp_path / "cache", workers=1)[0]
    onnx_enc = encode_file(art.path, cache_dir=tmp_path / "graphs")
    traced = trace_encoding(space, arch)
    assert Counter(op["type"] for op in traced.ops) == Counter(op["type"] for op in onnx_enc.ops)
    assert len(traced.edges) == len(onnx_enc.edges)
    assert traced.total("flops") == onnx_enc.total("flops")
    moved = [sum(op["bytes_read"] + op["bytes_written"] for op in e.ops) for e in (traced, onnx_enc)]
    assert moved[0] == pytest.approx(moved[1], rel=1e-3)
