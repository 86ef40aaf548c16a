"""System state readers: snapshot keys, the /proc and /sys fallbacks against psutil, warnings."""

from __future__ import annotations

import json
import os
import platform

import pytest

from agents import system

SNAPSHOT_KEYS = {
    "time", "load1", "load5", "load15", "procs_running", "busy_pct", "busy_pct_own_cpus", "mem_total_mb",
    "mem_available_mb",
    "cpu_freq_mhz", "cpu_freq_min_mhz", "cpu_freq_max_mhz", "cpu_freq_mhz_cores", "governor", "temp_c", "throttled",
}


def test_snapshot_is_flat_json_with_the_documented_keys() -> None:
    snap = system.snapshot()
    assert set(snap) == SNAPSHOT_KEYS
    assert json.loads(json.dumps(snap)) == snap
    assert all(not isinstance(v, dict) for v in snap.values())
    assert snap["time"].endswith("Z")
    assert 0 < snap["mem_available_mb"] <= snap["mem_total_mb"]
    if snap["busy_pct"] is not None:
        assert 0.0 <= snap["busy_pct"] <= 100.0
    if snap["cpu_freq_mhz_cores"]:
        assert snap["cpu_freq_min_mhz"] <= snap["cpu_freq_mhz"] <= snap["cpu_freq_max_mhz"]


@pytest.mark.skipif(not os.path.exists("/proc/meminfo"), reason="needs Linux /proc")
def test_proc_fallbacks_agree_with_psutil() -> None:
    psutil = pytest.importorskip("psutil")
    proc = system.meminfo_mb_proc()
    assert proc["mem_total_mb"] == pytest.approx(psutil.virtual_memory().total / 2**20, rel=1e-6)
    assert proc["mem_available_mb"] == pytest.approx(psutil.virtual_memory().available / 2**20, rel=0.2)
    sys_freqs = system.cpu_freqs_mhz_sys()
    ps_freqs = [f.current for f in psutil.cpu_freq(percpu=True) or []]
    if sys_freqs and ps_freqs:
        assert len(sys_freqs) == len(ps_freqs)
    busy = system.busy_pct(0.05)
    assert busy is not None and 0.0 <= busy <= 100.0
    assert system.procs_running() >= 1  # at least this process


def test_governor_warning_only_when_not_performance() -> None:
    def governor_warnings(governors: list[str]) -> list[str]:
        info = {"governors": governors, "cores_logical": os.cpu_count()}
        return [w for w in system.timing_warnings(info) if "governor" in w]

    assert governor_warnings(["performance"]) == []
    assert governor_warnings([]) == []  # no cpufreq at all (VMs): nothing to say
    (warning,) = governor_warnings(["ondemand", "performance"])
    assert "ondemand" in warning and "performance" in warning


def test_load_warning_uses_load_per_core() -> None:
    load1 = os.getloadavg()[0]
    many_cores = system.timing_warnings({"governors": [], "cores_logical": 10**9})
    assert not any("load average" in w for w in many_cores)
    if load1 > 0.01:
        few_cores = system.timing_warnings({"governors": [], "cores_logical": 0.01})
        assert any("load average" in w for w in few_cores)


def test_fingerprint_uses_given_runtime_descriptions() -> None:
    info = system.fingerprint(runtimes={})
    assert info["runtimes"] == {}
    assert info["machine"] == platform.machine() and info["cores_logical"] == os.cpu_count()
    assert info["ram_mb"] > 0 and info["cores_physical"] >= 1
    assert isinstance(info["warnings"], list)


def test_thread_warning_when_the_runtime_takes_every_cpu() -> None:
    assert system.thread_warnings(1, 1) == [] and system.thread_warnings(2, 4) == []
    assert system.thread_warnings(0, 2) == []  # the runtime's default: not judged
    (warning,) = system.thread_warnings(2, 2)
    assert "2 threads on the 2 CPUs" in warning and "leave a CPU free" in warning
    assert system.thread_warnings(4, 2)  # more threads than CPUs: worse still
