"""Plain records that cross the wire between the coordinator and the agent.

Everything here is standard library only: the agent runs on a Raspberry Pi with nothing but
Python, numpy and a runtime, and the coordinator imports these same classes so both sides agree
on one shape. Only JSON crosses the wire (``to_json``/``from_json``), never pickle.

Flow: the coordinator writes a ``RunSpec`` (``jobs.json``) into a run directory on the device;
the agent appends one JSON line per event to ``journal.jsonl`` in that directory:
``{"type": "fingerprint", ...}`` once per agent start, ``{"type": "result", ...}`` once per job
(a ``MeasureResult``) and ``{"type": "done"}`` when every job has a result.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any

#: Job outcome. ``ok``: stable measurement. ``unstable``: measured, but the spread is too large
#: to trust (pyperf's rule). ``failed``: could not load or run (includes a crashed runtime).
#: ``timeout``: exceeded the per-model time limit and was killed. ``export_failed``: the coordinator could
#: not export the model, so no device saw it (written by the coordinator, never by an agent).
STATUSES = ("ok", "unstable", "failed", "timeout", "export_failed")
#: The statuses an agent may report in a result (``agents.journal`` rejects any other).
AGENT_STATUSES = ("ok", "unstable", "failed", "timeout")
#: What a run id may look like: it names a folder on the device, so no separators, no leading dot.
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
#: Statuses whose ``latency_ms`` trains predictors and counts as measured in ``hwlat profile``. An
#: ``unstable`` row's median is still a robust estimate (its CI is in the row): dropping such rows would bias a
#: dataset against the archs that are noisy to time (docs/timing.md). Every reader decides with this tuple.
USABLE_STATUSES = ("ok", "unstable")


@dataclass
class TimingConfig:
    """Timing protocol knobs; defaults are documented in docs/timing.md.

    Warm-up runs until both ``warmup_min_runs`` and ``warmup_min_s`` are met (capped by
    ``warmup_max_runs``). Timed runs continue until ``min_runs`` and ``min_time_s`` are met, then
    stop as soon as the 95% CI of the median is within ``ci_rel_target`` of the median, or at
    ``max_runs`` / ``max_time_s``.
    """

    warmup_min_runs: int = 10
    warmup_min_s: float = 0.035
    warmup_max_runs: int = 1000
    min_runs: int = 10
    min_time_s: float = 0.5
    max_runs: int = 667
    max_time_s: float = 3.4
    ci_rel_target: float = 0.01
    unstable_cv: float = 0.10
    seed: int = 0
    #: seconds to wait before every model (0 = none); see agents/cooldown.py and docs/timing.md
    cooldown_s: float = 0.0
    #: then wait until the hottest thermal zone is below this many °C (0 = off) ...
    cooldown_below_c: float = 0.0
    #: ... for at most this many seconds
    cooldown_max_s: float = 300.0
    #: start a new worker process before every job (one process per round; docs/timing.md, "Rounds")
    fresh_worker: bool = False
    # The keys below are read by the coordinator only (harness/plan.py, harness/rounds.py): how a model's
    # measurement is spread over the campaign and repaired when it was disturbed. The agent ignores them.
    #: separate sessions (rounds) per model, spread over the campaign; each round is one job timed under the
    #: warm-up and stopping rules above, so ``min_time_s``/``min_runs``/``max_time_s`` are per round
    rounds: int = 3
    #: most rounds of one model re-measured because they were disturbed (0 = never re-measure)
    remeasure_max: int = 2
    #: a round whose median is this many % off the median of the model's rounds is disturbed
    remeasure_far_pct: float = 10.0
    #: a round during which other processes used more than this % of the worker's CPUs is disturbed (100 = never)
    remeasure_busy_pct: float = 25.0
    #: a round between two reference measurements that differ by more than this % is disturbed
    remeasure_drift_pct: float = 10.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TimingConfig:
        return _from_dict(cls, data)


@dataclass
class RuntimeConfig:
    """How the runtime is set up on the device (from the device profile).

    ``providers``/``provider_options`` are onnxruntime execution providers in priority order;
    LiteRT and ExecuTorch use ``threads`` only; OpenVINO ``device``/``streams``/``*_hint``; torch
    ``device``/``compile``. ``threads`` is the intra-op thread count (0 = runtime default).
    """

    runtime: str = "onnxruntime"
    providers: list[str] = field(default_factory=lambda: ["CPUExecutionProvider"])
    provider_options: list[dict[str, Any]] = field(default_factory=list)
    threads: int = 1
    inter_op_threads: int = 1
    graph_optimization_level: str = "all"
    execution_mode: str = "sequential"
    #: onnxruntime custom-op shared libraries (``SessionOptions.register_custom_ops_library``),
    #: registered in every session of the run; relative paths are relative to the agent workdir.
    custom_op_libraries: list[str] = field(default_factory=list)
    #: OpenVINO device (CPU, GPU, NPU, AUTO; GPU.1 picks one of several) or torch device (cpu, cuda,
    #: cuda:1); "" = the runtime's default (OpenVINO CPU, torch cpu).
    device: str = ""
    #: OpenVINO NUM_STREAMS (0 = OpenVINO's choice for the performance hint); 1 for latency.
    streams: int = 1
    #: OpenVINO PERFORMANCE_HINT: LATENCY, THROUGHPUT, CUMULATIVE_THROUGHPUT or "" (none).
    performance_hint: str = "LATENCY"
    #: OpenVINO INFERENCE_PRECISION_HINT: f32, f16, bf16 or "" (the device's default, which is bf16
    #: on CPUs with AMX/AVX512-BF16 and f16 on GPUs: say f32 to time what the model says).
    precision_hint: str = ""
    #: torch: run the exported program through ``torch.compile`` (inductor) instead of eagerly.
    compile: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RuntimeConfig:
        return _from_dict(cls, data)


@dataclass
class Job:
    """One model to time. ``model_path`` is relative to the agent workdir or absolute."""

    job_id: str
    model_path: str
    sha256: str
    format: str = "onnx"
    role: str = "candidate"
    #: {input name: shape} to feed; sizes the model's dynamic dimensions (its fixed ones must agree).
    #: Empty: the model's own shapes (dynamic dimensions pinned to 1; the coordinator never sends a model
    #: with dynamic dimensions without sizes, see harness/onnx_files.py).
    input_shapes: dict[str, list[int]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        return _from_dict(cls, data)


@dataclass
class RunSpec:
    """Everything the agent needs for one run: written once as ``jobs.json``."""

    run_id: str
    runtime: RuntimeConfig
    timing: TimingConfig
    jobs: list[Job]
    timeout_s: float = 300.0
    env: dict[str, str] = field(default_factory=dict)
    cpu_affinity: list[int] = field(default_factory=list)
    #: after each job's timed loop, one extra profiled inference records per-operator times (``op_times``)
    op_profile: bool = False

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        data = json.loads(text)
        return cls(
            run_id=data["run_id"],
            runtime=RuntimeConfig.from_dict(data.get("runtime", {})),
            timing=TimingConfig.from_dict(data.get("timing", {})),
            jobs=[Job.from_dict(j) for j in data.get("jobs", [])],
            timeout_s=float(data.get("timeout_s", 300.0)),
            env=dict(data.get("env", {})),
            cpu_affinity=list(data.get("cpu_affinity", [])),
            op_profile=bool(data.get("op_profile", False)),
        )


@dataclass
class MeasureResult:
    """One job's outcome: every timed run kept, the summary statistics, and the system state.

    ``system_before``/``system_after`` are flat dicts from ``agents.system.snapshot`` (keys such
    as ``load1``, ``mem_available_mb``, ``cpu_freq_mhz``, ``temp_c``, ``governor``, ``busy_pct``).
    """

    job_id: str
    sha256: str
    role: str
    status: str
    error: str = ""
    error_type: str = ""
    runtime: str = ""
    runtime_version: str = ""
    provider: str = ""
    threads: int = 0
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    input_dtypes: dict[str, str] = field(default_factory=dict)
    load_ms: float | None = None
    first_ms: float | None = None
    warmup_runs: int = 0
    raw_ms: list[float] = field(default_factory=list)
    n_runs: int = 0
    median_ms: float | None = None
    mean_ms: float | None = None
    std_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    cv: float | None = None
    robust_cv: float | None = None
    ci95_low_ms: float | None = None
    ci95_high_ms: float | None = None
    n_outliers: int = 0
    stop_reason: str = ""
    started_at: str = ""
    finished_at: str = ""
    system_before: dict[str, Any] = field(default_factory=dict)
    system_after: dict[str, Any] = field(default_factory=dict)
    #: worker RSS when the model started loading and its high-water mark through the timed loop (agents/memory.py)
    base_rss_mb: float | None = None
    peak_rss_mb: float | None = None
    #: seconds the supervisor waited before the model (cooldown) and the hottest temperature it started at
    cooldown_s: float | None = None
    start_temp_c: float | None = None
    #: ``RunSpec.op_profile``: one dict per operator (op_name, op_type, provider, duration_us), or why not
    op_times: list[dict[str, Any]] = field(default_factory=list)
    op_profile_error: str = ""

    def to_json(self) -> str:
        return json.dumps({"type": "result", **dataclasses.asdict(self)}, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MeasureResult:
        return _from_dict(cls, data)


def _from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build a dataclass from a dict, ignoring unknown keys so old agents and new coordinators
    (or the reverse) can still talk."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})
