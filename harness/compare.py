"""``hwlat datasets compare A B``: do two measurements of the same models on the same device configurations agree?

Rows are matched by (device, ``config_id``, ``model_key``): the same network -- the same exact model file at the
same input shapes (``harness.store.row_model_key``; rows written before ``model_key`` existed by their
``model_sha256``) -- on the same device configuration. Only usable rows (``agents.records.USABLE_STATUSES``) with a
latency take part; a key measured more than once in one dataset (``--remeasure`` sessions) counts with the median of
its latencies.

Figures (what a retest on another day, or after a change to the harness, must reproduce):

* rank agreement: Spearman's rho and Kendall's tau (``scipy.stats``), what a NAS ranking depends on;
* relative difference ``(B - A) / A`` per model: median and 90th percentile of its absolute value, the geometric
  mean ratio B/A (a systematic shift: clock, thermal state, runtime version) and a Wilcoxon signed-rank test of
  that shift on log latencies;
* ICC(2,1), the intraclass correlation for absolute agreement of single measurements (two-way random effects,
  Shrout & Fleiss 1979), on log latencies: like the relative difference it weighs a 10% change of a small model
  as much as one of a big model; unlike Spearman it also drops when B is shifted as a whole. ICC(3,1)
  (consistency, blind to a uniform shift) is reported beside it;
* the models that moved most, and one verdict line, as pyperf's ``compare_to`` ends with one.

The machine's speed moves between campaigns (docs/benchmarks.md, "Retest"): on the 2-vCPU VM with two threads
whole campaigns ran in a fast or a slow mode, ~1.6x apart. Both campaigns measured the same drift reference model,
so where their rows carry ``round_ref_ms`` (the reference's latency when each round ran) the same figures are
also computed on *reference-normalized* latencies: every kept round's median ``m`` becomes
``m * (baseline / round_ref_ms) ** beta`` and the row's value is their median, with per device configuration

* one ``baseline`` for both datasets: the 10th percentile of every kept round's reference latency in A and B.
  A low quantile, not the median, because interference only adds time: the fast state the machine reached is
  the one both campaigns can be put in, however long either spent slow;
* ``beta``, how much of the reference's movement a model shares, fitted by least squares on the datasets' own
  within-model evidence: over the rows with two or more kept rounds, the log of each round's median around the
  row's mean against the log of its reference latency around the row's mean, clipped to [0, 1]. When the
  reference only moves by its own measurement noise, beta is small and the correction adds little of that noise;
  when the machine changes speed for everyone, beta is near 1. Rows of one round each give no such evidence:
  beta is then 1 (the full correction).

docs/timing.md, "Drift correction", has the measurement behind this.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from agents.errors import UsageError
from agents.records import USABLE_STATUSES
from harness.store import read_dataset, row_model_key

KEY = ["device", "config_id", "model_key"]
#: Verdict thresholds: "reproduces" needs both a rank agreement and a typical relative difference this good.
SPEARMAN_MIN = 0.95
MEDIAN_DIFF_MAX = 0.05
#: How many of the models that moved most are listed.
TOP_MOVED = 5


#: The quantile of the reference's latencies that normalized latencies are put on (see the module docstring).
BASELINE_QUANTILE = 10
_ROUND_COLUMNS = ("ref_model_sha256", "round_medians_ms", "round_kept", "round_ref_ms", "round_drift_factor",
                  "round_session_ids", "ref_latency_ms", "ref_drift_pct")


def usable_rows(path: Path) -> pd.DataFrame:
    """Usable rows with a latency: the key, arch, latency and (null where absent) the per-round reference data."""
    table = read_dataset(path)
    need = {"device", "config_id", "model_sha256", "arch", "status", "latency_ms"}
    if not need <= set(table.column_names):
        raise UsageError(f"{path} is not an hwlat dataset (missing columns {sorted(need - set(table.column_names))})")
    optional = {"session_id", "model_key", *_ROUND_COLUMNS}
    df = table.select(sorted(need | (optional & set(table.column_names)))).to_pandas()
    df = df[df["status"].astype(str).isin(USABLE_STATUSES) & (df["latency_ms"] > 0)]
    df = _with_round_data(df, optional)
    return df.assign(model_key=[row_model_key(k if isinstance(k, str) else None, s)
                                for k, s in zip(df["model_key"], df["model_sha256"], strict=True)])


def _with_round_data(df: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """``df`` ready for ``normalize_sessions``: ``columns`` it lacks added as nulls, ``device`` as text, and
    ``round_ref_ms`` rebuilt where rows predate it (``_round_ref``)."""
    df = df.assign(**{column: None for column in columns if column not in df}).astype({"device": str})
    return df.assign(round_ref_ms=[_round_ref(row) for row in df.itertuples()])


def _round_ref(row: Any) -> Any:
    """The row's ``round_ref_ms``; for rows written before that column existed (2026-11-26), rebuilt as each
    round's drift factor times its session's first reference latency, which the row's ``ref_*`` columns give
    (``ref_latency_ms / (1 + ref_drift_pct / 100)``) when every round is of the row's own session."""
    if row.round_ref_ms is not None:
        return row.round_ref_ms
    factors, sessions = row.round_drift_factor, row.round_session_ids
    if factors is None or sessions is None or row.ref_latency_ms is None or pd.isna(row.ref_drift_pct) \
            or set(sessions) != {row.session_id}:
        return None
    first = row.ref_latency_ms / (1.0 + row.ref_drift_pct / 100.0)
    return [f * first if f else None for f in factors]


def _latencies(df: pd.DataFrame, column: str = "latency_ms") -> pd.DataFrame:
    """One latency per key (the median of a key measured more than once)."""
    df = df.dropna(subset=[column])
    return df.groupby(KEY, as_index=False).agg(arch=("arch", "first"), model_sha256=("model_sha256", "first"),
                                               latency_ms=(column, "median"))


def _kept_rounds(row: Any) -> list[tuple[float, float]]:
    """(median, reference latency) of the row's kept rounds that have a reference latency."""
    if row.round_ref_ms is None or row.round_medians_ms is None or row.round_kept is None:
        return []
    return [(float(m), float(r)) for m, k, r in zip(row.round_medians_ms, row.round_kept, row.round_ref_ms,
                                                    strict=True) if k and r]


ReferenceKey = tuple[str, str, str]
#: A function of the reference latencies of every kept round, one list per frame (dataset or session), that
#: gives the baseline they are put on; ``normalize_sessions`` defaults to ``lowest_level``.
Baseline = Callable[[list[list[float]]], float]


def lowest_level(refs: list[list[float]]) -> float:
    """The ``BASELINE_QUANTILE`` percentile of every frame's reference latencies pooled: the fast state the
    machine reached, which every campaign can be put in however long it spent slow (module docstring)."""
    return float(np.percentile([r for frame in refs for r in frame], BASELINE_QUANTILE))


def latest_level(refs: list[list[float]]) -> float:
    """The median reference latency of the last frame that has any: the machine's state in the latest session
    (``hwlat profile`` passes its batches' sessions in measuring order)."""
    return float(np.median([frame for frame in refs if frame][-1]))


def median_level(refs: list[list[float]]) -> float:
    """The median of the frames' own median reference latencies: the typical session's state."""
    return float(np.median([np.median(frame) for frame in refs if frame]))


def _level_summary(refs: list[float]) -> dict[str, Any]:
    p10, p50, p90 = np.percentile(refs, [10, 50, 90])
    return {"rounds": len(refs), "median_ms": float(p50), "p10_ms": float(p10), "p90_ms": float(p90),
            "spread": float(p90 / p10 - 1.0)}


def normalize_sessions(frames: Sequence[pd.DataFrame], baseline: Baseline = lowest_level
                       ) -> tuple[list[pd.DataFrame], dict[str, Any]]:
    """Rows of N datasets or sessions of the same device configurations put on one drift reference level.

    Every frame comes back with ``normalized_ms`` added: per row the median over its kept rounds of
    ``m * (baseline / round_ref_ms) ** beta`` (NaN where the row has no round reference data), with per (device,
    ``config_id``, reference model) one ``baseline`` (``baseline`` of the rounds' reference latencies, one list
    per frame; default ``lowest_level``) and one ``beta`` (``shared_fraction`` over every frame's rows pooled).
    The summary has, per frame (in order; None for a frame without reference data), what its reference did
    (median, 10th / 90th percentile and their spread ``p90 / p10 - 1``), and per key the ``baseline_ms`` and
    ``beta`` used. Each row's kept rounds are read once.
    """
    kept = [[_kept_rounds(row) for row in df.itertuples()] for df in frames]
    pooled: dict[ReferenceKey, list[list[list[tuple[float, float]]]]] = {}
    row_keys: list[list[ReferenceKey | None]] = []
    for i, df in enumerate(frames):
        keys: list[ReferenceKey | None] = []
        for row, rounds in zip(df.itertuples(), kept[i], strict=True):
            key = (row.device, row.config_id, row.ref_model_sha256) \
                if isinstance(row.ref_model_sha256, str) and rounds else None
            if key is not None:
                pooled.setdefault(key, [[] for _ in frames])[i].append(rounds)
            keys.append(key)
        row_keys.append(keys)
    baselines = {key: baseline([[ref for rounds in frame for _, ref in rounds] for frame in per_frame])
                 for key, per_frame in sorted(pooled.items())}
    betas = {key: shared_fraction([rounds for frame in pooled[key] for rounds in frame]) for key in baselines}

    def normalized(key: ReferenceKey | None, rounds: list[tuple[float, float]]) -> float:
        if key is None:
            return math.nan
        return float(np.median([m * (baselines[key] / ref) ** betas[key] for m, ref in rounds]))

    out = [df.assign(normalized_ms=[normalized(k, r) for k, r in zip(row_keys[i], kept[i], strict=True)])
           for i, df in enumerate(frames)]
    levels = [[ref for k, rounds in zip(row_keys[i], kept[i], strict=True) if k for _, ref in rounds]
              for i in range(len(frames))]
    summary: dict[str, Any] = {
        "frames": [_level_summary(refs) if refs else None for refs in levels],
        "baselines": [{"device": key[0], "config_id": key[1], "ref_model_sha256": key[2],
                       "baseline_ms": baselines[key], "beta": betas[key]} for key in baselines]}
    return out, summary


def shared_fraction(rows: list[list[tuple[float, float]]]) -> float:
    """``beta``: the least-squares slope of a round's log median on its log reference latency, both taken around
    the row's own means, over rows of two or more rounds; clipped to [0, 1]; 1 without such rows."""
    sxy = sxx = 0.0
    for kept in rows:
        if len(kept) < 2:
            continue
        log_m, log_ref = np.log([m for m, _ in kept]), np.log([ref for _, ref in kept])
        x = log_ref - log_ref.mean()
        sxy += float(x @ (log_m - log_m.mean()))
        sxx += float(x @ x)
    return float(np.clip(sxy / sxx, 0.0, 1.0)) if sxx > 0 else 1.0


def normalize(a: pd.DataFrame, b: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """``normalize_sessions`` of two datasets on their shared lowest level: both datasets' rows with
    ``normalized_ms`` added, and the summary with each dataset's reference figures under ``a`` / ``b``
    (absent for a dataset without reference data) and the shared ``baselines``."""
    (a, b), summary = normalize_sessions([a, b])
    named = {name: figures for name, figures in zip("ab", summary["frames"], strict=True) if figures}
    return a, b, {**named, "baselines": summary["baselines"]}


def on_one_level(frames: Sequence[pd.DataFrame]) -> tuple[list[pd.DataFrame], list[dict[str, Any]]]:
    """Training rows of several datasets with ``latency_ms`` put on one drift reference level per device
    configuration (``hwlat predictor train --normalize``; ``predictor.data.load_table`` calls it, the predictor
    does not import the coordinator).

    ``normalize_sessions`` over the datasets on their shared lowest level; a (device, ``config_id``)'s rows take
    the normalized latency only when every one of them has one (else all keep ``latency_ms``: half-normalized
    rows would mix two levels). Returns the frames and, per configuration, what was done (baseline, beta, or
    why nothing). Rows written before ``round_ref_ms`` existed get it rebuilt as ``hwlat datasets compare`` does.
    """
    prepared = [_with_round_data(df, ("config_id", "session_id", *_ROUND_COLUMNS)) for df in frames]
    normalized, summary = normalize_sessions(prepared)
    both = pd.concat(normalized)
    complete = both.groupby(["device", "config_id"], dropna=False)["normalized_ms"].apply(lambda v: v.notna().all())
    fitted: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for k in summary["baselines"]:  # one entry per reference model: two for one configuration is not one level
        fitted.setdefault((k["device"], k["config_id"]), []).append(k)
    report = []
    for (device, config), complete_rows in complete.items():
        keys = fitted.get((device, config), [])
        ok = bool(complete_rows) and len(keys) == 1
        report.append({"device": device, "config_id": config, "normalized": ok,
                       **({"baseline_ms": keys[0]["baseline_ms"], "beta": keys[0]["beta"]} if ok else {})})
    use = {(r["device"], r["config_id"]) for r in report if r["normalized"]}
    out = []
    for df in normalized:
        pick = np.array([(d, c) in use for d, c in zip(df["device"], df["config_id"], strict=True)], dtype=bool)
        out.append(df.assign(latency_ms=np.where(pick, df["normalized_ms"], df["latency_ms"]))
                   .drop(columns="normalized_ms"))
    return out, report


def icc(ratings: np.ndarray) -> dict[str, float]:
    """ICC(2,1) and ICC(3,1) of an n targets x k raters matrix (Shrout & Fleiss 1979, two-way ANOVA)."""
    n, k = ratings.shape
    grand = ratings.mean()
    ss_rows = k * ((ratings.mean(axis=1) - grand) ** 2).sum()
    ss_cols = n * ((ratings.mean(axis=0) - grand) ** 2).sum()
    ss_err = ((ratings - grand) ** 2).sum() - ss_rows - ss_cols
    msr, msc, mse = ss_rows / (n - 1), ss_cols / (k - 1), ss_err / ((n - 1) * (k - 1))
    return {
        "icc2_1": float((msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n)),
        "icc3_1": float((msr - mse) / (msr + (k - 1) * mse)),
    }


def _figures(both: pd.DataFrame) -> dict[str, Any]:
    """The agreement figures of matched latencies (``latency_ms_a``, ``latency_ms_b``) and who moved most."""
    la, lb = both["latency_ms_a"].to_numpy(), both["latency_ms_b"].to_numpy()
    rel = lb / la - 1.0
    with warnings.catch_warnings():  # constant input: the coefficient is NaN (reported as undefined), no warning
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        spearman = stats.spearmanr(la, lb)
        kendall = stats.kendalltau(la, lb)
    log_ratio = np.log(lb / la)
    shift_p = float(stats.wilcoxon(log_ratio).pvalue) if np.any(log_ratio != 0) else 1.0
    out: dict[str, Any] = {
        "matched": len(both),
        "spearman": float(spearman.statistic),
        "kendall": float(kendall.statistic),
        "median_abs_rel_diff": float(np.median(np.abs(rel))),
        "p90_abs_rel_diff": float(np.percentile(np.abs(rel), 90)),
        "geomean_ratio": float(np.exp(log_ratio.mean())),
        "shift_p_value": shift_p,
        **icc(np.log(np.column_stack([la, lb]))),
    }
    both = both.assign(rel_diff=rel).sort_values("rel_diff", key=np.abs, ascending=False)
    out["moved_most"] = [
        {"device": r.device, "arch": r.arch_a, "model_sha256": r.model_sha256, "model_key": r.model_key,
         "latency_ms_a": float(r.latency_ms_a), "latency_ms_b": float(r.latency_ms_b), "rel_diff": float(r.rel_diff)}
        for r in both.head(TOP_MOVED).itertuples()
    ]
    # a constant column (every model the same latency) leaves a correlation undefined: null, not NaN, in JSON
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in out.items()}


def compare(path_a: Path | str, path_b: Path | str) -> dict[str, Any]:
    """Every figure of the comparison as one JSON-ready dict (``hwlat datasets compare --json`` prints it).

    ``normalized`` holds the same figures on reference-normalized latencies (module docstring), or is null when
    fewer than 3 matched models have round reference data (rows written before ``round_ref_ms`` existed);
    ``reference`` says what each dataset's drift reference did.
    """
    rows_a, rows_b = usable_rows(Path(path_a)), usable_rows(Path(path_b))
    a, b = _latencies(rows_a), _latencies(rows_b)
    both = a.merge(b.drop(columns="model_sha256"), on=KEY, suffixes=("_a", "_b"))
    if len(both) < 3:
        raise UsageError(f"only {len(both)} model(s) measured in both {path_a} and {path_b} on the same device "
                         "configuration (device, config_id, model_key); need at least 3 to compare")
    out: dict[str, Any] = {"a": str(path_a), "b": str(path_b), "only_a": len(a) - len(both),
                           "only_b": len(b) - len(both), **_figures(both)}
    rows_a, rows_b, out["reference"] = normalize(rows_a, rows_b)
    norm = _latencies(rows_a, "normalized_ms").merge(_latencies(rows_b, "normalized_ms").drop(columns="model_sha256"),
                                                     on=KEY, suffixes=("_a", "_b"))
    out["normalized"] = _figures(norm) if len(norm) >= 3 else None
    out["verdict"] = verdict(out)
    return out


def verdict(result: dict[str, Any]) -> str:
    """One line: does B reproduce A, and is B shifted as a whole (pyperf-style "1.04x slower")?"""
    ratio, p = result["geomean_ratio"], result["shift_p_value"]
    if p < 0.05 and not math.isclose(ratio, 1.0):
        shift = f"B is {ratio:.3f}x {'slower' if ratio > 1 else 'faster'} than A (Wilcoxon p={p:.2g})"
    else:
        shift = f"no significant shift (B/A {ratio:.3f}x, Wilcoxon p={p:.2g})"
    rho = result["spearman"]
    good = rho is not None and rho >= SPEARMAN_MIN and result["median_abs_rel_diff"] <= MEDIAN_DIFF_MAX
    head = "reproduces" if good else "does NOT reproduce"
    shown = "undefined (constant latencies)" if rho is None else f"{rho:.3f}"
    line = (f"{head}: Spearman {shown}, median |diff| {100 * result['median_abs_rel_diff']:.1f}% "
            f"over {result['matched']} models; {shift}")
    norm = result.get("normalized")
    if norm and norm["spearman"] is not None:
        again = norm["spearman"] >= SPEARMAN_MIN and norm["median_abs_rel_diff"] <= MEDIAN_DIFF_MAX
        line += (f"; normalized to the drift reference: {'reproduces' if again else 'does NOT reproduce'} "
                 f"(Spearman {norm['spearman']:.3f}, median |diff| {100 * norm['median_abs_rel_diff']:.1f}%)")
    return line
