"""The timing protocol: warm-up, adaptive number of timed runs, summary statistics.

Pure standard library + numpy so it runs on any board. The protocol and the reasoning behind its
defaults are in docs/timing.md; in short:

* the first inference is recorded apart (``first_ms``): it pays for lazy allocation, kernel
  selection and cold caches, which is a different quantity from steady-state latency;
* warm-up runs until both a minimum count and a minimum duration are reached, so fast models get
  enough iterations and slow models enough seconds for clocks and caches to settle;
* timed runs keep every sample and stop once the distribution-free 95% confidence interval of the
  median is within ``±ci_rel_target`` of the median (or at a hard run/time cap);
* the summary flags a measurement as unstable when its *robust* spread is too large:
  1.4826 * MAD / median >= ``unstable_cv`` (pyperf's 10% rule, on a spread that a few preemptions cannot
  inflate; the classic ``cv`` is reported beside it).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from agents.records import TimingConfig

#: Check the stopping rule every this many timed runs once the minimums are met. Sorting a few
#: thousand samples costs microseconds, but checking after every run would let the check itself
#: jitter the sample stream for sub-millisecond models; five runs keeps the overshoot past the
#: point where the CI first became tight small.
CI_CHECK_EVERY = 5

#: Why the timed phase stopped.
STOP_CI = "ci"
STOP_MAX_RUNS = "max_runs"
STOP_MAX_TIME = "max_time"


@lru_cache(maxsize=4096)
def median_ci_ranks(n: int, alpha: float = 0.05) -> tuple[int, int] | None:
    """0-based order-statistic indices ``(lo, hi)`` of the distribution-free CI of the median.

    With ``B ~ Binomial(n, 1/2)`` (how many samples fall below the true median), the interval
    ``[x_(k+1), x_(n-k)]`` (1-based order statistics) covers the median with probability
    ``1 - 2 P(B <= k)``; we take the largest ``k`` with ``P(B <= k) <= alpha / 2``. No assumption
    about the latency distribution is needed, which matters because latencies are skewed and
    multi-modal. Returns ``None`` when ``n`` is too small for any interval to reach the level
    (n < 6 at 95%).

    The binomial terms are summed in log space (``lgamma``) so large ``n`` neither overflows nor
    underflows; terms further than ``10 * sqrt(n)`` below ``n/2`` are skipped because their total
    mass is below ``exp(-200)`` (Hoeffding).
    """
    if n < 1:
        return None
    log_norm = math.lgamma(n + 1) + n * math.log(0.5)
    start = max(0, int(n / 2 - 10 * math.sqrt(n)))
    cumulative = 0.0
    k = start - 1
    for i in range(start, n // 2 + 1):
        cumulative += math.exp(log_norm - math.lgamma(i + 1) - math.lgamma(n - i + 1))
        if cumulative > alpha / 2:
            break
        k = i
    if k < 0:
        return None
    return k, n - 1 - k


def median_ci(sorted_ms: Sequence[float] | np.ndarray) -> tuple[float, float] | None:
    """95% CI ``(low, high)`` of the median of already sorted samples, or None if n < 6."""
    ranks = median_ci_ranks(len(sorted_ms))
    if ranks is None:
        return None
    return float(sorted_ms[ranks[0]]), float(sorted_ms[ranks[1]])


def ci_within(sorted_ms: Sequence[float] | np.ndarray, rel_target: float) -> bool:
    """Whether the median's 95% CI lies inside ``median * (1 ± rel_target)``."""
    ci = median_ci(sorted_ms)
    if ci is None:
        return False
    median = float(np.median(sorted_ms))
    return median * (1 - rel_target) <= ci[0] and ci[1] <= median * (1 + rel_target)


def stop_reason(samples_ms: Sequence[float], elapsed_s: float, cfg: TimingConfig) -> str:
    """The stopping rule of the timed phase given the samples so far (in run order); "" = go on.

    Hard caps first (``max_runs``, ``max_time_s``): they bound a job's duration even when
    ``min_runs`` is not reached, so a slow model still finishes inside the supervisor's timeout.
    Then, once both minimums are met, stop when the CI of the median is tight enough, checking
    every ``CI_CHECK_EVERY`` runs (the only case that sorts the samples).
    """
    n = len(samples_ms)
    if n >= cfg.max_runs:
        return STOP_MAX_RUNS
    if elapsed_s >= cfg.max_time_s:
        return STOP_MAX_TIME
    if n < cfg.min_runs or elapsed_s < cfg.min_time_s or (n - cfg.min_runs) % CI_CHECK_EVERY:
        return ""
    return STOP_CI if ci_within(np.sort(np.asarray(samples_ms, dtype=np.float64)), cfg.ci_rel_target) else ""


def summarize(raw_ms: Sequence[float] | np.ndarray, unstable_cv: float) -> dict:
    """Summary statistics of the timed runs, keyed like the ``MeasureResult`` fields.

    Percentiles use numpy's default linear interpolation; ``std_ms`` is the sample standard
    deviation (ddof=1, as pyperf); outliers are Tukey's (outside ``[Q1 - 1.5 IQR, Q3 + 1.5 IQR]``).
    ``robust_cv`` is 1.4826 * MAD / median (equals std / mean for normal data); ``unstable`` is
    ``robust_cv >= unstable_cv``. pyperf's rule on the plain std flagged two thirds of the rows measured
    on a shared 2-vCPU VM whose median CI was within +-0.3%: rare multi-millisecond preemptions (counted
    in ``n_outliers``) dominate the std but say nothing about the bulk of the runs.
    """
    a = np.asarray(raw_ms, dtype=np.float64)
    n = int(a.size)
    if n == 0:
        return {"n_runs": 0, "unstable": False}
    s = np.sort(a)
    mean = float(s.mean())
    std = float(s.std(ddof=1)) if n > 1 else 0.0
    q1, q3, p90, p99 = (float(v) for v in np.percentile(s, [25, 75, 90, 99]))
    iqr = q3 - q1
    n_outliers = int(np.count_nonzero((s < q1 - 1.5 * iqr) | (s > q3 + 1.5 * iqr)))
    ci = median_ci(s)
    median = float(np.median(s))
    robust_cv = 1.4826 * float(np.median(np.abs(s - median))) / median if median > 0 else None
    return {
        "n_runs": n,
        "median_ms": median,
        "mean_ms": mean,
        "std_ms": std,
        "min_ms": float(s[0]),
        "max_ms": float(s[-1]),
        "p90_ms": p90,
        "p99_ms": p99,
        "cv": std / mean if mean > 0 else None,
        "ci95_low_ms": ci[0] if ci else None,
        "ci95_high_ms": ci[1] if ci else None,
        "n_outliers": n_outliers,
        "robust_cv": robust_cv,
        "unstable": bool(n > 1 and robust_cv is not None and robust_cv >= unstable_cv),
    }


@dataclass
class TimingOutcome:
    """What ``time_inference`` measured; ``raw_ms`` holds every timed run in order."""

    first_ms: float
    warmup_runs: int
    raw_ms: list[float] = field(default_factory=list)
    stop_reason: str = ""


def _ms(ns: int) -> float:
    """Nanoseconds to milliseconds, rounded to the nanosecond (no fake digits in the journal)."""
    return round(ns / 1e6, 6)


def time_inference(run: Callable[[], object], cfg: TimingConfig) -> TimingOutcome:
    """Time ``run`` (one inference with fixed inputs) following the protocol in docs/timing.md.

    Only the ``run()`` call sits between the two ``perf_counter_ns`` reads; the bookkeeping and
    the stopping-rule check happen outside the timed window. Warm-up also stops at
    ``max_time_s`` so that a very slow model cannot spend its whole timeout warming up.
    """
    clock = time.perf_counter_ns
    t0 = clock()
    run()
    first_ms = _ms(clock() - t0)

    warmup_runs = 0
    start = clock()
    min_ns, cap_ns = int(cfg.warmup_min_s * 1e9), int(cfg.max_time_s * 1e9)
    while warmup_runs < cfg.warmup_max_runs:
        elapsed = clock() - start
        if (warmup_runs >= cfg.warmup_min_runs and elapsed >= min_ns) or elapsed >= cap_ns:
            break
        run()
        warmup_runs += 1

    raw_ms: list[float] = []
    reason = ""
    start = clock()
    while not reason:
        t = clock()
        run()
        raw_ms.append(_ms(clock() - t))
        reason = stop_reason(raw_ms, (clock() - start) / 1e9, cfg)
    return TimingOutcome(first_ms, warmup_runs, raw_ms, reason)
