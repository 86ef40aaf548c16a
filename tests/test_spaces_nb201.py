"""NAS-Bench-201: the canonical index, arch strings, and the network."""

import csv
from pathlib import Path

import pytest
import torch

from agents.errors import ArchError, UsageError
from harness.export import torch_flops_params
from hwlat.spaces import get_space
from hwlat.spaces.nb201 import OPS, output_disconnected, parse

FIXTURE = Path(__file__).parent / "fixtures" / "nb201_arch_index_sample.csv"
SHARED_INDEX = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201" / "arch_index.csv"
ARCH0 = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
ARCH9 = "|avg_pool_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|nor_conv_3x3~2|"
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"

space = get_space("nb201")


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _check_rows(rows):
    archs = list(space.all_archs())
    for row in rows:
        i, arch = int(row["arch_index"]), row["arch_str"]
        assert archs[i] == arch, f"index {i}"
        assert space.arch_index(arch) == i
        assert space.arch_at(i) == arch
        assert "-".join(str(OPS.index(op)) for op in parse(arch)) == row["op_code"]
        assert str(output_disconnected(arch)) == row["output_disconnected"]


def test_enumeration_matches_fixture():
    rows = _rows(FIXTURE)
    assert {0, 9, 123, 15624} <= {int(r["arch_index"]) for r in rows}
    assert any(r["output_disconnected"] == "True" for r in rows)
    _check_rows(rows)


@pytest.mark.skipif(not SHARED_INDEX.exists(), reason="../shared/data/nb201/arch_index.csv not present")
def test_enumeration_matches_all_15625_rows():
    rows = _rows(SHARED_INDEX)
    assert len(rows) == 15625
    _check_rows(rows)


def test_known_indices_and_size():
    assert space.size() == 15625
    assert space.arch_at(0) == ARCH0
    assert space.arch_at(9) == ARCH9
    archs = list(space.all_archs())
    assert len(archs) == len(set(archs)) == 15625


def test_enumeration_leaves_global_random_alone():
    import random

    from hwlat.spaces import nb201

    nb201.canonical_archs.cache_clear()
    nb201._index_of.cache_clear()
    random.seed(5)
    expected = random.random()
    random.seed(5)
    space.arch_index(ARCH0)
    assert random.random() == expected


def test_validate_canonicalises_edge_order_and_whitespace():
    shuffled = " |avg_pool_3x3~0|+|skip_connect~1|nor_conv_1x1~0|+|skip_connect~2|nor_conv_1x1~0|skip_connect~1|\n"
    assert space.validate(shuffled) == ARCH0
    assert space.arch_index(shuffled) == 0


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("", "3"),
        ("|none~0|+|none~0|none~1|", "node group"),
        ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown op 'conv'"),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 has 1 edge"),
        ("|none~0|+|none~0|none~2|+|none~0|none~1|none~2|", "from node 2"),
        ("|none~0|+|none~0|none~0|+|none~0|none~1|none~2|", "two edges from node 0"),
        ("|none0|+|none~0|none~1|+|none~0|none~1|none~2|", "op~j"),
        ("none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "must be |op~j|"),
    ],
)
def test_validate_errors_are_one_line_and_quote_the_input(bad, says):
    with pytest.raises(ArchError) as exc:
        space.validate(bad)
    msg = str(exc.value)
    assert "\n" not in msg
    assert repr(bad) in msg
    assert says in msg


def test_arch_at_out_of_range():
    with pytest.raises(ArchError, match="out of range"):
        space.arch_at(15625)


def test_sample_draws_indices_without_replacement():
    archs = space.sample(15625, seed=0)
    assert len(set(archs)) == 15625


def test_resolution_must_allow_two_reductions():
    with pytest.raises(UsageError, match="divisible by 4"):
        space.build(ARCH0, resolution=30)
    out = space.build(ARCH0, batch=2, resolution=16)(space.sample_input(2, 16))
    assert out.shape == (2, 10)


def test_network_shape_params_and_flops_match_nb201():
    # NB201's published extremes: all nor_conv_3x3 = 1.531546 MB params / 220.11968 M MACs,
    # all none = 0.073306 MB / 7.78304 M; arch 0 = 0.129306 MB params.
    conv3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    for arch, params, macs in [(conv3, 1531546, 220119680), (ALL_NONE, 73306, 7783040)]:
        model = space.build(arch)
        flops, n_params = torch_flops_params(model, space.sample_input())
        assert (n_params, flops) == (params, 2 * macs)
    assert sum(p.numel() for p in space.build(ARCH0).parameters()) == 129306


def test_all_none_cell_builds_and_runs():
    model = space.build(ALL_NONE)
    x = space.sample_input()
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 10)
    assert torch.isfinite(y).all()
    assert output_disconnected(ALL_NONE)
    assert not output_disconnected(ARCH0)
