"""The profile loop's stopping rules, decided from the rounds it recorded (``hwlat.profiling.loop``): the
cross-validated Spearman's convergence, and ``--target-std``, which stops only when the pool's predicted std is as
small as asked *and* the out-of-fold archs confirm it: their errors as small, and enough of them within their
predicted +-1 std (an optimistic std cannot stop the loop)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from harness.devices import resolve_device
from hwlat.profiling.loop import MIN_CV_COVERAGE, ProfileRequest, converged, cv_coverage, precise_enough
from hwlat.profiling.state import RoundRecord


def _req(**kw: object) -> ProfileRequest:
    return ProfileRequest(device=resolve_device("local"), space="nb201", budget=100, batch=10, out=Path("unused"),
                          **kw)  # type: ignore[arg-type]


def _round(i: int, measured: int, rho: float = 0.9, pool_std: float | None = None,
           coverage: float | None = None, mape: float = 2.0) -> RoundRecord:
    return RoundRecord(i, "default", [], measured=measured, cv_spearman=rho, pool_std=pool_std, cv_coverage=coverage,
                       cv_mape=mape, done=True)


def test_out_of_fold_coverage_counts_measurements_within_their_std() -> None:
    measured = {"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0}
    pred = {"a": 1.0, "b": math.exp(0.09), "c": math.exp(-0.11), "d": 2.0}
    std = {"a": 0.01, "b": 0.1, "c": 0.1, "d": 0.1}
    assert cv_coverage(pred, std, measured) == 0.5  # a (0 <= 0.01), b (0.09 <= 0.1); not c (0.11), d (0.69)
    assert cv_coverage({}, {}, measured) is None


def test_target_std_stops_only_when_the_std_is_small_and_confirmed() -> None:
    req = _req(target_std=0.05, min_measured=30)
    ok = [_round(0, 20), _round(1, 30, pool_std=0.04, coverage=0.7)]
    reason = precise_enough(ok, req)
    assert reason.startswith("precise enough") and "0.040" in reason and "70%" in reason and "2.0%" in reason
    assert precise_enough(ok, _req(min_measured=30)) == ""  # no --target-std: the rule is off
    assert precise_enough([_round(0, 29, pool_std=0.01, coverage=0.9)], req) == ""  # below --min-measured
    assert precise_enough([_round(0, 40, pool_std=0.06, coverage=0.9)], req) == ""  # not yet as sure as asked
    # as sure as asked, but the held-out archs say the std is optimistic: keep measuring
    assert precise_enough([_round(0, 40, pool_std=0.01, coverage=MIN_CV_COVERAGE - 0.01)], req) == ""
    assert precise_enough([_round(0, 40, pool_std=0.01, coverage=MIN_CV_COVERAGE)], req) != ""
    # a std that is small and covers the held-out archs, but their errors are larger than asked: keep measuring
    assert precise_enough([_round(0, 40, pool_std=0.01, coverage=0.9, mape=5.5)], req) == ""
    # only the last finished round counts
    unfinished = RoundRecord(2, "default", ["x"])
    assert precise_enough([*ok, unfinished], req) == precise_enough(ok, req) != ""
    assert precise_enough([*ok, _round(2, 40, pool_std=0.2, coverage=0.7)], req) == ""


@pytest.mark.parametrize(("rhos", "expected"), [((0.90, 0.901, 0.902), True), ((0.90, 0.92, 0.921), False)])
def test_spearman_convergence_needs_patience_rounds_of_small_gains(rhos: tuple[float, ...], expected: bool) -> None:
    rounds = [_round(i, 30 + 10 * i, rho) for i, rho in enumerate(rhos)]
    assert converged(rounds, _req(min_measured=30, patience=2)) is expected
