"""Telling the operator about trips: which monitor, what to do next, how to re-arm; and the bridge's own state
at the start of a run (a trip latched by an earlier run, a pacing mode that does not match the runtime's).

The monitors themselves are in deploy/safety.py; this module only explains.
"""

from __future__ import annotations

import ipaddress
import time

from deploy.runtime import BridgeStatus, Runtime
from deploy.safety import MONITORS, Trip

BRIDGE_STATUS_WAIT_S = 0.5  # wall time to wait for the bridge's first status (it sends ~10 per second)
REARM = "`deploy arm` re-arms a running `deploy run` (a soft start from where the robot lies)"
_LIMITS = ("the policy drove a joint past a limit: check the robot and the trip's values (`real_robot logs "
           "<folder>`), then retry at --speed low")
NEXT_STEP = {  # monitor -> what a careful operator does next
    "non_finite": "a sensor or the policy gave NaN/Inf: check the sensors and cables (stand-in: a fault injection)",
    "bridge": "the bridge stopped executing targets (its watchdog or PowerProtect, see its output)",
    "stale_state": "no fresh state from the bridge: is it running, is the host busy (the stand-in and the bridge "
    "starve)? A stand-in started with --fast (bridge --follow) needs --runtime-config runtime_fast",
    "loop_overrun": "the control loop ran late: the host is busy (stop other work); a stand-in started with --fast "
    "(bridge --follow) needs --runtime-config runtime_fast",
    "orientation": "the robot tilted beyond the limit (a fall): put it down lying, then start again",
    "joint_position": _LIMITS,
    "joint_velocity": _LIMITS,
    "torque": _LIMITS,
    "action_rate": _LIMITS,
    "motor_response": "a motor did not act on its targets (dead, disconnected, hot): check motors, cables, battery",
}


class BridgeModeError(ValueError):
    """The bridge paces by robot time (the stand-in's --fast) and the runtime by wall time, or the reverse."""


def is_safety_trip(trip: Trip | None) -> bool:
    """A monitor's trip, not a stop (Ctrl-C, an episode's time limit, a reset)."""
    return trip is not None and trip.reason in MONITORS


def trip_line(trip: Trip) -> str:
    """One line: the monitor, its values, what to do next."""
    advice = NEXT_STEP.get(trip.reason, "check the robot")
    return f"safety trip: {trip.reason} ({trip.detail}); the robot is damping. Next: {advice}"


def is_stand_in(status: BridgeStatus) -> bool:
    """The bridge talks to a board on this host: the stand-in robot (a real Go1 is on the network)."""
    try:
        return ipaddress.ip_address(status.robot_ip).is_loopback
    except ValueError:
        return False


def wait_for_bridge_status(runtime: Runtime, wait_s: float = BRIDGE_STATUS_WAIT_S) -> BridgeStatus | None:
    """The bridge's newest status, waiting up to `wait_s` for its first; None if none came (an older bridge)."""
    deadline = time.monotonic() + wait_s
    while runtime.io.bridge_status() is None and time.monotonic() < deadline:
        runtime.io.poll(0.05)
    return runtime.io.bridge_status()


def check_bridge_mode(status: BridgeStatus | None, realtime: bool) -> None:
    """BridgeModeError naming the flag that fixes it, if the bridge and the runtime pace by different clocks
    (every episode would trip on stale_state, loop_overrun or the bridge's watchdog)."""
    if status is None or status.follow is None or status.follow != realtime:
        return
    if status.follow:
        raise BridgeModeError(
            "the bridge runs with --follow (the stand-in's --fast mode, robot time) but the runtime config is real "
            "time: add --runtime-config runtime_fast (or restart the stand-in and the bridge without --fast/--follow)"
        )
    raise BridgeModeError(
        "the bridge runs in real time but the runtime config is the stand-in's fast mode (realtime: false): use "
        "--runtime-config runtime (the default), or restart the stand-in with --fast and the bridge with --follow"
    )


def latched_bridge_message(status: BridgeStatus) -> str:
    """Why a run cannot start on a bridge latched by an earlier trip, and how to re-arm it."""
    return (
        f"the bridge is latched from an earlier trip ({status.reason}): it damps every target until re-armed "
        "(every run's end trips its watchdog once targets stop). Check the robot, then re-arm the bridge with "
        "`deploy arm --target bridge` and run again, or add --arm-bridge"
    )
