"""The profile report: one HTML page with PNG plots, readable offline (no scripts, no external assets).

Plots: held-out predicted vs measured latency per round, cross-validated rank correlation and error per
round, the predicted latency distribution of the whole space with the measured archs over it, and FLOPs
vs predicted latency with the fastest archs marked (FLOPs alone would pick differently).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import ticker

if TYPE_CHECKING:
    import pyarrow as pa

    from hwlat.profiling.state import ProfileState

FASTEST = 10


def _pred_vs_measured(state: ProfileState, measured: dict[str, float], path: Path) -> None:
    rounds = [r for r in state.rounds if r.done and r.cv_pred]
    n = max(len(rounds), 1)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.ravel()[len(rounds):]:
        ax.axis("off")
    for ax, r in zip(axes.ravel(), rounds, strict=False):
        archs = sorted(r.cv_pred)
        y = np.array([measured.get(a, np.nan) for a in archs])
        p = np.array([r.cv_pred[a] for a in archs])
        ax.scatter(y, p, s=14, alpha=0.8)
        lo, hi = np.nanmin([y.min(), p.min()]), np.nanmax([y.max(), p.max()])
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(ticker.FormatStrFormatter("%g"))
            axis.set_minor_formatter(ticker.NullFormatter())
        rho = "n/a" if r.cv_spearman is None else f"{r.cv_spearman:.3f}"
        ax.set_title(f"round {r.round}: {r.measured} measured, ρ={rho}", fontsize=9)
        ax.set_xlabel("measured ms")
        ax.set_ylabel("predicted ms (held out)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _per_round(state: ProfileState, path: Path) -> None:
    done = [r for r in state.rounds if r.done and r.cv_spearman is not None]
    fig, ax1 = plt.subplots(figsize=(6, 3.6))
    x = [r.measured for r in done]
    ax1.plot(x, [r.cv_spearman for r in done], "o-", label="Spearman ρ")
    ax1.plot(x, [r.cv_kendall for r in done], "s-", label="Kendall τ")
    ax1.set_xlabel("archs measured on the device")
    ax1.set_ylabel("rank correlation (cross-validated)")
    ax1.set_ylim(min([0.0, *[r.cv_kendall or 0 for r in done]]), 1.0)
    ax2 = ax1.twinx()
    ax2.plot(x, [r.cv_mape for r in done], "^--", color="tab:red", label="MAPE %")
    ax2.set_ylabel("MAPE %", color="tab:red")
    lines = ax1.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax1.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="lower right", fontsize=8)
    ax1.set_title("predictor quality per round")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _distribution(pred: np.ndarray, measured: np.ndarray, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    bins = np.geomspace(max(pred.min(), 1e-4), pred.max(), 50)
    ax.hist(pred, bins=bins, alpha=0.6, label=f"predicted, whole space ({len(pred)})", density=True)
    ax.hist(measured, bins=bins, alpha=0.6, label=f"measured ({len(measured)})", density=True)
    ax.set_xscale("log")
    ax.set_xlabel("latency ms")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.set_title("latency distribution")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _flops(flops: np.ndarray, pred: np.ndarray, path: Path) -> np.ndarray:
    fastest = np.argsort(pred)[:FASTEST]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.scatter(flops / 1e6, pred, s=3, alpha=0.3, label="all archs")
    ax.scatter(flops[fastest] / 1e6, pred[fastest], s=30, color="tab:red", marker="*",
               label=f"{FASTEST} fastest (predicted)")
    ax.set_xlabel("million multiply-accumulates (analytic)")
    ax.set_ylabel("predicted latency ms")
    ax.legend(fontsize=8)
    ax.set_title("FLOPs vs predicted latency")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return fastest


def write_report(out: Path, state: ProfileState, table: pa.Table, device: str, space: str) -> Path:
    """Write report.html and its PNGs under ``out``; returns the HTML path."""
    archs = table.column("arch").to_pylist()
    pred = table.column("latency_ms").to_numpy()
    flops = table.column("flops").to_numpy()
    meas_col = table.column("measured_ms").to_pylist()
    measured = {a: m for a, m in zip(archs, meas_col, strict=True) if m is not None}
    _pred_vs_measured(state, measured, out / "pred_vs_measured.png")
    _per_round(state, out / "rounds.png")
    _distribution(pred, np.array(list(measured.values())), out / "latency_distribution.png")
    fastest = _flops(flops, pred, out / "flops_vs_latency.png")
    rows = "".join(
        f"<tr><td>{r.round}</td><td>{r.sampler}</td><td>{r.measured}</td>"
        f"<td>{'' if r.cv_spearman is None else f'{r.cv_spearman:.3f}'}</td>"
        f"<td>{'' if r.cv_kendall is None else f'{r.cv_kendall:.3f}'}</td>"
        f"<td>{'' if r.cv_mape is None else f'{r.cv_mape:.1f}'}</td><td>{html.escape(r.best_source)}</td></tr>"
        for r in state.rounds if r.done)
    unc = table.column("log_std").to_numpy()
    fast_rows = "".join(
        f"<tr><td><code>{html.escape(archs[i])}</code></td><td>{pred[i]:.3f}</td><td>±{100 * unc[i]:.0f}%</td>"
        f"<td>{flops[i] / 1e6:.1f}</td><td>{'' if meas_col[i] is None else f'{meas_col[i]:.3f}'}</td></tr>"
        for i in fastest)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>hwlat profile: {html.escape(device)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td,th{{padding:2px 8px;text-align:left}}
img{{max-width:100%;border:1px solid #ddd;margin:6px 0}}</style></head><body>
<h1>hwlat profile: {html.escape(device)} / {html.escape(space)}</h1>
<p>{len(measured)} archs measured; predictions for {len(archs)} archs; stopped: {html.escape(state.stopped)}.</p>
<h2>Rounds</h2><table><tr><th>round</th><th>sampler</th><th>measured</th><th>CV Spearman</th><th>CV Kendall</th>
<th>CV MAPE %</th><th>closest source device</th></tr>{rows}</table>
<img src="rounds.png" alt="quality per round">
<h2>Predicted (held out) vs measured, per round</h2><img src="pred_vs_measured.png" alt="predicted vs measured">
<h2>Latency distribution</h2><img src="latency_distribution.png" alt="latency distribution">
<h2>FLOPs vs predicted latency</h2><img src="flops_vs_latency.png" alt="flops vs latency">
<h3>{FASTEST} fastest archs (predicted)</h3><table><tr><th>arch</th><th>predicted ms</th><th>uncertainty</th>
<th>MMACs</th><th>measured ms</th></tr>{fast_rows}</table>
<p>Files: <code>measurements/</code> (dataset), <code>predictions.parquet</code>,
<code>predictor-{html.escape(device)}.pt</code>, <code>state.json</code>.</p></body></html>
"""
    path = out / "report.html"
    tmp = out / ".report.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
