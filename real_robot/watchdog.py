"""The bridge's command watchdog: a latched trip that only an operator's re-arm plus fresh targets clears.

Pure logic on an injected time in microseconds (wall or robot time, see `real_robot.bridge`), so every
transition is unit-testable without sockets or sleeps.

    waiting ──first valid target──▶ live ──no target for timeout_us / trip(reason)──▶ tripped (latched)
    tripped ──arm request, then a valid target received after it──▶ live

While waiting or tripped the bridge sends damping; targets are applied only while live.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WatchdogStatus:
    tripped: bool
    reason: str  # "" when not tripped
    trip_count: int


class Watchdog:
    def __init__(self, timeout_us: int):
        if timeout_us <= 0:
            raise ValueError(f"watchdog timeout must be positive, got {timeout_us} µs")
        self.timeout_us = timeout_us
        self.tripped = False
        self.reason = ""
        self.trip_count = 0
        self._last_target_us: int | None = None
        self._arm_requested = False

    @property
    def live(self) -> bool:
        """Targets may be applied: one has arrived and nothing has tripped since (or it was re-armed)."""
        return not self.tripped and self._last_target_us is not None

    def target_received(self, now_us: int) -> None:
        """A valid pd_target arrived. It completes a pending re-arm: a target from before the arm never does."""
        self._last_target_us = now_us
        if self.tripped and self._arm_requested:
            self.tripped, self.reason, self._arm_requested = False, "", False

    def arm_requested(self) -> None:
        """Operator asks to re-arm; takes effect with the next valid target. Ignored when not tripped."""
        if self.tripped:
            self._arm_requested = True

    def trip(self, reason: str) -> None:
        """Latch (the first reason is kept); a pending re-arm is cancelled, so a new fault needs a new arm."""
        self._arm_requested = False
        if not self.tripped:
            self.tripped, self.reason = True, reason
            self.trip_count += 1

    def check(self, now_us: int) -> bool:
        """Trip if live targets have gone stale; True while targets may be applied."""
        if self.live and now_us - self._last_target_us > self.timeout_us:
            age_ms = (now_us - self._last_target_us) / 1e3
            self.trip(f"watchdog: no pd_target for {age_ms:.1f} ms (limit {self.timeout_us / 1e3:.1f} ms)")
        return self.live

    def status(self) -> WatchdogStatus:
        return WatchdogStatus(self.tripped, self.reason, self.trip_count)
