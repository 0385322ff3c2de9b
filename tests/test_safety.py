"""deploy.safety: every monitor trips on its own violation only, thresholds follow the spec, trips latch."""

import numpy as np
import pytest

from deploy.safety import MONITORS, SafetyInput, SafetyLimits, SafetyMonitor, load_safety_config


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


def tilted(angle: float, axis: int) -> dict:
    """The IMU's attitude (quaternion and rpy) rolled (axis 0) or pitched (axis 1) by `angle`."""
    quaternion, rpy = np.array([np.cos(angle / 2), 0.0, 0.0, 0.0]), np.zeros(3)
    quaternion[1 + axis], rpy[axis] = np.sin(angle / 2), angle
    return {"quaternion": quaternion, "rpy": rpy}


def violations(spec, cfg):
    """One input per monitor that breaks exactly that monitor's threshold, derived from the spec and config."""
    limits = SafetyLimits.from_spec(spec, cfg)
    calf = 2  # FL calf: its limits differ from hip/thigh, so a wrongly tiled limit would show
    q = spec.default_pose.copy()
    q[calf] = spec.position_lower[calf] - cfg.joint_position_margin - 0.01
    dq, tau, action = np.zeros(12), np.zeros(12), np.zeros(12)
    dq[calf] = spec.velocity_limit[calf] * cfg.joint_velocity_fraction + 0.1
    tau[calf] = -(spec.torque_limit[calf] * cfg.torque_fraction + 0.1)
    action[5] = cfg.max_action_delta + 0.01
    asked = np.zeros(12)
    asked[calf] = 2 * spec.torque_limit[calf] * cfg.motor_response_min_torque
    weak = asked * (cfg.motor_response_fraction - 0.01)
    nan_obs = np.zeros(spec.observation.dim)
    nan_obs[7] = np.nan
    return {
        "non_finite": standing(spec, obs=nan_obs),
        "bridge": standing(spec, bridge_trip="watchdog: no pd_target for 62 ms"),
        "stale_state": standing(spec, state_age_us=limits.max_state_age_us + 1),
        "loop_overrun": standing(spec, step_interval_s=limits.max_step_interval_s * 1.01),
        "orientation": standing(spec, **tilted(cfg.max_roll_pitch + 0.01, axis=1)),
        "joint_position": standing(spec, q=q),
        "joint_velocity": standing(spec, dq=dq),
        "torque": standing(spec, tau_est=tau),
        "motor_response": standing(spec, commanded_torque=asked, tau_est=weak),
        "action_rate": standing(spec, action=action),
    }


def test_each_monitor_trips_on_its_own_violation_only(spec, cfg):
    limits = SafetyLimits.from_spec(spec, cfg)
    cases = violations(spec, cfg)
    assert set(cases) == set(MONITORS)
    for name, monitor in MONITORS.items():
        assert monitor(standing(spec), limits) is None, name
        for case_name, case in cases.items():
            tripped = monitor(case, limits) is not None
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


def test_motor_response_judges_only_real_torque_requests(spec, cfg):
    limits = SafetyLimits.from_spec(spec, cfg)
    asked = np.zeros(12)
    asked[4] = -0.9 * spec.torque_limit[4] * cfg.motor_response_min_torque  # too small a request to judge
    assert MONITORS["motor_response"](standing(spec, commanded_torque=asked), limits) is None
    asked[4] = -3 * spec.torque_limit[4] * cfg.motor_response_min_torque
    healthy = asked * (cfg.motor_response_fraction + 0.05)
    assert MONITORS["motor_response"](standing(spec, commanded_torque=asked, tau_est=healthy), limits) is None
    wrong_way = -healthy
    detail = MONITORS["motor_response"](standing(spec, commanded_torque=asked, tau_est=wrong_way), limits)
    assert spec.joint_names[4] in detail


def test_non_finite_is_found_in_action_and_measurements(spec, cfg):
    limits = SafetyLimits.from_spec(spec, cfg)
    action = np.zeros(12)
    action[3] = np.inf
    q = spec.default_pose.copy()
    q[0] = np.nan
    assert "action" in MONITORS["non_finite"](standing(spec, action=action), limits)
    assert "q" in MONITORS["non_finite"](standing(spec, q=q), limits)
    # Outside the policy phase there is no obs/action to judge.
    assert MONITORS["non_finite"](standing(spec, obs=None, action=None, last_action=None), limits) is None


def test_a_trip_latches_with_reason_time_and_values_until_rearmed(spec, cfg):
    monitor = SafetyMonitor(spec, cfg)
    cases = violations(spec, cfg)
    trip = monitor.check(cases["torque"], time_us=1_234_000)
    assert trip.reason == "torque" and trip.time_us == 1_234_000
    assert "FL_calf_joint" in trip.detail and "tau_est" in trip.detail
    # Latched: a healthy step, or another violation, keeps the first trip.
    assert monitor.check(standing(spec), 1_254_000) == trip
    assert monitor.check(cases["orientation"], 1_274_000) == trip
    assert monitor.trip_count == 1
    assert monitor.rearm() == trip and not monitor.tripped
    assert monitor.check(standing(spec), 1_294_000) is None
    assert monitor.check(cases["orientation"], 1_314_000).reason == "orientation"
    assert monitor.trip_count == 2


def test_non_finite_wins_over_comparisons_nan_would_slip_through(spec, cfg):
    q = spec.default_pose.copy()
    q[4] = np.nan  # NaN < lower is False: the position monitor alone would pass it
    assert SafetyMonitor(spec, cfg).check(standing(spec, q=q), 0).reason == "non_finite"
