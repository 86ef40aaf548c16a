"""The planned passes of a campaign go to the device as one agent run (harness/device_runner.py
``measure_rounds``): what is planned up front, how the passes' orders are joined, and, with real `hwlat measure`
campaigns, one agent run for a fresh multi-round campaign and a failing model whose later rounds are never
measured. The re-measure pass as a run of its own is checked in tests/test_rounds.py (under a real load)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fixtures.agent_models import conv_model, loop_hang_model
from profiles import fast_profile

from agents.records import MeasureResult, TimingConfig
from agents.timing import summarize
from harness.device_runner import concat_passes
from harness.plan import plan_order
from harness.records import ModelArtifact
from harness.rounds import Round, RoundBook
from harness.store import read_dataset

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "datasets" / "device=epyc2c-ort-t1" / "search_space=nb201"
T0 = datetime(2026, 11, 26, tzinfo=UTC)
TIMING = TimingConfig(rounds=3, remeasure_max=2)


@pytest.fixture(scope="module")
def raw() -> list[float]:
    """The raw samples of one real row of the bundled dataset (measured on the dev VM)."""
    part = sorted(BUNDLED.glob("part-*.parquet"))[0]
    return next(r["raw_ms"] for r in pq.read_table(part, columns=["raw_ms", "status"]).to_pylist()
                if r["status"] == "ok")


def _art(name: str) -> ModelArtifact:
    return ModelArtifact("nb201", name, f"/models/{name}.onnx", name * 64, "onnx")


def _round(art: ModelArtifact, raw: list[float], k: int, busy: float = 3.0, status: str = "ok") -> Round:
    stats = summarize(raw, 0.1)
    stats.pop("unstable")
    start = T0 + timedelta(seconds=10 * k)
    result = MeasureResult(job_id=f"c{k}", sha256=art.sha256, role="candidate", status=status, raw_ms=raw,
                           started_at=start.isoformat(), finished_at=(start + timedelta(seconds=2)).isoformat(),
                           system_after={"busy_pct_own_cpus": busy}, **stats)
    return Round("killed", "run", k, result)


def _book(tmp_path: Path, models: list[ModelArtifact], prior: dict[str, list[Round]]) -> RoundBook:
    return RoundBook(root=tmp_path, device="d", config_id="c", session_id="now", timing=TIMING, models=models,
                     prior=prior, prior_refs={})


def test_planned_passes_fresh_and_resumed_models(tmp_path: Path, raw: list[float]) -> None:
    a, b, c, d = (_art(x) for x in "abcd")
    assert _book(tmp_path, [a, b, c], {}).planned_passes() == [[a, b, c]] * 3
    prior = {
        a.sha256: [_round(a, raw, 0), _round(a, raw, 1)],  # two calm rounds: lacks one
        b.sha256: [_round(b, raw, k, busy=80.0) for k in range(3)],  # three busy ones: lacks 3, budget allows 2
        d.sha256: [_round(d, raw, 0), _round(d, raw, 1, status="failed")],  # failed: settled, nothing planned
    }
    book = _book(tmp_path, [a, b, c, d], prior)
    assert book.planned_passes() == [[a, b, c], [b, c], [c]]
    assert book.next_pass() == [a, b, c]  # the first planned pass is what next_pass says


def test_passes_join_into_one_order_without_back_to_back_references() -> None:
    models, ref = [_art(x) for x in "abcd"], _art("r")
    orders = [plan_order(models[:n], ref, seed=p, every=2, prefix=f"p{p}-" if p else "")
              for p, n in enumerate((4, 4, 2))]
    slots, ends = concat_passes(orders)
    roles = "".join("r" if s.role == "reference" else "c" for s in slots)
    assert roles == "rccrccr" + "ccrccr" + "ccr"  # each pass's first reference is the previous one's last
    assert len({s.job_id for s in slots}) == len(slots)
    assert ends == {slots[6].job_id, slots[12].job_id, slots[15].job_id}
    for p, order in enumerate(orders):  # every pass keeps its own shuffled order
        assert [s.art for s in slots if s.role == "candidate" and s.job_id.startswith(f"p{p}-" if p else "c")] == \
            [s.art for s in order if s.role == "candidate"]
    no_ref = [plan_order(models, None, seed=p, every=2, prefix=f"p{p}-" if p else "") for p in range(2)]
    slots, ends = concat_passes(no_ref)
    assert len(slots) == 8 and ends == {slots[3].job_id, slots[7].job_id}


# ------------------------------------------------------------------------------------------- real campaigns
def hwlat(*args: str) -> subprocess.CompletedProcess:
    """``hwlat measure ...`` queued behind any other local campaign on this (shared) machine."""
    proc = subprocess.run([sys.executable, "-m", "hwlat", *args, "--wait", "900"], capture_output=True, text=True,
                          timeout=1200, check=False, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _runs(workdir: Path) -> dict[str, list[dict]]:
    """Every agent run under the local workdir: run id -> its journal's events."""
    return {run.name: [json.loads(line) for line in (run / "journal.jsonl").read_text().splitlines()]
            for run in sorted((workdir / "runs").iterdir())}


def test_a_failing_model_ends_as_its_failure_and_its_later_rounds_are_never_measured(tmp_path: Path) -> None:
    """A model that hangs until the model timeout in round 1: its row is that timeout, the run that holds its
    rounds 2 and 3 is stopped and the rest goes on in a new run, so the timeout is paid once, not three times."""
    models = tmp_path / "models"
    models.mkdir()
    for i, channels in enumerate((4, 8, 12)):
        conv_model(models / f"m{i}_conv.onnx", channels)
    hang = loop_hang_model(models / "z_hang.onnx")
    profile = fast_profile(tmp_path, extra="[timeouts]\nmodel_s = 3.0\n")
    profile.write_text(profile.read_text() + "rounds = 3\nremeasure_max = 0\n")
    out = tmp_path / "ds"
    hwlat("measure", "--device", str(profile), "--models", str(models), "--out", str(out), "--reference-every", "1")
    rows = {r["arch"]: r for r in read_dataset(out).to_pylist()}
    assert sorted(rows) == ["m0_conv", "m1_conv", "m2_conv", "z_hang"]
    assert rows["z_hang"]["status"] == "timeout" and rows["z_hang"]["round_medians_ms"] == [None]
    for name in ("m0_conv", "m1_conv", "m2_conv"):
        assert rows[name]["status"] in ("ok", "unstable") and rows[name]["round_kept"] == [True] * 3
    runs = _runs(tmp_path / "agent")
    results = [e for events in runs.values() for e in events if e["type"] == "result"]
    assert [e["status"] for e in results if e["sha256"] == hang] == ["timeout"]  # rounds 2 and 3 never ran
    assert len(runs) == 2  # the planned run, stopped once the hang was settled, and the rest of it
    first, second = runs.values()
    assert first[-1]["type"] != "done" and second[-1]["type"] == "done"
    job_ids = [e["job_id"] for e in results]
    assert len(job_ids) == len(set(job_ids))  # nothing measured twice
