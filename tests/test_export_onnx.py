"""ONNX export: numerics vs torch, the content-addressed cache, parallel workers, errors."""

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from agents.errors import ArchError, UsageError
from harness import export as export_mod
from harness.export import export_models
from harness.onnx_files import onnx_flops
from harness.records import ModelSpec
from hwlat.spaces import get_space

ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
NB201_ARCH = get_space("nb201").arch_at(9)
FBNET_ARCH = "|".join(["k3_e1_g2", "k5_e6", "skip", "k3_e3"] * 5 + ["k5_e1_g2", "skip"])


def _ort_matches_torch(artifact):
    space = get_space(artifact.search_space)
    model = space.build(artifact.arch, artifact.batch, artifact.resolution)
    x = space.sample_input(artifact.batch, artifact.resolution, seed=7)
    with torch.no_grad():
        ref = model(x).numpy()
    sess = ort.InferenceSession(artifact.path, providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input"]
    (out,) = sess.run(None, {"input": x.numpy()})
    np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-4)
    return out


@pytest.fixture
def count_exports(monkeypatch):
    """Counts in-process ONNX exports (use with workers=1)."""
    calls = []
    real = export_mod._export_onnx

    def counting(model, sample, path):
        calls.append(path)
        real(model, sample, path)

    monkeypatch.setattr(export_mod, "_export_onnx", counting)
    return calls


def test_onnx_matches_torch_nb201_fbnet_and_all_none(tmp_path):
    specs = [
        ModelSpec("nb201", NB201_ARCH),
        ModelSpec("nb201", ALL_NONE),
        ModelSpec("fbnet", FBNET_ARCH),
        ModelSpec("fbnet", FBNET_ARCH, batch=2),
    ]
    arts = export_models(specs, "onnx", tmp_path, workers=1)
    for spec, art in zip(specs, arts, strict=True):
        assert (art.search_space, art.arch, art.batch) == (spec.search_space, spec.arch, spec.batch)
        assert art.input_shapes == {"input": [spec.batch, 3, 32, 32]}
        assert art.opset == 17 and art.format == "onnx"
        assert art.path.endswith(f"{art.sha256}.onnx")
        onnx.checker.check_model(art.path)
        out = _ort_matches_torch(art)
        assert out.shape == (spec.batch, 10 if spec.search_space == "nb201" else 100)
        # FLOPs from torch hooks agree with FLOPs read off the exported graph
        assert art.flops == onnx_flops(onnx.load(art.path))
        assert art.params > 0
    assert arts[0].arch_index == 9 and arts[2].arch_index is None
    assert arts[2].sha256 != arts[3].sha256


def test_cache_hit_exports_nothing(tmp_path, count_exports):
    specs = [ModelSpec("nb201", ALL_NONE), ModelSpec("nb201", get_space("nb201").arch_at(5))]
    first = export_models(specs, "onnx", tmp_path, workers=1)
    assert len(count_exports) == 2
    mtimes = [os.stat(a.path).st_mtime_ns for a in first]
    seen = []
    second = export_models(specs, "onnx", tmp_path, workers=1, progress=seen.append)
    assert len(count_exports) == 2
    assert second == first
    assert seen == first
    assert [os.stat(a.path).st_mtime_ns for a in second] == mtimes


def test_same_arch_twice_in_one_call_is_exported_once(tmp_path, count_exports):
    arch = get_space("nb201").arch_at(3)
    # a non-canonical spelling of the same arch is the same model
    respelled = "|avg_pool_3x3~0|+|none~1|skip_connect~0|+|skip_connect~2|none~0|none~1|"
    arts = export_models([ModelSpec("nb201", arch), ModelSpec("nb201", respelled)], "onnx", tmp_path, workers=1)
    assert len(count_exports) == 1
    assert arts[0] == arts[1]


def test_export_is_reproducible_byte_for_byte(tmp_path):
    spec = [ModelSpec("nb201", NB201_ARCH)]
    a = export_models(spec, "onnx", tmp_path / "one", workers=1)[0]
    b = export_models(spec, "onnx", tmp_path / "two", workers=1)[0]
    assert a.sha256 == b.sha256


def test_corrupt_or_missing_cached_file_is_exported_again(tmp_path, count_exports):
    spec = [ModelSpec("nb201", ALL_NONE)]
    art = export_models(spec, "onnx", tmp_path, workers=1)[0]
    with open(art.path, "r+b") as fh:  # same size, different bytes
        fh.seek(100)
        fh.write(b"\x00" * 16)
    again = export_models(spec, "onnx", tmp_path, workers=1)[0]
    assert len(count_exports) == 2
    assert again.sha256 == art.sha256
    _ort_matches_torch(again)
    os.remove(again.path)
    export_models(spec, "onnx", tmp_path, workers=1)
    assert len(count_exports) == 3
    assert os.path.exists(again.path)


def test_parallel_export_keeps_order(tmp_path):
    archs = get_space("nb201").sample(3, seed=11)
    specs = [ModelSpec("nb201", a) for a in archs] + [ModelSpec("fbnet", FBNET_ARCH)]
    done = []
    arts = export_models(specs, "onnx", tmp_path, workers=2, progress=done.append)
    assert [a.arch for a in arts] == [s.arch for s in specs]
    assert sorted(a.sha256 for a in done) == sorted(a.sha256 for a in arts)
    assert len({a.path for a in arts}) == 4
    for art in arts:
        assert os.path.exists(art.path)
    _ort_matches_torch(arts[-1])
    # no temporary files left behind
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == sorted(f"{a.sha256}.onnx" for a in arts)


def test_errors_are_usage_errors(tmp_path, monkeypatch):
    spec = [ModelSpec("nb201", ALL_NONE)]
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError, match="cannot write the export cache"):
        export_models(spec, "onnx", blocker / "cache")
    with pytest.raises(UsageError, match="unknown export format 'pt'"):
        export_models(spec, "pt", tmp_path)
    with pytest.raises(ArchError):
        export_models([ModelSpec("nb201", "|bad~0|")], "onnx", tmp_path)
    with pytest.raises(UsageError, match="unknown search space"):
        export_models([ModelSpec("nope", "x")], "onnx", tmp_path)
    with pytest.raises(UsageError, match="workers"):
        export_models(spec, "onnx", tmp_path, workers=0)

    def broken(model, sample, path):
        raise RuntimeError("exporter exploded\nwith a traceback")

    monkeypatch.setattr(export_mod, "_export_onnx", broken)
    with pytest.raises(UsageError) as exc:
        export_models(spec, "onnx", tmp_path / "c", workers=1)
    assert str(exc.value) == f"exporting nb201 arch '{ALL_NONE}' to onnx failed: exporter exploded"
    assert not list((tmp_path / "c" / "models").iterdir())  # the temp file was cleaned up


def test_default_workers_only_spawn_when_worth_it():
    from harness.export import ONNX_JOBS_PER_WORKER, default_workers

    cores = len(os.sched_getaffinity(0))
    assert default_workers(ONNX_JOBS_PER_WORKER - 1, "onnx") == 1
    assert default_workers(100 * ONNX_JOBS_PER_WORKER, "onnx") == cores
    assert default_workers(2, "tflite") == min(cores, 2)
