"""Rounds (harness/rounds.py): the decision rules on real recorded samples, multi-round rows from real campaigns,
the re-measure path end to end, drift correction, and a real SIGKILL of `hwlat measure` between rounds."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from profiles import fast_profile

from agents.records import MeasureResult, TimingConfig
from agents.system import busy_pct_own_cpus
from agents.timing import summarize
from harness.rounds import ROUNDS_DIR, Reference, Round, drift_factor, judge, load_rounds
from harness.store import read_dataset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))  # spawned children inherit sys.path
import loadgen  # noqa: E402

BUNDLED = REPO / "datasets" / "device=epyc2c-ort-t1" / "search_space=nb201"
T0 = datetime(2026, 11, 26, tzinfo=UTC)


@pytest.fixture(scope="module")
def recorded() -> list[list[float]]:
    """The raw samples of real rows of the bundled dataset (measured on the dev VM, one model per row)."""
    part = sorted(BUNDLED.glob("part-*.parquet"))[0]
    rows = pq.read_table(part, columns=["raw_ms", "status"]).to_pylist()
    return [r["raw_ms"] for r in rows if r["status"] == "ok"][:4]


def _round(raw: list[float], k: int, busy: float | None = 3.0, session: str = "s1", scale: float = 1.0) -> Round:
    """A round from recorded samples (optionally slowed by ``scale``, as a busy neighbour slows a loop)."""
    samples = [x * scale for x in raw]
    stats = summarize(samples, 0.1)
    stats.pop("unstable")
    start = T0 + timedelta(seconds=10 * k)
    result = MeasureResult(job_id=f"c{k}", sha256="a" * 64, role="candidate", status="ok", raw_ms=samples,
                           started_at=start.isoformat(), finished_at=(start + timedelta(seconds=2)).isoformat(),
                           system_after={"busy_pct_own_cpus": busy}, **stats)
    return Round(session, "run", k, result)


def _refs(*medians: float, session: str = "s1") -> dict[str, list[Reference]]:
    """A reference measurement every 10 s starting 5 s before the first round's start."""
    return {session: [Reference((T0 + timedelta(seconds=10 * i - 5)).timestamp(), m) for i, m in enumerate(medians)]}


TIMING = TimingConfig(rounds=3, remeasure_max=2)


def test_far_round_is_remeasured_then_discarded_with_its_samples_kept(recorded: list[list[float]]) -> None:
    raw = recorded[0]
    rounds = [_round(raw, 0), _round(raw, 1, scale=1.01), _round(raw, 2, scale=1.3)]
    first = judge(rounds, {}, TIMING)
    assert first.need == 1 and "far: 30% slower" in first.discarded[id(rounds[2])]
    rounds.append(_round(raw, 3, scale=0.995))
    final = judge(rounds, {}, TIMING)
    assert final.need == 0 and final.failed is None
    assert [id(r) for r in final.kept] == [id(rounds[i]) for i in (0, 1, 3)]
    assert list(final.discarded) == [id(rounds[2])] and not final.kept_disturbed


def test_quiet_rounds_of_a_real_model_need_nothing_more(recorded: list[list[float]]) -> None:
    for raw in recorded:
        verdict = judge([_round(raw, k, scale=1 + 0.01 * k) for k in range(3)], {}, TIMING)
        assert verdict.need == 0 and not verdict.discarded


def test_busy_and_drifting_rounds_are_disturbed(recorded: list[list[float]]) -> None:
    raw = recorded[1]
    busy = judge([_round(raw, 0), _round(raw, 1, busy=60.0), _round(raw, 2)], {}, TIMING)
    assert busy.need == 1 and busy.discarded[id(busy.rounds[1])].startswith("busy: other processes used 60%")
    # the machine slowed by 20% between the reference measurements around round 1 (t=5 s and t=15 s), the
    # model with it (round mid-points 1, 11, 21 s)
    drift = judge([_round(raw, k, scale=s) for k, s in enumerate((1.0, 1.12, 1.2))], _refs(1.0, 1.0, 1.2, 1.2),
                  TIMING)
    assert drift.need == 1 and drift.discarded[id(drift.rounds[1])].startswith("drift: the reference moved 20%")


def test_budget_is_bounded_and_the_fastest_disturbed_rounds_make_up_r(recorded: list[list[float]]) -> None:
    raw = recorded[2]
    rounds = [_round(raw, k, busy=80.0, scale=1 + 0.1 * k) for k in range(4)]
    assert judge(rounds, {}, TIMING).need == 3  # 4 rounds < R + remeasure_max: one more
    rounds.append(_round(raw, 4, busy=80.0, scale=1.05))
    verdict = judge(rounds, {}, TIMING)
    assert verdict.need == 0
    assert [id(r) for r in verdict.kept] == [id(rounds[i]) for i in (0, 1, 4)]
    assert len(verdict.kept_disturbed) == 3 and len(verdict.discarded) == 2
    assert judge(rounds[:3], {}, TimingConfig(rounds=3, remeasure_max=0)).need == 0


def test_a_failed_round_ends_the_model(recorded: list[list[float]]) -> None:
    bad = MeasureResult(job_id="c9", sha256="a" * 64, role="candidate", status="failed", error="boom")
    verdict = judge([_round(recorded[0], 0), Round("s1", "run", 1, bad)], {}, TIMING)
    assert verdict.failed is not None and verdict.failed.result.error == "boom" and verdict.need == 0


def test_drift_factor_is_interpolated_in_time(recorded: list[list[float]]) -> None:
    rnd = _round(recorded[0], 1)  # runs 10..12 s: mid-point 11 s, between references at 5 s and 15 s
    assert drift_factor(rnd, _refs(2.0, 2.0, 2.6)) == pytest.approx(1 + 0.3 * 6 / 10)
    assert drift_factor(rnd, _refs(2.0, 2.2)) == pytest.approx(1.1)  # after the last reference: the last one
    assert drift_factor(rnd, {}) is None
    assert drift_factor(rnd, _refs(2.0, 2.0, session="other")) is None


# ------------------------------------------------------------------------------------------- real campaigns
def hwlat(*args: str, check_rc: int | None = 0) -> subprocess.CompletedProcess:
    """``hwlat measure ...`` queued behind any other local campaign on this (shared) machine."""
    proc = subprocess.run([sys.executable, "-m", "hwlat", *args, "--wait", "900"], capture_output=True, text=True,
                          timeout=1200, check=False, cwd=REPO)
    if check_rc is not None:
        assert proc.returncode == check_rc, proc.stderr[-3000:]
    return proc


def _profile(tmp_path: Path, **timing: float) -> Path:
    path = fast_profile(tmp_path)
    path.write_text(path.read_text() + "".join(f"{k} = {v}\n" for k, v in timing.items()))
    return path


def test_multi_round_rows_carry_every_round_and_a_drift_corrected_latency(tmp_path: Path, cache: Path) -> None:
    out = tmp_path / "ds"
    profile = _profile(tmp_path, rounds=3, remeasure_max=0)
    hwlat("measure", "--device", str(profile), "--space", "nb201", "--count", "4", "--seed", "3", "--out", str(out),
          "--cache", str(cache), "--reference-every", "2")
    rows = read_dataset(out).to_pylist()
    assert len(rows) == 4 and len({r["session_id"] for r in rows}) == 1
    for r in rows:
        assert r["rounds"] == 3 and r["round_kept"] == [True] * 3 and r["remeasured_rounds"] == 0
        assert len(r["round_medians_ms"]) == len(r["round_n_runs"]) == len(r["round_started_at"]) == 3
        assert sum(r["round_n_runs"]) == r["n_runs"] == len(r["raw_ms"])
        assert r["latency_ms"] == pytest.approx(statistics.median(r["round_medians_ms"]))
        assert r["pooled_median_ms"] == pytest.approx(statistics.median(r["raw_ms"]))
        # round k's samples are its own: their median is the round's median
        start = 0
        for n, median in zip(r["round_n_runs"], r["round_medians_ms"], strict=True):
            assert statistics.median(r["raw_ms"][start:start + n]) == pytest.approx(median)
            start += n
        assert r["round_started_at"] == sorted(r["round_started_at"])
        # drift: every round between two reference measurements, the corrected latency beside the raw one
        assert all(f and 0.3 < f < 3 for f in r["round_drift_factor"])
        assert r["latency_corrected_ms"] == pytest.approx(statistics.median(
            m / f for m, f in zip(r["round_medians_ms"], r["round_drift_factor"], strict=True)))
        assert r["drift_factor"] == pytest.approx(r["latency_ms"] / r["latency_corrected_ms"])
        # the reference's absolute latency at each round: the factor times the session's first reference
        first_ref = r["ref_latency_ms"] / (1 + r["ref_drift_pct"] / 100)
        assert r["round_ref_ms"] == pytest.approx([f * first_ref for f in r["round_drift_factor"]])
        assert json.loads(r["timing_json"])["rounds"] == 3
    # rounds interleave: every model's round 1 before any model's round 2
    firsts = [r["round_started_at"][0] for r in rows]
    seconds = [r["round_started_at"][1] for r in rows]
    assert max(firsts) < min(seconds)
    assert not (out / ROUNDS_DIR).exists()  # every round is in a row: the round journals are gone
    # the three passes were one agent run (one agent start): 4 models x 3 rounds and the drift reference first,
    # after every 2 models and last in each pass, a pass's first reference being the previous pass's last
    runs = _agent_runs(tmp_path / "agent")
    assert list(runs) == [rows[0]["run_id"]] and {r["run_id"] for r in rows} == set(runs)
    events = runs[rows[0]["run_id"]]
    assert [e["type"] for e in events].count("fingerprint") == 1
    results = [e for e in events if e["type"] == "result"]
    assert len(results) == 12 + 7 and len({e["job_id"] for e in results}) == 19
    assert sum(e["role"] == "reference" for e in results) == 7
    orders = sorted(r["order_index"] for r in rows)  # the row's order_index is its last round's place
    assert len(set(orders)) == 4 and min(orders) >= 13 and max(orders) <= 17


def _agent_runs(workdir: Path) -> dict[str, list[dict]]:
    """Every agent run of a local workdir: run id -> the events of its journal."""
    return {run.name: [json.loads(line) for line in (run / "journal.jsonl").read_text().splitlines()]
            for run in sorted((workdir / "runs").iterdir())}


def _journaled_rounds(out: Path) -> list[dict]:
    events = []
    for path in sorted((out / ROUNDS_DIR).rglob("*.jsonl")):
        for line in path.read_bytes().splitlines(keepends=True):
            if line.endswith(b"\n"):
                events.append(json.loads(line))
    return [e for e in events if e["type"] == "round"]


def test_sigkill_between_rounds_loses_at_most_the_round_in_flight(tmp_path: Path, cache: Path) -> None:
    out = tmp_path / "ds"
    profile = _profile(tmp_path, rounds=3, remeasure_max=0)
    args = ["measure", "--device", str(profile), "--space", "nb201", "--count", "4", "--seed", "6", "--out",
            str(out), "--cache", str(cache)]
    hwlat(*args[:-4], "--out", str(tmp_path / "warm"), "--cache", str(cache), "--reference-every", "0")  # export
    proc = subprocess.Popen([sys.executable, "-m", "hwlat", *args, "--wait", "900"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, cwd=REPO)
    deadline = time.monotonic() + 1200
    while not (out / ROUNDS_DIR).exists() or len(_journaled_rounds(out)) < 6:  # mid-pass 2
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _journaled_rounds(out)
    killed_session = before[0]["session_id"]
    assert 6 <= len(before) < 12
    prior, _ = load_rounds(out, "fastlocal", before[0]["config_id"])
    assert sum(len(v) for v in prior.values()) == len(before)
    # the killed coordinator's agent dies with it (the machine lock would refuse the resumed run)
    deadline = time.monotonic() + 30
    while subprocess.run(["pgrep", "-f", f"agents run {tmp_path / 'agent'}"], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    hwlat(*args)
    rows = read_dataset(out).to_pylist()
    assert len(rows) == 4
    for r in rows:
        assert len(r["round_medians_ms"]) == 3 and all(r["round_kept"])
        mine = [e for e in before if e["result"]["sha256"] == r["model_sha256"]]
        old = [m for m, s in zip(r["round_medians_ms"], r["round_session_ids"], strict=True) if s == killed_session]
        assert old == [e["result"]["median_ms"] for e in mine]  # every completed round kept, in order
    resumed = sum(s != killed_session for r in rows for s in r["round_session_ids"])
    assert resumed == 12 - len(before)  # only the missing rounds were measured again
    # models lacking one round and models lacking two: still one agent run for all of them
    new_session = next(s for r in rows for s in r["round_session_ids"] if s != killed_session)
    assert sum(run.startswith(new_session) for run in _agent_runs(tmp_path / "agent")) == 1
    assert not (out / ROUNDS_DIR).exists()


def test_v1_rows_read_with_null_round_columns() -> None:
    table = read_dataset(BUNDLED)
    assert table.num_rows > 0 and set(table.column("schema_version").to_pylist()) == {1}
    for column in ("rounds", "round_medians_ms", "latency_corrected_ms", "drift_factor", "remeasured_rounds"):
        assert table.column(column).null_count == table.num_rows


def _busy_first_seed() -> int:
    """A load-generator seed whose schedule starts with a busy phase."""
    return next(seed for seed in range(100) if loadgen.plan_phases(seed, 120.0, 120.0, 120.0)[0].kind == "busy")


def test_busy_pct_own_cpus_sees_a_spinner_on_the_same_cpu() -> None:
    cpu = min(os.sched_getaffinity(0))
    mask = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})  # the generator's process inherits it: it spins on our CPU
    try:
        with loadgen.LoadGenerator(seed=_busy_first_seed(), total_s=120.0, min_phase_s=120.0, max_phase_s=120.0):
            time.sleep(0.3)
            busy_pct_own_cpus()
            time.sleep(1.0)  # we sleep, it spins: nearly all of this CPU is someone else's
            assert busy_pct_own_cpus() > 50.0
    finally:
        os.sched_setaffinity(0, mask)


def test_rounds_timed_beside_a_real_load_are_remeasured_and_say_why(tmp_path: Path, cache: Path) -> None:
    """benchmarks/loadgen.py spins on the worker's CPU for the whole campaign: every round is 'busy', each model
    gets its re-measure budget, and the rows say so."""
    out = tmp_path / "ds"
    cpu = min(os.sched_getaffinity(0))
    profile = fast_profile(tmp_path, extra=f"cpu_affinity = [{cpu}]")
    profile.write_text(profile.read_text().replace("min_time_s = 0.0", "min_time_s = 0.2").replace(
        "max_runs = 20", "max_runs = 100000") + "rounds = 2\nremeasure_max = 1\n")
    hwlat("measure", "--device", str(profile), "--space", "nb201", "--count", "2", "--seed", "4", "--out",
          str(tmp_path / "warm"), "--cache", str(cache), "--reference-every", "0")  # export outside the load
    mask = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        with loadgen.LoadGenerator(seed=_busy_first_seed(), total_s=300.0, min_phase_s=300.0, max_phase_s=300.0):
            hwlat("measure", "--device", str(profile), "--space", "nb201", "--count", "2", "--seed", "4", "--out",
                  str(out), "--cache", str(cache))
    finally:
        os.sched_setaffinity(0, mask)
    rows = read_dataset(out).to_pylist()
    assert len(rows) == 2
    # the two planned rounds were one agent run; the re-measure pass, decided after them, is a second one
    session = rows[0]["session_id"]
    assert sum(run.startswith(session) for run in _agent_runs(tmp_path / "agent")) == 2
    for r in rows:
        assert len(r["round_medians_ms"]) == 3 and r["remeasured_rounds"] == 1 and r["status"] == "unstable"
        assert all(b >= 25.0 for b in r["round_busy_pct"])
        reasons = r["remeasure_reasons"]
        assert len(reasons) == 3 and all("busy: other processes used" in why for why in reasons)
