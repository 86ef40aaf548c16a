"""A controlled background load for retest benchmarks: one process that alternates busy and idle phases.

    python benchmarks/loadgen.py [--seed 0] [--total 300] [--min-phase 5] [--max-phase 20]

Why: a retest under a known, reproducible disturbance says how much interference the measurement protocol
absorbs (and whether the rows' ``busy_pct_*``/``load1_*`` columns flag it). The phases are drawn up front from
``seed`` (durations uniform in [min_phase, max_phase] seconds, busy and idle strictly alternating, the first
one drawn too), so a benchmark can record exactly when the machine was disturbed. A busy phase spins one core
in a separate process (no GIL shared with the caller); an idle phase sleeps. The generator stops by itself after
``total_s`` seconds (the last phase is cut there) and, as a daemon process, with the program that started it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import time
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Phase:
    """One phase, in seconds from the generator's start."""

    kind: str  # "busy" or "idle"
    start_s: float
    end_s: float


def plan_phases(seed: int, total_s: float, min_phase_s: float = 5.0, max_phase_s: float = 20.0) -> list[Phase]:
    """The whole schedule: alternating busy/idle phases of seeded random length, cut at ``total_s``."""
    if not 0 < min_phase_s <= max_phase_s or total_s <= 0:
        raise ValueError("need 0 < min_phase_s <= max_phase_s and total_s > 0")
    rng = random.Random(seed)
    busy = rng.random() < 0.5
    phases, t = [], 0.0
    while t < total_s:
        end = min(t + rng.uniform(min_phase_s, max_phase_s), total_s)
        phases.append(Phase("busy" if busy else "idle", round(t, 6), round(end, 6)))
        t, busy = end, not busy
    return phases


def _run(phases: list[Phase], t0: float) -> None:
    """Child process: follow the schedule against the shared start time ``t0`` (time.monotonic)."""
    x = 0
    for phase in phases:
        end = t0 + phase.end_s
        if phase.kind == "busy":
            while time.monotonic() < end:
                for _ in range(10_000):
                    x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        else:
            time.sleep(max(0.0, end - time.monotonic()))


class LoadGenerator:
    """Start with ``start()``; it ends by itself after ``total_s`` or at ``stop()`` (also a context manager)."""

    def __init__(self, seed: int = 0, total_s: float = 300.0, min_phase_s: float = 5.0,
                 max_phase_s: float = 20.0) -> None:
        self.phases = plan_phases(seed, total_s, min_phase_s, max_phase_s)
        self.total_s = total_s
        self.started_at: float | None = None  # time.time() at start, to line phases up with rows' timestamps
        self._proc: multiprocessing.Process | None = None

    def start(self) -> LoadGenerator:
        t0 = time.monotonic()
        self.started_at = time.time()
        self._proc = multiprocessing.get_context("spawn").Process(
            target=_run, args=(self.phases, t0), name="hwlat-loadgen", daemon=True)
        self._proc.start()
        return self

    def is_alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def join(self, timeout: float | None = None) -> None:
        if self._proc is not None:
            self._proc.join(timeout)

    def stop(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.terminate()
            self._proc.join()

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def schedule(self) -> dict:
        """What a benchmark records: the wall-clock start and every phase."""
        return {"started_at": self.started_at, "phases": [asdict(p) for p in self.phases]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--total", type=float, default=300.0, help="seconds until it stops by itself")
    parser.add_argument("--min-phase", type=float, default=5.0)
    parser.add_argument("--max-phase", type=float, default=20.0)
    args = parser.parse_args()
    gen = LoadGenerator(args.seed, args.total, args.min_phase, args.max_phase).start()
    print(json.dumps(gen.schedule(), indent=1), flush=True)
    gen.join()


if __name__ == "__main__":
    main()
