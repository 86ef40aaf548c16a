"""Held-out scores of one round of the profile loop, from its out-of-fold predictions of the measured archs.

One owner for them, because the stopping rule (``hwlat.profiling.loop.precise_enough``) acts on the same interval
the report draws: ``--target-std`` stops only when the upper end of the out-of-fold MAPE's 95 % bootstrap
interval is within the asked error, not its point estimate, which over 10-30 archs can land below the target by
chance (docs/predictor.md, "Stopping on the predicted std").
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import kendalltau, spearmanr

#: Bootstrap resamples for the per-round accuracy intervals.
BOOTSTRAP = 1000


def cv_coverage(cv_pred: dict[str, float], cv_std: dict[str, float], measured: dict[str, float]) -> float | None:
    """Share of the out-of-fold archs whose measured latency lies within their predicted +-1 std (log scale)."""
    archs = [a for a in cv_pred if a in cv_std and a in measured]
    if not archs:
        return None
    return float(np.mean([abs(math.log(measured[a] / cv_pred[a])) <= cv_std[a] for a in archs]))


def cv_scores(cv_pred: dict[str, float], measured: dict[str, float]) -> tuple[float | None, float | None, float]:
    """Out-of-fold Spearman, Kendall and MAPE (%) of a round; (None, None, nan) below 3 archs."""
    archs = sorted(cv_pred)
    if len(archs) < 3:
        return None, None, float("nan")
    p = np.array([cv_pred[a] for a in archs])
    y = np.array([measured[a] for a in archs])
    return (float(spearmanr(p, y).statistic), float(kendalltau(p, y).statistic),
            float(np.mean(np.abs(p - y) / y) * 100))


def bootstrap_round(cv_pred: dict[str, float], measured: dict[str, float], seed: int = 0) -> dict[str, Any]:
    """Held-out Spearman and MAPE of one round with 95% bootstrap intervals (resampling the measured archs)."""
    archs = [a for a in sorted(cv_pred) if a in measured]
    if len(archs) < 4:
        return {}
    p = np.array([cv_pred[a] for a in archs])
    y = np.array([measured[a] for a in archs])
    rng = np.random.default_rng(seed)
    rhos, mapes = [], []
    for _ in range(BOOTSTRAP):
        idx = rng.integers(0, len(archs), len(archs))
        if np.ptp(y[idx]) > 0 and np.ptp(p[idx]) > 0:
            rhos.append(spearmanr(p[idx], y[idx]).statistic)
        mapes.append(float(np.mean(np.abs(p[idx] - y[idx]) / y[idx]) * 100))
    rho_lo, rho_hi = np.percentile(rhos, [2.5, 97.5]) if rhos else (math.nan, math.nan)
    mape_lo, mape_hi = np.percentile(mapes, [2.5, 97.5])
    return {"n": len(archs), "rho_lo": float(rho_lo), "rho_hi": float(rho_hi), "mape_lo": float(mape_lo),
            "mape_hi": float(mape_hi)}
