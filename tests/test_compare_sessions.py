"""``harness.compare.normalize_sessions``: N sessions of one configuration on one drift reference level.

Synthetic rows with a known answer: every model has a true latency at reference 1 ms, and each round's median is
that latency times ``(reference / 1 ms) ** beta``, so the fitted beta, the baseline and every normalized value are
known exactly. ``tests/test_datasets_compare.py`` checks the same code through ``hwlat datasets compare`` on real
Parquet datasets.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.compare import (
    latest_level,
    lowest_level,
    median_level,
    normalize,
    normalize_sessions,
    on_one_level,
    usable_rows,
)
from harness.store import DatasetStore
from hwlat.spaces import get_space
from predictor.data import load_table

TRUE_MS = [1.0, 2.0, 3.5, 5.0]
#: each row's rounds read the reference at its session's level times these (within-row movement: beta's evidence)
ROUND_WOBBLE = (0.97, 1.0, 1.04)


def _session(level: float, beta: float, config: str = "cfg", ref_model: str | None = "ref-sha") -> pd.DataFrame:
    """One session's rows: every model of ``TRUE_MS``, measured with the machine at ``level`` (reference ms)."""
    rows = []
    for k, true in enumerate(TRUE_MS):
        refs = [level * w for w in ROUND_WOBBLE]
        rows.append({"device": "dev", "config_id": config, "model_key": f"m{k}", "ref_model_sha256": ref_model,
                     "round_ref_ms": refs if ref_model else None,
                     "round_medians_ms": [true * r ** beta for r in refs], "round_kept": [True] * len(refs),
                     "latency_ms": true * level ** beta})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("beta", [0.0, 0.6, 1.0])
def test_sessions_at_shifted_levels_come_back_on_one_level(beta: float) -> None:
    levels = [1.0, 1.8, 1.2]  # the second session ran with the machine 1.8x slower
    frames, summary = normalize_sessions([_session(level, beta) for level in levels])
    (key,) = summary["baselines"]
    assert key["beta"] == pytest.approx(beta, abs=1e-9)
    refs = [level * w for level in levels for _model in TRUE_MS for w in ROUND_WOBBLE]  # every kept round
    assert key["baseline_ms"] == pytest.approx(np.percentile(refs, 10))
    for frame in frames:  # every session gives each model the same latency: its true one on the baseline
        expected = [t * key["baseline_ms"] ** beta for t in TRUE_MS]
        assert frame["normalized_ms"].tolist() == pytest.approx(expected)
    assert [f["median_ms"] for f in summary["frames"]] == pytest.approx(levels)
    assert summary["frames"][1]["spread"] == pytest.approx(1.04 / 0.97 - 1, rel=0.05)


def test_the_baseline_is_chosen_by_the_caller() -> None:
    sessions = [_session(level, 0.6) for level in (1.0, 1.8, 1.2, 1.1)]
    for baseline, expected in ((latest_level, 1.1), (median_level, np.median([1.0, 1.8, 1.2, 1.1])),
                               (lowest_level, np.percentile([v * w for v in (1.0, 1.8, 1.2, 1.1) for _m in TRUE_MS
                                                             for w in ROUND_WOBBLE], 10))):
        frames, summary = normalize_sessions(sessions, baseline)
        assert summary["baselines"][0]["baseline_ms"] == pytest.approx(expected)
        assert frames[1]["normalized_ms"].tolist() == pytest.approx([t * expected ** 0.6 for t in TRUE_MS])


def test_each_configuration_gets_its_own_beta_and_rows_without_reference_stay_nan() -> None:
    a = pd.concat([_session(1.0, 0.3, "one"), _session(1.0, 0.9, "two")])
    b = pd.concat([_session(1.6, 0.3, "one"), _session(1.6, 0.9, "two")])
    bare = _session(1.3, 0.5, ref_model=None)
    frames, summary = normalize_sessions([a, b, bare])
    assert {k["config_id"]: round(k["beta"], 9) for k in summary["baselines"]} == {"one": 0.3, "two": 0.9}
    assert summary["frames"][2] is None and frames[2]["normalized_ms"].isna().all()
    for cfg in ("one", "two"):  # same models, same normalized latency in both sessions
        assert frames[0].loc[frames[0]["config_id"] == cfg, "normalized_ms"].tolist() == \
            pytest.approx(frames[1].loc[frames[1]["config_id"] == cfg, "normalized_ms"].tolist())


def test_one_round_per_row_gives_no_beta_evidence_so_beta_is_one() -> None:
    one_round = _session(1.5, 0.4).assign(round_ref_ms=lambda d: [r[:1] for r in d["round_ref_ms"]],
                                          round_medians_ms=lambda d: [m[:1] for m in d["round_medians_ms"]],
                                          round_kept=lambda d: [k[:1] for k in d["round_kept"]])
    _frames, summary = normalize_sessions([one_round])
    assert summary["baselines"][0]["beta"] == 1.0


def test_normalize_of_two_datasets_is_the_two_session_case() -> None:
    a, b = _session(1.0, 0.6), _session(1.7, 0.6)
    na, nb, summary = normalize(a, b)
    (fa, fb), sessions = normalize_sessions([a, b])
    assert na["normalized_ms"].tolist() == fa["normalized_ms"].tolist()
    assert nb["normalized_ms"].tolist() == fb["normalized_ms"].tolist()
    assert summary == {"a": sessions["frames"][0], "b": sessions["frames"][1], "baselines": sessions["baselines"]}
    assert not any(math.isnan(v) for v in na["normalized_ms"])


def _campaign(root: Path, archs: list[str], level: float, config: str = "cfg", rounds: bool = True,
              first: int = 1) -> Path:
    """A real dataset of ``archs`` (true latency ``first``, ``first`` + 1, ... ms at reference 1 ms) measured with
    the machine at ``level``; every model follows the reference fully (beta 1)."""
    store = DatasetStore(root)
    store.ensure_writable()
    rows = []
    for k, arch in enumerate(archs, first):
        refs = [level * w for w in ROUND_WOBBLE]
        medians = [k * r for r in refs]
        rows.append({"schema_version": 1, "row_id": f"{root.name}-{k}", "session_id": root.name, "arch": arch,
                     "config_id": config, "model_sha256": f"{k:064x}", "status": "ok",
                     "latency_ms": float(np.median(medians)),
                     **({"ref_model_sha256": "ref", "round_medians_ms": medians, "round_ref_ms": refs,
                         "round_kept": [True] * len(refs)} if rounds else {})})
    store.append("board", "nb201", root.name, rows)
    return root


def test_training_on_one_level_across_a_configurations_campaigns(tmp_path: Path) -> None:
    archs = get_space("nb201").sample(4, seed=5)
    fast, slow = _campaign(tmp_path / "fast", archs[:2], 1.0), _campaign(tmp_path / "slow", archs[2:], 1.8, first=3)
    raw = load_table([fast, slow]).device_series("nb201", "board")
    assert raw[archs[2]] / raw[archs[0]] == pytest.approx(3 * 1.8)  # the slow campaign's level is in the data
    _frames, report = on_one_level([usable_rows(fast), usable_rows(slow)])
    [entry] = report
    assert entry["normalized"] and entry["beta"] == pytest.approx(1.0)
    table = load_table([fast, slow], level=lambda f: on_one_level(f)[0]).device_series("nb201", "board")
    base = entry["baseline_ms"]
    assert [table[a] for a in archs] == pytest.approx([k * base for k in range(1, 5)])
    # a configuration whose rows lack round reference data is left as measured, said in the report
    bare = _campaign(tmp_path / "bare", archs, 1.3, config="other", rounds=False)
    _frames, report = on_one_level([usable_rows(fast), usable_rows(bare)])
    assert {r["config_id"]: r["normalized"] for r in report} == {"cfg": True, "other": False}
