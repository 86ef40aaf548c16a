"""benchmarks/loadgen.py: seeded alternating busy/idle phases, bounded, stops by itself."""

from __future__ import annotations

import itertools
import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # spawn children inherit sys.path
import loadgen


def test_plan_is_seeded_alternating_and_bounded() -> None:
    phases = loadgen.plan_phases(seed=3, total_s=100.0)
    assert phases == loadgen.plan_phases(seed=3, total_s=100.0) != loadgen.plan_phases(seed=4, total_s=100.0)
    assert all(a.kind != b.kind and a.end_s == b.start_s for a, b in itertools.pairwise(phases))
    assert phases[0].start_s == 0 and phases[-1].end_s == 100.0
    assert all(5.0 <= p.end_s - p.start_s <= 20.0 for p in phases[:-1])
    with pytest.raises(ValueError):
        loadgen.plan_phases(0, 10.0, min_phase_s=3.0, max_phase_s=2.0)


def test_starts_spins_when_busy_and_stops_by_itself() -> None:
    gen = loadgen.LoadGenerator(seed=1, total_s=1.5, min_phase_s=0.3, max_phase_s=0.5)
    busy_s = sum(p.end_s - p.start_s for p in gen.phases if p.kind == "busy")
    assert {p.kind for p in gen.phases} == {"busy", "idle"}
    t0 = time.monotonic()
    children_before = os.times().children_user
    gen.start()
    assert gen.is_alive()
    gen.join(timeout=10.0)
    assert not gen.is_alive() and time.monotonic() - t0 < 10.0  # ended on its own, not killed
    assert os.times().children_user - children_before > 0.2 * busy_s  # the busy phases did burn CPU
