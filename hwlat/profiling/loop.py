"""Profile a new board end to end: the predictor chooses, the harness measures, the predictor retrains.

``hwlat profile DEVICE --space nb201 --budget 60 --batch 10 --out DIR``

Round 0 picks a diverse first batch (k-means over the arch encodings: the device is unknown, so only the
space's shape can guide the choice). Each round measures its batch through the ordinary campaign (same
agent, same dataset schema, same resume), transfers the bundled pretrained predictor to the device from
every measurement so far, scores it by cross-validation on the measured archs, and picks the next batch
with the default sampler. The loop stops when the budget is spent or the predictor has converged.

Stopping rule (docs/profile.md): with at least ``min_measured`` archs measured (default 30 — below that a
cross-validated Spearman over a handful of archs is too noisy to act on), stop when the cross-validated
Spearman improved by less than ``tolerance`` (0.005) in each of the last ``patience`` (2) rounds.

Resume: the measurements folder is the source of truth, and the batch a round is about to measure is saved
in ``state.json`` before measuring; running the same command again re-plans nothing that was measured.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from agents.errors import DeviceBusyError, DeviceFailedError, UsageError
from agents.records import USABLE_STATUSES
from harness.campaign import CampaignRequest, run_campaign
from harness.devices import DeviceProfile
from harness.shipped import shipped_dir
from harness.store import DatasetStore, read_dataset
from hwlat.profiling.state import ProfileState, RoundRecord

#: Candidate pool size for spaces too large to enumerate (FBNet has 9^22 archs).
POOL_SIZE = 10000


@dataclass
class ProfileRequest:
    """Everything ``hwlat profile`` asks for."""

    device: DeviceProfile
    space: str
    budget: int
    batch: int
    out: Path
    data: list[Path] = field(default_factory=list)
    dataset: Path | None = None
    model: Path | None = None
    fmt: str | None = None
    threads: int | None = None
    seed: int = 0
    min_measured: int = 30
    patience: int = 2
    tolerance: float = 0.005
    folds: int = 4
    cache_dir: Path | None = None


def candidate_pool(space: str, seed: int) -> list[str]:
    """Every arch of an enumerable space; a fixed seeded sample of POOL_SIZE archs otherwise."""
    from hwlat.spaces import get_space

    sp = get_space(space)
    if sp.enumerable:
        return list(sp.all_archs())
    return sp.sample(POOL_SIZE, seed)


def measured_latencies(folder: Path, device: str, config_id: str, space: str) -> tuple[dict[str, float], set[str]]:
    """(arch -> median latency of usable rows, every arch attempted) for this device configuration.

    Failed and timed-out archs are spent budget but carry no latency, so they are attempted, not usable.
    """
    if not folder.exists():
        return {}, set()
    table = read_dataset(folder)
    if table.num_rows == 0:
        return {}, set()
    sums: dict[str, list[float]] = {}
    attempted: set[str] = set()
    for row in table.select(["device", "config_id", "search_space", "arch", "status", "latency_ms"]).to_pylist():
        if (row["device"], row["config_id"], row["search_space"]) != (device, config_id, space):
            continue
        attempted.add(row["arch"])
        if row["status"] in USABLE_STATUSES and row["latency_ms"]:
            sums.setdefault(row["arch"], []).append(row["latency_ms"])
    return {arch: float(np.mean(v)) for arch, v in sums.items()}, attempted


def load_base(req: ProfileRequest) -> Any:
    """The predictor to start from: the bundled one, the user's ``--model``, or retrained with ``--data``."""
    import predictor
    from predictor.api import BUNDLED_MODEL
    from predictor.data import load_table
    from predictor.encode import canonical_space

    if req.data:
        bundled = shipped_dir("datasets")
        if bundled is None:
            raise UsageError("--data retrains on the bundled datasets plus yours, but this installation has no "
                             "bundled datasets (share/hwlat/datasets); reinstall hwlat")
        # only the profiled space's rows: a model per other bundled space would cost minutes and go unused
        return predictor.Predictor.train(load_table([bundled, *req.data], spaces={canonical_space(req.space)}))
    path = req.model or BUNDLED_MODEL
    if not Path(path).exists():
        raise UsageError(f"no pretrained predictor at {path}; build it with `hwlat predictor train --data datasets "
                         f"--out {BUNDLED_MODEL}` or pass --data")
    return predictor.load(path)


def cross_validate(base_path: Path, target: str, space: str, archs: list[str], lat: np.ndarray, folds: int,
                   seed: int) -> dict[str, float]:
    """Held-out predictions for every measured arch (k-fold transfer), for the stopping rule and the report."""
    from sklearn.model_selection import KFold

    import predictor

    out: dict[str, float] = {}
    for train, test in KFold(min(folds, len(archs)), shuffle=True, random_state=seed).split(archs):
        if len(train) < 2:
            continue
        model = predictor.load(base_path)
        model.transfer(target, [archs[i] for i in train], lat[train], space=space, seed=seed)
        pred = model.predict([archs[i] for i in test], target, space=space)
        out.update({archs[i]: float(p) for i, p in zip(test, pred, strict=True)})
    return out


def cv_scores(cv_pred: dict[str, float], measured: dict[str, float]) -> tuple[float | None, float | None, float]:
    from scipy.stats import kendalltau

    archs = sorted(cv_pred)
    if len(archs) < 3:
        return None, None, float("nan")
    p = np.array([cv_pred[a] for a in archs])
    y = np.array([measured[a] for a in archs])
    return (float(spearmanr(p, y).statistic), float(kendalltau(p, y).statistic),
            float(np.mean(np.abs(p - y) / y) * 100))


def converged(rounds: list[RoundRecord], req: ProfileRequest) -> bool:
    """The documented stopping rule (see the module docstring)."""
    done = [r for r in rounds if r.done and r.cv_spearman is not None]
    if not done or done[-1].measured < req.min_measured or len(done) <= req.patience:
        return False
    recent = [r.cv_spearman for r in done[-(req.patience + 1):]]
    return all(b - a < req.tolerance for a, b in itertools.pairwise(recent))


def sync_rows(src: Path, dst: Path) -> int:
    """Append rows of ``src`` that ``dst`` lacks (by row_id) to ``dst``; returns how many."""
    if not src.exists():
        return 0
    have = set(read_dataset(dst).column("row_id").to_pylist()) if dst.exists() and any(dst.rglob("*.parquet")) \
        else set()
    table = read_dataset(src)
    new = [r for r in table.to_pylist() if r["row_id"] not in have]
    store = DatasetStore(dst)
    store.ensure_writable()
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for row in new:
        key = (row.pop("device"), row.pop("search_space"), row["session_id"])
        groups.setdefault(key, []).append(row)
    for (device, space, session), rows in groups.items():
        store.append(device, space, f"{session}-sync", rows)
    return len(new)


def run_profile(req: ProfileRequest, say: Callable[[str], None], progress_factory: Callable[[], Any],
                on_row: Callable[[str, dict[str, Any]], None] | None = None,
                before_writing: Callable[[], None] | None = None) -> dict:
    """Run (or resume) the loop; returns the paths of what it wrote. ``on_row`` hears each stored row;
    ``before_writing`` is called once the arguments are valid, before anything is written or exported (the
    CLI takes the device lock there, so bad input is still exit 2 and a busy device writes nothing)."""
    import predictor
    from harness.plan import configure_device
    from predictor.encode import canonical_space
    from predictor.samplers import sample

    if req.budget < 2 or req.batch < 1:
        raise UsageError("--budget must be >= 2 and --batch >= 1")
    device = configure_device(req.device, req.fmt, req.threads)
    space = canonical_space(req.space)
    if before_writing is not None:
        before_writing()
    req.out.mkdir(parents=True, exist_ok=True)
    meas_dir = req.out / "measurements"
    state_path = req.out / "state.json"
    base = load_base(req)
    if space not in base.spaces():
        raise UsageError(f"the base predictor has no {space} data (it covers {', '.join(base.spaces())}); "
                         "pass --data with measurements of that space")
    base_path = req.out / "base-predictor.pt"
    if not base_path.exists():
        base.save(base_path)
    target = device.name if device.name not in base.devices(space) else f"{device.name}-target"
    state = ProfileState.load(state_path) or ProfileState(device.name, space, target)
    if (state.device, state.space) != (device.name, space):
        raise UsageError(f"{req.out} holds a profile of {state.device}/{state.space}; use another --out")
    pool = candidate_pool(space, req.seed)
    config_id = device.config_id()
    model_path = req.out / f"predictor-{device.name}.pt"

    while True:
        measured, attempted = measured_latencies(meas_dir, device.name, config_id, space)
        pending = state.rounds[-1] if state.rounds and not state.rounds[-1].done else None
        if pending is None:
            if state.stopped:
                break
            remaining = req.budget - len(attempted)
            if remaining <= 0:
                state.stopped = f"budget of {req.budget} measurements spent"
            elif converged(state.rounds, req):
                state.stopped = "converged: cross-validated Spearman stopped improving"
            if state.stopped:
                state.save(state_path)
                break
            n = min(req.batch, remaining)
            r = len(state.rounds)
            if len(measured) < 2:
                sampler = "diversity"
                batch = sample("diversity", space, pool, n, seed=req.seed + r, measured=attempted)
            else:
                sampler = "default"
                model = device_model(req, base_path, model_path, target, space, measured)
                batch = model.suggest(target, n, "default", measured=attempted, candidates=pool, space=space,
                                      seed=req.seed + r)
            pending = RoundRecord(r, sampler, batch)
            state.rounds.append(pending)
            state.save(state_path)
        say(f"round {pending.round}: measuring {len(pending.batch)} archs chosen by the {pending.sampler} sampler "
            f"({len(attempted)}/{req.budget} measured so far)")
        with progress_factory() as progress:
            result = run_campaign(CampaignRequest(devices=[device], out=meas_dir, space=space, archs=pending.batch,
                                                  seed=req.seed + pending.round, cache_dir=req.cache_dir),
                                  progress=progress, on_row=on_row)
        failed = [o for o in result.outcomes if o.error]
        if failed:
            raise (DeviceBusyError if failed[0].busy else DeviceFailedError)(
                f"measuring on {device.name} failed: {failed[0].error}")
        if req.dataset is not None:
            sync_rows(meas_dir, req.dataset)
        measured, attempted = measured_latencies(meas_dir, device.name, config_id, space)
        archs = list(measured)
        if len(archs) < 2:
            raise UsageError(f"only {len(archs)} of {len(attempted)} archs could be measured on {device.name}; "
                             f"see the error column in {meas_dir}")
        lat = np.array([measured[a] for a in archs])
        cv = cross_validate(base_path, target, space, archs, lat, req.folds, req.seed) if len(archs) >= 4 else {}
        rho, tau, mape = cv_scores(cv, measured)
        model = predictor.load(base_path)
        info = model.transfer(target, archs, lat, space=space, seed=req.seed)
        model.save(model_path)
        pending.measured, pending.cv_spearman, pending.cv_kendall = len(attempted), rho, tau
        pending.cv_mape, pending.best_source, pending.cv_pred = mape, str(info.get("best_source", "")), cv
        pending.done = True
        state.save(state_path)
        quality = "too few for cross-validation" if rho is None else \
            f"cross-validated Spearman {rho:.3f}, Kendall {tau:.3f}, MAPE {mape:.1f}%"
        say(f"round {pending.round}: {len(attempted)} measured, {quality}; closest source device "
            f"{pending.best_source}")

    measured, _attempted = measured_latencies(meas_dir, device.name, config_id, space)
    model = device_model(req, base_path, model_path, target, space, measured)
    return finish(req, state, model, model_path, target, space, pool, device, measured, say)


def device_model(req: ProfileRequest, base_path: Path, model_path: Path, target: str, space: str,
                 measured: dict[str, float]) -> Any:
    """The predictor transferred to the device from every measurement so far.

    Each round saves it, so the next round's sampler and the final predictions reuse it; it is rebuilt
    only when missing (a kill between measuring and saving).
    """
    import predictor

    if model_path.exists():
        model = predictor.load(model_path)
        if target in model.devices(space):
            return model
    model = predictor.load(base_path)
    archs = list(measured)
    model.transfer(target, archs, np.array([measured[a] for a in archs]), space=space, seed=req.seed)
    model.save(model_path)
    return model


def finish(req: ProfileRequest, state: ProfileState, model: Any, model_path: Path, target: str, space: str,
           pool: list[str], device: DeviceProfile, measured: dict[str, float], say: Callable[[str], None]) -> dict:
    """Final predictor on every measurement, predictions for the whole space, and the report."""
    from hwlat.profiling.report import write_report
    from predictor.predictions import prediction_table, write_predictions

    archs = list(measured)
    pred, unc = model.predict_with_uncertainty(pool, target, space=space)
    from predictor.encode import analytic_flops

    flops = analytic_flops(space, pool)  # FLOPs = 2 x MACs, as the exporter counts them
    from hwlat.spaces import get_space

    sp = get_space(space)
    table = prediction_table(space, device.name, pool, pred, unc, arch_index=[sp.arch_index(a) for a in pool],
                             flops=flops, measured=measured)
    pred_path = req.out / "predictions.parquet"
    write_predictions(pred_path, table)
    report = write_report(req.out, state, table, device.name, space)
    say(f"{state.stopped}; {len(archs)} archs measured on {device.name}")
    say(f"predictions for {len(pool)} archs: {pred_path}")
    say(f"report: {report}")
    return {"report": report, "predictions": pred_path, "model": model_path, "measurements": req.out / "measurements"}
