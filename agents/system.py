"""What the machine looks like: a cheap ``snapshot()`` around every job, a full ``fingerprint()``.

psutil is used when installed; otherwise the same numbers come from /proc and /sys (what psutil
reads on Linux anyway), so a bare Raspberry Pi image gives the same keys. Every reader swallows
``OSError``/``ValueError``: a missing or unreadable file means "unknown" (the key is left out or
set to None), never a crashed agent.
"""

from __future__ import annotations

import glob
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from typing import Any

import numpy as np

import agents

try:
    import psutil
except ImportError:  # pragma: no cover - exercised on boards without psutil
    psutil = None

#: How long the first ``busy_pct`` of a process samples CPU busy time (later calls need no sleep).
BUSY_SAMPLE_S = 0.03

#: Raspberry Pi firmware throttling flags (``vcgencmd get_throttled`` bits, also in sysfs).
_PI_THROTTLE_BITS = {
    0: "under-voltage now",
    1: "ARM frequency capped now",
    2: "throttled now",
    3: "soft temperature limit now",
    16: "under-voltage has occurred",
    17: "ARM frequency capping has occurred",
    18: "throttling has occurred",
    19: "soft temperature limit has occurred",
}
_PI_THROTTLE_FILE = "/sys/devices/platform/soc/soc:firmware/get_throttled"


def _read(path: str) -> str | None:
    """File contents stripped, or None if it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except (OSError, ValueError):
        return None


def _read_float(path: str) -> float | None:
    text = _read(path)
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _cpu_sort_key(path: str) -> int:
    match = re.search(r"cpu(\d+)", path)
    return int(match.group(1)) if match else -1


def cpu_freqs_mhz_sys() -> list[float]:
    """Per-core current frequency from sysfs, falling back to "cpu MHz" in /proc/cpuinfo (VMs)."""
    paths = sorted(glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq"), key=_cpu_sort_key)
    freqs = [v / 1000.0 for v in (_read_float(p) for p in paths) if v is not None]
    if freqs:
        return freqs
    cpuinfo = _read("/proc/cpuinfo") or ""
    return [float(m) for m in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", cpuinfo, flags=re.MULTILINE)]


def cpu_freqs_mhz() -> list[float]:
    """Per-core current CPU frequency in MHz (empty when the platform does not expose it)."""
    if psutil is not None:
        try:
            freqs = psutil.cpu_freq(percpu=True) or []
            values = [float(f.current) for f in freqs if f.current]
            if values:
                return values
        except (OSError, AttributeError, NotImplementedError, RuntimeError):
            pass
    return cpu_freqs_mhz_sys()


def governors() -> list[str]:
    """Distinct cpufreq governors across cores, sorted (psutil does not report these)."""
    paths = glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor")
    return sorted({g for g in (_read(p) for p in paths) if g})


def temperature_c_sys() -> float | None:
    """Hottest thermal zone in °C from /sys/class/thermal (millidegrees on every kernel)."""
    values = [_read_float(p) for p in glob.glob("/sys/class/thermal/thermal_zone*/temp")]
    temps = [v / 1000.0 for v in values if v is not None and v > 0]
    return max(temps) if temps else None


def temperature_c() -> float | None:
    """Hottest temperature sensor in °C, or None if none is readable."""
    temp = temperature_c_sys()
    if temp is not None or psutil is None or not hasattr(psutil, "sensors_temperatures"):
        return temp
    try:
        readings = [t.current for ts in psutil.sensors_temperatures().values() for t in ts if t.current]
    except (OSError, AttributeError, RuntimeError):
        return None
    return float(max(readings)) if readings else None


def meminfo_mb() -> dict[str, float]:
    """``mem_total_mb``/``mem_available_mb`` from psutil or /proc/meminfo."""
    if psutil is not None:
        try:
            vm = psutil.virtual_memory()
            return {"mem_total_mb": vm.total / 2**20, "mem_available_mb": vm.available / 2**20}
        except (OSError, RuntimeError):
            pass
    return meminfo_mb_proc()


def meminfo_mb_proc() -> dict[str, float]:
    text = _read("/proc/meminfo") or ""
    values = {k: float(v) / 1024.0 for k, v in re.findall(r"^(\w+):\s+(\d+) kB", text, flags=re.MULTILINE)}
    out = {}
    if "MemTotal" in values:
        out["mem_total_mb"] = values["MemTotal"]
    if "MemAvailable" in values:
        out["mem_available_mb"] = values["MemAvailable"]
    return out


def _busy_total(fields: list[float]) -> tuple[float, float]:
    # user nice system idle iowait irq softirq steal guest guest_nice; guest* are already in user.
    total = sum(fields[:8])
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return total - idle, total


def _proc_stat_times(cpus: frozenset[int] | None = None) -> tuple[float, float] | None:
    """(busy, total) jiffies from /proc/stat: summed over all CPUs, or over the CPUs numbered in ``cpus``."""
    text = _read("/proc/stat")
    if not text or not text.startswith("cpu "):
        return None
    if cpus is None:
        return _busy_total([float(v) for v in text.splitlines()[0].split()[1:]])
    busy = total = 0.0
    for line in text.splitlines()[1:]:
        name, _, rest = line.partition(" ")
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            b, t = _busy_total([float(v) for v in rest.split()])
            busy, total = busy + b, total + t
    return (busy, total) if total > 0 else None


#: (busy jiffies, total jiffies, own CPU seconds, CPU set) at the previous ``busy_pct_own_cpus`` call.
_last_own: tuple[float, float, float, frozenset[int]] | None = None


def busy_pct_own_cpus() -> float | None:
    """Like ``busy_pct`` but only over the CPUs this process may run on (its affinity), minus this process.

    The figure that says whether something else competed with a timed loop: on a machine where the worker is
    pinned to one core, other processes busy on the *other* cores raise ``busy_pct`` but do not touch the
    timing. Since the previous call (no sleep; the first call of a process returns None): the worker calls it
    right before each warm-up, so ``system_after`` holds the share over warm-up and timed runs. Linux only.
    """
    global _last_own
    if not hasattr(os, "sched_getaffinity"):
        return None
    cpus = frozenset(os.sched_getaffinity(0))
    now = _proc_stat_times(cpus)
    own_now = sum(os.times()[:2])
    if now is None:
        return None
    previous, _last_own = _last_own, (now[0], now[1], own_now, cpus)
    if previous is None or previous[3] != cpus or now[1] <= previous[1]:
        return None
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    busy = (now[0] - previous[0]) - (own_now - previous[2]) * ticks
    return max(0.0, min(100.0, 100.0 * busy / (now[1] - previous[1])))


#: (busy jiffies, total jiffies, own CPU seconds) at the previous ``busy_pct`` call of this process.
_last_busy: tuple[float, float, float] | None = None


def busy_pct(interval_s: float | None = None) -> float | None:
    """System-wide CPU busy % (0-100, all logical cores) minus this process: how much *else* runs.

    Without ``interval_s`` it covers the time since the previous call, with no sleep: called before
    and after each job, the "after" value is the other processes' CPU share *during* the timed loop
    (this process's own CPU time, all its runtime threads included, is subtracted), and the "before"
    value covers the gap since the previous job. The first call of a process (or ``interval_s``)
    samples for that long instead. Coarse: the kernel counts in 10 ms ticks.
    """
    global _last_busy
    now = _proc_stat_times()
    own_now = sum(os.times()[:2])
    if now is None:
        if psutil is None:
            return None
        try:
            return float(psutil.cpu_percent(interval=interval_s or BUSY_SAMPLE_S))
        except (OSError, RuntimeError):
            return None
    if interval_s is not None or _last_busy is None:
        time.sleep(interval_s or BUSY_SAMPLE_S)
        first, own0 = now, own_now
        now, own_now = _proc_stat_times() or now, sum(os.times()[:2])
    else:
        first, own0 = _last_busy[:2], _last_busy[2]
    _last_busy = (now[0], now[1], own_now)
    if now[1] <= first[1]:
        return None
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    busy = (now[0] - first[0]) - (own_now - own0) * ticks
    return max(0.0, min(100.0, 100.0 * busy / (now[1] - first[1])))


def procs_running() -> int | None:
    """Runnable tasks right now (``procs_running`` in /proc/stat), a load average without lag."""
    match = re.search(r"^procs_running\s+(\d+)", _read("/proc/stat") or "", flags=re.MULTILINE)
    return int(match.group(1)) if match else None


def pi_throttled() -> int | None:
    """Raspberry Pi firmware throttle flags (see ``_PI_THROTTLE_BITS``), None elsewhere."""
    text = _read(_PI_THROTTLE_FILE)
    try:
        return int(text, 16) if text else None
    except ValueError:
        return None


def snapshot() -> dict[str, Any]:
    """Flat, JSON-able system state taken before and after every job (< 50 ms).

    Keys: ``time`` (UTC ISO), ``load1/5/15``, ``procs_running``, ``busy_pct``, ``busy_pct_own_cpus``,
    ``mem_total_mb``,
    ``mem_available_mb``, ``cpu_freq_mhz`` (mean over cores), ``cpu_freq_min_mhz``,
    ``cpu_freq_max_mhz``, ``cpu_freq_mhz_cores`` (per-core list), ``governor`` (comma-joined
    distinct governors), ``temp_c`` (hottest sensor), ``throttled`` (Pi firmware flags). Values
    that cannot be read are None.
    """
    out: dict[str, Any] = {"time": utc_now()}
    try:
        out["load1"], out["load5"], out["load15"] = (round(v, 3) for v in os.getloadavg())
    except (OSError, AttributeError):
        out["load1"] = out["load5"] = out["load15"] = None
    out["procs_running"] = procs_running()
    busy = busy_pct()
    out["busy_pct"] = round(busy, 2) if busy is not None else None
    own = busy_pct_own_cpus()
    out["busy_pct_own_cpus"] = round(own, 2) if own is not None else None
    out.update({k: round(v, 1) for k, v in meminfo_mb().items()})
    freqs = cpu_freqs_mhz()
    out["cpu_freq_mhz"] = round(float(np.mean(freqs)), 1) if freqs else None
    out["cpu_freq_min_mhz"] = round(min(freqs), 1) if freqs else None
    out["cpu_freq_max_mhz"] = round(max(freqs), 1) if freqs else None
    out["cpu_freq_mhz_cores"] = [round(f, 1) for f in freqs]
    out["governor"] = ",".join(governors()) or None
    temp = temperature_c()
    out["temp_c"] = round(temp, 1) if temp is not None else None
    out["throttled"] = pi_throttled()
    return out


def utc_now() -> str:
    """Current UTC time as ISO 8601 with milliseconds and a Z."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def _cpu_model() -> str:
    text = _read("/proc/cpuinfo") or ""
    for key in ("model name", "Model", "Hardware", "cpu model", "Processor"):
        match = re.search(rf"^{key}\s*:\s*(.+)$", text, flags=re.MULTILINE)
        if match:
            return match.group(1).strip()
    return platform.processor() or platform.machine()


def _physical_cores() -> int | None:
    if psutil is not None:
        try:
            count = psutil.cpu_count(logical=False)
            if count:
                return int(count)
        except (OSError, RuntimeError):
            pass
    text = _read("/proc/cpuinfo") or ""
    pairs = set(re.findall(r"^physical id\s*:\s*(\d+)$.*?^core id\s*:\s*(\d+)$", text, flags=re.MULTILINE | re.DOTALL))
    if pairs:
        return len(pairs)
    # ARM boards list one "processor" block per core and no SMT.
    cores = len(re.findall(r"^processor\s*:", text, flags=re.MULTILINE))
    return cores or None


def _gpus() -> list[dict[str, str]]:
    """NVIDIA GPUs via nvidia-smi (name, driver, memory); empty without the tool."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        proc = subprocess.run(
            [exe, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=15, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in proc.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            gpus.append({"name": parts[0], "driver_version": parts[1], "memory_total": parts[2]})
    return gpus


def _throttle_warnings() -> list[str]:
    warnings = []
    flags = pi_throttled()
    if flags:
        seen = [text for bit, text in _PI_THROTTLE_BITS.items() if flags >> bit & 1]
        warnings.append(f"Raspberry Pi firmware reports throttling (0x{flags:x}: {', '.join(seen)})")
    counts = []
    for path in glob.glob("/sys/devices/system/cpu/cpu[0-9]*/thermal_throttle/core_throttle_count"):
        value = _read_float(path)
        if value:
            counts.append(int(value))
    if counts:
        warnings.append(f"thermal throttling events recorded by the kernel ({sum(counts)} across cores)")
    for cpufreq in glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq"):
        cap, hw_max = _read_float(f"{cpufreq}/scaling_max_freq"), _read_float(f"{cpufreq}/cpuinfo_max_freq")
        if cap and hw_max and cap < hw_max:
            warnings.append(
                f"cpu frequency capped: scaling_max_freq {cap / 1000:.0f} MHz < hardware max {hw_max / 1000:.0f} MHz"
            )
            break
    return warnings


def timing_warnings(info: dict[str, Any]) -> list[str]:
    """Conditions that make timings on this machine less trustworthy, one sentence each."""
    warnings = []
    govs = info.get("governors") or []
    if govs and govs != ["performance"]:
        warnings.append(
            f"cpufreq governor is {', '.join(govs)} (not performance): clocks follow load, so timings vary; "
            "set it with cpupower frequency-set -g performance"
        )
    warnings.extend(_throttle_warnings())
    temp = temperature_c()
    if temp is not None and temp >= 80:
        warnings.append(f"CPU temperature is {temp:.0f} °C: close to throttling")
    cores = info.get("cores_logical") or 1
    try:
        load1 = os.getloadavg()[0]
    except (OSError, AttributeError):
        load1 = None
    if load1 is not None and load1 > 0.5 * cores:
        warnings.append(f"load average {load1:.2f} is above 0.5 per core ({cores} cores): other work competes")
    mem = meminfo_mb()
    total, avail = mem.get("mem_total_mb"), mem.get("mem_available_mb")
    if total and avail is not None and (avail < 256 or avail < 0.1 * total):
        warnings.append(f"only {avail:.0f} MB of {total:.0f} MB memory available: swapping may distort timings")
    return warnings


def thread_warnings(threads: int, cpus: int) -> list[str]:
    """A runtime given a thread for every CPU its worker may use leaves none to the OS, the agent and other work:
    each of them then preempts a thread of the timed loop. On the 2-vCPU development VM, onnxruntime with 2
    threads ran whole campaigns in a fast or a slow mode 1.6x apart (docs/benchmarks.md, "Retest"), where one
    thread on one CPU reproduced within 1-3%. ``threads`` 0 (the runtime's default) is not judged."""
    if threads > 1 and 0 < cpus <= threads:
        return [f"the runtime runs {threads} threads on the {cpus} CPUs its worker may use: the timed loop shares "
                "every CPU with the OS and the agent, so campaigns can land in different speed modes; leave a CPU "
                "free, or compare campaigns with hwlat datasets compare (it normalizes to the drift reference)"]
    return []


def fingerprint(runtimes: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything that identifies this device and software stack, plus timing warnings.

    ``runtimes`` (runtime name -> ``Backend.describe()``) is computed here when None, which imports
    every runtime (a second or two, and the runtime's memory). The ``run`` supervisor passes what
    its worker already reported instead, so the supervisor itself never loads a runtime.
    """
    from agents.backends import backend_class, runtime_names

    uname = platform.uname()
    mem = meminfo_mb()
    info: dict[str, Any] = {
        "agent_version": agents.__version__,
        "agent_path": os.path.dirname(os.path.abspath(agents.__file__)),
        "host": uname.node,
        "cpu_model": _cpu_model(),
        "cores_logical": os.cpu_count(),
        "cores_physical": _physical_cores(),
        "ram_mb": round(mem["mem_total_mb"]) if "mem_total_mb" in mem else None,
        "os": uname.system,
        "os_release": platform.platform(),
        "kernel": uname.release,
        "machine": uname.machine,
        "board": (_read("/proc/device-tree/model") or "").rstrip("\x00") or None,
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
        "numpy_version": np.__version__,
        "psutil_version": getattr(psutil, "__version__", None),
        "runtimes": runtimes if runtimes is not None else {n: backend_class(n).describe() for n in runtime_names()},
        "gpus": _gpus(),
        "governors": governors(),
        "cpu_affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }
    info["warnings"] = timing_warnings(info)
    return info
