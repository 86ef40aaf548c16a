"""Device-side launcher: the bundle's ``launch|status|stop|preflight`` commands (harness/transport/bundle.py).

Standard library only and Python 3.8+ compatible: it is the first thing that runs on a board and
must be able to say *what is missing* before numpy or a runtime is imported. The SSH transport
calls it through the bundle (``python3 agent.pyz launch|status|stop|preflight ...``); every
command prints one JSON object on stdout, nothing else crosses the wire.

Why a launcher rather than ``nohup setsid ... &`` in a shell string:

* the per-device lock: ``launch`` takes ``flock`` on ``<workdir>/device.lock`` *before* detaching
  and hands the locked file descriptor to the agent across ``exec``; the lock lives exactly as long
  as the agent process. A second campaign gets ``{"status": "busy", ...}`` synchronously instead of
  two agents timing on one board, and a crashed or ``kill -9``-ed agent releases it by itself.
* detaching is a double fork + ``setsid`` in Python, so it works on boards without ``setsid`` or
  ``nohup`` binaries and the agent survives the SSH connection (no controlling terminal, stdio
  redirected to ``<run>/agent.log``).
* ``status`` and ``stop`` act on the recorded pid only if it still is the agent of that run
  (``/proc/<pid>/cmdline``), never on an unrelated process that reused the pid.
"""

import fcntl
import json
import os
import signal
import sys
import time

from agents.files import sha256_file
from agents.records import RUN_ID_RE
from agents.runtimes import RUNTIMES

LOCK_NAME = "device.lock"



def _emit(obj):
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def _run_dir(workdir, run_id):
    if not RUN_ID_RE.match(run_id):
        raise SystemExit(f"invalid run id {run_id!r}")
    return os.path.join(workdir, "runs", run_id)


def _read_holder(workdir):
    try:
        with open(os.path.join(workdir, LOCK_NAME)) as fh:
            return json.loads(fh.read() or "{}")
    except (OSError, ValueError):
        return {}


def is_agent_process(stat, cmdline, run_dir):
    """True if ``/proc/<pid>/stat`` and ``/proc/<pid>/cmdline`` (bytes, None when unreadable) show a live,
    non-zombie process whose command line names ``run_dir``.

    Pure, so the launcher (reading /proc locally) and the SSH transport (reading it over SFTP, without starting
    a process on a board that is timing a model) judge a pid the same way.
    """
    if not stat or stat.rsplit(b")", 1)[-1].split()[:1] == [b"Z"]:
        return False
    return os.fsencode(run_dir) in (cmdline or b"").split(b"\0")


def _read_proc(pid, name):
    try:
        with open(f"/proc/{pid}/{name}", "rb") as fh:
            return fh.read()
    except OSError:
        return None


def _is_agent(pid, run_dir):
    """True if ``pid`` is a live (non-zombie) process whose command line names ``run_dir``."""
    return bool(pid) and is_agent_process(_read_proc(pid, "stat"), _read_proc(pid, "cmdline"), run_dir)


def cmd_preflight(args):
    """Report Python version, numpy, the runtime and this bundle's own sha256."""
    runtime = args[0] if args else "onnxruntime"
    missing, versions = [], {}
    try:
        import numpy

        versions["numpy"] = numpy.__version__
    except Exception as exc:  # any import failure means "not usable here"
        missing.append({"module": "numpy", "pip": "numpy", "error": str(exc)[:200]})
    known = RUNTIMES.get(runtime)
    names, pip_name = (known.modules, known.pip) if known else ((runtime,), runtime)
    errors = []
    for name in names:
        try:
            module = __import__(name, fromlist=["_"])
            versions[runtime] = getattr(module, "__version__", "") or name
            break
        except Exception as exc:
            errors.append(f"{name}: {str(exc)[:200]}")
    else:
        missing.append({"module": names[0], "pip": pip_name, "error": "; ".join(errors)})
    bundle_sha = sha256_file(sys.argv[0])
    _emit({
        "python": ".".join(str(v) for v in sys.version_info[:3]),
        "executable": sys.executable,
        "python_ok": sys.version_info >= (3, 8),
        "versions": versions,
        "missing": missing,
        "bundle_sha256": bundle_sha,
    })
    return 0


def cmd_launch(args):
    """Take the device lock and start ``agent run RUN_DIR`` detached; idempotent per run."""
    workdir, run_id = args[0], args[1]
    run_dir = _run_dir(workdir, run_id)
    fd = os.open(os.path.join(workdir, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = _read_holder(workdir)
        if holder.get("run_id") == run_id and _is_agent(holder.get("pid"), run_dir):
            _emit({"status": "running", "pid": holder.get("pid")})
        else:
            _emit({"status": "busy", "holder": holder})
        return 0
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the detached child
        try:
            os.close(read_end)
            os.setsid()
            if os.fork() > 0:
                os._exit(0)
            os.setpgid(0, 0)
            devnull = os.open(os.devnull, os.O_RDONLY)
            log = os.open(os.path.join(run_dir, "agent.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(devnull, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            holder = {"run_id": run_id, "pid": os.getpid(), "started": time.time(), "run_dir": run_dir}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode(), 0)
            os.set_inheritable(fd, True)
            os.write(write_end, str(os.getpid()).encode())
            os.close(write_end)
            os.execv(sys.executable, [sys.executable, os.path.abspath(sys.argv[0]), "run", run_dir])
        finally:
            os._exit(127)
    os.close(write_end)
    os.waitpid(child, 0)
    pid = b""
    while True:
        chunk = os.read(read_end, 64)
        if not chunk:
            break
        pid += chunk
    if not pid:
        _emit({"status": "error", "error": f"agent failed to start; see {run_dir}/agent.log"})
        return 1
    _emit({"status": "started", "pid": int(pid)})
    return 0


def cmd_status(args):
    workdir, run_id = args[0], args[1]
    run_dir = _run_dir(workdir, run_id)
    holder = _read_holder(workdir)
    alive = holder.get("run_id") == run_id and _is_agent(holder.get("pid"), run_dir)
    _emit({"alive": alive, "holder": holder})
    return 0


def cmd_stop(args):
    """SIGTERM the agent's process group (agent + worker), SIGKILL after a grace period."""
    workdir, run_id = args[0], args[1]
    run_dir = _run_dir(workdir, run_id)
    holder = _read_holder(workdir)
    pid = holder.get("pid")
    if holder.get("run_id") != run_id or not _is_agent(pid, run_dir):
        _emit({"stopped": False, "reason": "not running"})
        return 0
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except OSError:
            break
        deadline = time.time() + grace
        while time.time() < deadline and _is_agent(pid, run_dir):
            time.sleep(0.05)
        if not _is_agent(pid, run_dir):
            break
    _emit({"stopped": not _is_agent(pid, run_dir)})
    return 0


COMMANDS = {"preflight": cmd_preflight, "launch": cmd_launch, "status": cmd_status, "stop": cmd_stop}


def main(argv):
    return COMMANDS[argv[0]](argv[1:])
