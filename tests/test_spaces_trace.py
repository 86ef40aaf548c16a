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
    # and the same ones dead (the ViT's zero-slice broadcast of its class token: Slice, Mul by 0, Add)
    assert Counter((op["type"], bool(op.get("dead"))) for op in traced.ops) == \
        Counter((op["type"], bool(op.get("dead"))) for op in onnx_enc.ops)
    assert traced.liveness and onnx_enc.liveness
    assert len(traced.edges) == len(onnx_enc.edges)
    assert traced.total("flops") == onnx_enc.total("flops")
    moved = [sum(op["bytes_read"] + op["bytes_written"] for op in e.ops) for e in (traced, onnx_enc)]
    assert moved[0] == pytest.approx(moved[1], rel=1e-3)


def test_dead_operators_are_marked_in_both_encodings(tmp_path: Path) -> None:
    """An operator cut off by a multiplication by zero (NB201's ``none`` is ``x * 0``) is marked dead in the
    exported ONNX graph and in the trace alike; features count it in the dead columns, and a network whose every
    operator is dead is one with a constant output (the graph encoders' degenerate archs).

    Cell 1: node 1 = conv3x3(node 0), node 2 = none + none, output = skip(node 0) + none(node 1) + none(node 2):
    the cell's conv feeds only a product with zero, so its 15 copies (5 cells x 3 stages) are dead and everything
    else is live. Cell 2 cuts the output off the input: the network computes a constant, every operator is dead.
    """
    from predictor.encode import add_graph_features, get_encoder, register_graph_space
    from predictor.graph import FLAT_DIM, LINEAR_UNITS, N_DEAD, constant_output, features, linear

    space = get_space("nb201")
    cut_conv = "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"
    cut_output = "|none~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|"
    arts = export_models([ModelSpec("nb201", a) for a in (cut_conv, cut_output)], "onnx", tmp_path / "cache",
                         workers=1)
    for arch, art in zip((cut_conv, cut_output), arts, strict=True):
        for how, enc in (("onnx", encode_file(art.path, cache_dir=tmp_path / "graphs")),
                         ("traced", trace_encoding(space, arch))):
            dead = [op for op in enc.ops if op.get("dead")]
            if arch == cut_output:
                assert len(dead) == len(enc.ops)
            else:
                assert sum(op["type"] == "conv" for op in dead) == 15
                assert any(op["type"] == "conv" and not op.get("dead") for op in enc.ops)
                assert {op["type"] for op in dead} <= {"conv", "relu", "eltwise"}
            flat = features(enc)[0]
            lin = linear(flat[None])[0]
            assert flat.shape == (FLAT_DIM,)
            assert constant_output(flat[None])[0] == (arch == cut_output)
            key = f"{how}:{arch}"
            add_graph_features([key], *(a[None] for a in features(enc)))
            assert get_encoder(register_graph_space("dead-ops-test")).degenerate([key])[0] == (arch == cut_output)
            assert lin[-N_DEAD] * LINEAR_UNITS[0] == pytest.approx(sum(op["flops"] for op in dead), rel=1e-5)
            assert lin[-1] * LINEAR_UNITS[2] == pytest.approx(len(dead), rel=1e-5)


def test_mark_dead_follows_products_with_zero() -> None:
    """0 -> 1 -> 2(x*0) -> 3 <- 0, 3 -> 4 (output), 0 -> 5 (read by nothing): 1 feeds only the product with zero
    and 2 is constant, so both are dead; 3 still varies through its edge from 0; 5 reaches no output. With the
    outputs unknown, the ops nothing reads count as outputs (5 is then live)."""
    from hwlat.spaces.graph import mark_dead

    edges = [(0, 1), (1, 2), (2, 3), (0, 3), (3, 4), (0, 5)]
    ops = [{"dead": True} if k == 4 else {} for k in range(6)]  # a stale mark is cleared
    mark_dead(ops, edges, zeroing={2}, outputs={4})
    assert [bool(op.get("dead")) for op in ops] == [False, True, True, False, False, True]
    mark_dead(ops, edges, zeroing={2}, outputs=set())
    assert [bool(op.get("dead")) for op in ops] == [False, True, True, False, False, False]
    # a product with zero on the only path: everything downstream computes on constants
    mark_dead(ops, [(0, 1), (1, 2), (2, 3), (3, 4)], zeroing={1}, outputs={4})
    assert [bool(op.get("dead")) for op in ops[:5]] == [True] * 5
