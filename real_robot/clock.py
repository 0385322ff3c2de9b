"""The host's clocks, one definition for every module: `now_us()` (CLOCK_MONOTONIC in microseconds, the
`timestamp_us` of every message and log record) and `Pacer` (a loop at a fixed period of wall time)."""

from __future__ import annotations

import time


def now_us() -> int:
    return time.monotonic_ns() // 1000


class Pacer:
    """Absolute deadlines start + k·period, so sleep errors never accumulate; after a stall it re-anchors
    instead of bursting to catch up."""

    def __init__(self, period_s: float):
        self.period_ns = round(period_s * 1e9)
        self.deadline_ns = time.monotonic_ns()
        self.overruns = 0

    def wait(self) -> None:
        self.deadline_ns += self.period_ns
        delay_ns = self.deadline_ns - time.monotonic_ns()
        if delay_ns > 0:
            time.sleep(delay_ns / 1e9)
        elif -delay_ns > self.period_ns:
            self.overruns += 1
            self.deadline_ns = time.monotonic_ns()
