"""TFLite export through litert-torch, checked with the LiteRT interpreter (slow: ~6-20 s/model)."""

import numpy as np
import pytest
import torch

from harness.export import export_models
from harness.records import ModelSpec
from hwlat.spaces import get_space

pytestmark = [pytest.mark.tflite, pytest.mark.slow]


def test_tflite_matches_torch(tmp_path):
    pytest.importorskip("litert_torch")
    interpreter_mod = pytest.importorskip("ai_edge_litert.interpreter")
    space = get_space("nb201")
    arch = space.arch_at(9)  # contains none, skip, avg_pool and a 3x3 conv
    (art,) = export_models([ModelSpec("nb201", arch)], "tflite", tmp_path, workers=1)
    assert art.format == "tflite" and art.opset is None
    assert art.path.endswith(f"{art.sha256}.tflite")
    assert art.input_shapes == {"input": [1, 3, 32, 32]}

    x = space.sample_input(seed=3)
    with torch.no_grad():
        ref = space.build(arch)(x).numpy()
    interp = interpreter_mod.Interpreter(model_path=art.path)
    runner = interp.get_signature_runner()
    (out,) = runner(input=x.numpy()).values()
    np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-4)

    again = export_models([ModelSpec("nb201", arch)], "tflite", tmp_path, workers=1)[0]
    assert again == art
