"""The space registry and the interface every space shares."""

import pytest

from agents.errors import ArchError, UnknownSpaceError, UsageError
from hwlat.spaces import SPACES, SearchSpace, get_space, known_spaces


def test_known_spaces():
    assert SPACES == ("autoformer", "fbnet", "nb201", "ofa")
    assert set(SPACES) <= set(known_spaces())
    for name in SPACES:
        space = get_space(name)
        assert isinstance(space, SearchSpace)
        assert space.name == name
        assert get_space(name) is space


def test_unknown_space_message():
    with pytest.raises(UnknownSpaceError) as exc:
        get_space("x")
    message = str(exc.value)
    assert message.startswith("unknown search space 'x' (known: autoformer, fbnet, nb201, ofa")
    assert message.endswith("; or give FILE.py:Class)") and "\n" not in message
    assert isinstance(exc.value, UsageError)


@pytest.mark.parametrize("name", SPACES)
def test_sample_is_deterministic_distinct_and_valid(name):
    space = get_space(name)
    a = space.sample(20, seed=3)
    assert a == space.sample(20, seed=3)
    assert a != space.sample(20, seed=4)
    assert len(set(a)) == 20
    assert all(space.validate(arch) == arch for arch in a)
    assert space.sample(0, seed=1) == []


@pytest.mark.parametrize("name", SPACES)
def test_sample_rejects_bad_counts(name):
    space = get_space(name)
    with pytest.raises(UsageError):
        space.sample(-1, seed=0)
    if space.enumerable:
        with pytest.raises(UsageError, match="distinct"):
            space.sample(space.size() + 1, seed=0)


@pytest.mark.parametrize("name", SPACES)
def test_build_is_eval_and_reproducible(name):
    import torch

    space = get_space(name)
    arch = space.sample(1, seed=0)[0]
    m1, m2 = space.build(arch), space.build(arch)
    assert not m1.training
    for p1, p2 in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True):
        assert torch.equal(p1, p2)
    # building must not disturb the caller's global torch RNG
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    space.build(arch)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("name", SPACES)
def test_build_rejects_bad_input_sizes(name):
    space = get_space(name)
    arch = space.sample(1, seed=0)[0]
    with pytest.raises(UsageError, match="batch"):
        space.build(arch, batch=0)
    with pytest.raises(UsageError, match="resolution"):
        space.build(arch, resolution=-32)


@pytest.mark.parametrize("name", SPACES)
def test_validate_rejects_non_strings(name):
    with pytest.raises(ArchError):
        get_space(name).validate(None)
