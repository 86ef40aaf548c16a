"""``predictor.bench.copy_best_source``: the baseline that benchmarks/loco_transfer.py and benchmarks/zoo.py
put beside the predictor chooses its source on the measured picks only, and copies it scaled; and
``transfer_and_score`` scores by the degenerate flags its caller hands in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from predictor.bench import copy_best_source, pretrain_protocol, transfer_and_score
from predictor.data import load_table
from predictor.encode import get_encoder
from predictor.train import TrainConfig
from predictor.transfer import TransferConfig


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


def test_transfer_and_score_takes_the_callers_degenerate_flags() -> None:
    """benchmarks/loco_transfer.py flags a target's archs once and hands them in: the same flags give the same
    figures as flagging inside, and the flags handed in are the ones scored by (all degenerate: no regular ones)."""
    table = load_table([Path(__file__).parent / "fixtures" / "predictor_small.parquet"], spaces={"nb201"})
    model = pretrain_protocol(table, "nb201", ["dev1", "dev2"], TrainConfig(nets=[("mlp", 1, 16)], steps=20, batch=32))
    series = table.device_series("nb201", "dev0")
    flags = pd.Series(get_encoder("nb201").degenerate(list(series.index)), index=series.index)
    assert flags.any() and not flags.all()
    variants = {"": TransferConfig()}
    picks, inside = transfer_and_score(model, series, 5, "random", 0, variants, "a")
    again, given = transfer_and_score(model, series, 5, "random", 0, variants, "b", degenerate=flags)
    assert again == picks and given == inside and inside[""]["mape_degenerate"] is not None
    _, every = transfer_and_score(model, series, 5, "random", 0, variants, "c",
                                  degenerate=pd.Series(True, index=series.index))
    assert every[""]["mape"] is None and every[""]["mape_degenerate"] is not None
