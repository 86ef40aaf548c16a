"""Rounds: each model is measured in R separate sessions spread over the campaign, judged, repaired, then stored
as one row (docs/timing.md, "Rounds"; docs/dataset.md for the columns).

Why: a model timed in one stretch keeps whatever the machine was doing in that stretch (a busy neighbour, a
clock step, a warm or cold board) in its one number, and its own confidence interval cannot see it. A campaign
measures round 1 of every model (shuffled, the drift reference every K models), then round 2 of every model in
another shuffled order, and so on, so the rounds of one model sit in different phases of the machine. The passes
known before anything is measured (``RoundBook.planned_passes``) go to the device one after the other as one
order (one agent run locally, harness/device_runner.py); the re-measure passes (``next_pass``) are decided once
those rounds are judged.

Durability: the coordinator appends every round and every reference result, the moment it arrives, to
``DIR/_rounds/<device>/<session_id>.jsonl`` (one ``write`` + ``fsync`` per line, the agent's journal format;
readers of the rows skip folders starting with ``_``). A killed campaign loses at most the round in flight; the
next campaign on the same folder reads these files and measures only the rounds its models still lack. Once a
model's row is stored its rounds are in the row (every raw run included) and the files holding only stored
models are deleted.

Judging (``judge``): a round is *disturbed* when other processes used more than ``remeasure_busy_pct`` of the
worker's CPUs during its timed loop, when the two drift-reference measurements around it differ by more than
``remeasure_drift_pct``, or when its drift-corrected median is more than ``remeasure_far_pct`` slower than the
model's fastest undisturbed round (interference only ever adds time). A model with fewer than R undisturbed
rounds gets another round in a later pass, as long as it has had fewer than ``rounds + remeasure_max`` rounds.
Then the row keeps its undisturbed rounds, made up to R with its fastest disturbed ones if the budget ran out
(the row is then ``unstable``); every other round is discarded, its samples still in the row (``round_kept``
false, ``remeasure_reasons`` says why).
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from agents.files import fsync_dir
from agents.journal import iter_journal
from agents.records import USABLE_STATUSES, MeasureResult, TimingConfig
from agents.runner import Journal
from harness.records import ModelArtifact

#: Where the round journals live inside a dataset folder (hidden from row readers by the leading ``_``).
ROUNDS_DIR = "_rounds"


def _epoch(text: str) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _midpoint(result: MeasureResult) -> float | None:
    start, end = _epoch(result.started_at), _epoch(result.finished_at)
    if start is None or end is None:
        return end if start is None else start
    return (start + end) / 2


@dataclass
class Round:
    """One timed session of one model: the agent's result and where it sat in the campaign."""

    session_id: str
    run_id: str
    order_index: int
    result: MeasureResult
    #: the drift reference's state when this round arrived (the row's ``ref_*`` columns)
    ref: dict[str, Any] = field(default_factory=dict)
    #: the network measured (``ModelArtifact.key``); empty: the result's sha256 (a file at its own shapes)
    key: str = ""

    def __post_init__(self) -> None:
        self.key = self.key or self.result.sha256

    @property
    def usable(self) -> bool:
        return self.result.status in USABLE_STATUSES and self.result.median_ms is not None

    @property
    def busy_own_pct(self) -> float | None:
        """Other processes' share of the worker's CPUs during warm-up and timed loop (``agents.system``)."""
        value = self.result.system_after.get("busy_pct_own_cpus")
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class Reference:
    """One measurement of the session's drift reference model: when (epoch seconds, mid-loop) and its median."""

    t: float
    median_ms: float


def reference_ms(rnd: Round, refs: dict[str, list[Reference]]) -> float | None:
    """The drift reference's latency when ``rnd`` ran (ms): the row's ``round_ref_ms``.

    Interpolated linearly in time between the reference measurements just before and just after the round's
    mid-point (the nearest one at either end of the session); None without references. Kept absolute so that a
    reader can put several campaigns on one baseline (``harness.compare``), which a factor relative to each
    session's own first reference measurement cannot.
    """
    timeline = refs.get(rnd.session_id) or []
    t = _midpoint(rnd.result)
    if not timeline or t is None:
        return None
    before = [r for r in timeline if r.t <= t]
    after = [r for r in timeline if r.t > t]
    if before and after:
        a, b = before[-1], after[0]
        return a.median_ms + (b.median_ms - a.median_ms) * (t - a.t) / (b.t - a.t)
    return (before[-1] if before else after[0]).median_ms


def drift_factor(rnd: Round, refs: dict[str, list[Reference]]) -> float | None:
    """The machine's speed when ``rnd`` ran, relative to its session's first reference measurement."""
    value = reference_ms(rnd, refs)
    return None if value is None else value / refs[rnd.session_id][0].median_ms


def _window_drift_pct(rnd: Round, refs: dict[str, list[Reference]]) -> float | None:
    """How much the two reference measurements around the round differ (%): the machine moved meanwhile."""
    timeline = refs.get(rnd.session_id) or []
    t = _midpoint(rnd.result)
    if t is None:
        return None
    before = [r for r in timeline if r.t <= t]
    after = [r for r in timeline if r.t > t]
    if not before or not after:
        return None
    a, b = before[-1].median_ms, after[0].median_ms
    return 100.0 * abs(b / a - 1.0)


@dataclass
class Verdict:
    """What the rounds of one model say: kept rounds, discarded ones (with why), how many more are needed."""

    rounds: list[Round]
    kept: list[Round]
    #: id(round) -> why it was discarded and measured again
    discarded: dict[int, str]
    #: disturbed rounds kept because the re-measure budget was spent (id -> why)
    kept_disturbed: dict[int, str]
    factors: dict[int, float | None]
    need: int
    failed: Round | None = None
    #: id(round) -> the drift reference's latency when it ran (``reference_ms``)
    ref_ms: dict[int, float | None] = field(default_factory=dict)


def disturbance(rnd: Round, refs: dict[str, list[Reference]], timing: TimingConfig) -> str:
    """Why this round alone looks disturbed ("" if it does not): busy CPUs, or drift across its window."""
    busy = rnd.busy_own_pct
    if busy is not None and busy > timing.remeasure_busy_pct:
        return f"busy: other processes used {busy:.0f}% of the worker's CPUs"
    window = _window_drift_pct(rnd, refs)
    if window is not None and window > timing.remeasure_drift_pct:
        return f"drift: the reference moved {window:.0f}% around this round"
    return ""


def judge(rounds: list[Round], refs: dict[str, list[Reference]], timing: TimingConfig) -> Verdict:
    """Judge a model's rounds (in measurement order); see the module docstring for the rules."""
    failed = next((r for r in rounds if not r.usable), None)
    factors = {id(r): drift_factor(r, refs) for r in rounds}
    ref_ms = {id(r): reference_ms(r, refs) for r in rounds}
    if failed is not None:
        return Verdict(rounds, [r for r in rounds if r.usable], {}, {}, factors, 0, failed, ref_ms)
    reasons = {id(r): disturbance(r, refs, timing) for r in rounds}

    def corrected(r: Round) -> float:
        factor = factors[id(r)]
        return r.result.median_ms / factor if factor else r.result.median_ms  # type: ignore[operator]

    calm = [r for r in rounds if not reasons[id(r)]] or rounds
    fastest = min(corrected(r) for r in calm)
    for r in rounds:
        slower = 100.0 * (corrected(r) / fastest - 1.0)
        if not reasons[id(r)] and slower > timing.remeasure_far_pct:
            reasons[id(r)] = f"far: {slower:.0f}% slower than the model's fastest round"
    calm_now = [r for r in rounds if not reasons[id(r)]]
    extra = len(rounds) - timing.rounds  # rounds measured beyond R so far
    if len(calm_now) >= timing.rounds:
        kept = calm_now
        need = 0
    elif extra < timing.remeasure_max:
        kept = calm_now
        need = timing.rounds - len(calm_now)
    else:  # budget spent: make up R with the fastest disturbed rounds (interference only adds time)
        disturbed = sorted((r for r in rounds if reasons[id(r)]), key=corrected)
        chosen = {id(r) for r in disturbed[: timing.rounds - len(calm_now)]}
        kept = [r for r in rounds if not reasons[id(r)] or id(r) in chosen]
        need = 0
    kept_ids = {id(r) for r in kept}
    discarded = {id(r): reasons[id(r)] for r in rounds if id(r) not in kept_ids}
    kept_disturbed = {id(r): reasons[id(r)] for r in kept if reasons[id(r)]}
    return Verdict(rounds, kept, discarded, kept_disturbed, factors, need, ref_ms=ref_ms)


def _result_event(kind: str, session_id: str, run_id: str, config_id: str, order_index: int,
                  result: MeasureResult, ref: dict[str, Any], key: str | None = None) -> dict[str, Any]:
    event = {"type": kind, "session_id": session_id, "run_id": run_id, "config_id": config_id,
             "order_index": order_index, "ref": ref, "result": dataclasses.asdict(result)}
    if key is not None:
        event["model_key"] = key
    return event


def _event_key(event: dict[str, Any]) -> str:
    """The network a journaled round measured: its ``model_key``; in journals written before rounds carried
    one, the model file's sha256 (a file at its own shapes, what they were resumed by then)."""
    return str(event.get("model_key") or event["result"]["sha256"])


def rounds_dir(root: Path, device: str) -> Path:
    return Path(root) / ROUNDS_DIR / device


def load_rounds(root: Path, device: str, config_id: str) -> tuple[dict[str, list[Round]], dict[str, list[Reference]]]:
    """Every round and reference journaled for this device and configuration by earlier (killed) campaigns.

    A torn last line (the coordinator died mid-write) ends its file, as in the agent's journal.
    """
    rounds: dict[str, list[Round]] = {}
    refs: dict[str, list[Reference]] = {}
    folder = rounds_dir(root, device)
    if not folder.is_dir():
        return rounds, refs
    for path in sorted(folder.glob("*.jsonl")):
        for event in iter_journal(path):
            if event.get("config_id") != config_id:
                continue
            result = MeasureResult.from_dict(event["result"])
            if event["type"] == "reference":
                t = _midpoint(result)
                if result.median_ms and t is not None:
                    refs.setdefault(event["session_id"], []).append(Reference(t, result.median_ms))
            elif event["type"] == "round":
                key = _event_key(event)
                rounds.setdefault(key, []).append(
                    Round(event["session_id"], event["run_id"], int(event["order_index"]), result, event["ref"], key))
    for timeline in refs.values():
        timeline.sort(key=lambda r: r.t)
    return rounds, refs


def prune_round_logs(root: Path, device: str, config_id: str, stored: set[str]) -> None:
    """Delete the round journals of this configuration whose every model has its row (``stored``: networks,
    ``MeasuredKey.model_key``; a round of the same file at another input shape keeps its journal)."""
    folder = rounds_dir(root, device)
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.jsonl")):
        events = list(iter_journal(path))
        if any(e.get("config_id") != config_id for e in events):
            continue
        if all(e["type"] != "round" or _event_key(e) in stored for e in events):
            path.unlink()
    fsync_dir(folder)
    with contextlib.suppress(OSError):  # gone when empty; kept while a file holds rounds of unstored models
        folder.rmdir()
        folder.parent.rmdir()


class RoundBook:
    """One device's rounds in one campaign: journals them, judges them, says what the next pass measures.

    ``prior`` rounds and ``prior_refs`` come from earlier campaigns on the same folder (``load_rounds``). Models
    and rounds are keyed by the network measured (``ModelArtifact.key``), never by the file alone: rounds of a
    file at another input shape are another model's.
    """

    def __init__(self, *, root: Path, device: str, config_id: str, session_id: str, timing: TimingConfig,
                 models: list[ModelArtifact], prior: dict[str, list[Round]],
                 prior_refs: dict[str, list[Reference]]) -> None:
        self.config_id = config_id
        self.session_id = session_id
        self.timing = timing
        self.arts = {a.key: a for a in models}
        self.rounds: dict[str, list[Round]] = {key: list(prior.get(key, [])) for key in self.arts}
        self.refs: dict[str, list[Reference]] = {k: list(v) for k, v in prior_refs.items()}
        self.open: set[str] = set(self.arts)
        self._journal: Journal | None = None
        self._root, self._device = Path(root), device

    def _append(self, event: dict[str, Any]) -> None:
        import json

        if self._journal is None:
            folder = rounds_dir(self._root, self._device)
            folder.mkdir(parents=True, exist_ok=True)
            self._journal = Journal(folder / f"{self.session_id}.jsonl")
        self._journal.append(json.dumps(event, sort_keys=True))

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def add_round(self, run_id: str, order_index: int, result: MeasureResult, ref: dict[str, Any], key: str) -> None:
        """A round of the network ``key`` (``ModelArtifact.key``) arrived: journal it durably first, then keep it
        for judging."""
        self._append(_result_event("round", self.session_id, run_id, self.config_id, order_index, result, ref, key))
        self.rounds.setdefault(key, []).append(Round(self.session_id, run_id, order_index, result, ref, key))

    def add_reference(self, run_id: str, order_index: int, result: MeasureResult) -> None:
        self._append(_result_event("reference", self.session_id, run_id, self.config_id, order_index, result, {}))
        t = _midpoint(result)
        if result.median_ms and t is not None:
            self.refs.setdefault(self.session_id, []).append(Reference(t, result.median_ms))

    def _bracketed(self, rounds: list[Round]) -> bool:
        """Whether a reference measurement of this session came after the model's latest round of it."""
        mine = [r for r in rounds if r.session_id == self.session_id]
        if not mine:
            return True
        last = max(_epoch(r.result.finished_at) or 0.0 for r in mine)
        return any(ref.t >= last for ref in self.refs.get(self.session_id, []))

    def settle(self, pass_over: bool, force: bool = False) -> list[Verdict]:
        """Verdicts of the open models that are finished: every round judged (each followed by a reference
        measurement, or ``pass_over``) and no round missing, or a round failed. They are closed. ``force``
        closes every model with a round (the pass limit was reached)."""
        done = []
        for key in sorted(self.open):
            rounds = self.rounds[key]
            if not rounds or not (pass_over or self._bracketed(rounds)):
                continue
            verdict = judge(rounds, self.refs, self.timing)
            if verdict.failed is not None or verdict.need == 0 or (force and verdict.kept):
                self.open.discard(key)
                done.append(verdict)
        return done

    def _need(self, key: str) -> int:
        rounds = self.rounds[key]
        return judge(rounds, self.refs, self.timing).need if rounds else self.timing.rounds

    def next_pass(self) -> list[ModelArtifact]:
        """The models that still need a round (each at most once per pass), in a stable order."""
        return [self.arts[key] for key in sorted(self.open) if self._need(key) > 0]

    def planned_passes(self) -> list[list[ModelArtifact]]:
        """The passes that can be planned before anything is measured: pass p holds the models that lack more
        than p rounds today (R for a new model), in ``next_pass``'s order.

        This is what ``next_pass`` would return pass after pass if every new round came out calm; the re-measure
        passes are decided only once these are judged. A model is planned no more rounds than its re-measure
        budget allows (``rounds + remeasure_max`` in all), so none of its planned rounds can arrive after its
        row was settled, unless a round fails.
        """
        cap = self.timing.rounds + self.timing.remeasure_max
        lacking = {key: min(self._need(key), cap - len(self.rounds[key])) for key in sorted(self.open)}
        depth = max(lacking.values(), default=0)
        return [[self.arts[key] for key, n in lacking.items() if n > p] for p in range(depth)]

    def art(self, verdict: Verdict) -> ModelArtifact:
        return self.arts[verdict.rounds[0].key]


def estimate(values: list[float]) -> float:
    """The latency of a model from its kept rounds' medians: their median (docs/timing.md says why)."""
    return float(statistics.median(values))
