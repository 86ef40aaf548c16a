"""Peak memory (RSS high-water mark) of the worker process, per model. Standard library only.

The worker is one long-lived process that times many models, so its lifetime peak (``getrusage``'s
``ru_maxrss``) would only ever grow. Linux resets the high-water mark when "5" is written to
``/proc/self/clear_refs`` (since 4.0); the worker does that before loading each model and reads ``VmHWM``
from ``/proc/self/status`` after the timed loop, so the peak belongs to that model's load, warm-up and timed
runs (plus the runtime already imported). Where the reset is not possible the peak is not reported (None):
a number that mixes several models would be wrong without looking wrong.
"""

from __future__ import annotations


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_mb() -> float | None:
    """Current resident set size in MB (``VmRSS``), None where /proc is not available."""
    kb = _status_kb("VmRSS")
    return round(kb / 1024.0, 3) if kb is not None else None


def reset_peak() -> bool:
    """Reset the process's RSS high-water mark to its current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        return False
    return _status_kb("VmHWM") is not None


def peak_mb() -> float | None:
    """RSS high-water mark in MB since the last ``reset_peak`` (``VmHWM``)."""
    kb = _status_kb("VmHWM")
    return round(kb / 1024.0, 3) if kb is not None else None
