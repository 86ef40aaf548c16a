"""``hwlat datasets compare``: figures checked against values computed by hand on small real Parquet datasets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.compare import compare, icc
from harness.store import DatasetStore

REPO = Path(__file__).resolve().parents[1]


def _dataset(root: Path, rows: list[tuple[str, str, float, str]]) -> Path:
    """rows: (arch, config_id, latency_ms, status) on device ``dev``; the model's sha256 is derived from the arch."""
    store = DatasetStore(root)
    store.ensure_writable()
    store.append("dev", "onnx", "s1", [
        {"schema_version": 1, "row_id": f"{arch}-{cfg}", "session_id": "s1", "arch": arch, "config_id": cfg,
         "model_sha256": f"sha-{arch}", "latency_ms": latency, "status": status}
        for arch, cfg, latency, status in rows
    ])
    return root


def _hwlat(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hwlat", *args], capture_output=True, text=True, cwd=REPO,
                          check=False, timeout=120)


def test_compare_figures_by_hand(tmp_path: Path) -> None:
    a = _dataset(tmp_path / "a", [("m1", "c", 1.0, "ok"), ("m2", "c", 2.0, "ok"), ("m3", "c", 3.0, "unstable"),
                                  ("m4", "c", 4.0, "ok"), ("m5", "c", 5.0, "ok"), ("m6", "c", 6.0, "ok")])
    b = _dataset(tmp_path / "b", [("m1", "c", 1.0, "ok"), ("m2", "c", 2.2, "ok"), ("m3", "c", 1.8, "ok"),
                                  ("m4", "c", 4.8, "ok"), ("m5", "c", 6.0, "ok"), ("m6", "c", 6.0, "failed"),
                                  ("m1", "other-config", 9.0, "ok")])
    proc = _hwlat("datasets", "compare", str(a), str(b), "--json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    # m6 failed in B; m1 on another configuration is another key
    assert (r["matched"], r["only_a"], r["only_b"]) == (5, 1, 1)
    # B ranks: m1 < m3 < m2 < m4 < m5, one swap: sum d^2 = 2 -> rho = 1 - 6*2/(5*24); 1 of 10 pairs discordant
    assert r["spearman"] == pytest.approx(0.9) and r["kendall"] == pytest.approx(0.8)
    # B/A - 1 = 0, +0.1, -0.4, +0.2, +0.2 -> |.| sorted 0, .1, .2, .2, .4
    assert r["median_abs_rel_diff"] == pytest.approx(0.2) and r["p90_abs_rel_diff"] == pytest.approx(0.32)
    assert r["geomean_ratio"] == pytest.approx((1.0 * 1.1 * 0.6 * 1.2 * 1.2) ** 0.2)
    assert r["moved_most"][0]["arch"] == "m3" and r["moved_most"][0]["rel_diff"] == pytest.approx(-0.4)
    assert r["verdict"].startswith("does NOT reproduce: Spearman 0.900, median |diff| 20.0% over 5 models")
    text = _hwlat("datasets", "compare", str(a), str(a))
    assert text.returncode == 0 and "reproduces: Spearman 1.000, median |diff| 0.0%" in text.stdout
    assert "no significant shift" in text.stdout


def test_icc_matches_shrout_fleiss_1979() -> None:
    """The published example (6 targets x 4 judges): ICC(2,1) = 0.29, ICC(3,1) = 0.71."""
    ratings = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], float)
    result = icc(ratings)
    assert round(result["icc2_1"], 2) == 0.29 and round(result["icc3_1"], 2) == 0.71


def test_too_few_matches_is_one_line_exit_2(tmp_path: Path) -> None:
    a = _dataset(tmp_path / "a", [("m1", "c", 1.0, "ok"), ("m2", "c", 2.0, "ok")])
    proc = _hwlat("datasets", "compare", str(a), str(a))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "need at least 3" in proc.stderr


def _rounds_dataset(root: Path, cfg: str, refs: list[float], follows: bool, legacy: bool = False) -> Path:
    """Four models of true latency 1-4 ms, one round per entry of ``refs`` (the drift reference's latency then):
    a round's median is the true latency times the reference's slowdown if ``follows``, else the true latency.
    ``legacy``: rows as written before ``round_ref_ms`` existed (drift factors against a first reference of
    0.8 ms, and the latest reference state in ``ref_latency_ms`` / ``ref_drift_pct``)."""
    store = DatasetStore(root)
    store.ensure_writable()
    rows = []
    for k in range(1, 5):
        medians = [k * (ref if follows else 1.0) for ref in refs]
        rows.append({"schema_version": 1, "row_id": f"m{k}", "session_id": "s1", "arch": f"m{k}", "config_id": cfg,
                     "model_sha256": f"sha-m{k}", "status": "ok", "latency_ms": float(np.median(medians)),
                     "ref_model_sha256": "sha-ref", "round_medians_ms": medians, "round_kept": [True] * len(refs),
                     **({"round_drift_factor": [ref / 0.8 for ref in refs], "round_session_ids": ["s1"] * len(refs),
                         "ref_latency_ms": 1.2, "ref_drift_pct": 50.0} if legacy else {"round_ref_ms": refs})})
    store.append("dev", "onnx", "s1", rows)
    return root


def test_normalized_to_the_drift_reference_by_hand(tmp_path: Path) -> None:
    # the machine is 1.35x slower on average in B and every model follows the reference: raw latencies disagree
    # by 1.35/1.05 - 1; within each row the rounds move exactly with the reference (beta = 1), and both datasets
    # are put on the 10th percentile of the 16 reference latencies (1.0): the true latencies, in full agreement
    a = _rounds_dataset(tmp_path / "a", "c", [1.0, 1.1], follows=True)
    b = _rounds_dataset(tmp_path / "b", "c", [1.5, 1.2], follows=True)
    proc = _hwlat("datasets", "compare", str(a), str(b), "--json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["median_abs_rel_diff"] == pytest.approx(1.35 / 1.05 - 1)
    [base] = r["reference"]["baselines"]
    assert base["beta"] == pytest.approx(1.0) and base["baseline_ms"] == pytest.approx(1.0)
    assert r["reference"]["b"]["spread"] == pytest.approx(1.5 / 1.2 - 1)
    norm = r["normalized"]
    assert norm["matched"] == 4 and norm["median_abs_rel_diff"] == pytest.approx(0.0, abs=1e-12)
    assert norm["geomean_ratio"] == pytest.approx(1.0)
    assert r["verdict"].startswith("does NOT reproduce") and r["verdict"].endswith(
        "normalized to the drift reference: reproduces (Spearman 1.000, median |diff| 0.0%)")
    # the reference moves but the models do not (its own noise): beta = 0, the latencies are left as measured
    c = _rounds_dataset(tmp_path / "c", "d", [1.0, 1.3], follows=False)
    d = _rounds_dataset(tmp_path / "d", "d", [1.2, 1.5], follows=False)
    r = compare(c, d)
    assert r["reference"]["baselines"][0]["beta"] == pytest.approx(0.0)
    assert r["normalized"]["median_abs_rel_diff"] == pytest.approx(0.0, abs=1e-12)
    # rows written before round_ref_ms existed: rebuilt from the drift factors, the same figures
    legacy = compare(_rounds_dataset(tmp_path / "la", "c", [1.0, 1.1], follows=True, legacy=True),
                     _rounds_dataset(tmp_path / "lb", "c", [1.5, 1.2], follows=True, legacy=True))
    assert legacy["reference"]["baselines"][0]["baseline_ms"] == pytest.approx(1.0)
    assert legacy["normalized"]["median_abs_rel_diff"] == pytest.approx(0.0, abs=1e-12)
    # rows without any round reference data: no normalized figures
    e = _dataset(tmp_path / "e", [("m1", "c", 1.0, "ok"), ("m2", "c", 2.0, "ok"), ("m3", "c", 3.0, "ok")])
    assert compare(e, e)["normalized"] is None
