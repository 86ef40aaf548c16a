"""What ``hwlat profile`` keeps between rounds and across interruptions (``state.json``), and the report reads."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agents.files import atomic_write


@dataclass
class RoundRecord:
    """One round of the loop, kept in state.json and drawn in the report."""

    round: int
    sampler: str
    batch: list[str]
    measured: int = 0
    cv_spearman: float | None = None
    cv_kendall: float | None = None
    cv_mape: float | None = None
    #: upper end of that MAPE's 95 % bootstrap interval over the out-of-fold archs: what ``--target-std`` holds
    #: to the asked error (``hwlat.profiling.scores``)
    cv_mape_hi: float | None = None
    best_source: str = ""
    cv_pred: dict[str, float] = field(default_factory=dict)
    #: the out-of-fold predictions' std of log latency, by arch: the held-out check of the predicted uncertainty
    cv_std: dict[str, float] = field(default_factory=dict)
    #: share of the out-of-fold archs whose measured latency lies within their predicted +-1 std (nominal 0.68)
    cv_coverage: float | None = None
    #: median predicted std of log latency over the candidate pool after the round's transfer (``--target-std``)
    pool_std: float | None = None
    done: bool = False
    #: the batch's drift reference level (median of its accepted rows' ``round_ref_ms``), set once accepted
    ref_level_ms: float | None = None
    #: the measuring sessions whose rows are the batch's accepted measurements
    sessions: list[str] = field(default_factory=list)
    #: sessions of this batch set aside as off-level -> why; their rows stay in the dataset, out of the fit
    set_aside: dict[str, str] = field(default_factory=dict)
    #: the reference level of each set-aside attempt, in order (to tell which of two batches is off)
    attempt_levels: list[float] = field(default_factory=list)
    #: how many times the batch was measured again because its level was off
    remeasures: int = 0
    #: what the level check did, one line each (the output, ``--json`` and the report show them)
    level_notes: list[str] = field(default_factory=list)


@dataclass
class ProfileState:
    """What survives an interruption (atomically rewritten after every step)."""

    device: str
    space: str
    target: str
    rounds: list[RoundRecord] = field(default_factory=list)
    stopped: str = ""
    #: the drift reference level the latest transfer's latencies (and so the predictions) are for, from
    #: ``hwlat.profiling.loop.level_latencies``: ``baseline_ms``, ``beta``, ``basis``, each session's level
    #: (``session_levels_ms``) and their ``spread`` (highest / lowest - 1); None where the rows carry no
    #: round reference data (nothing was scaled)
    level: dict[str, Any] | None = None

    def set_aside(self) -> dict[str, str]:
        """Every session set aside as off-level in any round -> why (rows kept, left out of the fit)."""
        return {s: why for r in self.rounds for s, why in r.set_aside.items()}

    @classmethod
    def load(cls, path: Path) -> ProfileState | None:
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        rounds = [RoundRecord(**r) for r in data.pop("rounds", [])]
        return cls(**data, rounds=rounds)

    def save(self, path: Path) -> None:
        atomic_write(path, json.dumps(asdict(self), indent=1).encode())
