"""Planning a campaign: what to measure, on which device configuration, in which order.

* ``CampaignRequest``: everything ``hwlat measure`` asks for, after argument parsing.
* ``plan_models``: the candidate archs (sampled, from a file, or the user's ONNX files), validated before
  anything is written or measured.
* ``export_plan``: torch -> ONNX/TFLite through the content-addressed cache; a model whose export fails is
  an ``ExportFailure`` (one failure row per device later), not the end of the campaign.
* ``pending``: resume, i.e. drop what the dataset already holds for a device and configuration.
* ``plan_order``: each device's jobs in one order (shuffled, a drift reference every K models).
"""

from __future__ import annotations

import dataclasses
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.errors import UsageError
from agents.records import USABLE_STATUSES, RuntimeConfig
from agents.runtimes import FORMAT_RUNTIMES
from harness.devices import DeviceProfile
from harness.export import ExportFailure
from harness.records import ModelArtifact, ModelSpec
from harness.store import DONE_STATUSES, DatasetStore, MeasuredKey

if TYPE_CHECKING:
    from harness.onnx_files import ShapeRequest

#: Largest chunk of jobs (candidates and references) one agent run measures on a remote device. Each chunk
#: costs one agent start (Python, numpy and the runtime imported again: seconds on a Pi) and a journal poll
#: interval; 32 jobs of >= 1.6 s each keep that under ~10% on a Pi and a few % on a PC, while the next
#: chunk's upload (32 models) still finishes long before the current one is measured on any usual link.
CHUNK_JOBS = 32


@dataclass
class CampaignRequest:
    """Everything ``hwlat measure`` asks for, after argument parsing."""

    devices: list[DeviceProfile]
    out: Path
    space: str = "nb201"
    count: int | None = None
    seed: int = 0
    archs: list[str] | None = None
    models_dir: Path | None = None
    fmt: str | None = None
    threads: int | None = None
    batch: int = 1
    #: None: each arch's own resolution (OFA) or the space's default (32 for nb201/fbnet, 224 for autoformer)
    resolution: int | None = None
    remeasure: bool = False
    retry_failed: bool = False
    reference_every: int = 10
    cache_dir: Path | None = None
    workers: int | None = None
    max_reconnect_s: float = 300.0
    #: largest chunk of jobs per agent run on a remote device (see ``CHUNK_JOBS``)
    chunk_jobs: int = CHUNK_JOBS
    #: input sizes for ``models_dir`` (``--input-shape``, and ``--batch``/``--resolution`` when given)
    shapes: ShapeRequest | None = None
    #: one extra profiled inference per model after its timed loop -> ``DIR/_ops/`` (harness/ops.py)
    op_profile: bool = False


def configure_device(profile: DeviceProfile, fmt: str | None, threads: int | None) -> DeviceProfile:
    """Apply ``--format`` / ``--threads`` overrides: a new configuration of the same device."""
    runtime = dataclasses.replace(profile.runtime)
    new_fmt = profile.format
    if fmt is not None and fmt != profile.format:
        if fmt not in FORMAT_RUNTIMES:
            raise UsageError(f"unknown format {fmt!r} (known: {', '.join(FORMAT_RUNTIMES)})")
        # the profile's providers/device mean nothing to another runtime: that runtime's defaults
        defaults = RuntimeConfig()
        runtime.runtime, runtime.device = FORMAT_RUNTIMES[fmt], defaults.device
        runtime.providers = list(defaults.providers) if runtime.runtime == "onnxruntime" else []
        runtime.provider_options = []
        new_fmt = fmt
    if threads is not None:
        if threads < 0:
            raise UsageError("--threads must be >= 0 (0 = runtime default)")
        runtime.threads = threads
    return dataclasses.replace(profile, runtime=runtime, format=new_fmt)


def plan_specs(req: CampaignRequest) -> tuple[list[ModelSpec], ModelSpec]:
    """Candidate model specs and the session's reference model, all validated before anything runs."""
    from hwlat.spaces import get_space

    space = get_space(req.space)
    if req.archs is not None:
        archs = []
        seen = set()
        for arch in req.archs:
            canonical = space.validate(arch)
            if canonical not in seen:
                seen.add(canonical)
                archs.append(canonical)
    else:
        count = 10 if req.count is None else req.count
        if count < 1:
            raise UsageError("--count must be at least 1")
        archs = space.sample(count, req.seed)
    specs = [ModelSpec(space.name, a, req.batch, space.resolution_for(a, req.resolution), space.arch_index(a))
             for a in archs]
    ref_arch = space.sample(1, seed=2**31 - 1)[0]
    reference = ModelSpec(space.name, ref_arch, req.batch, space.resolution_for(ref_arch, req.resolution),
                          space.arch_index(ref_arch))
    for resolution in sorted({s.resolution for s in [*specs, reference]}):
        space.check_input(req.batch, resolution)  # refused here, before the dataset folder is created
    return specs, reference


@dataclass
class ModelPlan:
    """What a campaign will measure, validated before anything is written or measured."""

    specs: list[ModelSpec]
    reference: ModelSpec | None
    user_models: list[ModelArtifact] | None = None


def plan_models(req: CampaignRequest) -> ModelPlan:
    """Validate the request's models: arch strings, space name, or the user's ONNX files."""
    if req.models_dir is not None:
        from harness.onnx_files import scan_models

        return ModelPlan([], None, scan_models(req.models_dir, req.shapes))  # scan_models refuses an empty folder
    specs, reference = plan_specs(req)
    return ModelPlan(specs, reference)


@dataclass
class Exported:
    """One format's exports: the candidates that exist, the reference, and the models that failed."""

    candidates: list[ModelArtifact]
    reference: ModelArtifact | None
    failures: list[ExportFailure] = dataclasses.field(default_factory=list)


def default_cache_dir() -> Path:
    """Export cache shared by every dataset folder of this user ($HWLAT_CACHE overrides)."""
    return Path(os.environ.get("HWLAT_CACHE", "~/.cache/hwlat/exports")).expanduser()


def export_plan(req: CampaignRequest, plan: ModelPlan, formats: set[str], progress: Any) -> dict[str, Exported]:
    """Candidates and reference per format: exported from a space, or the user's ONNX files as they are.

    A candidate whose export fails is kept as an ``ExportFailure`` and the others go on; a failed reference
    export means no drift reference for that format (the candidates are still measured).
    """
    if plan.user_models is not None:
        if formats != {"onnx"}:
            raise UsageError("--models DIR holds ONNX files: every device must run onnxruntime (format onnx)")
        return {"onnx": Exported(plan.user_models, plan.user_models[0])}
    from harness.export import export_models

    out: dict[str, Exported] = {}
    specs = [*plan.specs, plan.reference] if plan.reference is not None else plan.specs
    for fmt in sorted(formats):
        task = progress.add_task(f"export {fmt}", total=len(specs)) if progress is not None else None

        def advance(_art: ModelArtifact | ExportFailure, task: Any = task) -> None:
            if progress is not None:
                progress.advance(task)

        arts = export_models(specs, fmt, req.cache_dir or default_cache_dir(), workers=req.workers,
                             progress=advance, keep_going=True)
        reference = arts.pop() if plan.reference is not None else None
        out[fmt] = Exported([a for a in arts if isinstance(a, ModelArtifact)],
                            reference if isinstance(reference, ModelArtifact) else None,
                            [a for a in arts if isinstance(a, ExportFailure)])
    return out


def pending(store: DatasetStore, device: DeviceProfile, candidates: list[ModelArtifact],
            req: CampaignRequest) -> list[ModelArtifact]:
    """Resume: the candidates the dataset does not hold yet for this device and configuration, by the network
    measured (``ModelArtifact.key``: one file at two input shapes is two candidates); rounds of them measured by a
    killed campaign are found by ``harness.rounds.load_rounds``."""
    if req.remeasure:
        return list(candidates)
    statuses = DONE_STATUSES if not req.retry_failed else USABLE_STATUSES
    done = store.measured_keys(device.name, statuses)
    return [a for a in candidates if MeasuredKey(device.name, device.config_id(), a.key) not in done]


@dataclass(frozen=True)
class Slot:
    """One place in a device's measuring order: a job id, its role and the model, not yet on the device."""

    job_id: str
    role: str
    art: ModelArtifact


def plan_order(candidates: list[ModelArtifact], reference: ModelArtifact | None, seed: int,
               every: int, prefix: str = "") -> list[Slot]:
    """Shuffle candidates (seeded) and insert the reference model first, every ``every`` models, and last.

    The order is decided once per device and pass, before any chunking, so the drift references keep their
    places whatever the chunk size. ``prefix`` keeps job ids unique across a campaign's passes (rounds).
    """
    order = list(candidates)
    random.Random(seed).shuffle(order)
    slots: list[Slot] = []

    def add_reference() -> None:
        if reference is not None:
            ref_count = sum(1 for s in slots if s.role == "reference")
            slots.append(Slot(f"{prefix}r{ref_count:04d}-{reference.sha256[:12]}", "reference", reference))

    add_reference()
    for i, art in enumerate(order):
        if every > 0 and i > 0 and i % every == 0:
            add_reference()
        slots.append(Slot(f"{prefix}c{i:05d}-{art.sha256[:12]}", "candidate", art))
    if order:
        add_reference()
    return slots


