"""Predicting the network that was measured: `hwlat predictor predict --models` and the Python API size an ONNX
file's dynamic dimensions with `--input-shape` / `--batch` / `--resolution` (``input_shapes=`` ...) exactly as
`hwlat measure --models` does (one owner: ``hwlat.spaces.shapes``), encode it under that size's graph key, and
refuse a dynamic dimension nobody sizes with measure's one-line error, never encoding it at 1.

Real files (attention blocks exported by torch with a dynamic sequence axis), a real `hwlat measure --models`
campaign at two sequence lengths, a real `predictor train`, real onnxruntime."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from attention import WIDTH, export_attention_block
from profiles import fast_profile

import predictor
from agents.errors import UsageError
from hwlat.cli.main import main
from hwlat.spaces.graph import DATASET_GRAPHS, graph_key, read_cached
from hwlat.spaces.shapes import shape_request
from predictor.api import encode_files

REPO = Path(__file__).resolve().parent.parent
INNER = (8, 16, 32, 48)  # one file per projection width: 4 networks at each size
SHORT, LONG = 16, 256


def _flops(seq: int, inner: int) -> int:
    return 2 * (3 * seq * WIDTH * inner + 2 * seq * seq * inner)


def hwlat(*args: str, root: Path, rc: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "HWLAT_GRAPH_CACHE": str(root / "graph-cache")}
    proc = subprocess.run([sys.executable, "-m", "hwlat", *args], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=300, check=False)
    assert proc.returncode == rc, proc.stderr[-2000:]
    return proc


def _shape(seq: int) -> str:
    return f"x=1x{seq}x{WIDTH}"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("shapes") / "models"
    folder.mkdir()
    torch.manual_seed(0)
    for inner in INNER:
        export_attention_block(folder / f"block{inner:02d}.onnx", inner)
    return folder


@pytest.fixture(scope="module")
def trained(models: Path) -> tuple[Path, Path]:
    """(dataset, predictor): the 4 files measured at seq 16 and at seq 256 by a real `hwlat measure --models`
    (8 rows, 8 encodings in _graphs/), and a predictor trained on them by `hwlat predictor train`."""
    root = models.parent
    profile, data = fast_profile(root), root / "ds"
    for seq in (SHORT, LONG):
        hwlat("measure", "--device", str(profile), "--models", str(models), "--out", str(data), "--input-shape",
              _shape(seq), root=root)
    model = root / "m.pt"
    hwlat("predictor", "train", "--data", str(data), "--out", str(model), "--steps", "60", root=root)
    return data, model


def test_predict_models_at_the_measured_shapes_through_the_cli(trained: tuple[Path, Path], models: Path,
                                                               tmp_path: Path) -> None:
    """`predict --models DIR --input-shape` predicts each file at the given size: the long sequence slower for
    every file, each size its own encoding in the cache under the key the dataset's rows were trained on."""
    data, model = trained
    rows = pd.read_parquet(data)
    assert len(rows) == 8 and set(rows["status"]) <= {"ok", "unstable"}
    preds = {}
    for seq in (SHORT, LONG):
        out = tmp_path / f"pred{seq}.parquet"
        proc = hwlat("predictor", "predict", "--model", str(model), "--device", "fastlocal", "--models", str(models),
                     "--input-shape", _shape(seq), "--out", str(out), root=tmp_path)
        assert "predicted 4 ONNX models" in proc.stdout
        preds[seq] = pd.read_parquet(out).set_index("arch")
    short, long = preds[SHORT], preds[LONG]
    assert list(short.index) == [f"block{i:02d}" for i in INNER] == list(long.index)
    assert (long["latency_ms"] > short["latency_ms"]).all(), (short["latency_ms"], long["latency_ms"])
    assert (short["model_sha256"] == long["model_sha256"]).all()  # one file each, two networks
    assert set(short["model_sha256"]) == set(rows["model_sha256"])

    # two cache entries per file, keyed by the shapes: the keys the measured rows' _graphs/ encodings have
    cache = tmp_path / "graph-cache"
    for sha, inner in zip(short["model_sha256"], INNER, strict=True):
        for seq in (SHORT, LONG):
            key = graph_key(sha, {"x": [1, seq, WIDTH]})
            mine, theirs = read_cached(cache, key), read_cached(data / DATASET_GRAPHS, key)
            assert mine is not None and theirs is not None
            assert mine.total("flops") == theirs.total("flops") == _flops(seq, inner)
    assert len(list(cache.glob("*.json.gz"))) == 8

    # the predictions are of the measured networks: within a factor 2 of their measured latency (a model of a
    # network encoded at seq 1 would sit far below the seq-256 rows)
    measured = rows.assign(seq=rows["input_shape"].map(lambda s: int(s[1]))).set_index(["arch", "seq"])
    for seq, pred in preds.items():
        ratio = pred["latency_ms"].to_numpy() / measured.xs(seq, level="seq").loc[pred.index, "latency_ms"].to_numpy()
        assert ((ratio > 0.5) & (ratio < 2.0)).all(), (seq, ratio)

    # the Python API takes the same sizes and gives the same numbers
    p = predictor.load(model)
    files = sorted(models.glob("*.onnx"))
    ms = p.predict(files, "fastlocal", input_shapes={"x": (1, LONG, WIDTH)})
    assert np.allclose(ms, long["latency_ms"].to_numpy(), rtol=1e-5)
    lat = measured.xs(LONG, level="seq").loc[[f.stem for f in files], "latency_ms"].to_numpy()
    p.transfer("board", files[:3], 2.0 * lat[:3], input_shapes={"x": [1, LONG, WIDTH]})
    on_board = p.predict(files, "board", input_shapes={"x": [1, LONG, WIDTH]})
    assert on_board.shape == (4,) and (on_board > 0).all()


def test_a_dynamic_dimension_nobody_sizes_is_refused_as_measure_refuses_it(trained: tuple[Path, Path],
                                                                           models: Path, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch,
                                                                           capsys: pytest.CaptureFixture) -> None:
    _, model = trained
    out = tmp_path / "pred.parquet"
    proc = hwlat("predictor", "predict", "--model", str(model), "--device", "fastlocal", "--models", str(models),
                 "--out", str(out), root=tmp_path, rc=2)
    line = proc.stderr.strip()
    assert "\n" not in line and line.startswith("hwlat: block08.onnx: input 'x' has dynamic dimension 'seq'"), line
    assert not out.exists() and not (tmp_path / "graph-cache").exists()  # nothing encoded at seq 1

    # the rest in-process through the CLI's own entry point (exit code and message as above; no interpreter start)
    monkeypatch.setenv("HWLAT_GRAPH_CACHE", str(tmp_path / "graph-cache"))

    def refused(*args: str) -> str:
        capsys.readouterr()
        assert main(list(args)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("hwlat: "), err
        return err.strip()

    assert refused("measure", "--device", str(fast_profile(tmp_path)), "--models", str(models), "--out",
                   str(tmp_path / "ds")) == line  # one vocabulary, one message
    assert not (tmp_path / "ds").exists()
    predict = ("predictor", "predict", "--model", str(model), "--device", "fastlocal", "--out", str(out))
    for flags, why in ((["--batch", "4"], "has a fixed size 1 in dimension 0"),
                       (["--input-shape", _shape(16), "--resolution", "64"], "--resolution 64 cannot apply"),
                       (["--input-shape", _shape(16), "--input-shape", "y=1x16x16"], "--input-shape y: no model in"),
                       (["--input-shape", _shape(16), "--input-shape", "x=1x8x16"], "given more than once"),
                       (["--input-shape", "x=1xfoo"], "expected NAME=DIMxDIMx"),
                       (["--input-shape", "x=1x16"], "2 dimensions given, the input has 3")):
        assert why in refused(*predict, "--models", str(models), *flags), flags
    # sizes with arch strings are refused, never ignored
    assert "size the inputs of --models ONNX files" in refused(*predict, "--space", "nb201", "--batch", "4")
    assert not out.exists()

    p = predictor.load(model)
    files = sorted(models.glob("*.onnx"))
    with pytest.raises(UsageError, match=r"^block08.onnx: input 'x' has dynamic dimension 'seq'"):
        p.predict(files, "fastlocal")
    with pytest.raises(UsageError, match="no model in the given files has an input of that name"):
        p.predict(files, "fastlocal", input_shapes={"x": (1, 16, 16), "input": (1, 3, 8, 8)})
    with pytest.raises(UsageError, match="arch strings name networks"):
        p.predict(["some-arch"], "fastlocal", input_shapes={"x": (1, 16, 16)})
    assert not (tmp_path / "graph-cache").exists()


def test_two_shapes_of_one_file_are_two_encodings(models: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The API's encoding step alone (no measuring): each size its own key, cache entry and FLOPs; the same size
    given as a dict, as texts or through the cache gives the same key."""
    path = models / "block16.onnx"
    cache = tmp_path / "cache"
    monkeypatch.setenv("HWLAT_GRAPH_CACHE", str(cache))
    short, = encode_files([path], {"x": (1, SHORT, WIDTH)})
    long, = encode_files([path], {"x": [1, LONG, WIDTH]})
    again, = encode_files([str(path)], shape_request([_shape(LONG)]).input_shapes)
    assert short.sha256 == long.sha256 and short.key != long.key and again.key == long.key
    assert short.key == graph_key(short.sha256, {"x": [1, SHORT, WIDTH]})
    assert (short.total("flops"), long.total("flops")) == (_flops(SHORT, 16), _flops(LONG, 16))
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{k}.json.gz" for k in (short.key, long.key))
    for bad in ({"x": (1, 0, WIDTH)}, {"x": (1, 2.5, WIDTH)}, {"x": "1x16x16"}):
        with pytest.raises(UsageError, match="positive integer sizes"):
            shape_request(bad)


def test_a_missing_or_unreadable_model_file_is_one_line_error(tmp_path: Path) -> None:
    """Both readers of a model file (the API's input check and the graph encoder) name the file in one line."""
    from hwlat.spaces.graph import encode_file

    gone, folder = tmp_path / "gone.onnx", tmp_path / "folder.onnx"
    folder.mkdir()
    for read in (lambda p: encode_files([p]), lambda p: encode_file(p, cache_dir=tmp_path / "cache")):
        with pytest.raises(UsageError, match=f"^model not found: {gone}$"):
            read(gone)
        with pytest.raises(UsageError) as err:  # a directory: unreadable as a file or as a model, named either way
            read(folder)
        assert str(folder) in str(err.value) and "\n" not in str(err.value)
