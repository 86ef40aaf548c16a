"""The once-for-all MobileNetV3 space: arch strings, the network against OFA's own numbers, ONNX export."""

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
from hwlat.spaces.ofa import make_divisible

SPACE = get_space("ofa")
MAX = json.dumps({"ks": [7] * 20, "e": [6] * 20, "d": [4] * 5, "r": 224})
MIN = json.dumps({"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "r": 128})


def arch(ks=None, e=None, d=None, r=160) -> str:
    return json.dumps({"ks": ks or [5] * 20, "e": e or [4] * 20, "d": d or [3] * 5, "r": r})


def test_registered_through_the_plugin_table() -> None:
    assert SPACE.name == "ofa" and get_space("hwlat.spaces.ofa:OFAMobileNetV3Space") is SPACE
    assert SPACE.size() == (9**2 + 9**3 + 9**4) ** 5 * 25


def test_param_counts_match_the_once_for_all_code() -> None:
    """Counted by OFA's ``OFAMobileNetV3(ks_list=[3,5,7], expand_ratio_list=[3,4,6], depth_list=[2,3,4])``
    ``.get_active_subnet()`` (github.com/mit-han-lab/once-for-all @ f03b267, trainable tensors) for the
    largest and the smallest subnet; benchmarks/check_spaces_reference.py recomputes them."""
    assert sum(p.numel() for p in SPACE.build(MAX).parameters()) == 7_664_760
    assert sum(p.numel() for p in SPACE.build(MIN).parameters()) == 3_410_792


def test_make_divisible_is_ofas() -> None:
    assert [make_divisible(v) for v in (18, 30, 60, 240, 4)] == [24, 32, 64, 240, 8]


def test_network_layout() -> None:
    model = SPACE.build(arch(d=[2, 3, 4, 2, 3]))
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    # stem, first block (dw + pw), 14 MBConv blocks x 3 convs, SE convs (2 per block in stages 2, 4, 5), head 2
    se_blocks = 3 + 2 + 3
    assert len(convs) == 1 + 2 + 14 * 3 + 2 * se_blocks + 2
    x = SPACE.sample_input(2, 160)
    assert tuple(model(x).shape) == (2, 1000)
    depthwise = [c for c in convs if c.groups > 1]
    assert {c.kernel_size for c in depthwise[1:]} == {(5, 5)} and all(c.padding == (2, 2) for c in depthwise[1:])


def test_canonical_form_normalises_inactive_blocks_and_spelling() -> None:
    ks = [3, 5, 7, 7] * 5
    e = [6, 4, 3, 6] * 5
    canon = SPACE.validate(json.dumps({"r": 176, "d": [2, 3, 4, 2, 2], "e": e, "ks": ks}, indent=3))
    obj = json.loads(canon)
    assert list(obj) == ["ks", "e", "d", "r"] and " " not in canon
    assert obj["ks"][:4] == [3, 5, 3, 3] and obj["e"][:4] == [6, 4, 3, 3]  # stage 1: depth 2
    assert obj["ks"][8:12] == [3, 5, 7, 7] and obj["e"][8:12] == [6, 4, 3, 6]  # stage 3: depth 4
    other = list(ks)
    other[2], other[3] = 5, 7  # only inactive positions differ: the same network
    assert SPACE.validate(json.dumps({"ks": other, "e": e, "d": [2, 3, 4, 2, 2], "r": 176})) == canon
    assert SPACE.validate(canon) == canon
    assert SPACE.arch_resolution(canon) == 176


@pytest.mark.parametrize("bad, match", [
    ("not json", "not JSON"),
    ("[1, 2]", "keys ks, e, d, r"),
    (json.dumps({"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5}), "keys ks, e, d, r"),
    (json.dumps({"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "r": 224, "w": 1}), "keys ks, e, d, r"),
    (arch(ks=[3] * 19), "'ks' must be a list of 20"),
    (arch(ks=[3] * 19 + [9]), r"ks\[19\] = 9"),
    (arch(e=[3.0] * 20), r"e\[0\] = 3.0"),
    (arch(d=[1, 2, 3, 4, 4]), r"d\[0\] = 1"),
    (arch(d=[True, 2, 3, 4, 4]), r"d\[0\] = True"),
    (arch(r=226), "r must be an integer in 128"),
    (arch(r=224.0), "r must be an integer in 128"),
    (None, "must be a JSON string"),
])
def test_bad_strings_are_rejected_with_one_line(bad, match) -> None:
    with pytest.raises(ArchError, match=match) as exc:
        SPACE.validate(bad)
    assert "\n" not in str(exc.value)


def test_resolution_comes_from_the_arch(tmp_path) -> None:
    assert SPACE.resolution_for(MIN) == 128 and SPACE.resolution_for(MIN, 128) == 128
    with pytest.raises(UsageError, match="sets its own resolution 128; it cannot be built at 224"):
        SPACE.resolution_for(MIN, 224)
    with pytest.raises(UsageError, match="sets its own resolution 128"):
        export_models([ModelSpec("ofa", MIN, resolution=160)], "onnx", tmp_path, workers=1)
    assert not list((tmp_path / "models").iterdir())
    assert {json.loads(a)["r"] for a in SPACE.sample(40, seed=0)} <= set(range(128, 225, 4))


def test_onnx_export_matches_torch(tmp_path) -> None:
    sampled = SPACE.sample(1, seed=5)[0]
    arts = export_models([ModelSpec("ofa", MIN), ModelSpec("ofa", sampled)], "onnx", tmp_path, workers=1)
    for art, a in zip(arts, (MIN, sampled), strict=True):
        r = json.loads(a)["r"]
        assert art.resolution == r and art.input_shapes == {"input": [1, 3, r, r]}
        model = SPACE.build(a)
        assert art.params == sum(p.numel() for p in model.parameters())
        x = SPACE.sample_input(1, r, seed=7)
        with torch.no_grad():
            ref = model(x).numpy()
        (out,) = ort.InferenceSession(art.path, providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})
        np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-4 * float(np.abs(ref).max()))
        assert {"Conv", "ReduceMean", "Clip", "Gemm"} <= {n.op_type for n in onnx.load(art.path).graph.node}
        assert art.flops == onnx_flops(onnx.load(art.path))
