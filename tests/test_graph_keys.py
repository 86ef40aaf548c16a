"""Which graph encodes a measured row: one ONNX file measured at two input shapes is two networks with two
encodings in ``_graphs/`` (keyed by ``hwlat.spaces.graph.graph_key``); NB201/FBNet rows measured at another
resolution or batch than their analytic encoder describes train a graph-encoded ``<space>-graph`` space from
their exported graphs; datasets written before encodings were keyed by size still load."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from attention import WIDTH, export_attention_block
from profiles import fast_profile
from test_measure_local import hwlat

from agents.errors import UsageError
from harness.export import export_models
from harness.records import ModelSpec
from harness.store import read_dataset
from hwlat.spaces.graph import (
    DATASET_GRAPHS,
    GraphEncoding,
    encode_file,
    encode_model,
    graph_key,
    read_cached,
    save_dataset_graphs,
)
from predictor.api import Predictor
from predictor.data import load_table
from predictor.encode import get_encoder, is_graph_space
from predictor.train import TrainConfig

SMALL = TrainConfig(nets=[("gnn", 1, 8), ("mlp", 1, 16)], steps=20, batch=32)


def _flops(seq: int) -> int:
    return 2 * (3 * seq * WIDTH * WIDTH + 2 * seq * seq * WIDTH)


# ------------------------------------------------------------------------------------ one file, two shapes


def test_one_file_measured_at_two_shapes_trains_on_two_encodings(tmp_path: Path) -> None:
    """A real `hwlat measure --models` of one dynamic file at seq 16 and (with --remeasure) seq 64 into one
    dataset: two encodings in _graphs/, two training rows with different features, never averaged."""
    models = tmp_path / "models"
    models.mkdir()
    export_attention_block(models / "block.onnx")
    profile, out = fast_profile(tmp_path), tmp_path / "ds"
    for seq, again in ((16, []), (64, ["--remeasure"])):
        hwlat("measure", "--device", str(profile), "--models", str(models), "--out", str(out),
              "--input-shape", f"x=1x{seq}x{WIDTH}", *again)
    rows = read_dataset(out).to_pandas()
    assert sorted(map(tuple, rows["input_shape"])) == [(1, 16, WIDTH), (1, 64, WIDTH)]
    assert rows["model_sha256"].nunique() == 1
    sha = rows["model_sha256"].iloc[0]
    stored = {p.name.removesuffix(".json.gz") for p in (out / DATASET_GRAPHS).iterdir()}
    keys = {graph_key(sha, {"x": [1, seq, WIDTH]}) for seq in (16, 64)}
    assert stored == keys  # neither is the bare sha256: both sizes differ from the file's own (seq 1)
    for seq in (16, 64):
        enc = read_cached(out / DATASET_GRAPHS, graph_key(sha, {"x": [1, seq, WIDTH]}))
        assert enc.inputs == {"x": [1, seq, WIDTH]} and enc.total("flops") == _flops(seq)
        assert enc.total("flops") == rows.loc[rows["input_shape"].map(lambda s, q=seq: s[1] == q), "flops"].item()

    table = load_table([out])
    assert sorted(table.df["arch"]) == sorted(keys) and len(table.df) == 2  # two networks, not one mean
    enc = get_encoder("onnx").encode(sorted(keys))
    assert not np.allclose(enc.flat[0], enc.flat[1])
    model = Predictor.train(table, SMALL)
    assert model.spaces() == ["onnx"] and model.predict(sorted(keys), "fastlocal").shape == (2,)

    # running the same command again measures nothing and finds both encodings in place
    hwlat("measure", "--device", str(profile), "--models", str(models), "--out", str(out),
          "--input-shape", f"x=1x64x{WIDTH}")
    assert len(read_dataset(out)) == 2
    assert {p.name.removesuffix(".json.gz") for p in (out / DATASET_GRAPHS).iterdir()} == keys


def _legacy(enc: GraphEncoding) -> bytes:
    """The encoding as hwlat wrote it before sizes were keyed: no ``inputs``, no ``key``."""
    return GraphEncoding(enc.sha256, enc.ops, enc.edges).to_json()


def _rows(sha: str, shapes: list[dict[str, list[int]]]) -> pd.DataFrame:
    return pd.DataFrame({"search_space": "onnx", "arch": "block", "device": "dev", "status": "ok",
                         "latency_ms": [0.5 + i for i in range(len(shapes))], "model_sha256": sha,
                         "input_shapes_json": [json.dumps(s) for s in shapes]})


def test_datasets_written_before_sizes_were_keyed_still_load(tmp_path: Path) -> None:
    """An old dataset's _graphs/<sha256>.json.gz (no recorded shapes) still trains rows measured at the shapes
    it was encoded at, is never taken for rows at another size (the old bug: a dynamic file encoded at 1 for
    rows measured at 64), and rows without input shapes (a table from elsewhere) read it as before."""
    static = tmp_path / "static.onnx"
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 4))
    torch.onnx.export(model.eval(), (torch.randn(1, 3, 8, 8),), str(static), input_names=["input"], opset_version=17,
                      dynamo=False)
    enc = encode_file(static, cache_dir=tmp_path / "cache")
    assert enc.key == enc.sha256 and enc.inputs == {"input": [1, 3, 8, 8]}  # its own shape: the bare sha256
    ds = tmp_path / "old"
    (ds / DATASET_GRAPHS).mkdir(parents=True)
    (ds / DATASET_GRAPHS / f"{enc.sha256}.json.gz").write_bytes(_legacy(enc))
    _rows(enc.sha256, [{"input": [1, 3, 8, 8]}]).to_parquet(ds / "rows.parquet")
    table = load_table([ds / "rows.parquet"])
    assert table.df["arch"].tolist() == [enc.sha256]
    _rows(enc.sha256, [{}]).assign(input_shapes_json=None).to_parquet(ds / "rows.parquet")
    assert load_table([ds / "rows.parquet"]).df["arch"].tolist() == [enc.sha256]

    dynamic = tmp_path / "block.onnx"
    export_attention_block(dynamic)
    old = encode_file(dynamic, cache_dir=tmp_path / "cache")  # what the harness stored: seq fixed to 1
    assert old.inputs == {"x": [1, 1, WIDTH]} and old.key == old.sha256
    (ds / DATASET_GRAPHS / f"{old.sha256}.json.gz").write_bytes(_legacy(old))
    _rows(old.sha256, [{"x": [1, 64, WIDTH]}]).to_parquet(ds / "rows.parquet")
    with pytest.raises(UsageError, match=r"no graph encoding .*model_sha256 \w+ at input shapes "
                                         r'\{"x":\[1,64,16\]\}.*run the command that measured them'):
        load_table([ds / "rows.parquet"])


def test_graph_key_is_the_sha256_at_the_files_own_shapes(tmp_path: Path) -> None:
    path = tmp_path / "block.onnx"
    export_attention_block(path)
    model = onnx.load(path)
    own = encode_model(model, "abc")
    assert own.key == "abc" and own.total("flops") == _flops(1)
    sized = encode_model(model, "abc", input_shapes={"x": [1, 32, WIDTH]})
    assert sized.key == graph_key("abc", {"x": [1, 32, WIDTH]}) != "abc" and sized.total("flops") == _flops(32)
    assert encode_model(model, "abc", input_shapes={"x": [1, 1, WIDTH]}).key == "abc"  # the same network
    back = GraphEncoding.from_json(sized.to_json())
    assert (back.key, back.inputs, back.sha256) == (sized.key, sized.inputs, "abc")


# ------------------------------------------------------------------------------ NB201 at another resolution

NB201 = ["|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_3x3~1|skip_connect~2|",
         "|skip_connect~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_1x1~0|skip_connect~1|nor_conv_3x3~2|",
         "|avg_pool_3x3~0|+|nor_conv_1x1~0|none~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"]


@pytest.fixture(scope="module")
def nb201_mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset as `hwlat measure --space nb201` writes it at the default resolution and at --resolution 64
    (the exports and _graphs/ are real; the latencies are made up: only the encoding is under test)."""
    root = tmp_path_factory.mktemp("nb201-mixed")
    ds = root / "ds"
    ds.mkdir()
    specs = [ModelSpec("nb201", a, 1, r) for r in (32, 64) for a in NB201]
    arts = export_models(specs, "onnx", root / "cache", workers=1)
    assert not save_dataset_graphs(ds, [(a.sha256, a.path, a.input_shapes) for a in arts])
    pd.DataFrame({"search_space": "nb201", "device": "dev", "status": "ok", "arch": [a.arch for a in arts],
                  "batch": [a.batch for a in arts], "resolution": [a.resolution for a in arts],
                  "flops": [a.flops for a in arts], "model_sha256": [a.sha256 for a in arts],
                  "input_shapes_json": [json.dumps(a.input_shapes) for a in arts],
                  "latency_ms": [1.0 + i for i in range(len(arts))]}).to_parquet(ds / "rows.parquet")
    return ds


def test_nb201_rows_at_another_resolution_train_their_graph_space(nb201_mixed: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """Rows at resolution 32 stay on the analytic NB201 encoder; rows at 64 (another network: 4x the FLOPs)
    are keyed by their model file and encoded from its graph, as the space nb201-graph; a warning says so."""
    rows = pd.read_parquet(nb201_mixed / "rows.parquet")
    with caplog.at_level(logging.WARNING, logger="hwlat"):
        table = load_table([nb201_mixed / "rows.parquet"])
    assert "3 nb201 row(s) measured at another size" in caplog.text and "nb201-graph" in caplog.text
    assert table.spaces() == ["nb201", "nb201-graph"] and is_graph_space("nb201-graph")
    default = table.df[table.df["search_space"] == "nb201"]
    sized = table.df[table.df["search_space"] == "nb201-graph"]
    at = rows.set_index("model_sha256")
    assert sorted(default["arch"]) == sorted(NB201)  # arch strings, the analytic encoding
    assert set(sized["arch"]) == set(at.index[at["resolution"] == 64])  # the measured files at 64
    flops = {k: read_cached(nb201_mixed / DATASET_GRAPHS, k).total("flops") for k in sized["arch"]}
    assert all(flops[k] == at.loc[k, "flops"] for k in flops)  # each encoding is the network at 64
    small = at[at["resolution"] == 32].set_index("arch")["flops"]
    big = at[at["resolution"] == 64].set_index("arch")["flops"]
    assert np.allclose(big[NB201] / small[NB201], 4.0, rtol=0.01)
    model = Predictor.train(table, SMALL)
    assert model.spaces() == ["nb201", "nb201-graph"]
    assert model.predict(list(sized["arch"]), "dev", space="nb201-graph").shape == (3,)


def test_nb201_rows_at_another_size_without_graphs_or_left_out(nb201_mixed: Path, tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    rows = pd.read_parquet(nb201_mixed / "rows.parquet")
    # a profile or benchmark that reads only nb201 leaves the other-size rows out, and says so
    with caplog.at_level(logging.WARNING, logger="hwlat"):
        table = load_table([nb201_mixed / "rows.parquet"], spaces={"nb201"})
    assert table.spaces() == ["nb201"] and len(table.df) == 3 and "left out" in caplog.text
    # no graphs beside the rows: refused, naming the rows and the remedy
    bare = tmp_path / "bare"
    bare.mkdir()
    rows.to_parquet(bare / "rows.parquet")
    with pytest.raises(UsageError, match=r"3 measured network\(s\) have no graph encoding .*nb201-graph"):
        load_table([bare / "rows.parquet"])
    # no model_sha256 to find a graph by (FBNet at batch 4, a table from elsewhere): refused, never mis-encoded
    fb = pd.DataFrame({"search_space": "fbnet", "arch": "|".join(["k3_e1"] * 22), "device": "dev", "latency_ms": 1.0,
                       "batch": [1, 4], "resolution": 32})
    fb.to_parquet(bare / "fb.parquet")
    with pytest.raises(UsageError, match=r"1 fbnet row\(s\) were measured at another size .*batch 1, resolution "
                                         r"32.*batch 4.*no model_sha256"):
        load_table([bare / "fb.parquet"])
    # without batch/resolution columns (a published table) every row is the encoder's own size
    fb.drop(columns=["batch", "resolution"]).to_parquet(bare / "fb.parquet")
    assert load_table([bare / "fb.parquet"]).spaces() == ["fbnet"]


def test_cli_trains_and_predicts_the_graph_space(nb201_mixed: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the CLI: `predictor train` on the mixed dataset, then `predict --models` of a res-64 file."""
    monkeypatch.setenv("HWLAT_GRAPH_CACHE", str(tmp_path / "graph-cache"))
    out_model = tmp_path / "m.pt"
    proc = hwlat("predictor", "train", "--data", str(nb201_mixed), "--out", str(out_model), "--steps", "20")
    assert "nb201: 1 devices, 3 " in proc.stdout and "nb201-graph: 1 devices, 3 " in proc.stdout
    assert "encoded from their ONNX graphs, as the space nb201-graph" in proc.stderr
    files = tmp_path / "files"
    files.mkdir()
    rows = pd.read_parquet(nb201_mixed / "rows.parquet")
    cache = Path(export_models([ModelSpec("nb201", NB201[0], 1, 64)], "onnx", tmp_path / "c", workers=1)[0].path)
    shutil.copy(cache, files / "a.onnx")
    sha = hashlib.sha256((files / "a.onnx").read_bytes()).hexdigest()
    assert sha in set(rows.loc[rows["resolution"] == 64, "model_sha256"])
    pred = tmp_path / "p.parquet"
    hwlat("predictor", "predict", "--model", str(out_model), "--device", "dev", "--models", str(files), "--out",
          str(pred))
    assert pd.read_parquet(pred)["search_space"].tolist() == ["nb201-graph"]
