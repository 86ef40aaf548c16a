"""The Parquet row of one outcome, built beside the schema it fills (``harness.store.SCHEMA``).

Two kinds of rows: ``make_row`` for a result the agent sent (validated by ``agents.journal`` before it
gets here) and ``export_failure_row`` for a model that never reached a device because its export failed.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Any

from agents import __version__
from agents.records import MeasureResult
from agents.timing import summarize
from harness.devices import DeviceProfile
from harness.export import ExportFailure
from harness.records import ModelArtifact
from harness.rounds import Verdict, estimate
from harness.store import SCHEMA_VERSION, dumps_compact
from hwlat.spaces.shapes import shapes_json


def _num(state: dict[str, Any], key: str) -> float | None:
    value = state.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _gpu_names(gpus: Any) -> str | None:
    """The fingerprint's GPU list (nvidia-smi rows) as one readable string, None without a GPU."""
    if not gpus:
        return None
    names = [g.get("name", str(g)) if isinstance(g, dict) else str(g) for g in gpus]
    return ", ".join(names)


def make_row(*, session_id: str, run_id: str, order_index: int, profile: DeviceProfile, fingerprint: dict,
             art: ModelArtifact, result: MeasureResult, ref: dict[str, Any]) -> dict[str, Any]:
    """One Parquet row (see harness.store.SCHEMA) from the records of every stage."""
    before, after = result.system_before, result.system_after
    shapes = result.input_shapes or art.input_shapes
    first_shape = next(iter(shapes.values()), None)
    return {
        "schema_version": SCHEMA_VERSION,
        "row_id": uuid.uuid4().hex,
        "session_id": session_id,
        "run_id": run_id,
        "job_id": result.job_id,
        "order_index": order_index,
        "config_id": profile.config_id(),
        "device_host": profile.host,
        "hostname": fingerprint.get("host"),
        "cpu_model": fingerprint.get("cpu_model"),
        "cores_logical": fingerprint.get("cores_logical"),
        "cores_physical": fingerprint.get("cores_physical"),
        "ram_mb": fingerprint.get("ram_mb"),
        "os": fingerprint.get("os"),
        "machine": fingerprint.get("machine"),
        "board_model": fingerprint.get("board"),
        "gpu": _gpu_names(fingerprint.get("gpus")),
        "python_version": fingerprint.get("python_version"),
        "fingerprint_json": dumps_compact(fingerprint),
        "arch": art.arch,
        "arch_index": art.arch_index,
        "model_sha256": art.sha256,
        "model_key": art.key,
        "format": art.format,
        "input_shape": first_shape,
        "input_shapes_json": shapes_json(shapes),
        "batch": art.batch,
        "resolution": art.resolution,
        "flops": art.flops,
        "params": art.params,
        "runtime": result.runtime or profile.runtime.runtime,
        "runtime_version": result.runtime_version,
        "provider": result.provider,
        "providers": list(profile.runtime.providers),
        "threads": result.threads or profile.runtime.threads,
        "inter_op_threads": profile.runtime.inter_op_threads,
        "graph_optimization_level": profile.runtime.graph_optimization_level,
        "status": result.status,
        "error_type": result.error_type or None,
        "error": result.error or None,
        "load_ms": result.load_ms,
        "first_ms": result.first_ms,
        "latency_ms": result.median_ms,
        "mean_ms": result.mean_ms,
        "std_ms": result.std_ms,
        "min_ms": result.min_ms,
        "max_ms": result.max_ms,
        "p90_ms": result.p90_ms,
        "p99_ms": result.p99_ms,
        "cv": result.cv,
        "robust_cv": result.robust_cv,
        "ci95_low_ms": result.ci95_low_ms,
        "ci95_high_ms": result.ci95_high_ms,
        "n_outliers": result.n_outliers,
        "n_runs": result.n_runs,
        "warmup_runs": result.warmup_runs,
        "stop_reason": result.stop_reason or None,
        "raw_ms": list(result.raw_ms),
        "timing_json": dumps_compact(dataclasses.asdict(profile.timing)),
        "load1_before": _num(before, "load1"),
        "load1_after": _num(after, "load1"),
        "busy_pct_before": _num(before, "busy_pct"),
        "busy_pct_after": _num(after, "busy_pct"),
        "cpu_freq_mhz_before": _num(before, "cpu_freq_mhz"),
        "cpu_freq_mhz_after": _num(after, "cpu_freq_mhz"),
        "temp_c_before": _num(before, "temp_c"),
        "temp_c_after": _num(after, "temp_c"),
        "mem_available_mb_before": _num(before, "mem_available_mb"),
        "mem_available_mb_after": _num(after, "mem_available_mb"),
        "governor": before.get("governor") if isinstance(before.get("governor"), str) else None,
        "system_before_json": dumps_compact(before),
        "system_after_json": dumps_compact(after),
        "ref_model_sha256": ref.get("sha256"),
        "ref_latency_ms": ref.get("latency_ms"),
        "ref_index": ref.get("index"),
        "ref_drift_pct": ref.get("drift_pct"),
        "base_rss_mb": result.base_rss_mb,
        "peak_rss_mb": result.peak_rss_mb,
        "cooldown_s": result.cooldown_s,
        "start_temp_c": result.start_temp_c,
        "started_at": result.started_at or None,
        "finished_at": result.finished_at or datetime.now(UTC).isoformat(),
        "hwlat_version": __version__,
        "agent_version": fingerprint.get("agent_version"),
    }


def _ts(text: str) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC) if text else None


def rounds_row(*, session_id: str, profile: DeviceProfile, fingerprint: dict, art: ModelArtifact,
               verdict: Verdict) -> dict[str, Any]:
    """One row from all of a model's rounds (harness/rounds.py): every round's samples and figures kept.

    The statistics (mean, percentiles, CI, spread) are over the kept rounds' samples pooled; ``latency_ms`` is
    the median of the kept rounds' medians (``rounds.estimate``), ``latency_corrected_ms`` the same of their
    drift-corrected medians. A failed round makes the row that round's failure (its earlier samples kept).
    """
    last = verdict.failed or verdict.kept[-1]
    row = make_row(session_id=session_id, run_id=last.run_id, order_index=last.order_index, profile=profile,
                   fingerprint=fingerprint, art=art, result=last.result, ref=last.ref)
    rounds = verdict.rounds
    kept_ids = {id(r) for r in verdict.kept}
    factors = [verdict.factors.get(id(r)) for r in rounds]
    first = rounds[0].result
    row.update({
        "raw_ms": [x for r in rounds for x in r.result.raw_ms],
        "rounds": len(verdict.kept),
        "round_medians_ms": [r.result.median_ms for r in rounds],
        "round_n_runs": [r.result.n_runs for r in rounds],
        "round_kept": [id(r) in kept_ids for r in rounds],
        "round_started_at": [_ts(r.result.started_at) for r in rounds],
        "round_session_ids": [r.session_id for r in rounds],
        "round_busy_pct": [r.busy_own_pct for r in rounds],
        "round_drift_factor": factors,
        "round_ref_ms": [verdict.ref_ms.get(id(r)) for r in rounds],
        "remeasured_rounds": len(verdict.discarded),
        "remeasure_reasons": [f"round {i + 1}: {verdict.discarded.get(id(r)) or verdict.kept_disturbed[id(r)]}"
                              + ("" if id(r) in verdict.discarded else " (kept: re-measure budget spent)")
                              for i, r in enumerate(rounds)
                              if id(r) in verdict.discarded or id(r) in verdict.kept_disturbed],
        "load_ms": first.load_ms,
        "first_ms": first.first_ms,
        "warmup_runs": sum(r.result.warmup_runs for r in rounds),
        "started_at": first.started_at or None,
        "load1_before": _num(first.system_before, "load1"),
        "busy_pct_before": _num(first.system_before, "busy_pct"),
        "cpu_freq_mhz_before": _num(first.system_before, "cpu_freq_mhz"),
        "temp_c_before": _num(first.system_before, "temp_c"),
        "mem_available_mb_before": _num(first.system_before, "mem_available_mb"),
        "system_before_json": dumps_compact(first.system_before),
        "base_rss_mb": first.base_rss_mb,
        "peak_rss_mb": max((r.result.peak_rss_mb for r in rounds if r.result.peak_rss_mb is not None), default=None),
        "cooldown_s": sum(r.result.cooldown_s or 0.0 for r in rounds),
    })
    row["n_runs"] = len(row["raw_ms"])
    if verdict.failed is not None:
        return row
    pooled = [x for r in verdict.kept for x in r.result.raw_ms]
    stats = summarize(pooled, profile.timing.unstable_cv)
    unstable = stats.pop("unstable") or bool(verdict.kept_disturbed)
    stats.pop("n_runs")
    row.update({k: v for k, v in stats.items() if k != "median_ms"})
    row["pooled_median_ms"] = stats["median_ms"]
    row["latency_ms"] = estimate([r.result.median_ms for r in verdict.kept])  # type: ignore[misc]
    kept_factors = [verdict.factors.get(id(r)) for r in verdict.kept]
    if all(f for f in kept_factors):
        row["latency_corrected_ms"] = estimate([r.result.median_ms / f  # type: ignore[operator]
                                                for r, f in zip(verdict.kept, kept_factors, strict=True)])
        row["drift_factor"] = row["latency_ms"] / row["latency_corrected_ms"]
    row["status"] = "unstable" if unstable else "ok"
    return row


def export_failure_row(*, session_id: str, profile: DeviceProfile, failure: ExportFailure) -> dict[str, Any]:
    """A row saying this model could not be exported for this device's format: nothing was timed.

    It carries no model hash (there is no file); resume never counts it as measured, so the next run of the
    same command tries the export again.
    """
    now = datetime.now(UTC).isoformat()
    return {
        "schema_version": SCHEMA_VERSION,
        "row_id": uuid.uuid4().hex,
        "session_id": session_id,
        "config_id": profile.config_id(),
        "device_host": profile.host,
        "arch": failure.spec.arch,
        "arch_index": failure.spec.arch_index,
        "format": failure.fmt,
        "batch": failure.spec.batch,
        "resolution": failure.spec.resolution,
        "runtime": profile.runtime.runtime,
        "providers": list(profile.runtime.providers),
        "threads": profile.runtime.threads,
        "inter_op_threads": profile.runtime.inter_op_threads,
        "graph_optimization_level": profile.runtime.graph_optimization_level,
        "status": "export_failed",
        "error_type": "export",
        "error": failure.error,
        "n_outliers": 0,
        "n_runs": 0,
        "warmup_runs": 0,
        "raw_ms": [],
        "timing_json": dumps_compact(dataclasses.asdict(profile.timing)),
        "started_at": now,
        "finished_at": now,
        "hwlat_version": __version__,
    }
