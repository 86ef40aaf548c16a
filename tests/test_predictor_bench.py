"""``predictor.bench.copy_best_source``: the baseline that benchmarks/loco_transfer.py and benchmarks/zoo.py
put beside the predictor chooses its source on the measured picks only, and copies it scaled."""

from __future__ import annotations

import numpy as np
import pytest

from predictor.bench import copy_best_source


def test_a_source_the_target_is_a_multiple_of_is_chosen_and_exact() -> None:
    rng = np.random.default_rng(0)
    lat = np.exp(rng.normal(size=(30, 2)))
    target = 1.7 * lat[:, 1]
    picks, held = np.arange(10), np.arange(10, 30)
    ms, std, best = copy_best_source(target[picks], lat[picks], lat[held])
    assert best == 1
    assert ms == pytest.approx(target[held], rel=1e-12)
    assert std == pytest.approx(np.zeros(len(held)), abs=1e-12)


def test_the_choice_sees_only_the_picks() -> None:
    """Source 0 ranks the held-out archs exactly as the target does but the picks in reverse; source 1 the
    other way round. The baseline must take source 1: it never looks at held-out latencies."""
    target = np.arange(1.0, 21.0)
    picks, held = np.arange(5), np.arange(5, 20)
    right_on_held = target.copy()
    right_on_held[picks] = target[picks][::-1]
    right_on_picks = target.copy()
    right_on_picks[held] = target[held][::-1]
    sources = np.stack([right_on_held, right_on_picks], axis=1)
    ms, std, best = copy_best_source(target[picks], sources[picks], sources[held])
    assert best == 1
    assert ms == pytest.approx(right_on_picks[held], rel=1e-12)  # scale 1: the picks match exactly
    assert std.shape == (len(held),)
