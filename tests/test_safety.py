"""deploy.safety: every monitor trips on its own violation only, thresholds follow the spec, trips latch; the
motor-response monitor lets a late, soft, weak but healthy motor be and still trips on a dead or far too weak one."""

import itertools

import numpy as np
import pytest

from deploy.runtime import PdTarget
from deploy.safety import (
    MONITORS,
    MotorResponse,
    SafetyInput,
    SafetyLimits,
    SafetyMonitor,
    healthy_torque,
    load_safety_config,
)


@pytest.fixture(scope="module")
def cfg():
    return load_safety_config("go1")


def standing(spec, **changes) -> SafetyInput:
    n = spec.num_joints
    x = SafetyInput(
        q=spec.default_pose.copy(), dq=np.zeros(n), tau_est=np.zeros(n), quaternion=np.array([1.0, 0, 0, 0]),
        rpy=np.zeros(3),
        state_age_us=0.0, step_interval_s=spec.control.policy_dt, obs=np.zeros(spec.observation.dim),
        action=np.zeros(n), last_action=np.zeros(n),
    )  # fmt: skip
    for key, value in changes.items():
        setattr(x, key, value)
    return x


def pd(spec, offset: np.ndarray | None = None) -> PdTarget:
    """The spec's PD gains holding the default pose + `offset`."""
    n = spec.num_joints
    q_des = spec.default_pose + (np.zeros(n) if offset is None else offset)
    return PdTarget(q_des, np.zeros(n), np.full(n, spec.control.kp), np.full(n, spec.control.kd), np.zeros(n))


def verdict(name: str, steps: list[SafetyInput], limits: SafetyLimits) -> str | None:
    """A fresh monitor `name` fed `steps` in order; its verdict on the last."""
    monitor = MONITORS[name]
    monitor = monitor(limits) if isinstance(monitor, type) else monitor
    result = None
    for x in steps:
        result = monitor(x, limits)
    return result


def steps_to_trip(limits: SafetyLimits) -> int:
    """Steps of a constant failing input before motor_response trips: its targets known, then its window."""
    return limits.motor_targets + limits.motor_response_steps - 1


def calf_demand(spec, limits: SafetyLimits, times_min: float = 3.0) -> np.ndarray:
    """A target offset on FL calf that asks even the weakest healthy motor for `times_min` x the minimum torque."""
    offset, calf = np.zeros(spec.num_joints), 2
    weakest = limits.motor_gains[0] * limits.motor_strength_min * spec.control.kp
    offset[calf] = times_min * limits.motor_min_torque[calf] / weakest
    return offset


def tilted(angle: float, axis: int) -> dict:
    """The IMU's attitude (quaternion and rpy) rolled (axis 0) or pitched (axis 1) by `angle`."""
    quaternion, rpy = np.array([np.cos(angle / 2), 0.0, 0.0, 0.0]), np.zeros(3)
    quaternion[1 + axis], rpy[axis] = np.sin(angle / 2), angle
    return {"quaternion": quaternion, "rpy": rpy}


def violations(spec, cfg):
    """Per monitor, steps whose last breaks exactly that monitor's threshold, derived from the spec and config."""
    limits = SafetyLimits.from_spec(spec, cfg)
    calf = 2  # FL calf: its limits differ from hip/thigh, so a wrongly tiled limit would show
    q = spec.default_pose.copy()
    q[calf] = spec.position_lower[calf] - cfg.joint_position_margin - 0.01
    dq, tau, action = np.zeros(12), np.zeros(12), np.zeros(12)
    dq[calf] = spec.velocity_limit[calf] * cfg.joint_velocity_fraction + 0.1
    tau[calf] = -(spec.torque_limit[calf] * cfg.torque_fraction + 0.1)
    action[5] = cfg.max_action_delta + 0.01
    dead = standing(spec, target=pd(spec, calf_demand(spec, limits)))  # the calf asked to push, tau_est 0
    nan_obs = np.zeros(spec.observation.dim)
    nan_obs[7] = np.nan
    spiked = spec.default_pose.copy()
    spiked[calf] += cfg.max_reading_jump + 0.01  # its velocity reading says it stood still
    return {
        "non_finite": [standing(spec, obs=nan_obs)],
        "bridge": [standing(spec, bridge_trip="watchdog: no pd_target for 62 ms")],
        "stale_state": [standing(spec, state_age_us=limits.max_state_age_us + 1)],
        "loop_overrun": [standing(spec, step_interval_s=limits.max_step_interval_s * 1.01)],
        "orientation": [standing(spec, **tilted(limits.max_tilt + 0.01, axis=1))],  # lying: beyond, not moving
        "joint_position": [standing(spec, q=q)],
        "joint_reading": [standing(spec), standing(spec, q=spiked)],
        "joint_velocity": [standing(spec, dq=dq)],
        "torque": [standing(spec, tau_est=tau)],
        "motor_response": [dead] * steps_to_trip(limits),
        "action_rate": [standing(spec, action=action)],
    }


def test_each_monitor_trips_on_its_own_violation_only(spec, cfg):
    limits = SafetyLimits.from_spec(spec, cfg)
    cases = violations(spec, cfg)
    assert set(cases) == set(MONITORS)
    for name in MONITORS:
        assert verdict(name, [standing(spec)], limits) is None, name
        for case_name, case in cases.items():
            tripped = verdict(name, case, limits) is not None
            assert tripped == (case_name == name), (name, case_name)


def test_thresholds_are_the_spec_limits_with_the_configured_margins(spec, cfg):
    limits = SafetyLimits.from_spec(spec, cfg)
    np.testing.assert_allclose(limits.q_lower, spec.position_lower - cfg.joint_position_margin)
    np.testing.assert_allclose(limits.tau_max, spec.torque_limit * cfg.torque_fraction)
    np.testing.assert_allclose(limits.dq_max, spec.velocity_limit * cfg.joint_velocity_fraction)
    assert limits.max_step_interval_s == pytest.approx(cfg.loop_overrun_factor / spec.control.policy_hz)
    # Just inside every threshold: nothing trips.
    inside = standing(
        spec, q=limits.q_upper - 1e-3, dq=-limits.dq_max + 1e-3, tau_est=limits.tau_max - 1e-3,
        **tilted(cfg.max_roll_pitch - 0.01, axis=0), state_age_us=limits.max_state_age_us,
        action=np.full(12, cfg.max_action_delta - 1e-3),
    )  # fmt: skip
    assert SafetyMonitor(spec, cfg).check(inside, 0) is None


def test_a_dead_motor_trips_after_its_targets_are_known_and_its_window_has_failed(spec, cfg):
    limits = SafetyLimits.from_spec(spec, cfg)
    dead = standing(spec, target=pd(spec, calf_demand(spec, limits)))
    monitor = MotorResponse(limits)
    verdicts = [monitor(dead, limits) for _ in range(steps_to_trip(limits))]
    assert verdicts[:-1] == [None] * (steps_to_trip(limits) - 1)
    steps = limits.motor_response_steps
    window_ms = round(1e3 * steps * spec.control.policy_dt)
    assert f"FL_calf_joint gave 0.00..0.00 N·m on {steps} steps within {window_ms} ms" in verdicts[-1]
    # Pushing the wrong way is no better than nothing.
    wrong_way = standing(spec, target=dead.target, tau_est=-np.eye(12)[2])
    assert verdict("motor_response", [wrong_way] * steps_to_trip(limits), limits) is not None


def healthy_motor(limits: SafetyLimits, target: PdTarget, q, dq, kp: float, kd: float, strength: float) -> np.ndarray:
    """The torque a motor realising `kp`, `kd` x the commanded gains at `strength` gives for `target`."""
    tau = kp * target.kp * (target.q_des - q) + kd * target.kd * (target.dq_des - dq) + target.tau_ff
    return strength * np.clip(tau, -limits.torque_limit, limits.torque_limit)


@pytest.mark.parametrize("lag", [1, 2, 3], ids=["0ms", "20ms", "40ms"])
def test_a_late_soft_weak_but_healthy_motor_never_trips(spec, cfg, lag):
    """Targets that swing every step (the worst case for latency), realised by the target published `lag` steps
    ago (1: the newest, as the simulator) at every corner of the healthy gain and strength ranges."""
    limits = SafetyLimits.from_spec(spec, cfg)
    assert limits.motor_targets >= lag  # the configured latency bound covers 40 ms
    rng = np.random.default_rng(lag)
    low, high = limits.motor_gains
    for kp, kd, strength in itertools.product((low, high), (low, high), (limits.motor_strength_min, 1.0)):
        monitor, published = MotorResponse(limits), []
        old_monitor_trips = 0
        for k in range(60):
            published.append(pd(spec, 0.3 * np.sin(0.9 * k + np.arange(12)) + 0.05 * rng.normal(size=12)))
            q, dq = spec.default_pose + 0.05 * rng.normal(size=12), rng.normal(size=12)
            acting = published[max(0, k - lag)]
            tau_est = healthy_motor(limits, acting, q, dq, kp, kd, strength)
            newest = published[k]
            asked = newest.kp * (newest.q_des - q) + newest.kd * (newest.dq_des - dq)
            # Today's check on the newest target alone: a request of >= 0.2 x the limit met by < 0.25 of it.
            old_monitor_trips += np.any((np.abs(asked) >= 0.2 * limits.torque_limit) &
                                        (tau_est * np.sign(asked) < 0.25 * np.abs(asked)))  # fmt: skip
            x = standing(spec, q=q, dq=dq, tau_est=tau_est, target=newest)
            assert monitor(x, limits) is None, (kp, kd, strength, k)
        if lag > 1 or kp * strength < 0.25:
            assert old_monitor_trips > 0  # the case is one a single-step comparison with the newest target fails


def test_a_motor_far_weaker_than_the_weakest_healthy_one_trips(spec, cfg):
    limits = SafetyLimits.from_spec(spec, cfg)
    target = pd(spec, calf_demand(spec, limits))
    q, dq = spec.default_pose, np.zeros(12)
    weakest = healthy_motor(limits, target, q, dq, limits.motor_gains[0], limits.motor_gains[0],
                            limits.motor_strength_min)  # fmt: skip
    at_strength = {s: healthy_motor(limits, target, q, dq, 1.0, 1.0, s) for s in (0.3, 0.7)}
    steps = steps_to_trip(limits)
    assert verdict("motor_response", [standing(spec, target=target, tau_est=weakest)] * steps, limits) is None
    assert verdict("motor_response", [standing(spec, target=target, tau_est=at_strength[0.7])] * steps, limits) is None
    far_too_weak = [standing(spec, target=target, tau_est=at_strength[0.3])] * steps
    assert "FL_calf_joint" in verdict("motor_response", far_too_weak, limits)


def test_a_joint_moving_toward_its_target_has_a_working_motor(spec, cfg):
    limits = SafetyLimits.from_spec(spec, cfg)
    target, steps = pd(spec, calf_demand(spec, limits)), steps_to_trip(limits)
    toward, away = np.zeros(12), np.zeros(12)
    toward[2], away[2] = limits.motor_tracking_speed + 0.1, -1.0  # the calf's target is above it: + is toward
    assert verdict("motor_response", [standing(spec, target=target, dq=toward)] * steps, limits) is None
    assert verdict("motor_response", [standing(spec, target=target, dq=away)] * steps, limits) is not None


def test_a_passed_step_clears_a_motor_and_an_unjudged_one_does_not(spec, cfg):
    limits = SafetyLimits.from_spec(spec, cfg)
    dead = standing(spec, target=pd(spec, calf_demand(spec, limits)))
    unjudged = standing(spec, target=dead.target, q=dead.target.q_des)  # at its target: nothing asked
    passed = standing(spec, target=dead.target, tau_est=healthy_motor(limits, dead.target, dead.q, dead.dq, 1, 1, 1))
    almost = [dead] * (steps_to_trip(limits) - 1)
    assert verdict("motor_response", almost + [passed] + [dead] * (limits.motor_response_steps - 1), limits) is None
    assert verdict("motor_response", almost + [unjudged] + [dead], limits) is not None


def test_motor_response_needs_its_targets_known_and_forgets_on_rearm(spec, cfg):
    limits = SafetyLimits.from_spec(spec, cfg)
    dead = standing(spec, target=pd(spec, calf_demand(spec, limits)))
    almost = steps_to_trip(limits) - 1
    monitor = SafetyMonitor(spec, cfg)
    for t in range(almost):
        assert monitor.check(dead, t) is None
    monitor.trip_now("reset", almost)
    monitor.rearm()
    for t in range(almost):  # the targets and steps before the re-arm are forgotten
        assert monitor.check(dead, almost + 1 + t) is None
    assert monitor.check(dead, 2 * almost + 1).reason == "motor_response"
    # No target (before the first): nothing judged, and the memory starts again.
    assert verdict("motor_response", [dead] * almost + [standing(spec)] + [dead] * almost, limits) is None


def test_non_finite_is_found_in_action_and_measurements(spec, cfg):
    limits = SafetyLimits.from_spec(spec, cfg)
    action = np.zeros(12)
    action[3] = np.inf
    q = spec.default_pose.copy()
    q[0] = np.nan
    assert "action" in verdict("non_finite", [standing(spec, action=action)], limits)
    assert "q" in verdict("non_finite", [standing(spec, q=q)], limits)
    # Outside the policy phase there is no obs/action to judge.
    assert verdict("non_finite", [standing(spec, obs=None, action=None, last_action=None)], limits) is None


def test_a_trip_latches_with_reason_time_and_values_until_rearmed(spec, cfg):
    monitor = SafetyMonitor(spec, cfg)
    cases = violations(spec, cfg)
    trip = monitor.check(cases["torque"][0], time_us=1_234_000)
    assert trip.reason == "torque" and trip.time_us == 1_234_000
    assert "FL_calf_joint" in trip.detail and "tau_est" in trip.detail
    # Latched: a healthy step, or another violation, keeps the first trip.
    assert monitor.check(standing(spec), 1_254_000) == trip
    assert monitor.check(cases["orientation"][0], 1_274_000) == trip
    assert monitor.trip_count == 1
    assert monitor.rearm() == trip and not monitor.tripped
    assert monitor.check(standing(spec), 1_294_000) is None
    assert monitor.check(cases["orientation"][0], 1_314_000).reason == "orientation"
    assert monitor.trip_count == 2


def test_non_finite_wins_over_comparisons_nan_would_slip_through(spec, cfg):
    q = spec.default_pose.copy()
    q[4] = np.nan  # NaN < lower is False: the position monitor alone would pass it
    assert SafetyMonitor(spec, cfg).check(standing(spec, q=q), 0).reason == "non_finite"


def demanding_all(spec, limits: SafetyLimits, times_min: float = 3.0) -> PdTarget:
    """Every joint's target offset so far that even the weakest healthy motor is asked `times_min` x the minimum."""
    weakest = limits.motor_gains[0] * limits.motor_strength_min * spec.control.kp
    return pd(spec, times_min * limits.motor_min_torque / weakest)


def test_one_motor_at_a_third_on_a_stiff_robot_trips_against_the_robots_others(spec, cfg):
    """Kp/Kd 1.5x: its motor at 0.3 gives more than the weakest healthy motor would, so only the comparison with
    the same robot's other motors (per-joint strengths 0.7-1.0) shows it."""
    limits = SafetyLimits.from_spec(spec, cfg)
    target, rng = demanding_all(spec, limits), np.random.default_rng(0)
    per_joint = rng.uniform(limits.motor_strength_min, 1.0, 12)
    high = limits.motor_gains[1]
    healthy = healthy_motor(limits, target, spec.default_pose, np.zeros(12), high, high, 1.0) * per_joint
    weak = healthy.copy()
    weak[2] = 0.3 * healthy[2] / per_joint[2]
    low, _ = healthy_torque(target, spec.default_pose, np.zeros(12), limits)
    assert weak[2] > limits.motor_response_fraction * low[2]  # the absolute bound lets it pass
    steps = limits.motor_targets + limits.motor_relative_steps - 1
    assert verdict("motor_response", [standing(spec, target=target, tau_est=healthy)] * (3 * steps), limits) is None
    almost = [standing(spec, target=target, tau_est=weak)] * (steps - 1)
    assert verdict("motor_response", almost, limits) is None
    detail = verdict("motor_response", almost + almost[:1], limits)
    assert detail.startswith("FL_calf_joint gave a median") and f"last {limits.motor_relative_steps} judged" in detail


def test_a_joint_reading_that_jumps_trips_and_fast_true_motion_does_not(spec, cfg):
    limits = SafetyLimits.from_spec(spec, cfg)
    dt, q, dq = spec.control.policy_dt, spec.default_pose.copy(), np.zeros(12)
    fast = np.zeros(12)
    fast[4] = 20.0  # rad/s: 0.4 rad in a step, told by the velocity readings
    moving = [standing(spec, q=q + k * dt * fast, dq=fast) for k in range(5)]
    assert verdict("joint_reading", moving, limits) is None
    spiked = q.copy()
    spiked[4] += 0.5
    detail = verdict("joint_reading", [standing(spec, q=q, dq=dq), standing(spec, q=spiked, dq=dq)], limits)
    assert detail.startswith("FR_thigh_joint angle reading moved +0.500 rad in 20 ms")


def tilts(spec, pitches) -> list[SafetyInput]:
    return [standing(spec, **tilted(p, axis=1)) for p in pitches]


def first_trip(name: str, steps: list[SafetyInput], limits: SafetyLimits) -> int | None:
    """The index of the first step a fresh monitor `name` trips on."""
    monitor = MONITORS[name](limits)
    return next((k for k, x in enumerate(steps) if monitor(x, limits) is not None), None)


def test_a_robot_leaning_at_the_limit_whose_imu_reads_past_it_does_not_trip(spec, cfg):
    """The grid's false trip (healthy point 55, poor policy): pitch readings around 0.97 rad, one 1.012 rad, while
    the true tilt stayed under 1 rad: the IMU's noise, not a fall."""
    limits = SafetyLimits.from_spec(spec, cfg)
    pitches = [0.958, 0.941, 0.951, 0.98, 0.972, 0.999, 1.012, 0.92, 0.984, 0.932, 0.986, 0.964]
    assert max(pitches) > cfg.max_roll_pitch  # one reading alone is past the limit
    assert first_trip("orientation", tilts(spec, pitches), limits) is None


def test_a_fall_read_low_by_the_imu_trips_on_the_first_reading_after_it(spec, cfg):
    """The grid's healthy point 35: its IMU reads ~0.05 rad low, so its falls read under 1 rad as they pass it.
    Readings every 20 ms, the true fall 4 ms before the last: tilting at ~3.5 rad/s, it is caught there."""
    limits = SafetyLimits.from_spec(spec, cfg)
    pitches = [0.661, 0.665, 0.735, 0.792, 0.821, 0.929, 0.999]
    assert max(pitches) < cfg.max_roll_pitch  # no reading is past the limit
    assert first_trip("orientation", tilts(spec, pitches), limits) == len(pitches) - 1
    detail = verdict("orientation", tilts(spec, pitches), limits)
    assert "over the last 60 ms" in detail and "40 ms ahead" in detail
    # Rolling over the other way is the same fall; a lying robot trips on its first reading.
    assert first_trip("orientation", tilts(spec, [-p for p in pitches]), limits) == len(pitches) - 1
    assert first_trip("orientation", tilts(spec, [1.4]), limits) == 0


def test_a_slow_fall_trips_on_its_second_reading_past_the_limit(spec, cfg):
    """The grid's healthy point 19: tilting at ~0.3 rad/s, too slowly for the line to pass the margin; the true
    fall came between the 0.999 and 1.003 readings, so it is caught a step late (34 ms)."""
    limits = SafetyLimits.from_spec(spec, cfg)
    pitches = [0.975, 0.981, 0.987, 0.992, 0.999, 1.003, 1.008]
    assert max(pitches) < limits.max_tilt
    assert first_trip("orientation", tilts(spec, pitches), limits) == len(pitches) - 1
    assert "the last 2 readings (20 ms) 1.003..1.008 rad" in verdict("orientation", tilts(spec, pitches), limits)


def test_orientation_forgets_its_readings_on_rearm_and_skips_a_non_finite_one(spec, cfg):
    limits = SafetyLimits.from_spec(spec, cfg)
    monitor = MONITORS["orientation"](limits)
    for x in tilts(spec, [0.6, 0.7, 0.8]):
        assert monitor(x, limits) is None
    monitor.reset()
    assert monitor(tilts(spec, [0.9])[0], limits) is None  # 0.9 alone: no line through one reading
    nan = standing(spec, rpy=np.full(3, np.nan), quaternion=np.full(4, np.nan))
    assert monitor(nan, limits) is None  # non_finite reports it; the readings before stay
    assert list(monitor.tilts) == [0.9]


def test_a_lightly_loaded_motor_is_judged_against_the_robots_others(spec, cfg):
    """The grid's missed cases: a standing front hip asked ~1 N·m, under the absolute bound's minimum. At 0.3 of its
    strength, or dead, the comparison with the robot's other motors (per-joint strengths 0.7-1.0, the softest gains,
    its targets acting 40 ms late) catches it within the relative window; healthy, it is left alone."""
    limits = SafetyLimits.from_spec(spec, cfg)
    least_wanted = 1.5 * limits.motor_relative_min_torque  # the least healthy torque asked: under the absolute minimum
    assert np.all(least_wanted < limits.motor_min_torque)
    weakest = limits.motor_gains[0] * limits.motor_strength_min * spec.control.kp
    target = pd(spec, least_wanted / weakest)
    per_joint = np.random.default_rng(1).uniform(limits.motor_strength_min, 1.0, 12)
    low = limits.motor_gains[0]
    healthy = healthy_motor(limits, target, spec.default_pose, np.zeros(12), low, low, 1.0) * per_joint
    steps = limits.motor_targets + limits.motor_relative_steps - 1
    assert verdict("motor_response", [standing(spec, target=target, tau_est=healthy)] * (3 * steps), limits) is None
    for strength in (0.3, 0.0):
        faulty = healthy.copy()
        faulty[0] *= strength / per_joint[0]  # FL hip
        trip = first_trip("motor_response", [standing(spec, target=target, tau_est=faulty)] * steps, limits)
        assert trip == steps - 1, strength
        detail = verdict("motor_response", [standing(spec, target=target, tau_est=faulty)] * steps, limits)
        assert detail.startswith("FL_hip_joint gave a median"), detail
