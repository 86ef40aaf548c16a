"""``python -m agents <command>``: the on-device agent's command line.

Commands: ``run RUN_DIR`` (measure a run's jobs into its journal), ``fingerprint`` (describe this
device as JSON), ``hash PATH...`` (sha256 of files as JSON), ``worker`` (internal). Exit codes:
0 ok, 2 bad input, 3 another agent holds the run, 4 the parent died (``--exit-with-parent``).

Imports are lazy: the coordinator runs ``hash`` on the device before every campaign chunk, while the
device may be timing a model, so that command must not pay for numpy (~0.4 s of CPU on a Pi).
"""

from __future__ import annotations

import argparse
import json
import sys

from agents import __version__

PROG = "hwlat-agent"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="hwlat on-device agent: times neural-network models on this machine."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser(
        "run", help="measure every job of a run directory that has no result yet",
        description="Read RUN_DIR/jobs.json and append one result per job to RUN_DIR/journal.jsonl. "
        "Re-running after an interruption measures only the jobs without a result.",
    )
    run.add_argument("run_dir", metavar="RUN_DIR", help="run directory (<workdir>/runs/<run_id>)")
    run.add_argument(
        "--exit-with-parent", action="store_true",
        help="stop (killing the worker) when the process that started the agent exits",
    )

    sub.add_parser(
        "fingerprint", help="print this device's description as JSON",
        description="Print host, CPU, memory, OS, Python, runtimes, GPUs and timing warnings as one JSON object.",
    )

    hash_cmd = sub.add_parser(
        "hash", help="print {path: sha256} for files as JSON",
        description="Print a JSON object mapping each PATH to its sha256 (null if missing or unreadable).",
    )
    hash_cmd.add_argument("paths", metavar="PATH", nargs="+")

    worker = sub.add_parser(
        "worker", help="internal: time jobs read from stdin (started by run)",
        description="Internal. Reads one job request per line on stdin and writes one result per line.",
    )
    worker.add_argument("--runtime", default="onnxruntime", help="runtime to import at start-up")
    worker.add_argument("--parent-pid", type=int, default=0, help="exit if this process is not our parent")
    worker.add_argument("--cpu-affinity", default="", help="comma-separated CPU numbers to pin to")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m agents`` and for the zipapp's top-level ``__main__.py``."""
    args = _parser().parse_args(argv)
    if args.command == "hash":
        from agents.files import hash_paths

        print(json.dumps(hash_paths(args.paths), sort_keys=True))
        return 0
    from agents.runner import run_agent
    from agents.supervisor import EXIT_BUSY, EXIT_PARENT_GONE, AgentBusyError, AgentUsageError, ParentGone
    from agents.worker import worker_main

    try:
        if args.command == "run":
            return run_agent(args.run_dir, exit_with_parent=args.exit_with_parent)
        if args.command == "fingerprint":
            from agents.system import fingerprint

            print(json.dumps(fingerprint(), sort_keys=True))
            return 0
        cpus = [int(c) for c in args.cpu_affinity.split(",") if c.strip()]
        return worker_main(args.runtime, args.parent_pid, cpus)
    except AgentBusyError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_BUSY
    except AgentUsageError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except ParentGone:
        print(f"{PROG}: parent process exited; stopping", file=sys.stderr)
        return EXIT_PARENT_GONE


if __name__ == "__main__":
    sys.exit(main())
