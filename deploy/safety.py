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
from dataclasses import dataclass, fields, replace
from types import SimpleNamespace
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


FLOAT_MAX = np.finfo(np.float64).max
TARGET_FIELDS = ("q_des", "dq_des", "kp", "kd", "tau_ff")  # of a PdLaw


@dataclass
class SafetyInput:
    """What one control step is judged on. Policy fields are None outside the policy phase. The arrays may be the
    controller's buffers, valid during the check only: keep a `copy()`."""

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

    def copy(self) -> SafetyInput:
        """This input with every array (the target's too) copied."""
        def own(value):
            return value.copy() if isinstance(value, np.ndarray) else value

        target = None if self.target is None else SimpleNamespace(**{f: own(getattr(self.target, f))
                                                                     for f in TARGET_FIELDS})  # fmt: skip
        return replace(self, **{f.name: own(getattr(self, f.name)) for f in fields(self) if f.name != "target"},
                       target=target)  # fmt: skip


@dataclass(frozen=True)
class Trip:
    reason: str  # the monitor's name
    time_us: int  # robot time of the step that tripped
    detail: str  # the offending values, readable


# ------------------------------------------------------------------------------------------------ monitors
class NonFinite:
    """NaN/Inf anywhere in the measurements, the observation or the action (checked first: NaN fails no comparison)."""

    FIELDS = ("q", "dq", "tau_est", "quaternion", "rpy", "obs", "action")

    def __init__(self, limits: SafetyLimits):
        self.finite: dict[int, np.ndarray] = {}  # by array size: where the values are finite

    def __call__(self, x: SafetyInput, limits: SafetyLimits) -> str | None:
        bad = None
        for name in self.FIELDS:
            values = getattr(x, name)
            if values is not None and not np.isfinite(values, out=self._buffer(values.shape)).all():
                bad = (bad or []) + [name]
        return f"non-finite values in {', '.join(bad)}" if bad else None

    def _buffer(self, shape: tuple[int, ...]) -> np.ndarray:
        if shape not in self.finite:
            self.finite[shape] = np.zeros(shape, bool)
        return self.finite[shape]


class JointBounds:
    """A joint reading (`reading`) outside its bounds (`bounds`); the worst joint is reported."""

    reading = ""

    def __init__(self, limits: SafetyLimits):
        self.low, self.high = self.bounds(limits)
        self.below, self.above = np.zeros(len(limits.names)), np.zeros(len(limits.names))

    @staticmethod
    def bounds(limits: SafetyLimits) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def __call__(self, x: SafetyInput, limits: SafetyLimits) -> str | None:
        values, low, high = getattr(x, self.reading), self.low, self.high
        outside = np.maximum(np.subtract(low, values, out=self.below), np.subtract(values, high, out=self.above),
                             out=self.below)  # fmt: skip
        j = int(np.argmax(outside))
        if outside[j] <= 0:
            return None
        return f"{limits.names[j]} {self.reading}={values[j]:.3f} outside [{low[j]:.3f}, {high[j]:.3f}]"


class JointPosition(JointBounds):
    reading = "q"

    @staticmethod
    def bounds(limits: SafetyLimits) -> tuple[np.ndarray, np.ndarray]:
        return limits.q_lower, limits.q_upper


class JointVelocity(JointBounds):
    reading = "dq"

    @staticmethod
    def bounds(limits: SafetyLimits) -> tuple[np.ndarray, np.ndarray]:
        return -limits.dq_max, limits.dq_max


class Torque(JointBounds):
    reading = "tau_est"

    @staticmethod
    def bounds(limits: SafetyLimits) -> tuple[np.ndarray, np.ndarray]:
        return -limits.tau_max, limits.tau_max


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


class HealthyTorque:
    """`healthy_torque` over a stack of targets at once, the least and the most over all of them, in buffers
    made once: the same operations element by element, so the same numbers (tests/test_safety.py compares them).
    Every operand has the full (corner, target, joint) shape: numpy buffers a broadcast operand on each call."""

    def __init__(self, limits: SafetyLimits, targets: int):
        n = len(limits.names)
        gains, strengths = limits.motor_gains, (limits.motor_strength_min, 1.0)
        corners = [(s, kp, kd) for s in strengths for kp in gains for kd in gains]  # healthy_torque's corner order
        shape = (len(corners), targets, n)
        self.strength, self.kp, self.kd = (np.broadcast_to(np.reshape([c[i] for c in corners], (-1, 1, 1)), shape)
                                           .copy() for i in range(3))  # fmt: skip
        self.limit = np.broadcast_to(limits.torque_limit, shape).copy()
        self.neg_limit = -self.limit
        self.position, self.velocity = np.zeros((targets, n)), np.zeros((targets, n))
        self.corners, self.term = np.zeros(shape), np.zeros(shape)
        self.rows = self.corners.reshape(-1, n)  # a view: one row per (corner, target), reduced over one axis
        self.low, self.high = np.zeros(n), np.zeros(n)

    def range(self, targets: dict[str, np.ndarray], q: np.ndarray, dq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per joint, the least and the most torque a healthy motor gives for any of `targets` (TARGET_FIELDS ->
        (targets, joints)) at (q, dq); buffers, overwritten by the next call."""
        position, velocity, c, term = self.position, self.velocity, self.corners, self.term
        np.multiply(targets["kp"], np.subtract(targets["q_des"], q, out=position), out=position)
        np.multiply(targets["kd"], np.subtract(targets["dq_des"], dq, out=velocity), out=velocity)
        np.copyto(term, position)  # kp factor * position + kd factor * velocity + tau_ff, clamped, * strength
        np.multiply(self.kp, term, out=c)
        np.copyto(term, velocity)
        np.add(c, np.multiply(self.kd, term, out=term), out=c)
        np.copyto(term, targets["tau_ff"])
        np.add(c, term, out=c)
        np.minimum(np.maximum(c, self.neg_limit, out=c), self.limit, out=c)  # np.clip, without its wrapper
        np.multiply(self.strength, c, out=c)
        return np.min(self.rows, axis=0, out=self.low), np.max(self.rows, axis=0, out=self.high)


def median_of_sorted(values: np.ndarray) -> np.ndarray:
    """np.median along the last axis of `values` sorted along it (a NaN sorts last and makes it NaN, as there);
    np.median's own partitioning costs more than the rows are long."""
    n = values.shape[-1]
    middle = values[..., n // 2] if n % 2 else (values[..., n // 2 - 1] + values[..., n // 2]) / 2
    return np.where(np.isnan(values[..., -1]), np.nan, middle)


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
        n, kept = len(limits.names), limits.motor_targets
        # The latest targets, a ring of `kept` rows per PdLaw field (copies: a target object may be reused).
        self.targets = {name: np.zeros((kept, n)) for name in TARGET_FIELDS}
        self.known = 0  # targets in the ring (up to `kept`)
        self.step = 0
        self.healthy = HealthyTorque(limits, kept)
        # Per joint, its failing steps since it last passed one: (step, torque given, least healthy, speed toward).
        self.evidence: list[list[tuple[int, float, float, float]]] = [[] for _ in limits.names]
        # Per joint, its latest judged steps (a ring of `motor_relative_steps`): torque given ÷ least healthy, step.
        window = limits.motor_relative_steps
        self.shares, self.share_steps = np.zeros((n, window)), np.zeros((n, window), np.int64)
        self.share_count, self.share_next = np.zeros(n, np.int64), np.zeros(n, np.int64)
        self.share = np.zeros(n)
        self.ordered = np.zeros((n, window))  # the full rings' shares, each sorted
        self.scratch = SimpleNamespace(
            zero=np.zeros(n), tracking_speed=np.full(n, limits.motor_tracking_speed),
            fraction=np.full(n, limits.motor_response_fraction), **{name: np.zeros(n) for name in (
                "direction", "least", "given", "toward", "bound")},
            **{name: np.zeros(n, bool) for name in ("up", "down", "judged", "mask", "slow", "failing", "relative")},
        )  # fmt: skip

    def reset(self) -> None:
        """Forget every target and step (the latch was cleared: the runtime starts anew)."""
        self.known = 0
        for joint in self.evidence:
            joint.clear()
        self.share_count[:] = 0

    def __call__(self, x: SafetyInput, limits: SafetyLimits) -> str | None:
        if x.target is None:
            self.reset()
            return None
        self.step += 1
        kept = limits.motor_targets
        for name, ring in self.targets.items():  # order does not matter: the range is over all of them
            np.copyto(ring[self.step % kept], getattr(x.target, name))
        self.known = min(self.known + 1, kept)
        if self.known < kept:  # the target acting might be older than any known
            return None
        low, high = self.healthy.range(self.targets, x.q, x.dq)
        b = self.scratch  # per joint; `np.op(..., out=)` keeps the step free of allocations
        # The way every healthy torque pushes: +1, -1, or 0 where some healthy torque is none at all (low <= high).
        up, down = np.greater(low, b.zero, out=b.up), np.less(high, b.zero, out=b.down)
        direction = np.subtract(up, down, out=b.direction, dtype=np.float64)
        least = np.negative(high, out=b.least)  # the least torque a healthy motor gives that way
        np.copyto(least, low, where=up)
        given, toward = np.multiply(direction, x.tau_est, out=b.given), np.multiply(direction, x.dq, out=b.toward)
        judged = np.not_equal(direction, b.zero, out=b.judged)
        judged &= np.greater_equal(least, limits.motor_min_torque, out=b.mask)
        slow = np.less(toward, b.tracking_speed, out=b.slow)  # not moving toward the targets
        failing = np.less(given, np.multiply(b.fraction, least, out=b.bound), out=b.failing)
        failing &= judged
        failing &= slow
        for j in np.flatnonzero(judged):
            if failing[j]:
                self.evidence[j].append((self.step, given[j], least[j], toward[j]))
            else:
                self.evidence[j].clear()
        # Compared with the other motors from a lower torque (a standing hip is asked ~1 N·m, under motor_min_torque).
        relative = np.not_equal(direction, b.zero, out=b.relative)
        relative &= np.greater_equal(least, limits.motor_relative_min_torque, out=b.mask)
        relative &= slow
        self._add_shares(relative, given, least)
        worst = max(range(len(self.evidence)), key=lambda j: len(self.evidence[j]))
        if len(self.evidence[worst]) >= limits.motor_response_steps:
            return self._describe(worst, limits)
        return self._weaker_than_the_others(limits)

    def _add_shares(self, joints: np.ndarray, given: np.ndarray, least: np.ndarray) -> None:
        """Push given ÷ least onto the share rings of `joints` (a mask), the oldest dropped from a full ring."""
        np.divide(given, least, out=self.share, where=joints)
        for j in np.flatnonzero(joints):
            at = self.share_next[j]
            self.shares[j, at], self.share_steps[j, at] = self.share[j], self.step
            self.share_next[j] = (at + 1) % self.shares.shape[1]
            self.share_count[j] = min(self.share_count[j] + 1, self.shares.shape[1])

    def _weaker_than_the_others(self, limits: SafetyLimits) -> str | None:
        """The motor whose median share is under the fraction of the others' (only with at least half of the
        motors' windows full: fewer say little about this robot)."""
        window = self.shares.shape[1]
        full = np.flatnonzero(self.share_count == window)
        if 2 * len(full) < len(self.shares):
            return None
        ordered = self.ordered[: len(full)]
        np.take(self.shares, full, axis=0, out=ordered, mode="clip")  # "raise" would buffer
        ordered.sort(axis=1)
        medians = median_of_sorted(ordered)
        k = int(np.argmin(medians))  # the first of the lowest, as min() over the joints in order
        j, others = int(full[k]), float(median_of_sorted(np.sort(np.delete(medians, k))))
        if medians[k] >= limits.motor_relative_fraction * others:
            return None
        oldest = self.share_steps[j, self.share_next[j]]  # the ring is full: the next slot holds the oldest
        span_ms = 1e3 * limits.period_s * (self.step - oldest + 1)
        return (
            f"{limits.names[j]} gave a median {medians[k]:.2f} x the least healthy torque over its last "
            f"{window} judged steps (within {span_ms:.0f} ms), the robot's other {len(full) - 1} motors "
            f"{others:.2f} x: under {limits.motor_relative_fraction:g} x theirs"
        )

    def _describe(self, j: int, limits: SafetyLimits) -> str:
        steps, given, least, toward = np.array(self.evidence[j]).T
        span_ms = 1e3 * limits.period_s * (self.step - steps[0] + 1)
        low, high = limits.motor_gains
        return (
            f"{limits.names[j]} gave {given.min():.2f}..{given.max():.2f} N·m on {len(steps)} steps within "
            f"{span_ms:.0f} ms, under {limits.motor_response_fraction:g} x the {least.min():.2f}..{least.max():.2f} "
            f"N·m a healthy motor gives for any target of the last {1e3 * limits.period_s * self.known:.0f} ms "
            f"(Kp/Kd {low:g}-{high:g}x, strength >= {limits.motor_strength_min:g}); its joint moved "
            f"{toward.min():.2f}..{toward.max():.2f} rad/s toward them"
        )


class JointReading:
    """A joint angle reading that jumps: it moved far more (or less) over a step than its own velocity reading
    says (a sensor spike, a slipped encoder), so the policy acts on a pose the robot is not in. The angle's change
    is compared with the trapezoid of the step's two velocity readings; the healthy grid's largest gap is ~0.1 rad
    (noise, impacts within a step: benchmarks/monitor_grid.py)."""

    def __init__(self, limits: SafetyLimits):
        n = len(limits.names)
        self.last_q, self.last_dq, self.has_last = np.zeros(n), np.zeros(n), False  # the previous step's readings
        self.moved, self.said, self.gap, self.nan = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n, bool)

    def reset(self) -> None:
        self.has_last = False

    def __call__(self, x: SafetyInput, limits: SafetyLimits) -> str | None:
        verdict = self._judge(x, limits) if self.has_last and x.step_interval_s else None
        np.copyto(self.last_q, x.q)
        np.copyto(self.last_dq, x.dq)
        self.has_last = True
        return verdict

    def _judge(self, x: SafetyInput, limits: SafetyLimits) -> str | None:
        moved, said, gap = self.moved, self.said, self.gap
        np.subtract(x.q, self.last_q, out=moved)
        np.add(x.dq, self.last_dq, out=said)  # the trapezoid: 0.5 (dq + last dq) interval
        np.multiply(said, 0.5, out=said)
        np.multiply(said, x.step_interval_s, out=said)
        np.abs(np.subtract(moved, said, out=gap), out=gap)
        np.putmask(gap, np.isnan(gap, out=self.nan), 0.0)  # a NaN is non_finite's to report
        np.minimum(gap, FLOAT_MAX, out=gap)  # inf: the largest float (as np.nan_to_num)
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


class ActionRate:
    """|a_t − a_(t−1)| beyond the limit on any joint."""

    def __init__(self, limits: SafetyLimits):
        self.delta = np.zeros(len(limits.names))

    def __call__(self, x: SafetyInput, limits: SafetyLimits) -> str | None:
        if x.action is None or x.last_action is None:
            return None
        delta = np.abs(np.subtract(x.action, x.last_action, out=self.delta), out=self.delta)
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
    "non_finite": NonFinite,
    "bridge": bridge,
    "stale_state": stale_state,
    "loop_overrun": loop_overrun,
    "orientation": Orientation,
    "joint_position": JointPosition,
    "joint_reading": JointReading,
    "joint_velocity": JointVelocity,
    "torque": Torque,
    "motor_response": MotorResponse,
    "action_rate": ActionRate,
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
