"""Cooldown before each model: a fixed pause, then (optionally) wait for the board to cool. Standard library only.

A fanless board (Raspberry Pi 4) heats up over a campaign until it throttles; the models measured late then
run at a lower clock than the early ones. The profile's ``[timing]`` table sets ``cooldown_s`` (seconds to wait
before every model) and ``cooldown_below_c`` (then wait until the hottest thermal zone is below this many °C,
for at most ``cooldown_max_s`` seconds). The supervisor waits before each job, outside the worker's timeout,
and the result records the seconds waited and the temperature the model started at (docs/timing.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from agents.records import TimingConfig
from agents.system import temperature_c

#: How often the temperature is read while waiting for the board to cool.
POLL_S = 1.0


def cool_down(timing: TimingConfig, poll: Callable[[], None] = lambda: None,
              read_temp: Callable[[], float | None] = temperature_c) -> tuple[float, float | None]:
    """Wait as ``timing`` says; return (seconds waited, hottest temperature in °C when the wait ended).

    ``poll`` is called at least every ``POLL_S`` seconds (the supervisor checks its parent there). A board
    without a readable sensor waits the fixed pause only; its temperature is None.
    """
    start = time.monotonic()
    deadline = start + timing.cooldown_s
    while (remaining := deadline - time.monotonic()) > 0:
        time.sleep(min(POLL_S, remaining))
        poll()
    temp = read_temp()
    if timing.cooldown_below_c > 0:
        cap = time.monotonic() + timing.cooldown_max_s
        while temp is not None and temp >= timing.cooldown_below_c and (remaining := cap - time.monotonic()) > 0:
            time.sleep(min(POLL_S, remaining))
            poll()
            temp = read_temp()
    return round(time.monotonic() - start, 3), temp
