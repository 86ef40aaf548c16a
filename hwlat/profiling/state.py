"""What ``hwlat profile`` keeps between rounds and across interruptions (``state.json``), and the report reads."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

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
    best_source: str = ""
    cv_pred: dict[str, float] = field(default_factory=dict)
    done: bool = False


@dataclass
class ProfileState:
    """What survives an interruption (atomically rewritten after every step)."""

    device: str
    space: str
    target: str
    rounds: list[RoundRecord] = field(default_factory=list)
    stopped: str = ""

    @classmethod
    def load(cls, path: Path) -> ProfileState | None:
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        rounds = [RoundRecord(**r) for r in data.pop("rounds", [])]
        return cls(**data, rounds=rounds)

    def save(self, path: Path) -> None:
        atomic_write(path, json.dumps(asdict(self), indent=1).encode())
