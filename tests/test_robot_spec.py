"""The robot specification, the config loader and the MuJoCo model built from GO1_FACTS."""

import subprocess
import sys

import mujoco
import numpy as np
import pytest

from robot_spec import load_robot
from robot_spec.config import ConfigError, from_dict, load_config
from robot_spec.mjcf import PhysicsOptions, build_model, home_qpos
from robot_spec.observation import ObservationLayout
from sim_pretrain.train_config import TrainConfig


def test_unknown_robot_lists_known_ones():
    with pytest.raises(ConfigError, match=r"unknown robots 'go2'; known: .*go1"):
        load_robot("go2")


def test_sdk_order_remap_is_the_documented_permutation(spec):
    sim = np.arange(12.0)
    sdk = spec.to_sdk_order(sim)
    # SDK order is FR, FL, RR, RL: its first motor is the simulator's FR hip (index 3).
    assert list(sdk[:3]) == [3.0, 4.0, 5.0] and list(sdk[6:9]) == [9.0, 10.0, 11.0]
    np.testing.assert_array_equal(spec.from_sdk_order(sdk), sim)


def test_config_loader_names_unknown_keys_and_missing_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("iterations: 3\nppo: {num_stepz_per_env: 8}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.ppo: unknown key\(s\) \['num_stepz_per_env'\]"):
        load_config(TrainConfig, bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(TrainConfig, tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="iterations"):
        from_dict(TrainConfig, {"iterations": "many"})


def test_model_mass_and_joint_ranges_match_the_facts(spec):
    model = build_model(spec)
    assert sum(model.body_mass) == pytest.approx(12.74, abs=0.02)  # GO1_FACTS: total mass ≈ 12.74 kg
    for i, name in enumerate(spec.joint_names):
        jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
        np.testing.assert_allclose(model.jnt_range[jid], [spec.position_lower[i], spec.position_upper[i]])
    np.testing.assert_allclose(model.actuator_forcerange[:, 1], spec.torque_limit)
    assert model.opt.timestep == spec.control.sim_dt


def test_model_stands_at_home_pose_under_pd(spec):
    model = build_model(spec, PhysicsOptions(collisions="all"))
    data = mujoco.MjData(model)
    data.qpos[:] = home_qpos(model, spec, height=spec.spawn_height)
    data.ctrl[:] = spec.default_pose
    for _ in range(int(3.0 / model.opt.timestep)):
        mujoco.mj_step(model, data)
    assert data.qpos[2] == pytest.approx(spec.standing_height, abs=0.02)
    upright = data.qpos[3]  # quaternion w ≈ 1 when level
    assert upright > 0.995
    np.testing.assert_allclose(data.qpos[7:], spec.default_pose, atol=0.35)
    assert np.abs(data.qvel).max() < 0.05  # at rest


def test_roll_pitch_yaw_and_quaternions_convert_both_ways():
    """rpy_of_quaternion undoes quaternion_rpy (the IMU's z-y-x angles), for arrays of angles away from gimbal lock."""
    from robot_spec.rotations import quaternion_rpy, rpy_of_quaternion

    rng = np.random.default_rng(0)
    rpy = np.stack([rng.uniform(-3, 3, 50), rng.uniform(-1.5, 1.5, 50), rng.uniform(-3, 3, 50)])
    np.testing.assert_allclose(rpy_of_quaternion(quaternion_rpy(*rpy)), rpy, atol=1e-9)
    np.testing.assert_allclose(rpy_of_quaternion([1.0, 0.0, 0.0, 0.0]), [0.0, 0.0, 0.0])


def test_the_stand_in_and_the_bridge_load_the_spec_without_torch():
    # Each stand-in start spawns both as processes; importing torch there cost seconds per start on 2 cores.
    probe = ("import sys, real_robot.sim_robot, real_robot.bridge; from robot_spec import load_robot; "
             "load_robot('go1').observation.dim; print('torch' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "False"


def test_the_package_names_load_on_first_use():
    import robot_spec

    assert robot_spec.ObservationLayout is ObservationLayout and robot_spec.load_robot is load_robot
    assert all(getattr(robot_spec, name) is not None for name in robot_spec.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        robot_spec.nope  # noqa: B018
