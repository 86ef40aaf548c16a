"""Encodings: arch parsing, the canonical NB201 enumeration, FBNet layers, the space registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agents.errors import ArchError, UnknownSpaceError
from predictor.encode import canonical_space, get_encoder, nb201_all_archs
from predictor.graph import FLAT_DIM

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
ARCH0 = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"


def test_nb201_enumeration_is_canonical_order() -> None:
    archs = nb201_all_archs()
    assert len(archs) == 15625 == len(set(archs))
    assert archs[0] == ARCH0


def test_nb201_enumeration_matches_shared_arch_index() -> None:
    path = SHARED / "data" / "nb201" / "arch_index.csv"
    if not path.exists():
        pytest.skip(f"shared data not present at {path}")
    import pandas as pd

    ref = pd.read_csv(path)
    assert ref["arch_str"].tolist() == nb201_all_archs()
    flat = get_encoder("nb201").encode(ref["arch_str"].tolist()).flat
    connected = flat[:, FLAT_DIM + 70] == 1.0  # the output-connected flag, after the traced graph features
    assert np.array_equal(~connected, ref["output_disconnected"].to_numpy())


def test_nb201_batch_table_matches_encode_one() -> None:
    """The vectorised whole-space table must give exactly the per-arch reference encoding."""
    enc = get_encoder("nb201")
    archs = nb201_all_archs()[::7]
    batch = enc.encode(archs)
    for i, arch in enumerate(archs):
        for ref, got in zip(enc.encode_one(arch), (batch.flat[i], batch.nodes[i], batch.adj[i]), strict=True):
            assert np.array_equal(ref.astype(np.float32), got), arch
    assert enc.encode([]).flat.shape == (0, batch.flat.shape[1])
    with pytest.raises(ArchError):
        enc.encode([ARCH0, "|nor_conv_3x3~0|"])


def test_shipped_nb201_traced_table_matches_fresh_traces() -> None:
    """The shipped table of NB201's traced graph features is current (written for this feature layout, tracer
    and network) and holds what tracing the space's own network gives now; a stale table would make every
    NB201 encoder in the field fall back to minutes of tracing, or, unnoticed, describe other networks."""
    import json

    from hwlat.spaces import get_space
    from hwlat.spaces.trace import trace_encoding
    from predictor.encode import NB201_TRACED_TABLE, _nb201_product_archs, _nb201_traced_meta
    from predictor.graph import features

    with np.load(NB201_TRACED_TABLE, allow_pickle=False) as z:
        assert json.loads(str(z["meta"])) == _nb201_traced_meta()
        table = z["flat"]
    archs = _nb201_product_archs()
    space = get_space("nb201")
    for row in np.random.default_rng(0).choice(len(archs), 6, replace=False):
        fresh = features(trace_encoding(space, archs[row], 1, 32))[0]
        assert np.allclose(table[row], fresh, rtol=1e-6, atol=0.0), archs[row]
    flat = get_encoder("nb201").encode([archs[5]]).flat
    assert np.array_equal(flat[0, :FLAT_DIM], table[5])


def test_nb201_graph_blocks_flow_through_none() -> None:
    enc = get_encoder("nasbench201")
    arch = "|none~0|+|skip_connect~0|none~1|+|none~0|none~1|nor_conv_3x3~2|"
    flat, nodes, adj = enc.encode_one(arch)
    # input -> edge(2<-0) -> edge(3<-2) -> output is the only path
    assert adj[0, 2] == 1 and adj[2, 6] == 1 and adj[6, 7] == 1
    assert adj[0, 1] == 0 and adj[1].sum() == 0
    assert nodes.shape == (8, 8) and flat[FLAT_DIM + 70] == 1.0


@pytest.mark.parametrize("bad", ["", "|foo~0|+|none~0|none~1|+|none~0|none~1|none~2|",
                                 "|none~0|+|none~0|none~1|", "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|"])
def test_nb201_rejects_malformed(bad: str) -> None:
    with pytest.raises(ArchError):
        get_encoder("nb201").encode_one(bad)


def test_fbnet_encoding_and_flops_order() -> None:
    enc = get_encoder("fbnet")
    small = "|".join(["k3_e1"] * 22)
    big = "|".join(["k5_e6"] * 22)
    e = enc.encode([small, big])
    assert e.flat.shape[0] == 2 and e.nodes.shape == (2, 24, 16)
    assert e.flat[1, -2] > e.flat[0, -2]  # log MACs grow with kernel and expansion
    with pytest.raises(ArchError):
        enc.encode_one("|".join(["k7_e6"] * 22))
    with pytest.raises(ArchError):
        enc.encode_one("|".join(["k3_e1"] * 21))


def test_space_aliases_and_unknown() -> None:
    assert canonical_space("NASBench201") == "nb201"
    assert canonical_space("fbnet") == "fbnet"
    with pytest.raises(UnknownSpaceError):
        canonical_space("darts")
