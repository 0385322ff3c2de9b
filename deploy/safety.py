"""Safety monitors of the deploy runtime, checked on every control step.

Each monitor is a small pure function of the step's measurements and proposed action that returns a
description of the violation, or None. Thresholds come from the robot spec's limits, loosened or
tightened by configs/safety/<robot>.yaml. The first violation trips the `SafetyMonitor`, which latches
(reason, robot time, values) until `rearm()`; the runtime switches to damping on that same step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from robot_spec.config import load_config, named_config
from robot_spec.spec import RobotSpec


@dataclass(frozen=True)
class SafetyConfig:
    joint_position_margin: float  # rad beyond the spec's joint range
    joint_velocity_fraction: float  # of the spec's velocity limit
    torque_fraction: float  # of the spec's torque limit
    motor_response_fraction: float  # |tau_est| below this share of the commanded torque: the motor is not acting
    motor_response_min_torque: float  # ... judged where the command asks this share of the torque limit or more
    max_roll_pitch: float  # rad
    max_action_delta: float  # |a_t − a_(t−1)|, policy action units
    loop_overrun_factor: float  # control periods between two steps
    stale_state_ms: float  # robot time
    damping_kd: float  # N·m·s/rad, with Kp = 0


def load_safety_config(robot: str) -> SafetyConfig:
    return load_config(SafetyConfig, named_config("safety", robot))


@dataclass(frozen=True)
class SafetyLimits:
    """Per-joint thresholds, resolved once from the spec and the config."""

    names: list[str]
    q_lower: np.ndarray
    q_upper: np.ndarray
    dq_max: np.ndarray
    tau_max: np.ndarray
    motor_min_torque: np.ndarray
    motor_response_fraction: float
    max_roll_pitch: float
    max_action_delta: float
    max_step_interval_s: float
    max_state_age_us: float

    @classmethod
    def from_spec(cls, spec: RobotSpec, cfg: SafetyConfig) -> SafetyLimits:
        return cls(
            names=list(spec.joint_names),
            q_lower=spec.position_lower - cfg.joint_position_margin,
            q_upper=spec.position_upper + cfg.joint_position_margin,
            dq_max=spec.velocity_limit * cfg.joint_velocity_fraction,
            tau_max=spec.torque_limit * cfg.torque_fraction,
            motor_min_torque=spec.torque_limit * cfg.motor_response_min_torque,
            motor_response_fraction=cfg.motor_response_fraction,
            max_roll_pitch=cfg.max_roll_pitch,
            max_action_delta=cfg.max_action_delta,
            max_step_interval_s=cfg.loop_overrun_factor * spec.control.policy_dt,
            max_state_age_us=cfg.stale_state_ms * 1e3,
        )


@dataclass
class SafetyInput:
    """What one control step is judged on. Policy fields are None outside the policy phase."""

    q: np.ndarray
    dq: np.ndarray
    tau_est: np.ndarray
    quaternion: np.ndarray  # IMU attitude w, x, y, z
    rpy: np.ndarray  # IMU roll, pitch, yaw (rad), the board's own estimate from the same attitude
    state_age_us: float  # robot time since the newest joint/body state was measured
    step_interval_s: float | None = None  # since the previous control step (None on the first)
    commanded_torque: np.ndarray | None = None  # the last PD target's torque at this state (None while damping)
    bridge_trip: str | None = None  # the bridge's latched trip reason: it is not executing our targets
    obs: np.ndarray | None = None
    action: np.ndarray | None = None
    last_action: np.ndarray | None = None


@dataclass(frozen=True)
class Trip:
    reason: str  # the monitor's name
    time_us: int  # robot time of the step that tripped
    detail: str  # the offending values, readable


# ------------------------------------------------------------------------------------------------ monitors
def _worst_joint(values: np.ndarray, low: np.ndarray, high: np.ndarray, names: list[str], what: str) -> str | None:
    outside = np.maximum(low - values, values - high)
    j = int(np.argmax(outside))
    if outside[j] <= 0:
        return None
    return f"{names[j]} {what}={values[j]:.3f} outside [{low[j]:.3f}, {high[j]:.3f}]"


def non_finite(x: SafetyInput, limits: SafetyLimits) -> str | None:
    """NaN/Inf anywhere in the measurements, the observation or the action (checked first: NaN fails no comparison)."""
    arrays = {"q": x.q, "dq": x.dq, "tau_est": x.tau_est, "quaternion": x.quaternion, "rpy": x.rpy, "obs": x.obs,
              "action": x.action}  # fmt: skip
    bad = [name for name, a in arrays.items() if a is not None and not np.all(np.isfinite(a))]
    return f"non-finite values in {', '.join(bad)}" if bad else None


def joint_position(x: SafetyInput, limits: SafetyLimits) -> str | None:
    return _worst_joint(x.q, limits.q_lower, limits.q_upper, limits.names, "q")


def joint_velocity(x: SafetyInput, limits: SafetyLimits) -> str | None:
    return _worst_joint(x.dq, -limits.dq_max, limits.dq_max, limits.names, "dq")


def torque(x: SafetyInput, limits: SafetyLimits) -> str | None:
    return _worst_joint(x.tau_est, -limits.tau_max, limits.tau_max, limits.names, "tau_est")


def motor_response(x: SafetyInput, limits: SafetyLimits) -> str | None:
    """A motor that does not produce the torque its PD target asks for (dead, disconnected, overheated)."""
    if x.commanded_torque is None:
        return None
    asked = np.abs(x.commanded_torque)
    given = x.tau_est * np.sign(x.commanded_torque)
    failing = (asked >= limits.motor_min_torque) & (given < limits.motor_response_fraction * asked)
    if not failing.any():
        return None
    j = int(np.argmax(failing))
    return f"{limits.names[j]} tau_est={x.tau_est[j]:.2f} while the target asks {x.commanded_torque[j]:.2f} N·m"


def orientation(x: SafetyInput, limits: SafetyLimits) -> str | None:
    roll, pitch = float(x.rpy[0]), float(x.rpy[1])
    if max(abs(roll), abs(pitch)) <= limits.max_roll_pitch:
        return None
    return f"roll={roll:.3f} pitch={pitch:.3f} beyond ±{limits.max_roll_pitch:.3f} rad"


def action_rate(x: SafetyInput, limits: SafetyLimits) -> str | None:
    if x.action is None or x.last_action is None:
        return None
    delta = np.abs(x.action - x.last_action)
    j = int(np.argmax(delta))
    if delta[j] <= limits.max_action_delta:
        return None
    return f"{limits.names[j]} |a_t - a_t-1|={delta[j]:.3f} > {limits.max_action_delta:.3f}"


def loop_overrun(x: SafetyInput, limits: SafetyLimits) -> str | None:
    if x.step_interval_s is None or x.step_interval_s <= limits.max_step_interval_s:
        return None
    limit_ms = 1e3 * limits.max_step_interval_s
    return f"control step {1e3 * x.step_interval_s:.1f} ms after the previous one (> {limit_ms:.1f} ms)"


def bridge(x: SafetyInput, limits: SafetyLimits) -> str | None:
    """The bridge damps on its own (watchdog, PowerProtect): running the policy on would log actions never executed."""
    return None if x.bridge_trip is None else f"the bridge has tripped: {x.bridge_trip}"


def stale_state(x: SafetyInput, limits: SafetyLimits) -> str | None:
    if x.state_age_us <= limits.max_state_age_us:
        return None
    return f"newest state is {x.state_age_us / 1e3:.1f} ms old (> {limits.max_state_age_us / 1e3:.1f} ms robot time)"


# Checked in this order; the first violation is the trip's reason.
MONITORS: dict[str, Callable[[SafetyInput, SafetyLimits], str | None]] = {
    "non_finite": non_finite,
    "bridge": bridge,
    "stale_state": stale_state,
    "loop_overrun": loop_overrun,
    "orientation": orientation,
    "joint_position": joint_position,
    "joint_velocity": joint_velocity,
    "torque": torque,
    "motor_response": motor_response,
    "action_rate": action_rate,
}


class SafetyMonitor:
    """Runs every monitor each step; the first trip latches until `rearm()`."""

    def __init__(self, spec: RobotSpec, cfg: SafetyConfig):
        self.cfg = cfg
        self.limits = SafetyLimits.from_spec(spec, cfg)
        self.trip: Trip | None = None
        self.trip_count = 0  # monitor trips (not stops)

    @property
    def tripped(self) -> bool:
        return self.trip is not None

    def check(self, x: SafetyInput, time_us: int) -> Trip | None:
        """The latched trip, if any; otherwise run the monitors and latch the first violation."""
        if self.trip is None:
            for reason, monitor in MONITORS.items():
                detail = monitor(x, self.limits)
                if detail is not None:
                    self.trip = Trip(reason, int(time_us), detail)
                    self.trip_count += 1
                    break
        return self.trip

    def trip_now(self, reason: str, time_us: int, detail: str = "") -> Trip:
        """Latch damping for a reason outside the monitors (operator stop, end of an episode); not counted as a
        safety trip. An earlier trip is kept."""
        if self.trip is None:
            self.trip = Trip(reason, int(time_us), detail)
        return self.trip

    def rearm(self) -> Trip | None:
        """Clear the latch; returns the trip that was cleared."""
        cleared, self.trip = self.trip, None
        return cleared
