"""The AutoFormer-tiny ViT space: arch strings, the network against AutoFormer's numbers, ONNX export."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from agents.errors import ArchError, UsageError
from harness.export import export_models
from harness.onnx_files import onnx_flops
from harness.records import ModelSpec
from hwlat.spaces import get_space

SPACE = get_space("autoformer")
SMALLEST = json.dumps({"embed": 192, "depth": 12, "mlp": [3.5] * 12, "heads": [3] * 12})
LARGEST = json.dumps({"embed": 240, "depth": 14, "mlp": [4.0] * 14, "heads": [4] * 14})


def arch(embed=216, depth=13, mlp=None, heads=None) -> str:
    return json.dumps({"embed": embed, "depth": depth, "mlp": mlp or [4.0] * depth, "heads": heads or [3] * depth})


def test_registered_through_the_plugin_table() -> None:
    assert SPACE.name == "autoformer" and get_space("hwlat.spaces.autoformer:AutoFormerSpace") is SPACE
    assert SPACE.size() == 3 * (4**12 + 4**13 + 4**14)


def test_param_counts_match_the_autoformer_code() -> None:
    """AutoFormer's ``Vision_TransformerSuper(embed_dim=256, depth=14, num_heads=4, mlp_ratio=4, qkv_bias=True,
    change_qkv=True, gp=True, relative_position=False).get_sampled_params_numel(config)``
    (github.com/microsoft/Cream AutoFormer/, supernet-T); benchmarks/check_spaces_reference.py recomputes them."""
    assert sum(p.numel() for p in SPACE.build(SMALLEST).parameters()) == 5_273_896
    assert sum(p.numel() for p in SPACE.build(LARGEST).parameters()) == 10_409_752


def test_network_layout() -> None:
    model = SPACE.build(arch(embed=192, depth=12, mlp=[3.5, 4.0] * 6, heads=[3, 4] * 6))
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 12 * 4 + 1
    assert [linears[0].out_features, linears[1].in_features] == [3 * 3 * 64, 3 * 64]  # qkv / proj of 3 heads
    assert [linears[4].out_features, linears[5].in_features] == [3 * 4 * 64, 4 * 64]
    assert [linears[2].out_features, linears[6].out_features] == [672, 768]  # int(192 * 3.5), 192 * 4
    assert tuple(model.pos_embed.shape) == (1, 197, 192)
    assert tuple(model(SPACE.sample_input(2, 224)).shape) == (2, 1000)


def test_canonical_form() -> None:
    messy = ('{ "heads": [3,4,3,4,3,4,3,4,3,4,3,4],\n "mlp": [4,3.5,4,3.5,4,3.5,4,3.5,4,3.5,4,3.5],'
             ' "depth": 12, "embed": 240 }')
    canon = SPACE.validate(messy)
    assert canon == ('{"embed":240,"depth":12,"mlp":[4.0,3.5,4.0,3.5,4.0,3.5,4.0,3.5,4.0,3.5,4.0,3.5],'
                     '"heads":[3,4,3,4,3,4,3,4,3,4,3,4]}')
    assert SPACE.validate(canon) == canon
    assert SPACE.arch_resolution(canon) is None and SPACE.resolution_for(canon) == 224
    sampled = SPACE.sample(30, seed=2)
    assert all(SPACE.validate(a) == a for a in sampled)
    assert {json.loads(a)["depth"] for a in sampled} == {12, 13, 14}


@pytest.mark.parametrize("bad, match", [
    ("{", "not JSON"),
    (json.dumps({"embed": 192, "depth": 12, "mlp": [3.5] * 12}), "keys embed, depth, mlp, heads"),
    (arch(embed=256), "embed = 256"),
    (arch(depth=11, mlp=[3.5] * 11, heads=[3] * 11), "depth = 11"),
    (arch(depth=12, mlp=[3.5] * 13), "'mlp' must be a list of depth = 12"),
    (arch(mlp=[3.0] * 13), r"mlp\[0\] = 3.0"),
    (arch(mlp=["4"] * 13), r"mlp\[0\] = '4'"),
    (arch(heads=[3] * 12 + [5]), r"heads\[12\] = 5"),
    (arch(heads=[3.0] * 13), r"heads\[0\] = 3.0"),
    (42, "must be a JSON string"),
])
def test_bad_strings_are_rejected_with_one_line(bad, match) -> None:
    with pytest.raises(ArchError, match=match) as exc:
        SPACE.validate(bad)
    assert "\n" not in str(exc.value)


def test_resolution_must_be_a_multiple_of_the_patch() -> None:
    with pytest.raises(UsageError, match="divisible by the patch size 16"):
        SPACE.build(SMALLEST, resolution=200)
    assert tuple(SPACE.build(SMALLEST, resolution=64).pos_embed.shape) == (1, 17, 192)


def test_onnx_export_matches_torch(tmp_path) -> None:
    (art,) = export_models([ModelSpec("autoformer", SMALLEST)], "onnx", tmp_path, workers=1)
    assert art.resolution == 224 and art.input_shapes == {"input": [1, 3, 224, 224]}
    model = SPACE.build(SMALLEST)
    assert art.params == sum(p.numel() for p in model.parameters())
    x = SPACE.sample_input(1, 224, seed=7)
    with torch.no_grad():
        ref = model(x).numpy()
    (out,) = ort.InferenceSession(art.path, providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})
    np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-4 * float(np.abs(ref).max()))
    ops = {n.op_type for n in onnx.load(art.path).graph.node}
    assert {"MatMul", "Softmax", "LayerNormalization", "Erf"} <= ops
    # the attention products (q @ k^T, attn @ v) count like every other matrix product, in torch and ONNX
    attention = 2 * 12 * 2 * 3 * 197 * 197 * 64
    assert art.flops == onnx_flops(onnx.load(art.path)) > attention
