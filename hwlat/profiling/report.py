"""The profile report: one HTML page (jinja2 template ``templates/report.html.j2``) with PNG plots beside it,
readable offline and forwardable (no scripts, no external assets).

What a NAS researcher needs to trust and reuse the numbers: where they come from (device fingerprint,
runtime and version, threads and execution providers, hwlat version, dates), what was measured (every
model with its confidence interval and flags), how good the predictor is (held-out accuracy per round with
bootstrap intervals, predicted vs measured), and what it predicts for the whole space (the latency
distribution with the measured archs marked, latency vs FLOPs with the Pareto front, also as CSV).

FLOPs are 2 × multiply-accumulates everywhere (docs/spaces.md). Archs the space marks as degenerate
(NB201 cells whose output is cut off from the input) are left out of the distribution, the FLOPs view,
the Pareto front and the fastest-archs list: they are not networks anyone would deploy.
"""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import ticker

from agents import __version__
from agents.files import atomic_path, atomic_write
from hwlat.profiling.scores import bootstrap_round

if TYPE_CHECKING:
    import pyarrow as pa

    from hwlat.profiling.state import ProfileState

#: How many of the fastest predicted archs the report lists.
FASTEST = 10
#: One look for every plot: readable at a glance in a browser at 100 % zoom.
STYLE = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9,
         "xtick.labelsize": 9, "ytick.labelsize": 9, "axes.grid": True, "grid.alpha": 0.3}
DPI = 110
MEASURED = "tab:orange"


# ---------------------------------------------------------------------------------------------- numbers
def pareto_front(flops: np.ndarray, latency: np.ndarray) -> np.ndarray:
    """Indices of the archs no other arch beats on both counts (more FLOPs *and* less predicted latency).

    FLOPs stand in for capacity: along the front, each arch is the one with the most compute a latency
    budget buys. Sorted by latency.
    """
    order = np.lexsort((-flops, latency))
    front, best = [], -np.inf
    for i in order:
        if flops[i] > best:
            front.append(i)
            best = flops[i]
    return np.array(front, dtype=int)


# ---------------------------------------------------------------------------------------------- plots
def log_ticks(axis: Any, lo: float, hi: float) -> None:
    """Readable ticks on a log axis: at least three labelled values (1-2-5 steps, finer when the range is
    narrow), plain decimals, no minor labels (matplotlib's default labels a narrow log range once or not at all).
    """
    for subs in ((1.0,), (1.0, 2.0, 5.0), (1.0, 1.5, 2.0, 3.0, 5.0, 7.0), tuple(np.arange(1.0, 10.0, 0.5))):
        ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
                 for m in subs if lo <= m * 10.0 ** e <= hi]
        if len(ticks) >= 3:
            break
    if len(ticks) > 7:  # coarse enough not to collide
        ticks = ticks[:: math.ceil(len(ticks) / 7)]
    axis.set_major_locator(ticker.FixedLocator(ticks))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _pos: f"{v:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


def _span(*arrays: np.ndarray, pad: float = 1.15) -> tuple[float, float]:
    values = np.concatenate([np.asarray(a, float).ravel() for a in arrays])
    values = values[np.isfinite(values) & (values > 0)]
    return float(values.min() / pad), float(values.max() * pad)


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")
    plt.close(fig)


def plot_rounds(rounds: list[dict[str, Any]], path: Path) -> None:
    """Held-out rank correlation and MAPE per round, with 95% bootstrap intervals."""
    with plt.rc_context(STYLE):
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6), sharex=True)
        done = [r for r in rounds if r["cv_spearman"] is not None]
        x = np.array([r["measured"] for r in done])
        if done:
            rho = np.array([r["cv_spearman"] for r in done])
            err = np.array([[r["cv_spearman"] - r.get("rho_lo", r["cv_spearman"]) for r in done],
                            [r.get("rho_hi", r["cv_spearman"]) - r["cv_spearman"] for r in done]])
            a1.errorbar(x, rho, yerr=np.clip(err, 0, None), fmt="o-", capsize=3, label="Spearman ρ (95% CI)")
            a1.plot(x, [r["cv_kendall"] for r in done], "s--", label="Kendall τ")
            mape = np.array([r["cv_mape"] for r in done])
            merr = np.array([[r["cv_mape"] - r.get("mape_lo", r["cv_mape"]) for r in done],
                             [r.get("mape_hi", r["cv_mape"]) - r["cv_mape"] for r in done]])
            a2.errorbar(x, mape, yerr=np.clip(merr, 0, None), fmt="^-", color="tab:red", capsize=3,
                        label="MAPE % (95% CI)")
            a2.set_ylim(0, max(5.0, float(np.nanmax(mape + merr[1])) * 1.15))
        a1.set_ylim(min(0.0, *(r.get("rho_lo", 0.0) for r in done)) if done else 0.0, 1.0)
        a1.set_title("rank correlation, held out")
        a2.set_title("mean abs. % error, held out")
        for ax in (a1, a2):
            ax.set_xlabel("archs measured on the device")
            ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
            ax.legend(loc="lower right" if ax is a1 else "upper right")
        _save(fig, path)


def plot_pred_vs_measured(rounds: list[dict[str, Any]], measured: dict[str, float], path: Path) -> None:
    """Held-out prediction against measurement, one panel per round, all panels on the same axes."""
    shown = [r for r in rounds if r["cv_pred"]]
    n = max(len(shown), 1)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    every = [np.array(list(r["cv_pred"].values())) for r in shown] + [np.array(list(measured.values()))]
    lo, hi = _span(*every) if measured else (0.1, 10.0)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols + 0.6, 3.4 * rows + 0.3), squeeze=False,
                                 sharex=True, sharey=True)
        for ax in axes.ravel()[len(shown):]:
            ax.axis("off")
        for ax, r in zip(axes.ravel(), shown, strict=False):
            archs = [a for a in sorted(r["cv_pred"]) if a in measured]
            y = np.array([measured[a] for a in archs])
            p = np.array([r["cv_pred"][a] for a in archs])
            ax.fill_between([lo, hi], [lo / 1.2, hi / 1.2], [lo * 1.2, hi * 1.2], color="0.9", label="±20%")
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
            ax.scatter(y, p, s=18, color=MEASURED, edgecolor="k", linewidth=0.3, zorder=3)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(lo, hi)
            ax.set_ylim(lo, hi)
            ax.set_aspect("equal")
            rho = "n/a" if r["cv_spearman"] is None else f"{r['cv_spearman']:.2f}"
            ax.set_title(f"round {r['round']}: {len(archs)} held out, ρ={rho}")
        for ax in axes[-1]:
            ax.set_xlabel("measured ms")
        for ax in axes[:, 0]:
            ax.set_ylabel("predicted ms (held out)")
        log_ticks(axes[0, 0].xaxis, lo, hi)
        log_ticks(axes[0, 0].yaxis, lo, hi)
        _save(fig, path)


def plot_distribution(pred: np.ndarray, measured_ms: np.ndarray, path: Path) -> None:
    """How many archs of the whole space fall at each predicted latency; measured archs as marks below."""
    lo, hi = _span(pred, measured_ms, pad=1.05)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(8, 3.6))
        bins = np.geomspace(lo, hi, 60)
        ax.hist(pred, bins=bins, color="tab:blue", alpha=0.75, label=f"predicted, whole space ({len(pred)} archs)")
        ax.set_xscale("log")
        ax.plot(measured_ms, np.zeros_like(measured_ms), "|", color=MEASURED, markersize=22, mew=1.5,
                clip_on=False, zorder=3, label=f"measured archs ({len(measured_ms)}), at their measured latency")
        ax.set_xlim(lo, hi)
        log_ticks(ax.xaxis, lo, hi)
        ax.set_xlabel("latency ms")
        ax.set_ylabel("archs per bin")
        ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.01), ncol=2, frameon=False)
        _save(fig, path)


def plot_flops(flops: np.ndarray, pred: np.ndarray, front: np.ndarray, meas_flops: np.ndarray,
               meas_ms: np.ndarray, path: Path) -> None:
    """Predicted latency against FLOPs for the whole space, its Pareto front, and the measured archs."""
    lo, hi = _span(pred, meas_ms)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(8, 4.2))
        ax.scatter(flops / 1e6, pred, s=3, color="tab:blue", alpha=0.25, linewidths=0, rasterized=True,
                   label=f"predicted ({len(pred)} archs)")
        ax.step(flops[front] / 1e6, pred[front], where="pre", color="tab:red", lw=1.2, marker="o", markersize=3,
                label=f"Pareto front ({len(front)} archs: most FLOPs for the latency)")
        ax.scatter(meas_flops / 1e6, meas_ms, s=22, color=MEASURED, edgecolor="k", linewidth=0.3, zorder=3,
                   label=f"measured ({len(meas_ms)})")
        ax.set_yscale("log")
        ax.set_ylim(lo, hi)
        log_ticks(ax.yaxis, lo, hi)
        ax.set_xlabel("MFLOPs (2 × multiply-accumulates, analytic)")
        ax.set_ylabel("latency ms")
        ax.legend(loc="lower right")
        _save(fig, path)


# ---------------------------------------------------------------------------------------------- page
def _measurement_rows(out: Path, device: str, space: str) -> list[dict[str, Any]]:
    """This device's rows of the profile's measurements dataset (the source of the header and the table)."""
    from harness.store import read_dataset

    folder = out / "measurements"
    if not folder.exists():
        return []
    rows = read_dataset(folder).to_pylist()
    return sorted((r for r in rows if r["device"] == device and r["search_space"] == space),
                  key=lambda r: (r["latency_ms"] is None, r["latency_ms"] or 0.0))


def _header(rows: list[dict[str, Any]], device: str, space: str, state: ProfileState) -> dict[str, Any]:
    """Where the numbers come from: the device's fingerprint and the measuring software."""
    last = rows[-1] if rows else {}
    fp = json.loads(last.get("fingerprint_json") or "{}")
    times = [r["finished_at"] for r in rows if r.get("finished_at")]
    device_facts = [
        ("board", fp.get("board")), ("CPU", fp.get("cpu_model")), ("machine", fp.get("machine")),
        ("cores", f"{fp.get('cores_physical')} physical, {fp.get('cores_logical')} logical"
         if fp.get("cores_logical") else None),
        ("memory", f"{fp['ram_mb'] / 1024:.1f} GiB" if fp.get("ram_mb") else None),
        ("OS", fp.get("os_release") if str(fp.get("os_release") or "").startswith(str(fp.get("os"))) else
         " ".join(str(v) for v in (fp.get("os"), fp.get("os_release")) if v) or None),
        ("GPU", ", ".join(g.get("name", str(g)) if isinstance(g, dict) else str(g) for g in fp.get("gpus") or [])
         or None),
        ("governor", last.get("governor")), ("host", fp.get("host")),
    ]
    providers = last.get("providers") or []
    software = [
        ("runtime", " ".join(str(v) for v in (last.get("runtime"), last.get("runtime_version")) if v) or None),
        ("execution providers", ", ".join(providers) if providers else last.get("provider")),
        ("threads", last.get("threads")), ("format", last.get("format")),
        ("graph optimization", last.get("graph_optimization_level")),
        ("Python", fp.get("python_version")), ("agent", last.get("agent_version")),
        ("hwlat (measured with)", ", ".join(sorted({str(r["hwlat_version"]) for r in rows if r.get("hwlat_version")}))
         or None),
    ]
    return {
        "device": device, "space": space, "hwlat_version": __version__,
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "measured_from": min(times).strftime("%Y-%m-%d %H:%M UTC") if times else None,
        "measured_to": max(times).strftime("%Y-%m-%d %H:%M UTC") if times else None,
        "device_facts": [(k, v) for k, v in device_facts if v not in (None, "")],
        "software": [(k, v) for k, v in software if v not in (None, "")],
        "warnings": list(fp.get("warnings") or []), "stopped": state.stopped, "config_id": last.get("config_id"),
    }


def _fmt_ms(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}" if value < 100 else f"{value:.1f}"


def level_line(level: dict[str, Any]) -> str:
    """One line: which drift reference level the predictions are for, and how far the batches were apart."""
    levels = level["session_levels_ms"].values()
    return (f"predictions are for the drift reference at {level['baseline_ms']:.3f} ms (the batches' fast state; "
            f"beta {level['beta']:.2f}): the {len(levels)} measuring sessions read it at {min(levels):.3f}-"
            f"{max(levels):.3f} ms ({level['spread']:+.0%} apart) and were put on that level")


def write_report(out: Path, state: ProfileState, table: pa.Table, device: str, space: str) -> Path:
    """Write report.html, its PNGs and pareto.csv under ``out``; returns the HTML path.

    ``table`` is predictions.parquet (``predictor/predictions.py``: latency_ms, log_std, flops, measured_ms, ...).
    """
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    from hwlat.spaces import get_space

    sp = get_space(space)
    archs = table.column("arch").to_pylist()
    index = table.column("arch_index").to_pylist()
    pred = table.column("latency_ms").to_numpy()
    unc = table.column("log_std").to_numpy()
    flops = table.column("flops").to_numpy()
    meas_col = table.column("measured_ms").to_pylist()
    measured = {a: m for a, m in zip(archs, meas_col, strict=True) if m is not None}
    real = np.array([not sp.degenerate(a) for a in archs])
    rows = _measurement_rows(out, device, space)

    rounds = []
    for r in state.rounds:
        if not r.done:
            continue
        entry = {"round": r.round, "sampler": r.sampler, "measured": r.measured, "cv_spearman": r.cv_spearman,
                 "cv_kendall": r.cv_kendall, "cv_mape": r.cv_mape, "cv_coverage": r.cv_coverage,
                 "best_source": r.best_source,
                 "cv_pred": r.cv_pred}
        entry.update(bootstrap_round(r.cv_pred, measured, seed=r.round))
        rounds.append(entry)
    plot_rounds(rounds, out / "rounds.png")
    plot_pred_vs_measured(rounds, measured, out / "pred_vs_measured.png")
    meas_idx = np.array([i for i, m in enumerate(meas_col) if m is not None], dtype=int)
    meas_ms = np.array([meas_col[i] for i in meas_idx], dtype=float)
    plot_distribution(pred[real], meas_ms, out / "latency_distribution.png")
    real_idx = np.flatnonzero(real)
    front = real_idx[pareto_front(flops[real], pred[real])]
    plot_flops(flops[real], pred[real], pareto_front(flops[real], pred[real]), flops[meas_idx], meas_ms,
               out / "flops_vs_latency.png")
    _write_pareto(out / "pareto.csv", front, archs, index, pred, unc, flops, meas_col)

    last_cv = next((r.cv_pred for r in reversed(state.rounds) if r.done and r.cv_pred), {})
    set_aside = state.set_aside()
    models = []
    for r in rows:
        low, high = r.get("ci95_low_ms"), r.get("ci95_high_ms")
        held_out = last_cv.get(r["arch"])
        flags = [f for f, on in (("set aside: off-level batch, not in the fit", r["session_id"] in set_aside),
                                 ("unstable", r["status"] == "unstable"),
                                 (f"drift {r['ref_drift_pct']:+.0f}%", abs(r.get("ref_drift_pct") or 0) >= 5),
                                 (r["status"], r["status"] not in ("ok", "unstable"))) if on]
        models.append({
            "arch": r["arch"], "arch_index": r.get("arch_index"), "median": _fmt_ms(r["latency_ms"]),
            "ci": "" if low is None or high is None else f"±{(high - low) / 2:.3f}",
            "p90": _fmt_ms(r.get("p90_ms")), "p99": _fmt_ms(r.get("p99_ms")),
            "cv": "" if r.get("robust_cv") is None else f"{100 * r['robust_cv']:.1f}%",
            "runs": r.get("n_runs") or "", "held_out": _fmt_ms(held_out),
            "error": "" if held_out is None or r["arch"] not in measured
            else f"{100 * (held_out / measured[r['arch']] - 1):+.0f}%",
            "flags": ", ".join(flags) or "ok", "bad": bool(flags),
        })
    order = real_idx[np.argsort(pred[real], kind="stable")[:FASTEST]]
    fastest = [{"arch": archs[i], "arch_index": index[i], "pred": _fmt_ms(float(pred[i])),
                "unc": f"±{100 * unc[i]:.0f}%", "mflops": f"{flops[i] / 1e6:.1f}",
                "measured": _fmt_ms(meas_col[i]) or "not measured"} for i in order]
    last_round = rounds[-1] if rounds else {}
    env = Environment(loader=PackageLoader("hwlat.profiling", "templates"), autoescape=select_autoescape(),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    page = env.get_template("report.html.j2").render(
        h=_header(rows, device, space, state), rounds=rounds, models=models, fastest=fastest,
        n_measured=len(measured), n_space=len(archs), n_degenerate=int((~real).sum()), n_front=len(front),
        n_unstable=sum(r["status"] == "unstable" for r in rows), last=last_round, fastest_n=FASTEST,
        model_file=f"predictor-{device}.pt", level_notes=[n for r in state.rounds for n in r.level_notes],
        level=level_line(state.level) if state.level is not None else "",
    )
    path = out / "report.html"
    atomic_write(path, page.encode("utf-8"))
    return path


def _write_pareto(path: Path, front: np.ndarray, archs: list[str], index: list[Any], pred: np.ndarray,
                  unc: np.ndarray, flops: np.ndarray, meas: list[float | None]) -> None:
    """The Pareto front as CSV, fastest first: the archs a latency-constrained search should start from."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["arch", "arch_index", "latency_ms", "log_std", "flops", "measured_ms"])  # the prediction schema
    for i in front:
        writer.writerow([archs[i], "" if index[i] is None else index[i], f"{pred[i]:.6g}", f"{unc[i]:.4g}",
                         int(flops[i]), "" if meas[i] is None else f"{meas[i]:.6g}"])
    atomic_write(path, buf.getvalue().encode("utf-8"))
