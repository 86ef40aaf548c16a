"""FBNet: arch strings as in HW-NAS-Bench's table, and the macro-architecture."""

import csv
from pathlib import Path

import pytest
import torch

from agents.errors import ArchError, UsageError
from hwlat.spaces import get_space
from hwlat.spaces.fbnet import MACROS, NUM_LAYERS, OPS, FBNetSpace, IRFBlock, layer_plan

FIXTURE = Path(__file__).parent / "fixtures" / "fbnet_archs_sample.csv"
SHARED_ARCHS = Path(__file__).resolve().parents[2] / "shared" / "data" / "fbnet" / "fbnet_archs.csv"

space = get_space("fbnet")


def _check_rows(path):
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows
    for row in rows:
        arch = row["arch_str"]
        ids = [int(t) for t in row["op_idx_list"].split("_")]
        assert space.validate(arch) == arch
        assert space.from_op_indices(ids) == arch
        assert space.op_indices(arch) == ids
    return rows


def test_documented_op_order():
    assert OPS == ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")


def test_fixture_rows_validate_and_map_op_ids():
    assert len(_check_rows(FIXTURE)) >= 30


@pytest.mark.skipif(not SHARED_ARCHS.exists(), reason="../shared/data/fbnet/fbnet_archs.csv not present")
def test_all_shared_rows_validate():
    assert len(_check_rows(SHARED_ARCHS)) == 5000


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("k3_e1|skip", "has 2 '|'-separated block(s), expected 22"),
        ("|".join(["k3_e1"] * 21 + ["k7_e6"]), "unknown block 'k7_e6' at layer 21"),
        ("|".join(["k3_e1"] * 23), "expected 22"),
        ("", "expected 22"),
    ],
)
def test_validate_errors(bad, says):
    with pytest.raises(ArchError) as exc:
        space.validate(bad)
    msg = str(exc.value)
    assert says in msg
    assert "\n" not in msg
    assert msg.count("'") >= 2  # the bad string is quoted (shortened when long)


def test_from_op_indices_rejects_bad_ids():
    with pytest.raises(ArchError):
        space.from_op_indices([9] * 22)
    with pytest.raises(ArchError):
        space.from_op_indices([0] * 21)


def test_not_enumerable():
    assert not space.enumerable
    assert space.size() == 9**22
    assert space.arch_index("|".join(["skip"] * 22)) is None
    with pytest.raises(UsageError, match="cannot be enumerated"):
        space.all_archs()


def test_macro_architecture_cifar100_is_hw_nas_bench():
    plan = layer_plan(MACROS["cifar100"])
    assert len(plan) == NUM_LAYERS == 22
    assert [c for _, c, _ in plan] == [16] + [24] * 4 + [32] * 4 + [64] * 4 + [112] * 4 + [184] * 4 + [352]
    # HW-NAS-Bench's CIFAR-100 strides 1,1,2,2,1,2,1: stride 2 at the first layer of stages 3, 4, 6
    assert [i for i, (_, _, s) in enumerate(plan) if s == 2] == [5, 9, 17]
    model = space.build("|".join(["k5_e6"] * 22))
    assert model.stem[0].stride == (1, 1)
    blocks = list(model.blocks)
    # residual exactly where stride 1 and channels unchanged
    assert [b.residual for b in blocks] == [ci == co and s == 1 for ci, co, s in plan]
    assert model.head[0].out_channels == 1504
    assert model.classifier.out_features == 100


def test_macro_architecture_imagenet_is_fbnet_table1():
    imagenet = FBNetSpace("imagenet")
    plan = layer_plan(imagenet.macro)
    assert [i for i, (_, _, s) in enumerate(plan) if s == 2] == [1, 5, 9, 17]
    model = imagenet.build("|".join(["skip"] * 22), resolution=64)
    assert model.stem[0].stride == (2, 2)
    assert model.head[0].out_channels == 1984
    assert model(imagenet.sample_input(1, 64)).shape == (1, 1000)
    assert imagenet.cache_identity() != space.cache_identity()
    with pytest.raises(UsageError, match="unknown FBNet macro-architecture 'tiny'"):
        FBNetSpace("tiny")


def test_block_structure():
    model = space.build("|".join(["k3_e1_g2"] + ["k5_e3"] * 20 + ["skip"]))
    first: IRFBlock = model.blocks[0]
    expand, shuffle, dw, project = first.body
    assert expand[0].groups == 2 and expand[0].out_channels == 16  # e1 keeps Cin
    assert type(shuffle).__name__ == "ChannelShuffle"
    assert dw[0].groups == 16 and dw[0].kernel_size == (3, 3)
    assert project[0].groups == 2
    second = model.blocks[1]
    assert second.body[0][0].out_channels == 48 and second.body[1][0].kernel_size == (5, 5)
    assert model.blocks[5].body[1][0].stride == (2, 2)
    # skip with a channel change (184 -> 352) is a 1x1 ConvBNReLU, not an identity
    last = model.blocks[21]
    assert isinstance(last[0], torch.nn.Conv2d) and last[0].kernel_size == (1, 1)
    assert isinstance(space.build("|".join(["skip"] * 22)).blocks[2], torch.nn.Identity)


def test_forward_shapes_and_num_classes_option():
    arch = space.sample(1, seed=1)[0]
    y = space.build(arch, batch=2)(space.sample_input(2))
    assert y.shape == (2, 100)
    ten = FBNetSpace(num_classes=10)
    assert ten.build(arch)(ten.sample_input()).shape == (1, 10)
    assert ten.cache_identity() != space.cache_identity()
