"""Which measurement is "already measured": the network, i.e. the model file at its input shapes
(``ModelArtifact.key`` = ``hwlat.spaces.graph.network_key``, the row's ``model_key``). One ONNX file with a
dynamic dimension measured at two ``--input-shape`` sizes into one dataset is two rows that resume, the round
journals, ``--remeasure`` and ``hwlat datasets compare`` tell apart; a file at its own shapes (every static file,
every exported network) keeps the bare sha256 as before, so older datasets resume exactly as they did."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from attention import WIDTH, export_attention_block
from profiles import fast_profile
from test_measure_local import hwlat

from agents.records import MeasureResult, TimingConfig
from harness.compare import compare
from harness.onnx_files import ShapeRequest, read_model
from harness.records import ModelArtifact
from harness.rounds import ROUNDS_DIR, RoundBook, load_rounds, prune_round_logs, rounds_dir
from harness.store import SCHEMA, DatasetStore, MeasuredKey, read_dataset, row_table
from hwlat.spaces.graph import graph_key


def _export_static(path: Path) -> None:
    """A small conv net with every input dimension fixed: it has one network, its own."""
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 4))
    torch.onnx.export(model.eval(), (torch.randn(1, 3, 8, 8),), str(path), input_names=["input"], opset_version=17,
                      dynamo=False)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    export_attention_block(folder / "block.onnx")
    _export_static(folder / "static.onnx")
    return folder


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _at(seq: int) -> dict[str, list[int]]:
    return {"x": [1, seq, WIDTH]}


def test_one_file_at_two_shapes_is_two_rows_that_resume_and_remeasure_apart(tmp_path: Path, models: Path) -> None:
    """Real `hwlat measure --models` runs into one folder: seq 16, then seq 64 without --remeasure (the old bug:
    skipped as done), the same two commands again (nothing new), then --remeasure at 64 (the 16 row untouched)."""
    profile, out = fast_profile(tmp_path), tmp_path / "ds"
    block, static = _sha(models / "block.onnx"), _sha(models / "static.onnx")

    def measure(seq: int, *extra: str) -> list[dict]:
        hwlat("measure", "--device", str(profile), "--models", str(models), "--out", str(out), "--input-shape",
              f"x=1x{seq}x{WIDTH}", *extra)
        return read_dataset(out).to_pylist()

    first = measure(16)
    assert sorted((r["arch"], r["model_key"]) for r in first) == [("block", graph_key(block, _at(16))),
                                                                  ("static", static)]
    second = measure(64)
    by_key = {r["model_key"]: r for r in second}
    assert len(second) == 3 and set(by_key) == {graph_key(block, _at(16)), graph_key(block, _at(64)), static}
    for seq in (16, 64):
        row = by_key[graph_key(block, _at(seq))]
        assert row["model_sha256"] == block and json.loads(row["input_shapes_json"]) == _at(seq)
        assert row["status"] in ("ok", "unstable") and row["latency_ms"] > 0
    assert {r["row_id"] for r in first} <= set(by_key[k]["row_id"] for k in by_key)  # kept, not replaced
    assert by_key[static]["row_id"] == next(r["row_id"] for r in first if r["arch"] == "static")  # not re-measured

    for seq in (16, 64):  # either command again: every network it names is measured
        assert sorted(r["row_id"] for r in measure(seq)) == sorted(r["row_id"] for r in second)
    assert not (out / ROUNDS_DIR).exists()  # every journal pruned: each network has its row

    again = measure(64, "--remeasure")
    fresh = [r for r in again if r["row_id"] not in {s["row_id"] for s in second}]
    assert {r["model_key"] for r in fresh} == {graph_key(block, _at(64)), static}
    assert [r for r in again if r["model_key"] == graph_key(block, _at(16))] == \
           [by_key[graph_key(block, _at(16))]]  # the other shape's row, byte for byte


def test_a_file_at_its_own_shapes_keeps_its_sha256(models: Path) -> None:
    """The documented key: a static file (and a dynamic one at its own shapes, dynamic dims 1) is its sha256;
    another size is `graph_key(sha256, shapes)`, the name of its encoding in _graphs/."""
    static = read_model(models / "static.onnx")
    assert static.key == static.sha256 == _sha(models / "static.onnx")
    assert read_model(models / "block.onnx", ShapeRequest({"x": [1, 1, WIDTH]})).key == _sha(models / "block.onnx")
    sized = read_model(models / "block.onnx", ShapeRequest({"x": [1, 64, WIDTH]}))
    assert sized.key == graph_key(sized.sha256, _at(64)) and sized.key.startswith(sized.sha256 + "-")


def _row(sha: str, shapes: dict[str, list[int]], latency: float = 1.0, key: str | None = None,
         arch: str = "m") -> dict:
    return {"row_id": f"r-{sha[:6]}-{json.dumps(shapes)}-{latency}", "session_id": "s", "config_id": "cfg",
            "arch": arch, "model_sha256": sha, "model_key": key, "input_shapes_json": json.dumps(shapes),
            "status": "ok", "latency_ms": latency}


def _legacy_part(store: DatasetStore, rows: list[dict]) -> None:
    """A part file as hwlat wrote it before ``model_key`` existed: the column is not in the file at all."""
    folder = store.partition_dir("dev", "onnx")
    folder.mkdir(parents=True, exist_ok=True)
    table = row_table(rows)
    pq.write_table(table.drop_columns(["model_key"]), folder / "part-old.parquet")


def test_rows_written_before_model_key_resume_as_they_did(tmp_path: Path, models: Path) -> None:
    """An older dataset (no model_key column): a static file's row counts by its sha256 exactly as before; a
    dynamic file an older hwlat measured at seq 16 counts as measured at 16, not at 64."""
    static = read_model(models / "static.onnx")
    at16, at64 = (read_model(models / "block.onnx", ShapeRequest({"x": _at(s)["x"]})) for s in (16, 64))
    store = DatasetStore(tmp_path / "ds")
    _legacy_part(store, [_row(static.sha256, static.input_shapes), _row(at16.sha256, at16.input_shapes)])
    assert "model_key" not in pq.read_schema(next((tmp_path / "ds").rglob("*.parquet"))).names
    keys = store.measured_keys("dev")
    assert MeasuredKey("dev", "cfg", static.key) in keys and static.key == static.sha256
    assert MeasuredKey("dev", "cfg", at16.key) in keys
    assert MeasuredKey("dev", "cfg", at64.key) not in keys
    assert read_dataset(tmp_path / "ds").column("model_key").to_pylist() == [None, None]  # read as null
    assert "model_key" in SCHEMA.names


def _round_event(key: str | None, sha: str, session: str) -> dict:
    result = MeasureResult(job_id=f"{session}-c0", sha256=sha, role="candidate", status="ok", median_ms=1.0)
    event = {"type": "round", "session_id": session, "run_id": f"{session}-000", "config_id": "cfg",
             "order_index": 0, "ref": {}, "result": dataclasses.asdict(result)}
    if key is not None:
        event["model_key"] = key
    return event


def test_round_journals_are_kept_and_resumed_per_shape(tmp_path: Path) -> None:
    """A killed campaign's rounds of a file at seq 64 are never taken for the same file at seq 16, and are not
    deleted when the seq 16 network gets its row; journals written before rounds carried a key read by sha256."""
    sha = "b" * 64
    k16, k64 = graph_key(sha, _at(16)), graph_key(sha, _at(64))
    folder = rounds_dir(tmp_path, "dev")
    folder.mkdir(parents=True)
    for session, key in (("s16", k16), ("s64", k64), ("old", None)):
        (folder / f"{session}.jsonl").write_text(json.dumps(_round_event(key, sha, session)) + "\n")
    rounds, _ = load_rounds(tmp_path, "dev", "cfg")
    assert {k: [r.session_id for r in v] for k, v in rounds.items()} == {k16: ["s16"], k64: ["s64"], sha: ["old"]}
    art = ModelArtifact("onnx", "block", "block.onnx", sha, "onnx", input_shapes=_at(64), key=k64)
    book = RoundBook(root=tmp_path / "elsewhere", device="dev", config_id="cfg", session_id="now",
                     timing=TimingConfig(rounds=2), models=[art], prior=rounds, prior_refs={})
    assert {k: [r.session_id for r in v] for k, v in book.rounds.items()} == {k64: ["s64"]}
    assert book.planned_passes() == [[art]]  # one round of seq 64 resumed, one to go; seq 16's is not its
    prune_round_logs(tmp_path, "dev", "cfg", {k16})
    assert sorted(p.stem for p in folder.iterdir()) == ["old", "s64"]
    prune_round_logs(tmp_path, "dev", "cfg", {k64, sha})
    assert not folder.exists()


def test_compare_matches_each_shape_on_its_own(tmp_path: Path) -> None:
    """Two datasets holding one file at two shapes: each shape is its own matched model, never a median of both;
    rows without model_key (an older dataset) match the same file's rows at its own shapes by sha256."""
    sha = "c" * 64
    k16, k64 = graph_key(sha, _at(16)), graph_key(sha, _at(64))
    others = [("d" * 64, 2.0), ("e" * 64, 3.0)]
    for name, scale in (("a", 1.0), ("b", 1.1)):
        store = DatasetStore(tmp_path / name)
        store.append("dev", "onnx", "s", [_row(sha, _at(16), 1.0 * scale, k16, "block"),
                                          _row(sha, _at(64), 10.0 * scale, k64, "block")])
        static = [_row(s, {"input": [1, 3, 8, 8]}, lat * scale, s, f"m{lat}") for s, lat in others]
        if name == "a":
            _legacy_part(store, static)
        else:
            store.append("dev", "onnx", "s", static)
    result = compare(tmp_path / "a", tmp_path / "b")
    assert result["matched"] == 4 and result["only_a"] == result["only_b"] == 0
    moved = {m["model_key"]: m for m in result["moved_most"]}
    assert moved[k16]["latency_ms_a"] == 1.0 and moved[k64]["latency_ms_a"] == 10.0
    assert moved[k64]["model_sha256"] == sha
