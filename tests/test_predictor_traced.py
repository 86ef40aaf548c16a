"""Spaces without a dedicated encoder (OFA, autoformer, plug-ins) train and predict from arch strings, traced.

The OFA/autoformer rows are real measurements of this machine (``fixtures/traced_spaces_local.parquet``: 12 OFA
and 7 autoformer archs from ``hwlat measure --device local``); they carry no model files and no ``_graphs``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import predictor
from agents.errors import ArchError
from harness.export import torch_flops_params
from hwlat.spaces import get_space
from predictor.data import load_table, reduce_frame
from predictor.encode import analytic_flops, canonical_space, get_encoder, is_traced_space
from predictor.train import TrainConfig

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "traced_spaces_local.parquet"
EXAMPLE_SPEC = f"{REPO / 'docs' / 'examples' / 'my_space.py'}:TinyConvSpace"
SMALL = TrainConfig(nets=[("gnn", 1, 8), ("mlp", 1, 16)], steps=20, batch=32)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWLAT_GRAPH_CACHE", str(tmp_path / "graphs"))


def test_measured_ofa_and_vit_rows_train_and_predict_a_pool() -> None:
    """What ``hwlat profile --space ofa`` does with its pool: train on measured rows (arch strings, no graphs),
    transfer to a board from 5 archs, predict unmeasured candidates with uncertainty, FLOPs for the report."""
    table = load_table([FIXTURE])
    assert table.spaces() == ["autoformer", "ofa"]
    assert is_traced_space("ofa") and is_traced_space("autoformer")
    model = predictor.Predictor.train(table, SMALL)
    for space in ("ofa", "autoformer"):
        sp = get_space(space)
        rows = table.df[table.df["search_space"] == space]
        archs, lat = rows["arch"].tolist()[:5], rows["latency_ms"].to_numpy()[:5]
        model.transfer("board", archs, lat, space=space)
        pool = sp.sample(8, seed=11)
        ms, log_std = model.predict_with_uncertainty(pool, "board", space=space)
        assert ms.shape == (8,) and np.all(np.isfinite(ms)) and np.all(ms > 0) and np.all(log_std > 0)
        flops = analytic_flops(space, pool[:2])
        for arch, f in zip(pool[:2], flops, strict=True):
            res = sp.resolution_for(sp.validate(arch))
            assert f == torch_flops_params(sp.build(arch), sp.sample_input(1, res))[0]


def test_rows_of_a_traced_space_need_no_graphs_and_match_their_flops_column() -> None:
    """Training features come from the arch strings; their FLOPs equal the measured rows' ``flops`` column."""
    raw = pd.read_parquet(FIXTURE)
    ofa = raw[raw["search_space"] == "ofa"].drop_duplicates("arch")
    assert np.array_equal(analytic_flops("ofa", ofa["arch"].tolist()), ofa["flops"].to_numpy(np.float64))
    with pytest.raises(ArchError, match="ofa"):
        reduce_frame(pd.DataFrame({"search_space": ["ofa"], "arch": ['{"ks":[3]}'], "device": ["d"],
                                   "latency_ms": [1.0]}))


def test_plugin_space_trains_predicts_saves_and_loads(tmp_path: Path) -> None:
    """A plug-in file named by its spec is traced with no code for it in predictor/. Latencies here are a stand-in
    (a function of the traced FLOPs): the test checks the plumbing, not accuracy."""
    space = canonical_space(EXAMPLE_SPEC)
    assert space == "tinyconv" and is_traced_space(space)
    archs = get_space(space).sample(24, seed=0)
    flops = analytic_flops(space, archs)
    frame = pd.DataFrame({"search_space": space, "arch": archs, "device": "cpu-a", "latency_ms": 1 + flops / 1e7})
    model = predictor.Predictor.train(reduce_frame(frame), SMALL)
    every = get_encoder(space).enumerate()  # an enumerable plug-in: `predict` without --archs covers it all
    assert every == list(get_space(space).all_archs()) and len(every) == 729
    unseen = [a for a in every if a not in set(archs)][:5]
    before = model.predict(unseen, "cpu-a", space=space)
    model.save(tmp_path / "m.pt")
    again = predictor.load(tmp_path / "m.pt")
    assert np.allclose(again.predict(unseen, "cpu-a", space=space), before)
    shards = list((tmp_path / "graphs" / "traced").rglob("*.npz"))
    assert shards, "traced features are cached on disk"
    enc = get_encoder(space).encode(unseen)  # a fresh encode reads the caches: same features
    assert enc.flat.shape == (5, get_encoder("onnx").encode(["empty"]).flat.shape[1])


def test_profile_pool_predictions_and_report_for_ofa(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``hwlat profile --space ofa``'s last step (``loop.finish``) on a transferred model: a seeded candidate pool
    of a non-enumerable space (smaller than the real 10,000 to keep the test fast), predictions with FLOPs and
    measured latencies, and the HTML report. The full command is run by hand (docs/predictor.md)."""
    import pyarrow.parquet as pq

    from harness.devices import parse_profile
    from hwlat.profiling import loop
    from hwlat.profiling.state import ProfileState, RoundRecord

    monkeypatch.setattr(loop, "POOL_SIZE", 40)
    pool = loop.candidate_pool("ofa", seed=0)
    assert len(pool) == 40 and pool == get_space("ofa").sample(40, 0)
    table = load_table([FIXTURE], spaces={"ofa"})
    model = predictor.Predictor.train(table, SMALL)
    measured = dict(zip(table.df["arch"][:6], table.df["latency_ms"][:6], strict=True))
    model.transfer("board", list(measured), list(measured.values()), space="ofa")
    done = RoundRecord(0, "diversity", list(measured), measured=6, cv_mape=float("nan"), done=True)
    state = ProfileState("board", "ofa", "board", [done], stopped="budget of 6 spent")
    req = loop.ProfileRequest(device=parse_profile({"name": "board", "host": "local"}, "test"), space="ofa",
                              budget=6, batch=6, out=tmp_path)
    said: list[str] = []
    out = loop.finish(req, state, model, tmp_path / "m.pt", "board", "ofa", pool, req.device, measured, said.append)
    pred = pq.read_table(out["predictions"]).to_pandas()
    assert len(pred) == 40 and (pred["latency_ms"] > 0).all() and pred["flops"].notna().all()
    in_pool = set(pool) & set(measured)  # `hwlat measure --count 12` drew the pool's first archs (seed 0)
    assert in_pool and pred["measured_ms"].notna().sum() == len(in_pool) and out["report"].is_file()


def test_rows_measured_at_another_size_are_encoded_at_that_size(tmp_path: Path) -> None:
    """A plug-in arch measured at three input sizes is three networks: three training rows (never averaged), each
    encoded at its recorded batch and resolution (FLOPs those of the module at that size: ~4x at twice the
    resolution, 2x at batch 2); the row at the default size keeps its arch string."""
    space = get_space(canonical_space(EXAMPLE_SPEC))
    arch = "16x2,32x1,64x3"
    sizes = [(1, 32), (1, 64), (2, 32)]
    flops = [torch_flops_params(space.build(arch), space.sample_input(b, r))[0] for b, r in sizes]
    assert 3.9 * flops[0] < flops[1] < 4 * flops[0] and flops[2] == 2 * flops[0]  # the head does not scale
    frame = pd.DataFrame({"search_space": space.name, "arch": arch, "device": "cpu-a",
                          "latency_ms": [1.0, 3.0, 2.0], "model_sha256": [f"{i}" * 64 for i in range(3)],
                          "batch": [b for b, _ in sizes], "resolution": [r for _, r in sizes], "flops": flops})
    frame.to_parquet(tmp_path / "rows.parquet")
    table = load_table([tmp_path / "rows.parquet"]).df.set_index("latency_ms")
    assert len(table) == 3 and table.loc[1.0, "arch"] == arch
    keys = table.loc[[1.0, 3.0, 2.0], "arch"].tolist()
    assert np.array_equal(analytic_flops(space.name, keys), flops)
    flat = get_encoder(space.name).encode(keys).flat
    assert len({row.tobytes() for row in flat}) == 3
