"""Transfer benchmark in the NASFLAT/HELP protocol (``hwlat predictor bench``).

Per task and seed: pretrain on at most 512 (nb201) / 800 (other spaces) archs per train device, drawn
with the seed; on each test device pick ``samples`` archs with a sampler (seeded), transfer, and score
on every other arch of that device in the data. The benchmark's own figures are what docs/predictor.md
reports, so it keeps wall time per task and all per-seed numbers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import kendalltau, spearmanr

from agents.errors import UsageError

from .data import LatencyTable
from .encode import get_encoder, space_key
from .samplers import sample
from .train import SpaceModel, TrainConfig, pretrain
from .transfer import TransferConfig, transfer

#: accuracy figures: ranking over every scored arch; absolute error and the +-1 std interval's coverage
#: over the regular archs, and the same three over the archs the space marks as degenerate (NB201 cells with
#: a disconnected output), kept apart so they neither hide nor dominate the figure (None where there are none)
METRICS = ("spearman", "kendall", "mape", "within_10pct", "coverage_1sigma",
           "mape_degenerate", "within_10pct_degenerate", "coverage_1sigma_degenerate")


#: archs per train device the protocol allows, per space: 512 for NB201 (as NASFLAT/HELP), 800 elsewhere;
#: a benchmark that runs NB201 data under another space name (benchmarks/graph_vs_dedicated.py) adds it here
PRETRAIN_CAPS = {"nb201": 512}


def pretrain_cap(space: str) -> int:
    """Archs per train device the protocol allows (``PRETRAIN_CAPS``, default 800)."""
    return PRETRAIN_CAPS.get(space, 800)


def pretrain_protocol(table: LatencyTable, space: str, devices: list[str], cfg: TrainConfig,
                      progress: Callable[[int, int], None] | None = None) -> SpaceModel:
    """Pretrain on at most ``pretrain_cap(space)`` archs per device, drawn in device order with one
    generator seeded by ``cfg.seed``: the protocol's pretraining step, shared by every benchmark."""
    rng = np.random.default_rng(cfg.seed)
    archs: list[str] = []
    lat: list[np.ndarray] = []
    dev_of_row: list[np.ndarray] = []
    for d, name in enumerate(devices):
        s = table.device_series(space, name)
        pick = rng.choice(len(s), size=min(pretrain_cap(space), len(s)), replace=False)
        archs += list(s.index[pick])
        lat.append(s.to_numpy()[pick])
        dev_of_row.append(np.full(len(pick), d))
    return pretrain(space, archs, devices, np.concatenate(lat), np.concatenate(dev_of_row), cfg, progress=progress)


@dataclass
class Task:
    name: str
    space: str
    train_devices: list[str]
    test_devices: list[str]


def load_tasks(path: str | Path, names: list[str] | None = None) -> list[Task]:
    """Read a NASFLAT-style task file; ``names`` selects tasks by ``paper_name``."""
    def device_list(value: object) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise TypeError(f"device lists must be lists of names, got {value!r}")
        return list(value)

    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        tasks = [Task(t.get("paper_name") or f"task{t.get('task_index', i)}", space_key(t["search_space"]),
                      device_list(t["train_devices"]), device_list(t["test_devices"]))
                 for i, t in enumerate(raw["tasks"])]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"cannot read tasks file {path}: {exc}") from exc
    if names:
        known = {t.name for t in tasks}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise UsageError(f"unknown task(s) {', '.join(unknown)}; the file has {', '.join(sorted(known))}")
        tasks = [t for t in tasks if t.name in names]
    return tasks


def validate_tasks(table: LatencyTable, tasks: list[Task], samples: int) -> None:
    """Refuse, before any training, a task the protocol cannot run: every task needs train and test devices
    that are disjoint and in the data, and each test device more archs than ``samples`` plus 2 to score on."""
    if samples < 2:
        raise UsageError(f"samples must be at least 2, got {samples}")
    for task in tasks:
        if not task.train_devices or not task.test_devices:
            which = "train" if not task.train_devices else "test"
            raise UsageError(f"task {task.name}: no {which} devices")
        both = sorted(set(task.train_devices) & set(task.test_devices))
        if both:
            raise UsageError(f"task {task.name}: {', '.join(both)} is both a train and a test device (a test "
                             "device must be new to the pretrained model)")
        have = set(table.devices(task.space))
        missing = [d for d in (*task.train_devices, *task.test_devices) if d not in have]
        if missing:
            raise UsageError(f"task {task.name}: device(s) not in the data for {task.space}: {', '.join(missing)}")
        for name in task.test_devices:
            n = len(table.device_series(task.space, name))
            if samples > n - 2:
                raise UsageError(f"task {task.name}: {samples} samples on {name} leave {max(n - samples, 0)} of "
                                 f"its {n} archs to score; use at most {max(n - 2, 0)} samples")


def score(pred_ms: np.ndarray, true_ms: np.ndarray, log_std: np.ndarray, degenerate: np.ndarray
          ) -> dict[str, float | None]:
    """``METRICS`` of one device: Spearman and Kendall tau over all archs; MAPE (%), the share within +-10%
    of the measurement and the share inside the predicted +-1 std interval (``ms * exp(+-log_std)``), for
    regular and degenerate archs apart."""
    rel = np.abs(pred_ms - true_ms) / true_ms
    inside = np.abs(np.log(true_ms) - np.log(pred_ms)) <= log_std
    out: dict[str, float | None] = {"spearman": float(spearmanr(pred_ms, true_ms)[0]),
                                    "kendall": float(kendalltau(pred_ms, true_ms)[0])}
    for suffix, sel in (("", ~degenerate), ("_degenerate", degenerate)):
        some = bool(sel.any())
        out["mape" + suffix] = float(100.0 * rel[sel].mean()) if some else None
        out["within_10pct" + suffix] = float((rel[sel] <= 0.10).mean()) if some else None
        out["coverage_1sigma" + suffix] = float(inside[sel].mean()) if some else None
    return out


def copy_best_source(picks_ms: np.ndarray, sources_picks_ms: np.ndarray, sources_held_ms: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, int]:
    """The copy-best-source baseline, chosen on the N measured picks only (no held-out data): of the source
    columns, the one whose latencies rank the target's ``picks_ms`` best (Spearman; ties: the smaller rms log
    residual once scaled), scaled by the geometric-mean ratio on the picks; std = that rms log residual.
    ``sources_*_ms`` are (archs, sources) on the picks and on the held-out archs. Returns (held-out ms, log
    std per held-out arch, index of the chosen source)."""
    y = np.log(picks_ms)
    fits = []
    for c in range(sources_picks_ms.shape[1]):
        x = np.log(sources_picks_ms[:, c])
        rho = spearmanr(x, y)[0]
        offset = float(np.mean(y - x))
        rms = float(np.sqrt(np.mean((y - x - offset) ** 2)))
        fits.append((-np.inf if np.isnan(rho) else rho, -rms, c, offset))
    _rho, neg_rms, best, offset = max(fits)
    return sources_held_ms[:, best] * np.exp(offset), np.full(len(sources_held_ms), -neg_rms), best


def _mean(values: list) -> float | None:
    """Mean of the values that exist (None where none do)."""
    have = [v for v in values if v is not None]
    return float(np.mean(have)) if have else None


def run_task_seed(table: LatencyTable, task: Task, seed: int, samples: int, sampler: str,
                  train_cfg: TrainConfig | None = None, transfer_cfg: TransferConfig | None = None,
                  progress: Callable[[int, int], None] | None = None) -> dict[str, dict[str, float | None]]:
    """One task, one seed: pretrain, transfer to each test device, score; returns {device: metrics}."""
    return run_task_seed_variants(table, task, seed, samples, sampler, {"": transfer_cfg or TransferConfig()},
                                  train_cfg, progress)[""]


def run_task_seed_variants(table: LatencyTable, task: Task, seed: int, samples: int, sampler: str,
                           variants: dict[str, TransferConfig], train_cfg: TrainConfig | None = None,
                           progress: Callable[[int, int], None] | None = None
                           ) -> dict[str, dict[str, dict[str, float | None]]]:
    """One task, one seed, several transfer configurations on the same pretrained model and the same
    sampled archs (a side-by-side comparison that differs in nothing else): {variant: {device: metrics}}."""
    space = task.space
    validate_tasks(table, [task], samples)
    cfg = TrainConfig(**{**(train_cfg.__dict__ if train_cfg else {}), "seed": seed})
    model = pretrain_protocol(table, space, list(task.train_devices), cfg, progress)
    out: dict[str, dict[str, dict[str, float | None]]] = {label: {} for label in variants}
    for name in task.test_devices:
        _picks, by_label = transfer_and_score(model, table.device_series(space, name), samples, sampler, seed,
                                              variants, f"{name}@target")
        for label, metrics in by_label.items():
            out[label][name] = metrics
    return out


def transfer_and_score(model: SpaceModel, series: pd.Series, samples: int, sampler: str, seed: int,
                       variants: dict[str, TransferConfig], prefix: str, degenerate: pd.Series | None = None
                       ) -> tuple[list[str], dict[str, dict[str, float | None]]]:
    """The protocol's step on one target device (its latencies ``series``, ms by arch): pick ``samples`` archs
    with ``sampler``, transfer ``model`` once per variant from the same picks (as device ``prefix-label``, or
    ``prefix`` for the label ""), and score each on every other arch. Returns (picks, {variant: metrics}), the
    picks so that a caller can score a baseline on the same split. ``degenerate``: the space's flags of the
    series' archs (bool, indexed like ``series``) when the caller has them already, else they are computed."""
    space = model.space
    picks = sample(sampler, space, list(series.index), samples, seed=seed, model=model)
    rest = series.drop(index=picks)
    degenerate = (get_encoder(space).degenerate(list(rest.index)) if degenerate is None
                  else degenerate.loc[rest.index].to_numpy())
    out: dict[str, dict[str, float | None]] = {}
    for label, tcfg in variants.items():
        target = f"{prefix}{'-' + label if label else ''}"
        transfer(model, target, picks, series.loc[picks].to_numpy(), tcfg, seed=seed)
        log_ms, log_std = model.predict(list(rest.index), target)
        out[label] = score(np.exp(log_ms), rest.to_numpy(), log_std, degenerate)
    return picks, out


def run_bench(table: LatencyTable, tasks: list[Task], samples: int, seeds: int, sampler: str,
              train_cfg: TrainConfig | None = None, transfer_cfg: TransferConfig | None = None,
              on_step: Callable[[str, int, dict], None] | None = None,
              progress: Callable[[int, int], None] | None = None) -> dict:
    """Run every task for seeds 0..seeds-1; returns the JSON report (means, per-device per-seed lists)."""
    step = None if on_step is None else (lambda task, seed, res: on_step(task, seed, res[""]))
    return run_bench_variants(table, tasks, samples, seeds, sampler, {"": transfer_cfg or TransferConfig()},
                              train_cfg, step, progress)[""]


def run_bench_variants(table: LatencyTable, tasks: list[Task], samples: int, seeds: int, sampler: str,
                       variants: dict[str, TransferConfig], train_cfg: TrainConfig | None = None,
                       on_step: Callable[[str, int, dict], None] | None = None,
                       progress: Callable[[int, int], None] | None = None) -> dict[str, dict]:
    """``run_bench`` for several transfer configurations side by side (``run_task_seed_variants``): one
    report per variant; ``seconds`` of a task cover all variants (they share the pretraining)."""
    validate_tasks(table, tasks, samples)  # all of them, before hours of training on the first
    reports: dict[str, dict] = {label: {"samples": samples, "seeds": seeds, "sampler": sampler, "tasks": {}}
                                for label in variants}
    for task in tasks:
        t0 = time.perf_counter()
        per_dev = {label: {d: {m: [] for m in METRICS} for d in task.test_devices} for label in variants}
        seed_seconds = []
        for seed in range(seeds):
            ts = time.perf_counter()
            res = run_task_seed_variants(table, task, seed, samples, sampler, variants, train_cfg, progress)
            seed_seconds.append(time.perf_counter() - ts)
            for label, by_dev in res.items():
                for d, m in by_dev.items():
                    for k, v in m.items():
                        per_dev[label][d][k].append(v)
            if on_step is not None:
                on_step(task.name, seed, res)
        for label in variants:
            entry: dict = {m: _mean([_mean(per_dev[label][d][m]) for d in task.test_devices]) for m in METRICS}
            entry["seconds"] = time.perf_counter() - t0
            entry["seconds_per_seed"] = seed_seconds
            entry["devices"] = per_dev[label]
            reports[label]["tasks"][task.name] = entry
    return reports
