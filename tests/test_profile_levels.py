"""`hwlat profile`'s batch level check on real recorded rows (no measuring: seconds).

The fixture holds three rows (with their rounds and drift reference figures) of every measuring session of two
kept end-to-end profiles
(`benchmarks/profile_e2e.py`, docs/predictor.md "Level of the transfer"): onnxruntime 2 threads, whose fourth
batch was measured with the machine 1.83x slower (drift reference ~1.94 ms against ~1.06 ms), and PyTorch eager
1 thread seed 2, the widest ordinary spread between sessions of the kept runs (-5 % to +4 %). Where the loop
would measure again, the tests replay recorded rows under a new session id: the device is the one part a unit
test cannot have, and the rule only reads the rows' reference figures. The same rows check that the fit puts every
batch on one reference level (``level_latencies``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from hwlat.profiling.loop import (
    LEVEL_RETRIES,
    LEVEL_TOLERANCE,
    batch_level,
    latencies,
    level_departure,
    level_latencies,
    settle_levels,
)
from hwlat.profiling.state import ProfileState, RoundRecord

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "profile_batch_levels.parquet"
ORT2 = "epyc2c-ort-t2-noopt"
SLOW = "20261126T103228-a3b1ab"


def _rows(device: str) -> list[dict[str, Any]]:
    return [r for r in pq.read_table(FIXTURE).to_pylist() if r["device"] == device]


def _sessions(rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in rows:
        out.setdefault(r["session_id"], []).append(r["arch"])
    return out


@pytest.mark.parametrize("device", [ORT2, "epyc2c-torch-t1"])
def test_only_the_slow_batch_is_off_level(device: str) -> None:
    rows = _rows(device)
    batches = _sessions(rows)
    assert len(batches) == 4
    levels = {s: batch_level(rows, set(archs))[0] for s, archs in batches.items()}
    for session, level in levels.items():
        others = [v for s, v in levels.items() if s != session]
        off = level_departure(level, others, LEVEL_TOLERANCE)
        if session == SLOW:
            assert off is not None and off[1] > 0.7  # +82 %: the machine ran 1.83x slower
            assert 1.05 < off[0] < 1.07
        else:
            assert off is None, (session, level, others)  # ordinary sessions: within a few %


def test_a_set_aside_session_feeds_no_fit_but_stays_attempted() -> None:
    rows = _rows(ORT2)
    slow = set(_sessions(rows)[SLOW])
    measured, attempted = latencies(rows)
    assert slow <= set(measured)
    measured, attempted = latencies(rows, {SLOW: "off-level"})
    assert not slow & set(measured) and slow <= attempted and len(measured) == len(rows) - len(slow)


@dataclass
class Ort2Profile:
    """The ORT2 profile's four batches as rounds 0-3, the slow one (round 3) just measured and not yet judged."""

    rows: list[dict[str, Any]]
    batches: list[tuple[str, list[str]]]
    state: ProfileState
    pending: RoundRecord


@pytest.fixture
def ort2() -> Ort2Profile:
    rows = _rows(ORT2)
    batches = list(_sessions(rows).items())
    assert batches[3][0] == SLOW
    state = ProfileState(ORT2, "nb201", ORT2, [RoundRecord(i, "default", archs, done=i < 3)
                                               for i, (_s, archs) in enumerate(batches)])
    return Ort2Profile(rows, batches, state, state.rounds[3])


def _replay(rows: list[dict[str, Any]], state: ProfileState, source: dict[int, str]) -> tuple[Any, list[int]]:
    """A stand-in device: measuring round r replays the recorded rows of session ``source[r]`` for the round's
    archs, as a new session."""
    calls: list[int] = []

    def measure(rnd: RoundRecord) -> None:
        have = {r["arch"] for r in rows if r["session_id"] not in state.set_aside()}
        if all(a in have for a in rnd.batch):
            return
        calls.append(rnd.round)
        src = [r for r in rows if r["session_id"] == source[rnd.round]]
        assert len(src) == len(rnd.batch)
        rows.extend({**r, "arch": a, "session_id": f"replay-{len(calls)}"} for r, a in zip(src, rnd.batch,
                                                                                          strict=False))
    return measure, calls


def test_an_off_level_batch_is_measured_again_and_the_latest_kept_when_retries_are_spent(ort2: Ort2Profile) -> None:
    rows, state, pending = ort2.rows, ort2.state, ort2.pending
    said: list[str] = []
    measure, calls = _replay(rows, state, {3: SLOW})  # the machine stays slow
    settle_levels(state, pending, lambda: rows, measure, said.append, lambda: None, LEVEL_TOLERANCE, LEVEL_RETRIES)
    assert calls == [3] * LEVEL_RETRIES
    assert pending.remeasures == LEVEL_RETRIES and len(pending.set_aside) == LEVEL_RETRIES
    assert SLOW in pending.set_aside and "+8" in pending.set_aside[SLOW]
    assert pending.sessions == [f"replay-{LEVEL_RETRIES}"] and pending.ref_level_ms > 1.9
    assert "spent" in pending.level_notes[-1] and any("spent" in s for s in said)
    measured, _ = latencies(rows, state.set_aside())
    assert len(measured) == len({r["arch"] for r in rows})  # the kept (latest) session feeds the fit


def test_a_remeasure_at_the_others_level_replaces_the_slow_session(ort2: Ort2Profile) -> None:
    rows, batches, state, pending = ort2.rows, ort2.batches, ort2.state, ort2.pending
    measure, calls = _replay(rows, state, {3: batches[2][0]})  # the machine is back to normal
    settle_levels(state, pending, lambda: rows, measure, lambda _m: None, lambda: None, LEVEL_TOLERANCE,
                  LEVEL_RETRIES)
    assert calls == [3] and pending.remeasures == 1 and list(pending.set_aside) == [SLOW]
    assert pending.sessions == ["replay-1"] and 1.0 < pending.ref_level_ms < 1.1
    measured, attempted = latencies(rows, state.set_aside())
    slow_rows = [r for r in rows if r["session_id"] == SLOW]
    assert all(measured[r["arch"]] != r["latency_ms"] for r in slow_rows) and len(attempted) == len(measured)


def test_with_one_earlier_batch_the_majority_of_sessions_decides_which_is_off() -> None:
    rows = _rows(ORT2)
    sessions = _sessions(rows)
    normal = [s for s in sessions if s != SLOW]
    # round 0 was the slow batch; round 1 normal: the new batch is measured again first, its sessions agree
    # (3 against 1), so round 0 is the odd one out and is measured again, now at the normal level
    state = ProfileState(ORT2, "nb201", ORT2, [RoundRecord(0, "diversity", sessions[SLOW], done=True),
                                               RoundRecord(1, "default", sessions[normal[0]])])
    pending = state.rounds[1]
    rows = [r for r in rows if r["session_id"] in (SLOW, normal[0])]
    replay_rows = _rows(ORT2)
    measure, calls = _replay(rows, state, {1: normal[0], 0: normal[1]})
    # the replay source for round 0 lives in the full fixture
    rows.extend(r for r in replay_rows if r["session_id"] == normal[1])
    settle_levels(state, pending, lambda: rows, measure, lambda _m: None, lambda: None, LEVEL_TOLERANCE,
                  LEVEL_RETRIES)
    r0, r1 = state.rounds
    assert calls == [1, 1, 0]
    assert r1.set_aside == {} and len(r1.sessions) == 3 and "odd one out" in r1.level_notes[-1]
    assert list(r0.set_aside) == [SLOW] and r0.remeasures == 1 and 1.0 < r0.ref_level_ms < 1.1


def _on_level(row: dict[str, Any], baseline: float, beta: float) -> float:
    """A row's latency on the reference level ``baseline``, by hand: the median over its kept rounds of
    ``median * (baseline / reference) ** beta``."""
    return float(np.median([m * (baseline / ref) ** beta for m, k, ref in
                            zip(row["round_medians_ms"], row["round_kept"], row["round_ref_ms"], strict=True) if k]))


def test_the_slow_batch_is_put_on_the_profiles_reference_level(ort2: Ort2Profile) -> None:
    measured, attempted, level = level_latencies(ort2.rows)
    assert level is not None and level["basis"] == "lowest_level"
    # the level the predictions are for: the fast batches' (~1.05-1.07 ms), not a mix with the slow one (1.94)
    assert 1.04 < level["baseline_ms"] < 1.07 and 0.0 < level["beta"] <= 1.0
    assert level["session_levels_ms"][SLOW] > 1.9 and 0.8 < level["spread"] < 0.9
    assert set(measured) == attempted == {r["arch"] for r in ort2.rows}
    for r in ort2.rows:
        assert measured[r["arch"]] == pytest.approx(_on_level(r, level["baseline_ms"], level["beta"]))
        ratio = measured[r["arch"]] / r["latency_ms"]
        if r["session_id"] == SLOW:  # 1.83x slower reference, beta fitted from the rows' rounds
            assert ratio == pytest.approx((level["baseline_ms"] / 1.935) ** level["beta"], rel=0.02) and ratio < 0.8
        else:
            assert 0.97 < ratio <= 1.0


def test_a_batch_kept_off_level_is_fitted_on_the_others_level(ort2: Ort2Profile) -> None:
    """The machine stays slow: the batch is measured again twice, the latest session kept (retries spent), and
    the fit reads it on the fast batches' level; set-aside sessions give beta evidence, not latencies."""
    measure, _calls = _replay(ort2.rows, ort2.state, {3: SLOW})
    settle_levels(ort2.state, ort2.pending, lambda: ort2.rows, measure, lambda _m: None, lambda: None,
                  LEVEL_TOLERANCE, LEVEL_RETRIES)
    set_aside = ort2.state.set_aside()
    kept = ort2.pending.sessions
    measured, _attempted, level = level_latencies(ort2.rows, set_aside)
    assert level is not None and set(level["session_levels_ms"]) == {s for s, _ in ort2.batches[:3]} | set(kept)
    assert 1.04 < level["baseline_ms"] < 1.07
    for r in ort2.rows:
        if r["session_id"] in kept:
            assert measured[r["arch"]] == pytest.approx(_on_level(r, level["baseline_ms"], level["beta"]))
            assert measured[r["arch"]] < 0.8 * r["latency_ms"]
    raw, _ = latencies(ort2.rows, set_aside)
    assert set(raw) == set(measured)


def test_rows_without_round_reference_data_are_not_scaled() -> None:
    rows = [{k: v for k, v in r.items() if k != "round_medians_ms"} for r in _rows(ORT2)]
    measured, attempted, level = level_latencies(rows)
    assert level is None and (measured, attempted) == latencies(rows)
