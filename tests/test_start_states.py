"""The robot's policy-start states: read from logs (real_robot.start_states) and used as the simulator's initial
states (sim_pretrain initial_states)."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from deploy.record import record_schema
from real_robot.datalog import LogWriter
from real_robot.start_states import policy_starts, save_policy_starts
from robot_spec import load_robot
from robot_spec.observation import roll_pitch
from sim_pretrain.env import Go1Env
from sim_pretrain.env_config import EnvConfig, InitialStatesConfig

SPEC = load_robot("go1")
# where a weak, heavy robot's soft start ends (the strong stand-in's logs): calves folded, the rear ones most
CROUCH = SPEC.default_pose + np.array([0.07, -0.17, -0.27, -0.1, -0.18, -0.27, 0.18, -0.2, -0.65, -0.18, -0.2, -0.65])


def records(phases: list[int], q: np.ndarray, roll_pitch_: tuple[float, float], tripped: int = -1) -> dict:
    """Rows of the log schema, zero but for phase, q, rpy (and `tripped` on row `tripped`)."""
    n = len(phases)
    rows = {name: np.zeros((n, *shape), dtype=dtype) for name, (dtype, shape) in record_schema(SPEC).items()}
    rows["phase"][:] = phases
    rows["q"][:] = q
    rows["rpy"][:, :2] = roll_pitch_
    if tripped >= 0:
        rows["tripped"][tripped] = 1
        rows["q"][tripped] = np.nan
    return rows


def write_log(folder, episodes: list[dict]) -> None:
    with LogWriter(folder, record_schema(SPEC)) as log:
        for rows in episodes:
            log.start_episode()
            log.append_many(rows)
            log.end_episode("timeout")


def test_the_first_untripped_policy_step_of_each_episode_is_its_start(tmp_path):
    write_log(tmp_path / "logs", [
        records([0, 0, 1, 1], CROUCH, (0.05, -0.2)),
        records([0, 0, 0], SPEC.default_pose, (0.0, 0.0)),  # soft start only: no policy start
        records([0, 1, 1], SPEC.default_pose + 0.1, (-0.1, 0.1), tripped=1),  # first policy step tripped
    ])  # fmt: skip
    starts = policy_starts([tmp_path / "logs"])
    assert starts["q"].shape == (2, 12) and starts["roll_pitch"].shape == (2, 2)
    np.testing.assert_allclose(starts["q"][0], CROUCH, atol=1e-6)
    np.testing.assert_allclose(starts["q"][1], SPEC.default_pose + 0.1, atol=1e-6)
    np.testing.assert_allclose(starts["roll_pitch"], [[0.05, -0.2], [-0.1, 0.1]], atol=1e-6)


def test_logs_without_a_policy_step_are_refused(tmp_path):
    write_log(tmp_path / "logs", [records([0, 0, 0], SPEC.default_pose, (0.0, 0.0))])
    with pytest.raises(ValueError, match="no policy-phase start"):
        policy_starts([tmp_path / "logs"])


def make_env(file: str = "", share: float = 1.0) -> Go1Env:
    cfg = EnvConfig(num_envs=6, num_threads=1, seed=3, initial_states=InitialStatesConfig(file, share))
    cfg.randomization.init_joint_noise = 0.0
    return Go1Env(cfg)


def test_episodes_start_where_the_robot_started_resting_on_the_floor(tmp_path):
    write_log(tmp_path / "logs", [records([0, 1], CROUCH, (0.05, -0.2))])
    env = make_env(str(save_policy_starts([tmp_path / "logs"], tmp_path / "starts.npz")))
    qpos = env.state[:, env.qpos]
    np.testing.assert_allclose(qpos[:, 7:], np.tile(CROUCH, (6, 1)), atol=1e-6)
    np.testing.assert_allclose(roll_pitch(env.measured["quat"].double()), np.tile([0.05, -0.2], (6, 1)), atol=1e-5)
    assert np.ptp(qpos[:, 6]) > 0  # headings differ
    data = mujoco.MjData(env.base_model)
    data.qpos[:] = qpos[0]
    mujoco.mj_kinematics(env.base_model, data)
    feet = [mujoco.mj_name2id(env.base_model, mujoco.mjtObj.mjOBJ_SITE, f) for f in SPEC.foot_names]
    assert data.site_xpos[feet, 2].min() == pytest.approx(SPEC.body.foot_radius, abs=1e-6)
    assert qpos[0, 2] < SPEC.standing_height - 0.03  # crouched: lower than the default stand


def test_without_a_file_or_share_every_episode_starts_at_the_default_pose(tmp_path):
    write_log(tmp_path / "logs", [records([0, 1], CROUCH, (0.05, -0.2))])
    starts = str(save_policy_starts([tmp_path / "logs"], tmp_path / "starts.npz"))
    for env in (make_env(), make_env(starts, share=0.0)):
        np.testing.assert_allclose(env.state[:, env.qpos][:, 7:], np.tile(SPEC.default_pose, (6, 1)))


def test_a_share_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="share"):
        InitialStatesConfig("x.npz", share=1.5)
