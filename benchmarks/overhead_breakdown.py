"""Where a local campaign's measure phase goes outside the timed loops, read from its agent runs' journals.

    python benchmarks/overhead_breakdown.py [--workdir ~/.cache/hwlat/agent-local] [--session ID] [--json OUT]

For the session's agent runs (``<workdir>/runs/<session>-<device>-NNN``, e.g. the campaign that
``benchmarks/harness_overhead.py --device local`` just ran; default: the newest session in the workdir) it sums:

* agent start: the run's ``jobs.json`` written -> its first job starts (Python, numpy and the runtime imported,
  the worker process started, the fingerprint taken), once per run;
* per job (candidate rounds and drift references alike): the timed loop (the sum of ``raw_ms``), the session
  load (``load_ms``), the first inference (``first_ms``) and the rest of the job (warm-up, system snapshots);
* between jobs of one run (the supervisor's request and reply, the journal's fsync) and between runs (the
  coordinator judging rounds and storing rows, waiting for the agent to exit, the next launch).

The figures are the agent's own clock (``started_at``/``finished_at``, ms resolution) and the file's mtime, so
the coordinator's time before the first launch and after the last job (merging the session's part files) is
not in them: compare ``covered_s`` with the campaign's measure-phase wall time.
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import datetime
from pathlib import Path


def _t(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def breakdown(runs: list[Path]) -> dict[str, float | int]:
    """The sums described in the module docstring over these run folders (in launch order)."""
    out = {"runs": len(runs), "jobs": 0, "agent_start_s": 0.0, "timed_s": 0.0, "load_s": 0.0, "first_s": 0.0,
           "rest_of_job_s": 0.0, "between_jobs_s": 0.0, "between_runs_s": 0.0}
    previous_end: float | None = None
    first_launch: float | None = None
    for run in runs:
        launched = os.stat(run / "jobs.json").st_mtime
        first_launch = launched if first_launch is None else first_launch
        events = [json.loads(line) for line in (run / "journal.jsonl").read_text().splitlines()]
        jobs = [e for e in events if e["type"] == "result" and e.get("started_at") and e.get("finished_at")]
        if not jobs:
            continue
        if previous_end is not None:
            out["between_runs_s"] += launched - previous_end
        out["agent_start_s"] += _t(jobs[0]["started_at"]) - launched
        for i, job in enumerate(jobs):
            span = _t(job["finished_at"]) - _t(job["started_at"])
            timed = sum(job["raw_ms"]) / 1000.0
            load, first = (job.get("load_ms") or 0.0) / 1000.0, (job.get("first_ms") or 0.0) / 1000.0
            out["timed_s"] += timed
            out["load_s"] += load
            out["first_s"] += first
            out["rest_of_job_s"] += span - timed - load - first
            if i:
                out["between_jobs_s"] += _t(job["started_at"]) - _t(jobs[i - 1]["finished_at"])
        out["jobs"] += len(jobs)
        previous_end = _t(jobs[-1]["finished_at"])
    if first_launch is not None and previous_end is not None:
        out["covered_s"] = previous_end - first_launch
        out["ratio_covered_to_timed"] = out["covered_s"] / out["timed_s"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("~/.cache/hwlat/agent-local"))
    parser.add_argument("--session", help="session id (default: the newest in the workdir)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    folder = args.workdir.expanduser() / "runs"
    runs = sorted(p for p in folder.iterdir() if (p / "jobs.json").is_file())
    if not runs:
        raise SystemExit(f"no agent runs in {folder}")
    session = args.session or max("-".join(p.name.split("-")[:2]) for p in runs)
    mine = [p for p in runs if p.name.startswith(session + "-")]
    figures = {"session": session, **breakdown(mine)}
    for key, value in figures.items():
        print(f"{key:24s} {value:.3f}" if isinstance(value, float) else f"{key:24s} {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
