"""``hwlat datasets compare A B``: do two measurements of the same models on the same device configurations agree?

Rows are matched by (device, ``config_id``, ``model_sha256``): the same exact model file on the same device
configuration. Only usable rows (``agents.records.USABLE_STATUSES``) with a latency take part; a key measured
more than once in one dataset (``--remeasure`` sessions) counts with the median of its latencies.

Figures (what a retest on another day, or after a change to the harness, must reproduce):

* rank agreement: Spearman's rho and Kendall's tau (``scipy.stats``), what a NAS ranking depends on;
* relative difference ``(B - A) / A`` per model: median and 90th percentile of its absolute value, the geometric
  mean ratio B/A (a systematic shift: clock, thermal state, runtime version) and a Wilcoxon signed-rank test of
  that shift on log latencies;
* ICC(2,1), the intraclass correlation for absolute agreement of single measurements (two-way random effects,
  Shrout & Fleiss 1979), on log latencies: like the relative difference it weighs a 10% change of a small model
  as much as one of a big model; unlike Spearman it also drops when B is shifted as a whole. ICC(3,1)
  (consistency, blind to a uniform shift) is reported beside it;
* the models that moved most, and one verdict line, as pyperf's ``compare_to`` ends with one.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from agents.errors import UsageError
from agents.records import USABLE_STATUSES
from harness.store import read_dataset

KEY = ["device", "config_id", "model_sha256"]
#: Verdict thresholds: "reproduces" needs both a rank agreement and a typical relative difference this good.
SPEARMAN_MIN = 0.95
MEDIAN_DIFF_MAX = 0.05
#: How many of the models that moved most are listed.
TOP_MOVED = 5


def _latencies(path: Path) -> pd.DataFrame:
    table = read_dataset(path)
    need = {*KEY, "arch", "status", "latency_ms"}
    if not need <= set(table.column_names):
        raise UsageError(f"{path} is not an hwlat dataset (missing columns {sorted(need - set(table.column_names))})")
    df = table.select(sorted(need)).to_pandas()
    df = df[df["status"].astype(str).isin(USABLE_STATUSES) & (df["latency_ms"] > 0)]
    df = df.astype({"device": str})
    return df.groupby(KEY, as_index=False).agg(arch=("arch", "first"), latency_ms=("latency_ms", "median"))


def icc(ratings: np.ndarray) -> dict[str, float]:
    """ICC(2,1) and ICC(3,1) of an n targets x k raters matrix (Shrout & Fleiss 1979, two-way ANOVA)."""
    n, k = ratings.shape
    grand = ratings.mean()
    ss_rows = k * ((ratings.mean(axis=1) - grand) ** 2).sum()
    ss_cols = n * ((ratings.mean(axis=0) - grand) ** 2).sum()
    ss_err = ((ratings - grand) ** 2).sum() - ss_rows - ss_cols
    msr, msc, mse = ss_rows / (n - 1), ss_cols / (k - 1), ss_err / ((n - 1) * (k - 1))
    return {
        "icc2_1": float((msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n)),
        "icc3_1": float((msr - mse) / (msr + (k - 1) * mse)),
    }


def compare(path_a: Path | str, path_b: Path | str) -> dict[str, Any]:
    """Every figure of the comparison as one JSON-ready dict (``hwlat datasets compare --json`` prints it)."""
    a, b = _latencies(Path(path_a)), _latencies(Path(path_b))
    both = a.merge(b, on=KEY, suffixes=("_a", "_b"))
    out: dict[str, Any] = {"a": str(path_a), "b": str(path_b), "matched": len(both),
                           "only_a": len(a) - len(both), "only_b": len(b) - len(both)}
    if len(both) < 3:
        raise UsageError(f"only {len(both)} model(s) measured in both {path_a} and {path_b} on the same device "
                         "configuration (device, config_id, model_sha256); need at least 3 to compare")
    la, lb = both["latency_ms_a"].to_numpy(), both["latency_ms_b"].to_numpy()
    rel = lb / la - 1.0
    with warnings.catch_warnings():  # constant input: the coefficient is NaN (reported as undefined), no warning
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        spearman = stats.spearmanr(la, lb)
        kendall = stats.kendalltau(la, lb)
    log_ratio = np.log(lb / la)
    shift_p = float(stats.wilcoxon(log_ratio).pvalue) if np.any(log_ratio != 0) else 1.0
    out |= {
        "spearman": float(spearman.statistic),
        "kendall": float(kendall.statistic),
        "median_abs_rel_diff": float(np.median(np.abs(rel))),
        "p90_abs_rel_diff": float(np.percentile(np.abs(rel), 90)),
        "geomean_ratio": float(np.exp(log_ratio.mean())),
        "shift_p_value": shift_p,
        **icc(np.log(np.column_stack([la, lb]))),
    }
    both = both.assign(rel_diff=rel).sort_values("rel_diff", key=np.abs, ascending=False)
    out["moved_most"] = [
        {"device": r.device, "arch": r.arch_a, "model_sha256": r.model_sha256, "latency_ms_a": float(r.latency_ms_a),
         "latency_ms_b": float(r.latency_ms_b), "rel_diff": float(r.rel_diff)}
        for r in both.head(TOP_MOVED).itertuples()
    ]
    # a constant column (every model the same latency) leaves a correlation undefined: null, not NaN, in JSON
    out = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in out.items()}
    out["verdict"] = verdict(out)
    return out


def verdict(result: dict[str, Any]) -> str:
    """One line: does B reproduce A, and is B shifted as a whole (pyperf-style "1.04x slower")?"""
    ratio, p = result["geomean_ratio"], result["shift_p_value"]
    if p < 0.05 and not math.isclose(ratio, 1.0):
        shift = f"B is {ratio:.3f}x {'slower' if ratio > 1 else 'faster'} than A (Wilcoxon p={p:.2g})"
    else:
        shift = f"no significant shift (B/A {ratio:.3f}x, Wilcoxon p={p:.2g})"
    rho = result["spearman"]
    good = rho is not None and rho >= SPEARMAN_MIN and result["median_abs_rel_diff"] <= MEDIAN_DIFF_MAX
    head = "reproduces" if good else "does NOT reproduce"
    shown = "undefined (constant latencies)" if rho is None else f"{rho:.3f}"
    return (f"{head}: Spearman {shown}, median |diff| {100 * result['median_abs_rel_diff']:.1f}% "
            f"over {result['matched']} models; {shift}")
