"""The journal's one line parser and one event schema, shared by the agent and every transport.

Everything a device sends is untrusted input: a broken board, a full disk, a buggy runtime or a hostile
device can write anything into ``journal.jsonl`` or print anything as a reply. So there is exactly one way
to read it, with one policy:

* **Lines**: a journal is JSON lines. A line without its newline is torn (its writer died mid-write) and
  is not a line yet: the agent cuts it before appending, a reader waits for the rest. A line longer than
  ``MAX_LINE_BYTES`` is an error, found after reading at most ``MAX_LINE_BYTES + 1`` bytes, so a runaway
  writer cannot make the coordinator hold hundreds of MB.
* **Corrupt line policy**: a complete line that is not a JSON object with a string ``type`` (or holds
  ``NaN``/``Infinity``, which strict JSON has not) raises ``ProtocolError`` naming the byte offset. Nobody
  skips it silently: the agent refuses to resume on such a journal, the coordinator fails that device.
* **Events**: ``validate_event`` checks a parsed event against the run it belongs to (``RunSpec``):
  known types, field types, ranges, known job ids with their model hash and role, and results whose
  summary agrees with their samples and with the run's timing limits. A result that fails is never
  stored as a measurement.

Standard library only, and Python 3.8 compatible: it runs on the board inside the agent.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
from collections.abc import Iterator, Mapping
from typing import Any

from agents.errors import ProtocolError
from agents.records import AGENT_STATUSES, Job, MeasureResult, RunSpec

#: Longest journal line (or agent reply) accepted, newline included. A result line holds every timed
#: sample (~20 bytes each): 8 MiB is ~400k samples, 200x the default ``max_runs``.
MAX_LINE_BYTES = 8 << 20
#: Longest text field in an event (errors carry a stderr tail of 2000 characters).
MAX_TEXT = 20_000
EVENT_TYPES = ("fingerprint", "result", "done")

_ISO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})?$")
_TEXT_FIELDS = ("error", "error_type", "runtime", "runtime_version", "provider", "stop_reason")
_COUNT_FIELDS = ("threads", "warmup_runs", "n_runs", "n_outliers")
_MS_FIELDS = ("load_ms", "first_ms", "median_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "p90_ms",
              "p99_ms", "ci95_low_ms", "ci95_high_ms")
_RATIO_FIELDS = ("cv", "robust_cv", "base_rss_mb", "peak_rss_mb", "cooldown_s")
#: Most operator records one result may carry (``--op-profile``); a real network has hundreds, not millions.
MAX_OP_TIMES = 100_000
_STOP_REASONS = ("ci", "max_runs", "max_time")
_FINGERPRINT_TEXT = ("host", "cpu_model", "os", "machine", "board", "python_version", "agent_version")
_FINGERPRINT_COUNTS = ("cores_logical", "cores_physical", "ram_mb")


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number in strict JSON")


def loads_strict(text: str | bytes) -> Any:
    """``json.loads`` without the ``NaN``/``Infinity`` extension Python accepts by default."""
    return json.loads(text, parse_constant=_reject_constant)


def split_lines(data: bytes, offset: int = 0) -> tuple[list[bytes], int]:
    """The complete lines at the start of ``data`` and how many bytes they span.

    A torn tail is left for the next read. Raises ``ProtocolError`` if a line runs past ``MAX_LINE_BYTES``
    (``offset`` is where ``data`` starts in the file, for the message). Blank lines are dropped.
    """
    end = data.rfind(b"\n") + 1
    tail = len(data) - end
    if tail > MAX_LINE_BYTES:
        raise ProtocolError(f"journal line at byte {offset + end} is longer than {MAX_LINE_BYTES} bytes")
    lines = []
    start = 0
    while start < end:
        stop = data.index(b"\n", start) + 1
        if stop - start > MAX_LINE_BYTES:
            raise ProtocolError(f"journal line at byte {offset + start} is longer than {MAX_LINE_BYTES} bytes")
        if data[start:stop].strip():
            lines.append(data[start:stop])
        start = stop
    return lines, end


def parse_line(line: bytes, where: str = "journal line") -> dict[str, Any]:
    """One JSON-lines event: an object with a string ``type``; anything else raises ``ProtocolError``."""
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolError(f"{where} is longer than {MAX_LINE_BYTES} bytes")
    try:
        event = loads_strict(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"{where} is not valid JSON ({exc}): {_show(line)}") from None
    if not isinstance(event, dict):
        raise ProtocolError(f"{where} is a JSON {type(event).__name__}, not an object: {_show(line)}")
    if not isinstance(event.get("type"), str):
        raise ProtocolError(f"{where} has no string 'type': {_show(line)}")
    return event


def iter_lines(data: bytes, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """``split_lines`` then ``parse_line`` on each: the events of ``data`` and the bytes they span."""
    lines, end = split_lines(data, offset)
    events = []
    position = offset
    for line in lines:
        events.append(parse_line(line, f"journal line at byte {position}"))
        position += len(line)
    return events, end


def iter_journal(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Every event of a journal file, streamed (a long run's journal can be hundreds of MB; lines are
    read one at a time, each at most ``MAX_LINE_BYTES``). A torn last line ends the stream; a missing
    file has no events; a corrupt line raises ``ProtocolError``."""
    if not os.path.exists(path):
        return
    with open(path, "rb") as fh:
        position = 0
        while True:
            line = fh.readline(MAX_LINE_BYTES + 1)
            if not line.endswith(b"\n"):
                if len(line) > MAX_LINE_BYTES:
                    raise ProtocolError(f"{path}: line at byte {position} is longer than {MAX_LINE_BYTES} bytes")
                return  # end of file, or a torn tail
            if line.strip():
                yield parse_line(line, f"{path}: line at byte {position}")
            position += len(line)


def read_journal(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All events of a journal file (see ``iter_journal``)."""
    return list(iter_journal(path))


def reply_object(text: str, what: str) -> dict[str, Any]:
    """The JSON object an agent command printed as its last line (size-bounded, strict)."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        raise ProtocolError(f"{what} printed no JSON")
    last = lines[-1].encode("utf-8", errors="replace")
    if len(last) > MAX_LINE_BYTES:
        raise ProtocolError(f"{what} reply is longer than {MAX_LINE_BYTES} bytes")
    try:
        reply = loads_strict(last)
    except ValueError as exc:
        raise ProtocolError(f"{what} printed no JSON ({exc}): {_show(last)}") from None
    if not isinstance(reply, dict):
        raise ProtocolError(f"{what} replied with a JSON {type(reply).__name__}, not an object: {_show(last)}")
    return reply


# ---------------------------------------------------------------------------------------- event schema
def validate_event(event: dict[str, Any], spec: RunSpec) -> Any:
    """Check one parsed event of ``spec``'s journal; returns the event, or a ``MeasureResult`` for a result.

    Raises ``ProtocolError`` with the reason for anything that does not fit the schema.
    """
    kind = event.get("type")
    if kind == "result":
        jobs = {job.job_id: job for job in spec.jobs}
        return validate_result(event, jobs, spec)
    if kind == "fingerprint":
        return validate_fingerprint(event)
    if kind == "done":
        if event.get("run_id") != spec.run_id:
            raise ProtocolError(f"'done' names run {_show(event.get('run_id'))}, expected {spec.run_id}")
        return event
    raise ProtocolError(f"unknown event type {_show(kind)} (known: {', '.join(EVENT_TYPES)})")


def validate_fingerprint(event: dict[str, Any]) -> dict[str, Any]:
    """The fingerprint fields that become columns must have their column's type."""
    for key in _FINGERPRINT_TEXT:
        _optional_text(event, key, "fingerprint")
    for key in _FINGERPRINT_COUNTS:
        value = event.get(key)
        if value is not None and not (_is_int(value) and 0 <= value < 2**53):
            raise ProtocolError(f"fingerprint field {key!r} must be a non-negative integer, got {_show(value)}")
    gpus = event.get("gpus")
    if gpus is not None and not isinstance(gpus, list):
        raise ProtocolError(f"fingerprint field 'gpus' must be a list, got {_show(gpus)}")
    warnings = event.get("warnings", [])
    if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
        raise ProtocolError(f"fingerprint field 'warnings' must be a list of strings, got {_show(warnings)}")
    return event


def validate_result(event: dict[str, Any], jobs: Mapping[str, Job], spec: RunSpec | None = None) -> MeasureResult:
    """A result: a job of this run, its model and role, a known status, and numbers that can be true.

    ``spec`` (when given) supplies the timing limits the samples must respect. The summary statistics must
    agree with ``raw_ms`` (median, min, max), so a forged median cannot pass with real-looking samples.
    """
    job_id = event.get("job_id")
    if not isinstance(job_id, str) or job_id not in jobs:
        raise ProtocolError(f"result for job {_show(job_id)}, which this run did not send")
    where = f"result of job {job_id}"
    job = jobs[job_id]
    if event.get("sha256") != job.sha256:
        raise ProtocolError(f"{where}: sha256 {_show(event.get('sha256'))} is not the job's model {job.sha256}")
    if event.get("role") != job.role:
        raise ProtocolError(f"{where}: role {_show(event.get('role'))} is not the job's role {job.role!r}")
    status = event.get("status")
    if status not in AGENT_STATUSES:
        raise ProtocolError(f"{where}: status {_show(status)} is not one of {', '.join(AGENT_STATUSES)}")
    for key in _TEXT_FIELDS:
        _optional_text(event, key, where)
    for key in ("started_at", "finished_at"):
        value = event.get(key, "")
        if not isinstance(value, str) or (value and not _ISO_RE.match(value)):
            raise ProtocolError(f"{where}: {key} must be an ISO 8601 time, got {_show(value)}")
    for key in _COUNT_FIELDS:
        value = event.get(key, 0)
        if not (_is_int(value) and 0 <= value < 2**31):
            raise ProtocolError(f"{where}: {key} must be a non-negative integer, got {_show(value)}")
    for key in (*_MS_FIELDS, *_RATIO_FIELDS):
        value = event.get(key)
        if value is not None and not _is_nonneg(value):
            raise ProtocolError(f"{where}: {key} must be a finite number >= 0, got {_show(value)}")
    for key in ("system_before", "system_after"):
        if not isinstance(event.get(key, {}), dict):
            raise ProtocolError(f"{where}: {key} must be an object")
    _check_shapes(event, where)
    _check_op_times(event, where)
    temp = event.get("start_temp_c")
    if temp is not None and not (_is_number(temp) and -100.0 < temp < 400.0):
        raise ProtocolError(f"{where}: start_temp_c must be a temperature in °C, got {_show(temp)}")
    raw = event.get("raw_ms", [])
    if not isinstance(raw, list) or not all(_is_nonneg(x) for x in raw):
        raise ProtocolError(f"{where}: raw_ms must be a list of finite numbers >= 0")
    if len(raw) != event.get("n_runs", 0):
        raise ProtocolError(f"{where}: raw_ms holds {len(raw)} samples but n_runs is {event.get('n_runs', 0)}")
    if status in ("ok", "unstable"):
        _check_measurement(event, raw, where, spec)
    elif raw:
        raise ProtocolError(f"{where}: a {status} result carries {len(raw)} timed samples")
    return MeasureResult.from_dict(event)


def _check_op_times(event: dict[str, Any], where: str) -> None:
    """``op_times``: a bounded list of {op_name, op_type, provider: text; duration_us: number >= 0; runs: int}."""
    ops = event.get("op_times", [])
    if not isinstance(ops, list) or len(ops) > MAX_OP_TIMES:
        raise ProtocolError(f"{where}: op_times must be a list of at most {MAX_OP_TIMES} records")
    for op in ops:
        if not isinstance(op, dict):
            raise ProtocolError(f"{where}: an op_times record is not an object")
        for key in ("op_name", "op_type", "provider"):
            if not isinstance(op.get(key, ""), str) or len(op.get(key, "")) > 1000:
                raise ProtocolError(f"{where}: op_times {key} must be text, got {_show(op.get(key))}")
        if not _is_nonneg(op.get("duration_us")):
            raise ProtocolError(f"{where}: op_times duration_us must be a finite number >= 0, "
                                f"got {_show(op.get('duration_us'))}")
        runs = op.get("runs")
        if runs is not None and not (_is_int(runs) and 0 <= runs < 2**31):
            raise ProtocolError(f"{where}: op_times runs must be a non-negative integer, got {_show(runs)}")


def _check_measurement(event: dict[str, Any], raw: list[float], where: str, spec: RunSpec | None) -> None:
    """A measured result: samples within the run's limits, a stop reason that fits, a summary of its samples."""
    n = len(raw)
    if n < 1:
        raise ProtocolError(f"{where}: status {event['status']!r} without a single timed sample")
    reason = event.get("stop_reason", "")
    if reason not in _STOP_REASONS:
        raise ProtocolError(f"{where}: stop_reason {_show(reason)} is not one of {', '.join(_STOP_REASONS)}")
    if spec is not None:
        timing = spec.timing
        if n > timing.max_runs:
            raise ProtocolError(f"{where}: {n} timed samples, more than the run's max_runs={timing.max_runs}")
        if event.get("warmup_runs", 0) > timing.warmup_max_runs:
            raise ProtocolError(f"{where}: warmup_runs above the run's warmup_max_runs={timing.warmup_max_runs}")
        if reason == "ci" and n < timing.min_runs:
            raise ProtocolError(f"{where}: stopped on the CI rule after {n} samples, below min_runs={timing.min_runs}")
        if reason == "max_runs" and n != timing.max_runs:
            raise ProtocolError(f"{where}: stop_reason max_runs after {n} samples, max_runs={timing.max_runs}")
        if max(raw) > spec.timeout_s * 1000.0 or sum(raw) / 1000.0 > spec.timeout_s + timing.max_time_s:
            raise ProtocolError(f"{where}: samples add up to {sum(raw) / 1000.0:.1f} s, longer than the run "
                                f"allows (timeout_s={spec.timeout_s:g})")
    for key, expected in (("median_ms", statistics.median(raw)), ("min_ms", min(raw)), ("max_ms", max(raw))):
        value = event.get(key)
        if value is None or not math.isclose(value, expected, rel_tol=1e-6, abs_tol=1e-9):
            raise ProtocolError(f"{where}: {key}={_show(value)} does not match its samples ({expected:.6g})")


def _check_shapes(event: dict[str, Any], where: str) -> None:
    shapes = event.get("input_shapes", {})
    if not isinstance(shapes, dict) or not all(
            isinstance(k, str) and isinstance(v, list) and all(_is_int(d) and -1 <= d < 2**31 for d in v)
            for k, v in shapes.items()):
        raise ProtocolError(f"{where}: input_shapes must map names to lists of dimensions (integers >= -1)")
    dtypes = event.get("input_dtypes", {})
    if not isinstance(dtypes, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in dtypes.items()):
        raise ProtocolError(f"{where}: input_dtypes must map names to strings")


def _optional_text(event: dict[str, Any], key: str, where: str) -> None:
    value = event.get(key)
    if value is not None and not (isinstance(value, str) and len(value) <= MAX_TEXT):
        raise ProtocolError(f"{where}: {key} must be a string of at most {MAX_TEXT} characters, got {_show(value)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_nonneg(value: Any) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value) and value >= 0
    except OverflowError:  # an integer too large for a float
        return False


def _show(value: Any, limit: int = 80) -> str:
    """A short printable form of untrusted data for an error message."""
    text = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else repr(value)
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "..."
