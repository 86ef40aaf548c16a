"""Timing protocol: statistics on synthetic arrays with known answers, the stopping rule, the
warm-up/timed loop on real callables, and a real onnxruntime timing of a tiny model."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from fixtures.agent_models import matmul_model
from scipy import stats

from agents.backends import get_backend
from agents.records import RuntimeConfig, TimingConfig
from agents.timing import (
    CI_CHECK_EVERY,
    STOP_CI,
    STOP_MAX_RUNS,
    STOP_MAX_TIME,
    median_ci,
    median_ci_ranks,
    stop_reason,
    summarize,
    time_inference,
)

# --------------------------------------------------------------------------------------------
# Confidence interval of the median
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "ranks_1_based"), [(6, (1, 6)), (10, (2, 9)), (20, (6, 15)), (30, (10, 21)),
                                                   (50, (18, 33)), (100, (40, 61))])
def test_median_ci_ranks_match_published_tables(n: int, ranks_1_based: tuple[int, int]) -> None:
    """Order statistics of the 95% CI of the median (e.g. Conover, Practical Nonparametric Statistics)."""
    lo, hi = median_ci_ranks(n)
    assert (lo + 1, hi + 1) == ranks_1_based


def test_median_ci_ranks_agree_with_exact_binomial_everywhere() -> None:
    for n in [*range(1, 400), 1000, 2000, 4999, 20000]:
        k = int(stats.binom.ppf(0.025, n, 0.5))
        while stats.binom.cdf(k, n, 0.5) > 0.025:  # ppf gives the first k with cdf >= 0.025
            k -= 1
        expected = None if k < 0 else (k, n - 1 - k)
        assert median_ci_ranks(n) == expected, n


def test_median_ci_needs_six_samples() -> None:
    assert median_ci([1.0, 2.0, 3.0, 4.0, 5.0]) is None
    assert median_ci([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]) == (1.0, 6.0)
    assert median_ci_ranks(0) is None


# --------------------------------------------------------------------------------------------
# Summary statistics
# --------------------------------------------------------------------------------------------


def test_summarize_known_values_one_to_hundred() -> None:
    s = summarize(np.random.default_rng(0).permutation(np.arange(1.0, 101.0)), unstable_cv=0.1)
    assert s["n_runs"] == 100
    assert s["median_ms"] == 50.5 and s["mean_ms"] == 50.5
    assert s["std_ms"] == pytest.approx(29.011491975882016)  # sample std, ddof=1
    assert (s["min_ms"], s["max_ms"]) == (1.0, 100.0)
    assert s["p90_ms"] == pytest.approx(90.1) and s["p99_ms"] == pytest.approx(99.01)  # linear interpolation
    assert (s["ci95_low_ms"], s["ci95_high_ms"]) == (40.0, 61.0)
    assert s["cv"] == pytest.approx(29.011491975882016 / 50.5)
    assert s["n_outliers"] == 0
    assert s["unstable"] is True  # std is 57% of the mean


def test_summarize_counts_tukey_outliers() -> None:
    s = summarize([10.0] * 20 + [11.0] * 20 + [1.0, 100.0, 10.5], unstable_cv=0.1)
    # Q1 = 10, Q3 = 11, IQR = 1: fences at 8.5 and 12.5.
    assert s["n_outliers"] == 2
    assert s["median_ms"] == 10.5


def test_rare_preemptions_do_not_make_a_tight_measurement_unstable() -> None:
    runs = [10.0, 10.1] * 50 + [60.0, 80.0]  # two preemptions: std is 72% of the mean, the bulk is tight
    s = summarize(runs, unstable_cv=0.1)
    assert s["cv"] > 0.5 and s["robust_cv"] < 0.02
    assert s["unstable"] is False and s["n_outliers"] == 2


def test_summarize_stable_vs_unstable_on_the_robust_spread() -> None:
    tight = [10.0, 10.2] * 20
    assert summarize(tight, unstable_cv=0.1)["unstable"] is False
    spread = [10.0, 13.0] * 20  # MAD 1.5: robust cv 1.4826 * 1.5 / 11.5 ≈ 0.19
    assert summarize(spread, unstable_cv=0.1)["unstable"] is True
    assert summarize(spread, unstable_cv=0.5)["unstable"] is False


def test_summarize_single_and_empty() -> None:
    one = summarize([3.5], unstable_cv=0.1)
    assert one["median_ms"] == one["min_ms"] == one["max_ms"] == 3.5
    assert one["std_ms"] == 0.0 and one["ci95_low_ms"] is None and one["unstable"] is False
    assert summarize([], unstable_cv=0.1) == {"n_runs": 0, "unstable": False}


# --------------------------------------------------------------------------------------------
# Stopping rule
# --------------------------------------------------------------------------------------------

CFG = TimingConfig(min_runs=10, min_time_s=0.5, max_runs=100, max_time_s=5.0, ci_rel_target=0.01)


def test_stop_rule_waits_for_both_minimums() -> None:
    tight = [1.0] * 10
    assert stop_reason(tight[:9], 1.0, CFG) == ""  # too few runs
    assert stop_reason(tight, 0.4, CFG) == ""  # not long enough
    assert stop_reason(tight, 0.5, CFG) == STOP_CI


def test_stop_rule_needs_tight_ci_and_checks_every_few_runs() -> None:
    wide = list(np.linspace(1.0, 2.0, 10 + CI_CHECK_EVERY))
    assert stop_reason(wide, 1.0, CFG) == ""
    near = [1.0] * 10 + [1.001]  # tight, but n=11 is not a check point
    assert stop_reason(near, 1.0, CFG) == ""
    assert stop_reason(near + [1.0] * (CI_CHECK_EVERY - 1), 1.0, CFG) == STOP_CI


def test_stop_rule_caps_win_over_minimums() -> None:
    wide = list(np.linspace(1.0, 2.0, 100))
    assert stop_reason(wide, 1.0, CFG) == STOP_MAX_RUNS
    assert stop_reason([5.0, 9.0], 5.0, CFG) == STOP_MAX_TIME  # slow model: 2 runs, out of time


# --------------------------------------------------------------------------------------------
# The loop, on real callables
# --------------------------------------------------------------------------------------------


class CallLog:
    """A real workload (a small matmul) that records when each call started."""

    def __init__(self, sleep_s: float = 0.0) -> None:
        self.starts: list[float] = []
        self.sleep_s = sleep_s
        self.a = np.random.default_rng(0).standard_normal((32, 32))

    def __call__(self) -> None:
        self.starts.append(time.perf_counter())
        if self.sleep_s:
            time.sleep(self.sleep_s)
        self.a @ self.a


def test_time_inference_counts_first_warmup_and_timed_runs() -> None:
    log = CallLog()
    cfg = TimingConfig(warmup_min_runs=3, warmup_min_s=0.0, min_runs=10, min_time_s=0.0, max_runs=25)
    out = time_inference(log, cfg)
    assert len(log.starts) == 1 + out.warmup_runs + len(out.raw_ms)
    assert out.warmup_runs == 3
    assert 10 <= len(out.raw_ms) <= 25
    assert out.stop_reason in (STOP_CI, STOP_MAX_RUNS)
    assert out.first_ms > 0 and all(v > 0 for v in out.raw_ms)


def test_warmup_lasts_at_least_warmup_min_s() -> None:
    log = CallLog(sleep_s=0.001)
    cfg = TimingConfig(warmup_min_runs=1, warmup_min_s=0.05, warmup_max_runs=10_000, min_runs=10, max_runs=10)
    out = time_inference(log, cfg)
    first_timed = log.starts[1 + out.warmup_runs]
    assert first_timed - log.starts[1] >= 0.05


def test_warmup_stops_at_warmup_max_runs() -> None:
    cfg = TimingConfig(warmup_min_runs=1, warmup_min_s=60.0, warmup_max_runs=5, min_runs=10, max_runs=10)
    assert time_inference(CallLog(), cfg).warmup_runs == 5


def test_slow_model_stops_at_max_time_in_warmup_and_timing() -> None:
    cfg = TimingConfig(warmup_min_runs=100, warmup_min_s=0.0, min_runs=100, min_time_s=0.0, max_time_s=0.1)
    out = time_inference(CallLog(sleep_s=0.02), cfg)
    assert out.stop_reason == STOP_MAX_TIME
    assert out.warmup_runs < 100 and len(out.raw_ms) < 100


def test_real_onnxruntime_timing_of_a_tiny_model(tmp_path: Path) -> None:
    matmul_model(tmp_path / "mm.onnx", size=32)
    backend = get_backend(RuntimeConfig(threads=1))
    backend.load(str(tmp_path / "mm.onnx"))
    inputs = backend.make_inputs(np.random.default_rng(0))
    cfg = TimingConfig(warmup_min_runs=5, warmup_min_s=0.0, min_runs=20, min_time_s=0.0, max_runs=200)
    out = time_inference(lambda: backend.run(inputs), cfg)
    s = summarize(out.raw_ms, cfg.unstable_cv)
    assert s["n_runs"] == len(out.raw_ms) >= 20
    assert s["min_ms"] <= s["ci95_low_ms"] <= s["median_ms"] <= s["ci95_high_ms"] <= s["max_ms"]
    assert s["median_ms"] <= s["p90_ms"] <= s["p99_ms"] <= s["max_ms"]
    if out.stop_reason == STOP_CI:
        assert s["ci95_high_ms"] <= s["median_ms"] * 1.01 and s["ci95_low_ms"] >= s["median_ms"] * 0.99
    else:
        assert out.stop_reason == STOP_MAX_RUNS and s["n_runs"] == 200
