"""Profile a new board end to end: the predictor chooses, the harness measures, the predictor retrains.

``hwlat profile DEVICE --space nb201 --budget 60 --batch 10 --out DIR``

Every round's batch comes from the sampler (``--sampler``, default: ``predictor.samplers``' default): round 0 asks
the base predictor, to which the device is unknown, later rounds the predictor transferred to it. Each round
measures its batch through the ordinary campaign (same agent, same dataset schema, same resume), transfers the
bundled pretrained predictor to the device from every measurement so far, scores it by cross-validation on the
measured archs, and picks the next batch with that sampler. The loop stops when the budget is spent or the
predictor has converged.

Stopping rule (docs/profile.md): with at least ``min_measured`` archs measured (default 30 — below that a
cross-validated Spearman over a handful of archs is too noisy to act on), stop when the cross-validated
Spearman improved by less than ``tolerance`` (0.005) in each of the last ``patience`` (2) rounds, or, with
``target_std``, when the predictions are as sure as asked and the held-out evidence agrees: the median predicted
std of log latency over the candidate pool is at most ``target_std``, the upper end of the out-of-fold archs'
MAPE's 95 % bootstrap interval is at most ``target_std`` (as a fraction; ``hwlat.profiling.scores``), and at
least ``MIN_CV_COVERAGE`` of them lie within their predicted +-1 std (an optimistic std cannot stop the loop
alone).

Batch levels (docs/profile.md, "Off-level batches"): each batch is its own campaign session, so before a round's
transfer its drift reference level is compared with the profile's other batches (``settle_levels``); an
off-level batch is measured again (at most ``LEVEL_RETRIES`` times) and its off-level sessions are set aside:
their rows stay in the dataset and feed no fit.

Resume: the measurements folder is the source of truth, and the batch a round is about to measure is saved
in ``state.json`` before measuring; running the same command again re-plans nothing that was measured.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from agents.errors import DeviceBusyError, DeviceFailedError, UsageError
from agents.records import USABLE_STATUSES
from harness.campaign import CampaignRequest, run_campaign
from harness.compare import Baseline, lowest_level, normalize_sessions
from harness.devices import DeviceProfile
from harness.shipped import shipped_dir
from harness.store import DatasetStore, read_dataset
from hwlat.profiling.scores import bootstrap_round, cv_coverage, cv_scores
from hwlat.profiling.state import ProfileState, RoundRecord

#: Candidate pool size for spaces too large to enumerate (FBNet has 9^22 archs).
POOL_SIZE = 10000
#: A batch whose drift reference level departs from the median of the profile's other batches by more than this
#: is off-level and measured again (docs/profile.md, "Off-level batches"): nearly twice the largest departure of
#: an ordinary batch in the kept end-to-end profiles (5.7 %, 12 batches judged in order), the round rules' 10 %
#: drift threshold, and far below the 2-thread VM's slow mode (+60-83 %).
LEVEL_TOLERANCE = 0.10
#: At most this many re-measures of one batch (each costs one more campaign over the batch).
LEVEL_RETRIES = 2
#: The reference level every batch is put on before each transfer (docs/profile.md, "One reference level"):
#: the 10th percentile of the batches' reference latencies, the machine's fast state (as ``hwlat datasets
#: compare``). Chosen by measurement on the five kept end-to-end runs (benchmarks/e2e_rescore.py): mean share
#: within +-10 % of the 100 check archs 0.83 at this level, 0.63 at the latest batch's, 0.74 at the median
#: batch's (0.90 / 0.79 / 0.89 against the check put on the same level); Spearman does not depend on it.
LEVEL_BASELINE: Baseline = lowest_level
#: The columns the loop reads from a profile's rows; ``LEVEL_COLUMNS`` put batches on one reference level.
ROW_COLUMNS = ("device", "config_id", "search_space", "session_id", "arch", "status", "latency_ms", "ref_latency_ms",
               "round_ref_ms")
LEVEL_COLUMNS = ("round_ref_ms", "round_medians_ms", "round_kept", "ref_model_sha256")


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
    #: what picks every batch (``predictor.samplers``; "default" is its default)
    sampler: str = "default"
    min_measured: int = 30
    patience: int = 2
    tolerance: float = 0.005
    #: stop once the pool's median predicted std of log latency is this small (0.05: about +-5 %); None: never
    target_std: float | None = None
    folds: int = 4
    cache_dir: Path | None = None
    level_tolerance: float = LEVEL_TOLERANCE
    level_retries: int = LEVEL_RETRIES


def candidate_pool(space: str, seed: int) -> list[str]:
    """Every arch of an enumerable space; a fixed seeded sample of POOL_SIZE archs otherwise."""
    from hwlat.spaces import get_space

    sp = get_space(space)
    if sp.enumerable:
        return list(sp.all_archs())
    return sp.sample(POOL_SIZE, seed)


def profile_rows(folder: Path, device: str, config_id: str, space: str) -> list[dict[str, Any]]:
    """This device configuration's rows of the profile's measurements (the columns the loop reads)."""
    if not folder.exists():
        return []
    table = read_dataset(folder)
    if table.num_rows == 0:
        return []
    cols = [c for c in (*ROW_COLUMNS, *LEVEL_COLUMNS) if c in table.column_names]
    return [r for r in table.select(cols).to_pylist()
            if (r["device"], r["config_id"], r["search_space"]) == (device, config_id, space)]


def latencies(rows: list[dict[str, Any]], set_aside: Collection[str] = ()) -> tuple[dict[str, float], set[str]]:
    """(arch -> mean latency of its usable rows outside the set-aside sessions, every arch attempted).

    Failed and timed-out archs are spent budget but carry no latency, so they are attempted, not usable. Rows
    of a session set aside as off-level (``settle_levels``) stay in the dataset but feed no fit: averaging them
    with the same arch's re-measured rows would keep half of the level error.
    """
    sums: dict[str, list[float]] = {}
    attempted: set[str] = set()
    for row in rows:
        attempted.add(row["arch"])
        if row["session_id"] not in set_aside and row["status"] in USABLE_STATUSES and row["latency_ms"]:
            sums.setdefault(row["arch"], []).append(row["latency_ms"])
    return {arch: float(np.mean(v)) for arch, v in sums.items()}, attempted


def level_latencies(rows: list[dict[str, Any]], set_aside: Collection[str] = (),
                    baseline: Baseline = LEVEL_BASELINE) -> tuple[dict[str, float], set[str], dict[str, Any] | None]:
    """``latencies`` with every batch on one drift reference level, and what that level is.

    The usable rows outside the set-aside sessions, one frame per measuring session (in measuring order: session
    ids start with their UTC start time), go through ``harness.compare.normalize_sessions``: each kept round's
    median ``m`` becomes ``m * (baseline / round_ref_ms) ** beta``, ``beta`` fitted from the rows' own rounds,
    and an arch's latency is the mean of its rows' normalized values. The level dict (``state.json``'s
    ``level``) says which reference latency the latencies are for (``baseline_ms``, ``beta``) and how far apart
    the sessions' levels (median reference latency) were. The set-aside sessions' rows take part in fitting
    beta only (their rounds say how latencies follow the reference), neither in the baseline nor the latencies.
    When any usable row lacks round reference data (rows written before ``round_ref_ms``, or a configuration
    without a drift reference) or the rows name more than one reference model, nothing is scaled: the raw
    ``latencies`` and None, since half-normalized latencies would mix two levels.
    """
    measured, attempted = latencies(rows, set_aside)
    usable = [r for r in rows if r["status"] in USABLE_STATUSES and r["latency_ms"]]
    if not usable or any(not r.get(c) for r in usable for c in LEVEL_COLUMNS):
        return measured, attempted, None
    df = pd.DataFrame(usable)
    accepted = sorted(set(df["session_id"]) - set(set_aside))
    if not accepted:
        return measured, attempted, None
    # the set-aside sessions' rows come last: evidence for beta, but neither the baseline nor the latencies
    aside = sorted(set(df["session_id"]) & set(set_aside))
    frames, summary = normalize_sessions([df[df["session_id"] == s] for s in accepted + aside],
                                         lambda refs: baseline(refs[:len(accepted)]))
    both = pd.concat(frames[:len(accepted)])
    if len(summary["baselines"]) != 1 or both["normalized_ms"].isna().any():
        return measured, attempted, None
    levels = {s: f["median_ms"] for s, f in zip(accepted, summary["frames"], strict=False)}
    key = summary["baselines"][0]
    level = {"baseline_ms": key["baseline_ms"], "beta": key["beta"], "basis": baseline.__name__,
             "session_levels_ms": levels, "spread": max(levels.values()) / min(levels.values()) - 1.0}
    return {a: float(v) for a, v in both.groupby("arch")["normalized_ms"].mean().items()}, attempted, level


def measured_latencies(folder: Path, device: str, config_id: str, space: str,
                       set_aside: Collection[str] = ()) -> tuple[dict[str, float], set[str], dict[str, Any] | None]:
    """``level_latencies`` of the profile's rows for this device configuration."""
    return level_latencies(profile_rows(folder, device, config_id, space), set_aside)


def batch_level(rows: list[dict[str, Any]], batch: Collection[str],
                set_aside: Collection[str] = ()) -> tuple[float | None, list[str]]:
    """(drift reference level, sessions) of a batch's rows outside the set-aside sessions.

    The level is the median of the reference's latency at every round of those rows (``round_ref_ms``, kept
    and discarded rounds alike: the machine's speed while the batch ran), or of ``ref_latency_ms`` for rows
    written before rounds existed; None when the rows carry no reference figure (nothing to judge by).
    """
    refs: list[float] = []
    sessions: set[str] = set()
    for row in rows:
        if row["arch"] not in batch or row["session_id"] in set_aside:
            continue
        sessions.add(row["session_id"])
        per_round = [v for v in row.get("round_ref_ms") or [] if v]
        refs.extend(per_round or ([row["ref_latency_ms"]] if row.get("ref_latency_ms") else []))
    return (float(np.median(refs)) if refs else None), sorted(sessions)


def level_departure(level: float, others: list[float], tolerance: float) -> tuple[float, float] | None:
    """(the other batches' level, relative departure) when ``level`` is off by more than ``tolerance``.

    The other batches' level is the median of theirs, so one other off-level batch does not move it. The test
    is symmetric in ratio (a batch 10 % slower and one 1/1.1 as fast are equally off).
    """
    ref = float(np.median(others))
    if abs(math.log(level / ref)) <= math.log1p(tolerance):
        return None
    return ref, level / ref - 1


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


#: ``target_std`` stops the loop only if at least this share of the out-of-fold archs lie within their predicted
#: +-1 std (nominal 0.68). Why 0.5: with ~30 held-out archs the share itself scatters by ~0.08, so a calibrated
#: std passes; a std that claims a third of its real error (coverage ~0.25, as the transfer gives at 5 samples on
#: some devices, docs/predictor.md) does not.
MIN_CV_COVERAGE = 0.5


def cross_validate(base_path: Path, target: str, space: str, archs: list[str], lat: np.ndarray, folds: int,
                   seed: int) -> tuple[dict[str, float], dict[str, float]]:
    """Held-out predictions and their std of log latency for every measured arch (k-fold transfer), for the
    stopping rule and the report."""
    from sklearn.model_selection import KFold

    import predictor

    pred_out: dict[str, float] = {}
    std_out: dict[str, float] = {}
    for train, test in KFold(min(folds, len(archs)), shuffle=True, random_state=seed).split(archs):
        if len(train) < 2:
            continue
        model = predictor.load(base_path)
        model.transfer(target, [archs[i] for i in train], lat[train], space=space, seed=seed)
        pred, std = model.predict_with_uncertainty([archs[i] for i in test], target, space=space)
        pred_out.update({archs[i]: float(p) for i, p in zip(test, pred, strict=True)})
        std_out.update({archs[i]: float(s) for i, s in zip(test, std, strict=True)})
    return pred_out, std_out


def converged(rounds: list[RoundRecord], req: ProfileRequest) -> bool:
    """The documented stopping rule (see the module docstring)."""
    done = [r for r in rounds if r.done and r.cv_spearman is not None]
    if not done or done[-1].measured < req.min_measured or len(done) <= req.patience:
        return False
    recent = [r.cv_spearman for r in done[-(req.patience + 1):]]
    return all(b - a < req.tolerance for a, b in itertools.pairwise(recent))


def precise_enough(rounds: list[RoundRecord], req: ProfileRequest) -> str:
    """Why the ``target_std`` rule stops the loop after the last finished round, or "" (module docstring)."""
    done = [r for r in rounds if r.done]
    if req.target_std is None or not done:
        return ""
    last = done[-1]
    if last.measured < req.min_measured or None in (last.pool_std, last.cv_coverage, last.cv_mape, last.cv_mape_hi):
        return ""
    if (last.pool_std > req.target_std or last.cv_mape_hi > 100 * req.target_std
            or last.cv_coverage < MIN_CV_COVERAGE):
        return ""
    return (f"precise enough: median predicted std {last.pool_std:.3f} <= {req.target_std:g}, out-of-fold MAPE "
            f"{last.cv_mape:.1f}% (95% interval up to {last.cv_mape_hi:.1f}%), {last.cv_coverage:.0%} of the "
            f"out-of-fold archs within their +-1 std")


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
    from predictor.samplers import SAMPLERS

    if req.budget < 2 or req.batch < 1:
        raise UsageError("--budget must be >= 2 and --batch >= 1")
    if req.sampler not in (*SAMPLERS, "default"):
        raise UsageError(f"unknown sampler {req.sampler!r}; choose from {', '.join((*SAMPLERS, 'default'))}")
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

    def measure(rnd: RoundRecord) -> None:
        """Measure what the round's batch lacks: archs without any row, or (once a session of the batch was
        set aside) without a row outside the set-aside sessions, as a new session of their own."""
        set_aside = state.set_aside()
        rows = profile_rows(meas_dir, device.name, config_id, space)
        have = {r["arch"] for r in rows if not rnd.set_aside or r["session_id"] not in set_aside}
        archs = [a for a in rnd.batch if a not in have]
        if not archs:
            return
        with progress_factory() as progress:
            result = run_campaign(CampaignRequest(devices=[device], out=meas_dir, space=space, archs=archs,
                                                  seed=req.seed + rnd.round, cache_dir=req.cache_dir,
                                                  remeasure=bool(rnd.set_aside)),
                                  progress=progress, on_row=on_row)
        failed = [o for o in result.outcomes if o.error]
        if failed:
            raise (DeviceBusyError if failed[0].busy else DeviceFailedError)(
                f"measuring on {device.name} failed: {failed[0].error}")
        if req.dataset is not None:
            sync_rows(meas_dir, req.dataset)

    while True:
        measured, attempted, _level = measured_latencies(meas_dir, device.name, config_id, space,
                                                         state.set_aside())
        pending = state.rounds[-1] if state.rounds and not state.rounds[-1].done else None
        if pending is None:
            if state.stopped:
                break
            remaining = req.budget - len(attempted)
            if remaining <= 0:
                state.stopped = f"budget of {req.budget} measurements spent"
            elif converged(state.rounds, req):
                state.stopped = "converged: cross-validated Spearman stopped improving"
            else:
                state.stopped = precise_enough(state.rounds, req)
            if state.stopped:
                state.save(state_path)
                break
            n = min(req.batch, remaining)
            r = len(state.rounds)
            # the sampler is asked of the base model while fewer than 2 archs are measured (the device is unknown
            # to it: for ``variance`` the sources' prior plans the batch), then of the model transferred to the device
            model = base if len(measured) < 2 else device_model(req, base_path, model_path, target, space, measured)
            batch = model.suggest(target, n, req.sampler, measured=attempted, candidates=pool, space=space,
                                  seed=req.seed + r)
            pending = RoundRecord(r, req.sampler, batch)
            state.rounds.append(pending)
            state.save(state_path)
        say(f"round {pending.round}: measuring {len(pending.batch)} archs chosen by the {pending.sampler} sampler "
            f"({len(attempted)}/{req.budget} measured so far)")

        measure(pending)
        settle_levels(state, pending, lambda: profile_rows(meas_dir, device.name, config_id, space), measure, say,
                      lambda: state.save(state_path), req.level_tolerance, req.level_retries)
        measured, attempted, state.level = measured_latencies(meas_dir, device.name, config_id, space,
                                                              state.set_aside())
        archs = list(measured)
        if len(archs) < 2:
            raise UsageError(f"only {len(archs)} of {len(attempted)} archs could be measured on {device.name}; "
                             f"see the error column in {meas_dir}")
        lat = np.array([measured[a] for a in archs])
        cv, cv_std = cross_validate(base_path, target, space, archs, lat, req.folds, req.seed) \
            if len(archs) >= 4 else ({}, {})
        rho, tau, mape = cv_scores(cv, measured)
        model = predictor.load(base_path)
        info = model.transfer(target, archs, lat, space=space, seed=req.seed)
        model.save(model_path)
        pending.measured, pending.cv_spearman, pending.cv_kendall = len(attempted), rho, tau
        pending.cv_mape, pending.best_source, pending.cv_pred = mape, str(info.get("best_source", "")), cv
        pending.cv_std, pending.cv_coverage = cv_std, cv_coverage(cv, cv_std, measured)
        pending.cv_mape_hi = bootstrap_round(cv, measured, seed=pending.round).get("mape_hi")
        if req.target_std is not None:  # the whole pool's prediction: only when the rule needs it
            pending.pool_std = float(np.median(model.predict_with_uncertainty(pool, target, space=space)[1]))
        pending.done = True
        state.save(state_path)
        quality = "too few for cross-validation" if rho is None else \
            f"cross-validated Spearman {rho:.3f}, Kendall {tau:.3f}, MAPE {mape:.1f}%, " \
            f"{pending.cv_coverage:.0%} within their predicted +-1 std"
        if pending.pool_std is not None:
            quality += f"; median predicted std over the pool {pending.pool_std:.3f}"
        say(f"round {pending.round}: {len(attempted)} measured, {quality}; closest source device "
            f"{pending.best_source}")

    measured, _attempted, state.level = measured_latencies(meas_dir, device.name, config_id, space,
                                                           state.set_aside())
    state.save(state_path)
    model = device_model(req, base_path, model_path, target, space, measured)
    return finish(req, state, model, model_path, target, space, pool, device, measured, say)


def settle_levels(state: ProfileState, pending: RoundRecord, rows: Callable[[], list[dict[str, Any]]],
                  measure: Callable[[RoundRecord], None], say: Callable[[str], None], save: Callable[[], None],
                  tolerance: float, retries: int) -> None:
    """Check the just-measured batch's drift reference level against the profile's other batches; repair it.

    Each batch is its own campaign session, and the drift correction inside a session cannot see a session
    measured entirely on a slower machine (its first reference is already slow). So the batch's level (see
    ``batch_level``) is compared with the median level of the other batches; an off-level batch (beyond
    ``tolerance``) has its sessions set aside (``RoundRecord.set_aside``: rows kept, left out of the fit) and is
    measured again as a new session, at most ``retries`` times; then the latest is kept, said in the output and
    the round's ``level_notes``. With one earlier batch only, the two cannot say which is off: the new batch is
    re-measured first, and if all its sessions agree with each other (``retries`` + 1 against 1), the earlier
    batch is the odd one out and is re-measured in turn, against the new batch's level.

    Resumable: state is saved before every re-measure, and a batch whose set-aside sessions have no accepted
    successor yet (``ref_level_ms`` None) is measured and judged again on the next run.
    """
    data = rows()
    for r in state.rounds:  # rounds finished before this check existed (an older state.json) get their level
        if r.done and r.ref_level_ms is None and not r.set_aside:
            r.ref_level_ms, r.sessions = batch_level(data, set(r.batch), state.set_aside())
    todo = [r for r in state.rounds if r.ref_level_ms is None and (r is pending or r.set_aside)]

    def accept(rnd: RoundRecord, level: float | None, sessions: list[str], note: str = "") -> None:
        rnd.ref_level_ms, rnd.sessions = level, sessions
        if note:
            rnd.level_notes.append(note)
            say(note)
        save()

    def set_aside(rnd: RoundRecord, sessions: list[str], level: float, why: str) -> None:
        """Set the batch's sessions aside (rows kept, left out of the fit) and queue its re-measure."""
        rnd.set_aside.update(dict.fromkeys(sessions, why))
        rnd.attempt_levels.append(level)
        rnd.remeasures += 1
        note = (f"round {rnd.round}: batch off-level ({why}); measuring it again as a new session "
                f"({rnd.remeasures} of {retries}), its rows kept but left out of the fit")
        rnd.level_notes.append(note)
        say(note)
        save()

    while todo:
        rnd = todo[0]
        measure(rnd)
        level, sessions = batch_level(rows(), set(rnd.batch), state.set_aside())
        others = [r.ref_level_ms for r in state.rounds if r is not rnd and r.ref_level_ms is not None]
        off = level_departure(level, others, tolerance) if level is not None and others else None
        if off is None:
            accept(rnd, level, sessions)
            todo.pop(0)
            continue
        ref, dev = off
        why = f"drift reference {level:.3f} ms, {dev:+.0%} against the profile's other batches ({ref:.3f} ms)"
        if rnd.remeasures < retries:
            set_aside(rnd, sessions, level, why)
            continue
        attempts = [*rnd.attempt_levels, level]
        agree = max(attempts) / min(attempts) <= 1 + tolerance
        earlier = next(r for r in state.rounds if r is not rnd and r.ref_level_ms is not None) \
            if len(others) == 1 else None
        if earlier is not None and agree and earlier.remeasures < retries:
            rnd.set_aside.clear()  # its sessions agree with each other: every one of them counts again
            level, sessions = batch_level(rows(), set(rnd.batch), state.set_aside())
            accept(rnd, level, sessions, f"round {rnd.round}: kept at {level:.3f} ms: its {len(attempts)} sessions "
                                         f"agree, so round {earlier.round} ({ref:.3f} ms) is the odd one out")
            why_e = (f"drift reference {ref:.3f} ms, {ref / level - 1:+.0%} against round {rnd.round}'s "
                     f"{len(attempts)} sessions ({level:.3f} ms)")
            sessions_e = earlier.sessions
            earlier.ref_level_ms, earlier.sessions = None, []
            set_aside(earlier, sessions_e, ref, why_e)
            todo[0] = earlier
            continue
        accept(rnd, level, sessions, f"round {rnd.round}: kept although off-level ({why}): its {retries} "
                                     "re-measures are spent")
        todo.pop(0)


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
    from hwlat.profiling.report import level_line, write_report
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
    remeasured = [r for r in state.rounds if r.remeasures]
    if remeasured:
        say(f"{len(remeasured)} batch(es) measured again for an off-level drift reference (rows of "
            f"{len(state.set_aside())} set-aside session(s) kept in measurements/, left out of the fit; state.json):")
        for r in remeasured:
            say(f"  round {r.round}: {'; '.join(r.level_notes)}")
    if state.level is not None:
        say(level_line(state.level))
    else:  # say so: a reader of the report or the predictions must not assume one level
        say("predictions are for the batches as measured, not put on one drift reference level: their rows carry "
            "no round reference data or name more than one reference model (docs/profile.md, \"One reference level\")")
    say(f"predictions for {len(pool)} archs: {pred_path}")
    say(f"report: {report}")
    return {"report": report, "predictions": pred_path, "model": model_path, "measurements": req.out / "measurements"}
