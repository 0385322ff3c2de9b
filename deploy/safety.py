"""Safety monitors of the deploy runtime, checked on every control step.

Each monitor is a small pure function of the step's measurements and proposed action that returns a
description of the violation, or None; one that must remember earlier steps (motor_response) is a class,
instantiated once per `SafetyMonitor`. Thresholds come from the robot spec's limits, loosened or
tightened by configs/safety/<robot>.yaml. The first violation trips the `SafetyMonitor`, which latches
(reason, robot time, values) until `rearm()`; the runtime switches to damping on that same step.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from robot_spec.config import load_config, named_config
from robot_spec.spec import RobotSpec


@dataclass(frozen=True)
class SafetyConfig:
    joint_position_margin: float  # rad beyond the spec's joint range
    joint_velocity_fraction: float  # of the spec's velocity limit
    torque_fraction: float  # of the spec's torque limit
    motor_response_fraction: float  # a motor giving less than this share of the least healthy torque fails a step
    motor_response_min_torque: float  # ... judged where that least torque is this share of the torque limit or more
    motor_response_steps: int  # failing steps that trip (a step the motor passes in between clears them)
    motor_latency_ms: float  # longest a target may take to act once it is on the board (actuation delay)
    motor_gain_min: float  # realised Kp, Kd ÷ commanded, each, of a healthy motor
    motor_gain_max: float
    motor_strength_min: float  # realised torque ÷ the PD law's, of a healthy motor (at most 1)
    motor_tracking_speed: float  # rad/s: a joint moving toward its target this fast has a working motor
    motor_relative_fraction: float  # a motor giving less than this share of what the robot's others give ...
    motor_relative_steps: int  # ... (each relative to the least healthy torque) over this many judged steps
    motor_relative_min_torque: float  # ... judged where the least healthy torque is this share of the limit or more
    max_reading_jump: float  # rad: a joint angle reading this far from what its velocity reading says it moved
    max_roll_pitch: float  # rad: a fall
    orientation_margin: float  # rad beyond it the IMU's tilt, now or ahead, must be (its bias and noise)
    orientation_readings: int  # the tilt's line is fitted through this many readings ...
    orientation_lookahead_ms: float  # ... and carried this far ahead
    orientation_persist: int  # readings in a row beyond the limit itself that trip (a slow fall)
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
    torque_limit: np.ndarray  # the board's clamp on every PD torque
    motor_min_torque: np.ndarray
    motor_response_fraction: float
    motor_response_steps: int
    motor_targets: int  # how many of the latest targets a motor may still be executing
    motor_gains: tuple[float, float]
    motor_strength_min: float
    motor_tracking_speed: float
    motor_relative_fraction: float
    motor_relative_steps: int
    motor_relative_min_torque: np.ndarray
    max_reading_jump: float
    period_s: float  # control period
    max_roll_pitch: float  # a fall
    max_tilt: float  # a fall, with the IMU's margin
    tilt_readings: int
    tilt_lookahead_steps: float
    tilt_persist: int
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
            torque_limit=spec.torque_limit,
            motor_min_torque=spec.torque_limit * cfg.motor_response_min_torque,
            motor_response_fraction=cfg.motor_response_fraction,
            motor_response_steps=cfg.motor_response_steps,
            # A target answers a step's state, reaches the board within that control period and acts up to the
            # latency later: the newest targets published in that span, and the last one before it, may be acting.
            motor_targets=math.ceil(cfg.motor_latency_ms * 1e-3 / spec.control.policy_dt - 1e-9) + 1,
            motor_gains=(cfg.motor_gain_min, cfg.motor_gain_max),
            motor_strength_min=cfg.motor_strength_min,
            motor_tracking_speed=cfg.motor_tracking_speed,
            motor_relative_fraction=cfg.motor_relative_fraction,
            motor_relative_steps=cfg.motor_relative_steps,
            motor_relative_min_torque=spec.torque_limit * cfg.motor_relative_min_torque,
            max_reading_jump=cfg.max_reading_jump,
            period_s=spec.control.policy_dt,
            max_roll_pitch=cfg.max_roll_pitch,
            max_tilt=cfg.max_roll_pitch + cfg.orientation_margin,
            tilt_readings=cfg.orientation_readings,
            tilt_lookahead_steps=cfg.orientation_lookahead_ms * 1e-3 / spec.control.policy_dt,
            tilt_persist=cfg.orientation_persist,
            max_action_delta=cfg.max_action_delta,
            max_step_interval_s=cfg.loop_overrun_factor * spec.control.policy_dt,
            max_state_age_us=cfg.stale_state_ms * 1e3,
        )


class PdLaw(Protocol):
    """A PD target as the board runs it, tau = kp (q_des - q) + kd (dq_des - dq) + tau_ff (deploy.runtime.PdTarget,
    q_des within the SDK's position clamp)."""

    q_des: np.ndarray
    dq_des: np.ndarray
    kp: np.ndarray
    kd: np.ndarray
    tau_ff: np.ndarray


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
    target: PdLaw | None = None  # the PD target published on the previous step (None before the first)
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


def healthy_torque(target: PdLaw, q: np.ndarray, dq: np.ndarray, limits: SafetyLimits) -> tuple[np.ndarray, np.ndarray]:
    """Per joint, the least and the most torque a healthy motor gives for `target` at (q, dq): Kp and Kd each
    realised at any factor in the gain range, the whole torque scaled by any strength from the minimum to 1, and
    clamped at the (scaled) torque limit. The torque is linear in each factor, so the box's corners bound it."""
    position, velocity = target.kp * (target.q_des - q), target.kd * (target.dq_des - dq)
    limit = limits.torque_limit
    corners = [
        strength * np.clip(kp * position + kd * velocity + target.tau_ff, -limit, limit)
        for strength in (limits.motor_strength_min, 1.0) for kp in limits.motor_gains for kd in limits.motor_gains
    ]  # fmt: skip
    return np.min(corners, axis=0), np.max(corners, axis=0)


class MotorResponse:
    """A motor that does not act on its targets: dead, disconnected, overheated or far too weak.

    A healthy robot's motors are not the simulator's: a target acts tens of ms late, the realised gains and
    strength differ. So a step judges a motor against every target it may still be executing (`motor_targets`)
    and every healthy realisation of them (`healthy_torque`): only where all of those push its joint one way, with
    at least the minimum torque, is it asked for anything. It fails the step if it gives less than the response
    fraction of the least of those torques while its joint does not move toward the target (a dead motor reports
    ~0 torque and its joint is carried away). `motor_response_steps` failing steps trip, unless a judged step
    passes between them; a step that asks too little to judge (in a gait, much of a lightly loaded joint's)
    neither confirms nor clears.

    A motor at a third of its strength on a stiff robot gives as much as a healthy one on a soft robot, so no
    absolute bound tells it apart. But one robot's motors share its gains and latency: a motor is also judged
    against the robot's others. Its median torque (as a share of the least healthy torque, over its last
    `motor_relative_steps` judged steps) below `motor_relative_fraction` x the median of the other motors'
    medians trips. As every motor of the robot shares the realisation, this comparison judges smaller torques
    (`motor_relative_min_torque`) than the absolute bound: a standing or lightly loaded hip is asked ~1 N·m, under
    the absolute bound's 1.9 N·m, and a dead or weak one there went unseen for 0.5 s or for good (issue 23). On the
    healthy grid (per-joint strength 0.7-1.0) the lowest share was 0.56, a motor at 0.3 read 0.27-0.29
    (benchmarks/monitor_grid.py).
    """

    def __init__(self, limits: SafetyLimits):
        self.targets: deque[PdLaw] = deque(maxlen=limits.motor_targets)
        self.step = 0
        # Per joint, its failing steps since it last passed one: (step, torque given, least healthy, speed toward).
        self.evidence: list[list[tuple[int, float, float, float]]] = [[] for _ in limits.names]
        # Per joint, its latest judged steps: (step, torque given ÷ least healthy).
        self.shares: list[deque[tuple[int, float]]] = [deque(maxlen=limits.motor_relative_steps) for _ in limits.names]

    def reset(self) -> None:
        """Forget every target and step (the latch was cleared: the runtime starts anew)."""
        self.targets.clear()
        for joint in self.evidence:
            joint.clear()
        for joint in self.shares:
            joint.clear()

    def __call__(self, x: SafetyInput, limits: SafetyLimits) -> str | None:
        if x.target is None:
            self.reset()
            return None
        self.step += 1
        self.targets.append(x.target)
        if len(self.targets) < self.targets.maxlen:  # the target acting might be older than any known
            return None
        ranges = [healthy_torque(t, x.q, x.dq, limits) for t in self.targets]
        low, high = np.min([r[0] for r in ranges], axis=0), np.max([r[1] for r in ranges], axis=0)
        direction = np.where(low > 0, 1.0, np.where(high < 0, -1.0, 0.0))  # 0: some healthy torque is none at all
        least = np.where(direction > 0, low, -high)  # the least torque a healthy motor gives that way
        given, toward = direction * x.tau_est, direction * x.dq
        judged = (direction != 0) & (least >= limits.motor_min_torque)
        still = toward < limits.motor_tracking_speed
        failing = judged & (given < limits.motor_response_fraction * least) & still
        for j in np.flatnonzero(judged):
            if failing[j]:
                self.evidence[j].append((self.step, given[j], least[j], toward[j]))
            else:
                self.evidence[j].clear()
        for j in np.flatnonzero((direction != 0) & (least >= limits.motor_relative_min_torque) & still):
            self.shares[j].append((self.step, given[j] / least[j]))
        worst = max(range(len(self.evidence)), key=lambda j: len(self.evidence[j]))
        if len(self.evidence[worst]) >= limits.motor_response_steps:
            return self._describe(worst, limits)
        return self._weaker_than_the_others(limits)

    def _weaker_than_the_others(self, limits: SafetyLimits) -> str | None:
        """The motor whose median share is under the fraction of the others' (only with at least half of the
        motors' windows full: fewer say little about this robot)."""
        full = [j for j, shares in enumerate(self.shares) if len(shares) == shares.maxlen]
        if 2 * len(full) < len(self.shares):
            return None
        medians = {j: float(np.median([share for _, share in self.shares[j]])) for j in full}
        j = min(medians, key=medians.get)
        others = float(np.median([m for k, m in medians.items() if k != j]))
        if medians[j] >= limits.motor_relative_fraction * others:
            return None
        span_ms = 1e3 * limits.period_s * (self.step - self.shares[j][0][0] + 1)
        return (
            f"{limits.names[j]} gave a median {medians[j]:.2f} x the least healthy torque over its last "
            f"{len(self.shares[j])} judged steps (within {span_ms:.0f} ms), the robot's other {len(full) - 1} motors "
            f"{others:.2f} x: under {limits.motor_relative_fraction:g} x theirs"
        )

    def _describe(self, j: int, limits: SafetyLimits) -> str:
        steps, given, least, toward = np.array(self.evidence[j]).T
        span_ms = 1e3 * limits.period_s * (self.step - steps[0] + 1)
        low, high = limits.motor_gains
        return (
            f"{limits.names[j]} gave {given.min():.2f}..{given.max():.2f} N·m on {len(steps)} steps within "
            f"{span_ms:.0f} ms, under {limits.motor_response_fraction:g} x the {least.min():.2f}..{least.max():.2f} "
            f"N·m a healthy motor gives for any target of the last {1e3 * limits.period_s * len(self.targets):.0f} ms "
            f"(Kp/Kd {low:g}-{high:g}x, strength >= {limits.motor_strength_min:g}); its joint moved "
            f"{toward.min():.2f}..{toward.max():.2f} rad/s toward them"
        )


class JointReading:
    """A joint angle reading that jumps: it moved far more (or less) over a step than its own velocity reading
    says (a sensor spike, a slipped encoder), so the policy acts on a pose the robot is not in. The angle's change
    is compared with the trapezoid of the step's two velocity readings; the healthy grid's largest gap is ~0.1 rad
    (noise, impacts within a step: benchmarks/monitor_grid.py)."""

    def __init__(self, limits: SafetyLimits):
        self.last: tuple[np.ndarray, np.ndarray] | None = None

    def reset(self) -> None:
        self.last = None

    def __call__(self, x: SafetyInput, limits: SafetyLimits) -> str | None:
        last, self.last = self.last, (x.q.copy(), x.dq.copy())
        if last is None or not x.step_interval_s:
            return None
        moved, said = x.q - last[0], 0.5 * (x.dq + last[1]) * x.step_interval_s
        gap = np.nan_to_num(np.abs(moved - said))  # a NaN is non_finite's to report
        j = int(np.argmax(gap))
        if gap[j] <= limits.max_reading_jump:
            return None
        return (f"{limits.names[j]} angle reading moved {moved[j]:+.3f} rad in {1e3 * x.step_interval_s:.0f} ms; its "
                f"velocity readings account for {said[j]:+.3f} rad (> {limits.max_reading_jump:g} rad apart)")


class Orientation:
    """A fall: the trunk tilted (max |roll|, |pitch|) beyond the limit, or about to be.

    The IMU reads the tilt off by its mounting bias and noise (a few hundredths of a rad each), so a healthy robot
    leaning close to the limit may read beyond it, and a falling one may read under it as it passes. A fall passes
    the limit moving, a leaning robot does not: the monitor fits a line through the last `tilt_readings` readings
    and trips when the tilt it gives `tilt_lookahead_steps` ahead, or the newest reading, is beyond the limit plus
    the margin. A slow fall does not move much: `tilt_persist` readings in a row beyond the limit itself trip too.
    On the healthy grid this left alone every robot leaning close to the limit and caught 289 of 296 true falls
    within a control step, the rest within 38 ms (benchmarks/monitor_grid.py)."""

    def __init__(self, limits: SafetyLimits):
        self.tilts: deque[float] = deque(maxlen=max(limits.tilt_readings, limits.tilt_persist))

    def reset(self) -> None:
        self.tilts.clear()

    def __call__(self, x: SafetyInput, limits: SafetyLimits) -> str | None:
        roll, pitch = float(x.rpy[0]), float(x.rpy[1])
        tilt = max(abs(roll), abs(pitch))
        if not math.isfinite(tilt):
            return None  # non_finite's to report
        self.tilts.append(tilt)
        ahead, rate = self._ahead(limits)
        now = f"roll={roll:.3f} pitch={pitch:.3f}"
        if max(tilt, ahead) > limits.max_tilt:
            span_ms = 1e3 * limits.period_s * (limits.tilt_readings - 1)
            return (f"{now}; tilting {rate:+.2f} rad/s over the last {span_ms:.0f} ms, {ahead:.3f} rad "
                    f"{1e3 * limits.period_s * limits.tilt_lookahead_steps:.0f} ms ahead; beyond {limits.max_tilt:.3f} "
                    "rad (the fall limit with the IMU's margin)")
        last = list(self.tilts)[-limits.tilt_persist:]
        if len(last) == limits.tilt_persist and min(last) > limits.max_roll_pitch:
            return (f"{now}; the last {len(last)} readings ({1e3 * limits.period_s * (len(last) - 1):.0f} ms) "
                    f"{min(last):.3f}..{max(last):.3f} rad, beyond {limits.max_roll_pitch:.3f} rad")
        return None

    def _ahead(self, limits: SafetyLimits) -> tuple[float, float]:
        """The tilt the line through the last `tilt_readings` readings gives `tilt_lookahead_steps` after the
        newest, and its rate (rad/s); with too few readings, the newest and 0."""
        if len(self.tilts) < limits.tilt_readings:
            return self.tilts[-1], 0.0
        y = np.array(self.tilts)[-limits.tilt_readings:]
        x = np.arange(len(y)) - (len(y) - 1) / 2
        slope = float(x @ y / (x @ x))  # per step
        return float(y.mean() + (x[-1] + limits.tilt_lookahead_steps) * slope), slope / limits.period_s


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


Monitor = Callable[[SafetyInput, SafetyLimits], "str | None"]

# Checked in this order; the first violation is the trip's reason. A class is a monitor with memory.
MONITORS: dict[str, Monitor | type] = {
    "non_finite": non_finite,
    "bridge": bridge,
    "stale_state": stale_state,
    "loop_overrun": loop_overrun,
    "orientation": Orientation,
    "joint_position": joint_position,
    "joint_reading": JointReading,
    "joint_velocity": joint_velocity,
    "torque": torque,
    "motor_response": MotorResponse,
    "action_rate": action_rate,
}


class SafetyMonitor:
    """Runs every monitor each step; the first trip latches until `rearm()`."""

    def __init__(self, spec: RobotSpec, cfg: SafetyConfig):
        self.cfg = cfg
        self.limits = SafetyLimits.from_spec(spec, cfg)
        self.monitors: dict[str, Monitor] = {
            name: monitor(self.limits) if isinstance(monitor, type) else monitor for name, monitor in MONITORS.items()
        }  # fmt: skip
        self.trip: Trip | None = None
        self.trip_count = 0  # monitor trips (not stops)

    @property
    def tripped(self) -> bool:
        return self.trip is not None

    def check(self, x: SafetyInput, time_us: int) -> Trip | None:
        """The latched trip, if any; otherwise run the monitors and latch the first violation."""
        if self.trip is None:
            for reason, monitor in self.monitors.items():
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
        """Clear the latch, and the monitors' memory of the steps before; returns the trip that was cleared."""
        cleared, self.trip = self.trip, None
        for monitor in self.monitors.values():
            if hasattr(monitor, "reset"):
                monitor.reset()
        return cleared
