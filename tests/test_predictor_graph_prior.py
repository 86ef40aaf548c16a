"""The hardware-agnostic cost prior of graph-encoded spaces (issue 10): per-op-type FLOPs, bytes and launches of
the graph features, fitted to real NB201 latencies (../shared/data/nb201) of networks encoded through the graph
path (the same ONNX graphs as benchmarks/graph_vs_dedicated.py), and used by ``transfer`` for a graph space."""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from hwlat.spaces.graph import OP_TYPES, encode_model
from hwlat.spaces.nb201 import canonical_archs
from predictor.additive import fit_source, fit_target
from predictor.encode import add_graph_features, get_encoder, register_graph_space
from predictor.graph import KERNEL_NAMES, N_DEAD, N_KERNEL, N_LINEAR, K, features, linear
from predictor.opcost import graph_quantities, prior_components
from predictor.train import TrainConfig, pretrain
from predictor.transfer import TransferConfig, transfer

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "nb201" / "latency_long.parquet"
SPACE = "nb201-graph-prior-test"
#: sources without an accelerator (phones, server CPUs, one GPU); the target is Eyeriss, an ASIC
SOURCES = ["pixel2", "samsung_s7", "silver_4114", "gold_6226", "1080ti_32"]
TARGET = "eyeriss"
N_ARCHS = 160
N_SOURCE = 100  # archs each source's cost vector is fitted on; the rest are the target's pool

needs_shared = pytest.mark.skipif(not SHARED.exists(), reason="needs ../shared/data/nb201 (HELP's NB201 latencies)")


@cache
def _data() -> tuple[list[str], pd.DataFrame]:
    """``N_ARCHS`` random NB201 archs (seed 0), registered as a graph space from their generated ONNX graphs,
    and their measured latencies on the sources and the target."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from graph_vs_dedicated import nb201_onnx

    all_archs = canonical_archs()
    archs = [all_archs[i] for i in np.random.default_rng(0).choice(len(all_archs), N_ARCHS, replace=False)]
    rows = [features(encode_model(nb201_onnx(a), a)) for a in archs]
    add_graph_features(archs, *(np.stack([r[i] for r in rows]) for i in range(3)))
    register_graph_space(SPACE)
    df = pd.read_parquet(SHARED, columns=["arch", "device", "latency_ms"])
    wide = df[df["device"].isin([*SOURCES, TARGET])].pivot_table(index="arch", columns="device", values="latency_ms")
    return archs, wide.reindex(archs)


def test_graph_quantities_are_the_linear_columns() -> None:
    """Column ``q * K + t`` of the graph cost features is quantity q (FLOPs, bytes, launches) of op type t: the
    shared roofline component ties each quantity across op types, the per-op one frees each column; an op type
    no arch at hand has gets no prior column; a space without a graph encoder or without archs gets none."""
    q, names, in_shared = graph_quantities()
    assert q.shape == (N_LINEAR, 3) and names[K + 2] == OP_TYPES[2]
    assert (q.sum(1) == 1).all() and q[K + 2, 1] == 1 and q[2, 0] == 1
    # the kernel sub-types' FLOPs and bytes follow, outside the shared device constants
    assert in_shared[:3 * K].all() and not in_shared[3 * K:].any()
    assert q[3 * K, 0] == 1 and q[3 * K + N_KERNEL, 1] == 1 and names[3 * K] == KERNEL_NAMES[0]
    register_graph_space(SPACE)
    x = np.zeros((4, N_LINEAR))
    x[:, [0, K, 2 * K]] = [[1.0, 2.0, 1.0]] * 4  # op type 0 only: 1e8 FLOPs, 2e7 bytes, 10 launches
    x[1, 1] = 2.0  # one arch has 2e8 FLOPs of op type 1 (no bytes, no launches)
    comps = prior_components(SPACE, x)
    assert set(comps) == {"shared", "per_op", "intercept"}
    shared, per_op = comps["shared"][1:, 1:], comps["per_op"][1:, 1:]
    # typical arch: 1.5 (1e8) FLOPs in all, of which 1.0 of type 0 and 0.5 of type 1
    assert shared[0, 1] == pytest.approx(1 / 1.5**2) and shared[0, K] == 0.0
    assert per_op[0, 0] == pytest.approx(1.0) and per_op[1, 1] == pytest.approx(4.0) and per_op[0, 1] == 0.0
    assert per_op[K + 1, K + 1] == 0.0  # op type 1 never moves bytes here: no prior column for it
    assert prior_components(SPACE) == {} and prior_components("no-such-space", x) == {}
    # kernel columns: a 7x7 regular conv's FLOPs count again in conv_klarge, an extra term outside the shared
    # constants; when every conv of the archs at hand is in that bucket (the column equals the type's), no
    # extra term at all
    conv, big = OP_TYPES.index("conv"), 3 * K + KERNEL_NAMES.index("conv_klarge")
    xk = x.copy()
    xk[:, conv] = [1.0, 1.0, 2.0, 2.0]
    xk[:, big] = [1.0, 0.0, 2.0, 0.0]  # half of the archs have their conv as 7x7
    per_op, shared = (prior_components(SPACE, xk)[k][1:, 1:] for k in ("per_op", "shared"))
    assert per_op[big, big] > 0 and shared[big].sum() == 0 and shared[conv, conv] > 0
    xk[:, big] = xk[:, conv]
    assert prior_components(SPACE, xk)["per_op"][1 + big].sum() == 0
    # the dead operators' FLOPs, bytes and launches come last, outside the shared constants; their own term is
    # scaled against the typical arch's *whole* quantity (1.5e8 FLOPs), not their own 0.3e8: about their share
    # of the latency at a typical rate, never the whole latency
    assert names[-N_DEAD:] == ["dead"] * N_DEAD and (q[-N_DEAD:] == np.eye(3)[:N_DEAD]).all()
    xd = x.copy()
    xd[:, N_LINEAR - N_DEAD] = 0.3
    comps = prior_components(SPACE, xd)
    dead = N_LINEAR - N_DEAD
    assert comps["per_op"][1 + dead, 1 + dead] == pytest.approx(1 / 1.5**2) and comps["shared"][1 + dead].sum() == 0
    assert comps["per_op"][1 + dead + 1].sum() == 0  # no dead bytes at hand: no term


@needs_shared
def test_graph_prior_fits_an_accelerator_unlike_every_source() -> None:
    """Real latencies: from 10 measurements of Eyeriss, the source prior plus the graph prior ranks the
    held-out archs better than the source prior alone (on average over three seeds' samples by 0.03 or more, and
    on none of them worse by more than 0.01: the third seed's sample loses 0.005-0.008, the figure depending on
    the BLAS's thread count, since held-out archs with the same linear features tie or not in the last bit)."""
    archs, lat = _data()
    x = linear(get_encoder(SPACE).encode(archs).flat)
    sources = np.stack([fit_source(x[:N_SOURCE], lat[d].to_numpy()[:N_SOURCE]) for d in SOURCES])
    y = lat[TARGET].to_numpy()
    pool = np.arange(N_SOURCE, N_ARCHS)
    gains = []
    for seed in range(3):
        pick = np.random.default_rng(seed).choice(pool, 10, replace=False)
        rest = np.setdiff1d(pool, pick)
        src_only = fit_target(sources, x[pick], y[pick])
        mixed = fit_target(sources, x[pick], y[pick], prior_components(SPACE, x[pick]))
        gains.append(spearmanr(mixed.predict(x[rest])[0], y[rest])[0] - spearmanr(src_only.predict(x[rest])[0],
                                                                                   y[rest])[0])
        assert mixed.p_source < 1.0 and src_only.p_source == 1.0
    assert min(gains) > -0.01 and np.mean(gains) > 0.03, gains


@needs_shared
def test_transfer_uses_the_graph_prior() -> None:
    """``transfer`` for a graph-encoded space fits the agnostic prior (``p_source`` below 1, the networks'
    share cut) and predicts Eyeriss better than the same transfer with the prior switched off (mean of three
    seeds' samples)."""
    archs, lat = _data()
    src = lat[SOURCES].iloc[:N_SOURCE]
    rows = src.stack().reset_index()
    rows.columns = ["arch", "device", "latency_ms"]
    sm = pretrain(SPACE, rows["arch"].tolist(), SOURCES, rows["latency_ms"].to_numpy(),
                  rows["device"].map(SOURCES.index).to_numpy(), TrainConfig(steps=20, nets=[("mlp", 2, 32)]))
    pool = archs[N_SOURCE:]
    y = lat[TARGET].loc[pool].to_numpy()
    gains = []
    for seed in range(3):
        pick = list(np.random.default_rng(seed).choice(len(pool), 10, replace=False))
        rest = [i for i in range(len(pool)) if i not in pick]
        rho = {}
        for on in (True, False):
            name = f"eyeriss-{seed}-{on}"
            info = transfer(sm, name, [pool[i] for i in pick], y[pick], TransferConfig(agnostic_prior=on), seed=seed)
            rho[on] = spearmanr(sm.predict([pool[i] for i in rest], name)[0], y[rest])[0]
            assert (info["p_source"] < 1.0) == on
        gains.append(rho[True] - rho[False])
    assert np.mean(gains) > 0.02, gains
