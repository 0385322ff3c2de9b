"""Stand-in effects the training simulator does not model: each off by default, each acting as stated, all of
them reproducible from the robot's seed; random profiles and the `unmodelled` profile."""

from __future__ import annotations

import dataclasses
import socket

import mujoco
import numpy as np
import pytest

from real_robot import cli, unitree_wire as wire
from real_robot.sim_robot import BOARD_DT, StandInRobot, build_stand_in_model
from robot_spec.terrain import ground_top
from robot_spec.config import ConfigError
from robot_spec.mjcf import build_model
from robot_spec.reality_gap import (
    RANDOM_RANGES,
    FootForceNoise,
    Ground,
    MotorEffects,
    Payload,
    apply_body_dynamics,
    load_reality_gap,
    random_profile,
    write_profile,
)
from robot_spec.spec import load_robot

SPEC = load_robot("go1")
NONE = load_reality_gap("none")


def with_effects(base=NONE, **groups):
    return dataclasses.replace(base, **groups)


class Client:
    """A loopback LowCmd sender stepping the robot in lockstep; returns the raw LowState bytes."""

    def __init__(self, robot: StandInRobot):
        self.robot, self.sock = robot, socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(1.0)

    def tick(self, q, kp: float = 20.0, kd: float = 0.5) -> bytes:
        n = SPEC.num_joints
        cmd = wire.LowCmd(mode=np.full(n, wire.SERVO_MODE), q=SPEC.to_sdk_order(np.asarray(q, dtype=float)),
                          dq=np.zeros(n), kp=np.full(n, kp), kd=np.full(n, kd))  # fmt: skip
        self.sock.sendto(wire.encode_low_cmd(cmd), ("127.0.0.1", self.robot.port))
        self.robot.step()
        return self.sock.recv(2048)


@pytest.fixture
def make_robot():
    made = []

    def make(profile, seed: int = 0):
        robot = StandInRobot(profile, port=0, fast=True, lcm_url=None, seed=seed)
        client = Client(robot)
        made.append((robot, client))
        return robot, client

    yield make
    for robot, client in made:
        client.sock.close()
        robot.close()


def model_bytes(model: mujoco.MjModel) -> bytes:
    buffer = np.zeros(mujoco.mj_sizeModel(model), np.uint8)
    mujoco.mj_saveModel(model, None, buffer)
    return buffer.tobytes()


# ------------------------------------------------------------------------------------------------ off by default


@pytest.mark.parametrize("name", ["none", "mild", "strong"])
def test_effects_are_off_in_the_existing_profiles_and_the_model_is_the_training_one(name):
    profile = load_reality_gap(name)
    assert profile.motors == MotorEffects() and profile.payload == Payload()
    assert profile.ground == Ground() and profile.foot_force == FootForceNoise()
    training = build_model(SPEC, profile.physics)  # the training model with the profile's body dynamics
    apply_body_dynamics(training, SPEC, profile)
    stand_in = build_stand_in_model(SPEC, profile, seed=5)
    for name_ in ("actuator_gainprm", "actuator_biasprm", "actuator_ctrllimited", "actuator_forcerange"):
        setattr(training, name_, getattr(stand_in, name_))  # the board's torque motors: the one intended change
    assert model_bytes(stand_in) == model_bytes(training)


def test_training_model_has_no_terrain_or_payload():
    model = build_model(SPEC, load_reality_gap("unmodelled").physics)
    assert model.nhfield == 0 and mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "payload") == -1


# ------------------------------------------------------------------------------------------------ each effect


def test_per_joint_strength_scales_each_joints_torque_limit(make_robot):
    profile = with_effects(motors=MotorEffects(strength_per_joint=(0.5, 1.0, 0.8)))  # per kind
    robot, client = make_robot(profile)
    client.tick(SPEC.default_pose + 3.0, kp=500.0)  # far past every limit: each motor saturates
    expected = SPEC.torque_limit * np.tile([0.5, 1.0, 0.8], 4)
    np.testing.assert_allclose(np.abs(robot.applied_torque), expected)
    np.testing.assert_allclose(robot.model.actuator_forcerange[:, 1], expected)
    bad = with_effects(motors=MotorEffects(strength_per_joint=(1.0, 1.0)))
    with pytest.raises(ConfigError, match="12 .* or 3"):
        StandInRobot(bad, port=0, fast=True, lcm_url=None)


def test_payload_box_and_trunk_com_offset_move_the_centre_of_mass():
    payload = Payload(mass=2.0, offset=(-0.1, 0.03, 0.08), size=(0.2, 0.1, 0.05), trunk_com_offset=(0.01, -0.01, 0.0))
    plain, loaded = (build_stand_in_model(SPEC, p) for p in (NONE, with_effects(payload=payload)))
    trunk = mujoco.mj_name2id(plain, mujoco.mjtObj.mjOBJ_BODY, "trunk")
    box = mujoco.mj_name2id(loaded, mujoco.mjtObj.mjOBJ_BODY, "payload")
    assert loaded.body_subtreemass[trunk] == pytest.approx(plain.body_subtreemass[trunk] + 2.0)
    np.testing.assert_allclose(loaded.body_ipos[trunk], plain.body_ipos[trunk] + payload.trunk_com_offset)
    np.testing.assert_allclose(loaded.body_inertia[box], 2.0 / 12 * np.array([0.01 + 0.0025, 0.04 + 0.0025, 0.05]))
    centres = []
    for model in (plain, loaded):
        data = mujoco.MjData(model)
        mujoco.mj_forward(model, data)
        centres.append(data.subtree_com[trunk] - data.xpos[trunk])  # the robot's CoM relative to the trunk frame
    m0 = plain.body_subtreemass[trunk]
    trunk_mass = plain.body_mass[trunk]
    expected = (m0 * centres[0] + trunk_mass * np.array(payload.trunk_com_offset) + 2.0 * np.array(payload.offset)) / (
        m0 + 2.0
    )
    np.testing.assert_allclose(centres[1], expected, atol=1e-9)


def command_ids(robot: StandInRobot, client: Client, ticks: int) -> list[float]:
    """Send command k at tick k (its hip target says k); the id of the command in force after each tick."""
    active = []
    for k in range(ticks):
        client.tick(np.full(SPEC.num_joints, 0.001 * k), kp=1.0)
        active.append(round(robot.active.q_des[0] / 0.001) if robot.active.servo.any() else -1)
    return active


def test_latency_jitter_delays_commands_randomly_in_order_and_repeats_from_the_seed(make_robot):
    latency, jitter = 0.004, 0.01
    profile = with_effects(actuator_latency_s=latency, motors=MotorEffects(latency_jitter_s=jitter))
    robot, client = make_robot(profile, seed=3)
    active = command_ids(robot, client, 300)
    assert all(b >= a for a, b in zip(active, active[1:]))  # in order
    ticks = np.arange(len(active))
    started = [a >= 0 for a in active]
    delays = (ticks - np.array(active))[started] * BOARD_DT  # how old the command in force is
    assert delays.min() >= latency - 1e-9 and delays.max() <= latency + jitter + BOARD_DT + 1e-9
    assert len(set(np.round(delays, 4))) > 2  # not one fixed delay
    fixed, fixed_client = make_robot(with_effects(actuator_latency_s=latency))
    fixed_active = np.array(command_ids(fixed, fixed_client, 300))
    assert set(np.round((ticks - fixed_active)[fixed_active >= 0] * BOARD_DT, 4)) == {latency}
    again = command_ids(*make_robot(profile, seed=3), 300)
    other = command_ids(*make_robot(profile, seed=4), 300)
    assert again == active and other != active


def test_torque_speed_line(make_robot):
    robot, _ = make_robot(with_effects(motors=MotorEffects(torque_speed=True, no_load_speed_factor=0.5)))
    limit, no_load = SPEC.torque_limit, 0.5 * SPEC.velocity_limit
    big = 10 * limit
    np.testing.assert_allclose(robot.motors.limit_by_speed(big, np.zeros(12)), limit)  # at rest: the stall torque
    np.testing.assert_allclose(robot.motors.limit_by_speed(big, 0.25 * no_load), 0.75 * limit)  # linear in speed
    np.testing.assert_allclose(robot.motors.limit_by_speed(big, no_load), 0.0)  # no torque at the no-load speed
    np.testing.assert_allclose(robot.motors.limit_by_speed(-big, 0.5 * no_load), -limit)  # braking: full torque
    off, _ = make_robot(NONE)
    np.testing.assert_array_equal(off.motors.limit_by_speed(big, no_load), big)


def test_encoder_backlash_holds_the_reading_inside_the_dead_zone(make_robot):
    width = 0.02
    robot, _ = make_robot(with_effects(motors=MotorEffects(backlash=width)))
    start = robot.data.qpos[7:].copy()
    robot.data.qpos[7] = start[0] + width / 4  # inside the zone: the reading stays
    assert robot._measure().q[0] == pytest.approx(start[0])
    robot.data.qpos[7] = start[0] + width  # pushes the zone's edge: follows at width/2 behind
    assert robot._measure().q[0] == pytest.approx(start[0] + width / 2)
    robot.data.qpos[7] = start[0] + width * 0.4  # back within the zone (now centred at start + width/2)
    assert robot._measure().q[0] == pytest.approx(start[0] + width / 2)
    robot.data.qpos[7] = start[0] - width  # reverse: lags on the other side
    assert robot._measure().q[0] == pytest.approx(start[0] - width / 2)
    np.testing.assert_allclose(robot._measure().q[1:], robot.data.qpos[8:])  # the other joints did not move


def test_soft_ground_lets_the_resting_robot_sink_in(make_robot):
    rigid, _ = make_robot(NONE)
    soft, _ = make_robot(with_effects(ground=Ground(solref=(0.06, 1.0), solimp=(0.5, 0.9, 0.01, 0.5, 2.0))))
    np.testing.assert_allclose(soft.model.geom_solref[0], [0.06, 1.0])
    np.testing.assert_allclose(soft.model.geom_solimp[0], [0.5, 0.9, 0.01, 0.5, 2.0])
    depth = [-r.data.contact.dist.min() for r in (rigid, soft)]  # penetration after lying down
    assert depth[1] > 3 * depth[0]


def test_foot_force_noise_and_dropouts(make_robot):
    robot, _ = make_robot(with_effects(foot_force=FootForceNoise(std=5.0)))
    truth = robot.data.sensordata[robot.sensor["feet_touch"]].copy()
    readings = np.array([robot._measure().foot_force for _ in range(2000)])
    assert np.abs(readings.mean(axis=0) - truth).max() < 0.5 and readings.std() == pytest.approx(5.0, rel=0.05)
    dropping, _ = make_robot(with_effects(foot_force=FootForceNoise(dropout=0.3)))
    dropping.data.sensordata[dropping.sensor["feet_touch"]] = 10.0  # every foot loaded
    readings = np.array([dropping._measure().foot_force for _ in range(2000)])
    assert set(np.unique(readings)) == {0.0, 10.0} and (readings == 0).mean() == pytest.approx(0.3, abs=0.03)


def test_terrain_is_drawn_from_the_seed_and_survives_resets(make_robot):
    ground = Ground(step_height=0.03, tile_size=0.4, slope=0.0)
    profile = with_effects(ground=ground)
    robot, _ = make_robot(profile, seed=1)
    n = int(robot.model.hfield_nrow[0])
    heights = robot.model.hfield_data.reshape(n, n) * robot.model.hfield_size[0, 2]
    assert 0.0 <= heights.min() and heights.max() <= 0.03 and heights.std() > 0.005
    cells = round(ground.tile_size / 0.05)
    assert np.ptp(heights[1 : cells - 1, 1 : cells - 1]) == 0.0  # flat within a tile: steps between tiles
    start = robot.start_state.copy()
    robot.reset(seed=7)
    robot.step()
    assert np.array_equal(robot.start_state, start)  # the same floor and start after a reset
    same, _ = make_robot(profile, seed=1)
    other, _ = make_robot(profile, seed=2)
    assert np.array_equal(same.model.hfield_data, robot.model.hfield_data)
    assert not np.array_equal(other.model.hfield_data, robot.model.hfield_data)
    # the robot lies on the terrain, not in it (its start was lifted above the local top)
    assert robot.data.qpos[2] > ground_top(robot.model) and -robot.data.contact.dist.min() < 0.01


def test_slopes_have_the_stated_grade():
    model = build_stand_in_model(SPEC, with_effects(ground=Ground(slope=0.05)), seed=0)
    n = int(model.hfield_nrow[0])
    heights = model.hfield_data.reshape(n, n) * model.hfield_size[0, 2]
    grade = np.abs(np.diff(heights, axis=1)).max() / 0.05
    assert grade == pytest.approx(0.05, rel=0.05)


# ------------------------------------------------------------------------------------------------ reproducibility


def run_lockstep(profile, seed: int, ticks: int = 600) -> list[bytes]:
    """LowState bytes under a scripted soft start, with a reset that restarts the noise half way."""
    with StandInRobot(profile, port=0, fast=True, lcm_url=None, seed=seed) as robot:
        client = Client(robot)
        states = []
        for k in range(ticks):
            if k == ticks // 2:
                robot.reset(seed=9)
            alpha = min(1.0, (k % (ticks // 2)) / 200)
            states.append(client.tick(SPEC.default_pose + 0.1 * np.sin(0.05 * k), kp=20 * alpha))
        client.sock.close()
    return states


def test_every_effect_repeats_from_the_seed():
    ground = Ground(solref=(0.03, 1.0), step_height=0.02, slope=0.03)
    profile = with_effects(load_reality_gap("unmodelled"), ground=ground)
    first, second, other = run_lockstep(profile, 4), run_lockstep(profile, 4), run_lockstep(profile, 5)
    assert first == second
    assert first != other


# ------------------------------------------------------------------------------------------------ profiles


def test_unmodelled_is_mild_plus_new_effects():
    mild, unmodelled = load_reality_gap("mild"), load_reality_gap("unmodelled")
    new_groups = {"motors", "payload", "ground", "foot_force"}
    for f in dataclasses.fields(mild):
        if f.name not in new_groups | {"name", "description"}:
            assert getattr(unmodelled, f.name) == getattr(mild, f.name), f.name
    assert all(getattr(unmodelled, g) != getattr(mild, g) for g in new_groups)


def test_random_profiles_are_seeded_within_ranges_and_load_from_yaml(tmp_path):
    profiles = [random_profile(s) for s in range(20)]
    assert random_profile(3) == profiles[3] and profiles[3] != profiles[4]
    for key in ("friction", "motor_strength", "kp_factor", "actuator_latency_s"):
        low, high = RANDOM_RANGES[key]
        assert all(low <= getattr(p, key) <= high for p in profiles)
    assert all(p.motors.backlash <= RANDOM_RANGES["backlash"][1] for p in profiles)
    assert any(p.ground.has_terrain for p in profiles) and any(not p.ground.has_terrain for p in profiles)
    assert any(p.motors.torque_speed for p in profiles) and any(p.foot_force.dropout for p in profiles)
    path = write_profile(profiles[3], tmp_path / "random_3.yaml")
    assert load_reality_gap(str(path)) == profiles[3]
    with pytest.raises(ConfigError, match="random_3.yaml"):
        write_profile(profiles[3], tmp_path / "other.yaml")


def test_random_profile_command_writes_a_profile_sim_robot_loads(tmp_path, capsys):
    assert cli.main(["random-profile", "--seed", "11", "--out", str(tmp_path)]) == 0
    path = tmp_path / "random_11.yaml"
    assert capsys.readouterr().out.strip() == str(path)
    with StandInRobot(str(path), port=0, fast=True, lcm_url=None) as robot:
        assert robot.profile == random_profile(11)
