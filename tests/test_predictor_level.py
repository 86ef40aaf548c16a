"""The cost model's level correction (``predictor.additive.loo_level``): a least-squares fit in ms sits above
the typical arch when a few archs cost far more than the additive model says; the correction moves the level,
never a rank, and leaves a fit alone whose leave-one-out ratios are centred within their noise."""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

from predictor.additive import LEVEL_MIN_N, fit_source, fit_target, loo_level
from predictor.encode import get_encoder
from predictor.opcost import prior_components


def test_loo_level_is_the_shrunk_median_ratio() -> None:
    """Ratios centred at 0.9 with little spread give ~0.9; ratios centred within their noise give exactly 1;
    a median far from 1 but with a wide spread is shrunk toward 1; too few points give 1."""
    rng = np.random.default_rng(0)
    y = rng.uniform(0.5, 2.0, 20)
    tight = y - y / (0.9 * np.exp(rng.normal(0, 0.01, 20)))  # loo prediction = y / ratio
    assert abs(loo_level(y, tight, 1e-3) - 0.9) < 0.01
    # log ratios spread +-0.1 around 0.005: the median's standard error (~0.02) is larger than the shift
    centred = y - y / np.exp(np.linspace(-0.1, 0.1, 20) + 0.005)
    assert loo_level(y, centred, 1e-3) == 1.0
    wide = y - y / (0.9 * np.exp(rng.normal(0, 0.3, 20)))
    assert 0.9 < loo_level(y, wide, 1e-3) <= 1.0
    assert loo_level(y[:LEVEL_MIN_N - 1], tight[:LEVEL_MIN_N - 1], 1e-3) == 1.0


def test_level_correction_moves_the_level_of_a_skewed_fit_and_no_rank() -> None:
    """An additive device with a quarter of its measured archs twice as slow (a batch measured while the
    machine was busy, or archs the additive model cannot explain): the fit in ms is pulled above the typical
    arch; the corrected model's median held-out ratio is closer to 1 and its ranking is the same."""
    rng = np.random.default_rng(3)
    enc = get_encoder("nb201")
    archs = enc.enumerate()
    x = enc.encode(archs).flat[:, enc.linear_features].astype(np.float64)
    cost = rng.uniform(0.0, 1.0, x.shape[1])
    sources = []
    for _ in range(6):
        pick = rng.choice(len(archs), 300, replace=False)
        sources.append(fit_source(x[pick], 2.0 + x[pick] @ (cost * rng.uniform(0.8, 1.2, x.shape[1]))))
    truth = (2.0 + x @ cost) * np.exp(rng.normal(0, 0.02, len(x)))
    pick = rng.choice(len(archs), 20, replace=False)
    rest = np.setdiff1d(np.arange(len(archs)), pick)
    measured = truth[pick].copy()
    measured[:5] *= 2.0
    args = (np.stack(sources), x[pick], measured, prior_components("nb201"))
    plain = fit_target(*args, level=False)
    fixed = fit_target(*args)
    assert plain.level == 1.0 and fixed.level < 0.97, fixed.level
    before, after = plain.predict(x[rest])[0], fixed.predict(x[rest])[0]
    lvl_before, lvl_after = np.median(truth[rest] / before), np.median(truth[rest] / after)
    assert lvl_before < 0.95 and abs(np.log(lvl_after)) < abs(np.log(lvl_before)) - 0.02, (lvl_before, lvl_after)
    assert np.allclose(after, before * fixed.level)
    assert spearmanr(after, truth[rest])[0] == spearmanr(before, truth[rest])[0]
