"""The exact oracle's simulator (uni_o4.exact_env): the stand-in's physics step for step, and PPO runs on it."""

import dataclasses

import mujoco
import numpy as np
import pytest
import torch
import yaml

from deploy.in_process import InMemoryBoard
from real_robot import unitree_wire as wire
from robot_spec.config import named_config
from robot_spec.policy_map import observation_terms
from robot_spec.reality_gap import load_reality_gap
from sim_pretrain.cli import main as sim_main
from sim_pretrain.env_config import DynamicsConfig, EnvConfig
from sim_pretrain.train import finetune_in_sim
from sim_pretrain import backends
from uni_o4.exact_env import BACKEND, StandInEnv, register

ROBOT_SEED = 4
STEPS = 40  # policy steps: 400 board ticks, thousands of jitter draws and backlash clips


def noiseless_unmodelled(tmp_path) -> str:
    """`unmodelled` (jitter, torque-speed line, backlash, per-joint strength, payload, soft floor) with its
    calibration errors kept and its sensor noise off, so readings can be compared value for value."""
    path = tmp_path / "unmodelled_noiseless.yaml"
    raw = yaml.safe_load(named_config("reality_gap", "unmodelled").read_text())
    raw["name"], raw["noise"] = "unmodelled_noiseless", {k: 0.0 for k in raw["noise"]}
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def side_by_side(profile: str):
    """One exact env and the stand-in board of the same seed, set to the env's first state and held target."""
    env = StandInEnv(EnvConfig(num_envs=1, seed=ROBOT_SEED, episode_length_s=100.0,
                               dynamics=DynamicsConfig(profile=profile)))  # fmt: skip
    board = InMemoryBoard(profile, seed=ROBOT_SEED)
    state = np.empty(mujoco.mj_stateSize(env.base_model, mujoco.mjtState.mjSTATE_INTEGRATION))
    mujoco.mj_getState(env.base_model, env.datas[0], state, mujoco.mjtState.mjSTATE_INTEGRATION)
    mujoco.mj_setState(board.model, board.data, state, mujoco.mjtState.mjSTATE_INTEGRATION)
    board.encoder_q = env.encoder_q[0].copy()
    board.active = type(env.hold)(**{f.name: getattr(env.hold, f.name)[0].copy() for f in dataclasses.fields(env.hold)})
    assert board.robot_time == 0.0 and env.ticks == 0
    return env, board


def drive(env: StandInEnv, board: InMemoryBoard, action: np.ndarray) -> None:
    """The same action: a policy step of the env, and 10 board ticks each receiving the bridge's LowCmd."""
    env.step(torch.as_tensor(action, dtype=torch.float32)[None])
    spec, c = env.spec, env.spec.control
    target = env.action_map.targets(np.clip(action.astype(np.float32), -c.action_clip, c.action_clip))
    n = spec.num_joints
    for _ in range(env.decimation):
        board.command(wire.LowCmd(mode=np.full(n, wire.SERVO_MODE), q=spec.to_sdk_order(target), dq=np.zeros(n),
                                  tau=np.zeros(n), kp=np.full(n, c.kp), kd=np.full(n, c.kd)))  # fmt: skip
        board.step()


@pytest.mark.parametrize("noisy", [False, True])
def test_an_env_follows_the_stand_in_tick_for_tick(tmp_path, spec, noisy):
    profile = "unmodelled" if noisy else noiseless_unmodelled(tmp_path)
    p = load_reality_gap(profile)
    assert p.motors.latency_jitter_s and p.motors.torque_speed and p.motors.backlash and p.bias.joint_pos
    env, board = side_by_side(profile)
    rng = np.random.default_rng(0)
    for k in range(STEPS):
        drive(env, board, 0.6 * rng.standard_normal(12))
        assert env.episode_length_buf[0] == k + 1  # no reset in between
        np.testing.assert_allclose(env.datas[0].qpos, board.data.qpos, rtol=0, atol=1e-9)
        np.testing.assert_allclose(env.datas[0].qvel, board.data.qvel, rtol=0, atol=1e-7)
        if not noisy:  # what the policy sees is what the board reports
            low = board.state
            n = spec.num_joints
            expected = observation_terms(spec, low.quaternion, low.gyroscope, env.commands[0], spec.from_sdk_order(
                low.q[:n]), spec.from_sdk_order(low.dq[:n]), env.actions[0])  # fmt: skip
            got = env._observation_terms()
            for name, value in expected.items():
                torch.testing.assert_close(got[name], value, rtol=0, atol=1e-6, msg=name)
    assert np.abs(board.data.qpos[7:] - env.spec.default_pose).max() > 0.1  # it moved


def test_the_jitter_is_what_keeps_them_together():
    """The comparison can fail: another jitter stream in the env and the trajectories part."""
    env, board = side_by_side("unmodelled")
    env.jitter_rng = np.random.default_rng(99)
    rng = np.random.default_rng(0)
    for _ in range(STEPS):
        drive(env, board, 0.6 * rng.standard_normal(12))
    assert np.abs(env.datas[0].qpos - board.data.qpos).max() > 1e-6


def test_env_contract_and_robots(spec):
    env = StandInEnv(EnvConfig(num_envs=3, seed=1, dynamics=DynamicsConfig(profile="strong")))
    obs = env.get_observations()
    assert obs["policy"].shape == (3, spec.observation.dim)
    obs, rew, dones, extras = env.step(torch.zeros(3, 12))
    assert rew.shape == (3,) and dones.shape == (3,) and torch.isfinite(rew).all()
    # Environment i is the stand-in robot of seed 3 + i: its own encoder offsets, the board's draws.
    assert np.array_equal(env.sensor_bias.q[1], InMemoryBoard("strong", seed=4).bias.q)
    with pytest.raises(ValueError, match="dynamics.profile"):
        StandInEnv(EnvConfig(num_envs=1))


def test_ppo_trains_on_it(tmp_path, monkeypatch):
    monkeypatch.setitem(backends.BACKENDS, BACKEND, None)  # undone after the test: no backend leaks into others
    register()
    assert backends.BACKENDS[BACKEND] is StandInEnv
    runs = tmp_path / "runs"
    assert sim_main(["train", "--preset", "tiny", "--runs", str(runs), "--seed", "2", "--iterations", "1"]) == 0
    (run,) = (runs / "go1").iterdir()
    out = finetune_in_sim(run / "policy.pt", DynamicsConfig(profile="unmodelled"), 2, tmp_path / "exact",
                          num_envs=4, backend=BACKEND)  # fmt: skip
    assert out.is_file()
    config = yaml.safe_load((tmp_path / "exact" / "config.yaml").read_text())
    assert config["env"]["backend"] == BACKEND and config["iterations"] == 2
    history = yaml.safe_load((tmp_path / "exact" / "training_history.json").read_text())
    assert history["iteration"] == [0, 1] and all(np.isfinite(history["mean_return"]))
