"""Uneven ground in the training simulator (sim_pretrain TerrainConfig): one field, each reset on a random spot of it
with its own share of the roughness, feet on the ground, the floor's friction; off by default."""

import mujoco
import numpy as np
import pytest
import torch

from sim_pretrain.env import Go1Env
from robot_spec.terrain import ground_top
from sim_pretrain.env_config import EnvConfig, TerrainConfig

ROUGH = TerrainConfig(step_height=0.03, slope=0.04, size=8.0, spawn_radius=2.0)


def make_env(terrain: TerrainConfig, envs: int = 8) -> Go1Env:
    cfg = EnvConfig(num_envs=envs, num_threads=1, seed=5, terrain=terrain)
    cfg.randomization.init_joint_noise = 0.0  # every reset in the same pose: only the ground differs
    return Go1Env(cfg)


def lowest_foot_clearance(env: Go1Env, i: int) -> float:
    """Env i at its reset state: the lowest gap between a foot and the ground right under it (negative: below)."""
    model, data = env.models[i], mujoco.MjData(env.models[i])
    data.qpos[:] = env.state[i, env.qpos]
    mujoco.mj_kinematics(model, data)
    feet = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, f) for f in env.spec.foot_names]
    ground = [ground_top(model, 0.0, at=tuple(data.site_xpos[f, :2])) for f in feet]
    return min(data.site_xpos[f, 2] - env.spec.body.foot_radius - g for f, g in zip(feet, ground))


def test_the_flat_floor_is_the_default_and_has_no_field():
    env = make_env(TerrainConfig())
    assert env.base_model.nhfield == 0 and np.allclose(env.state[:, env.qpos][:, :2], 0.0)
    env.close()


def test_resets_land_on_random_spots_with_their_own_roughness_feet_on_the_ground():
    env = make_env(ROUGH)
    xy = env.state[:, env.qpos][:, :2]
    assert np.abs(xy).max() <= ROUGH.spawn_radius and np.ptp(xy, axis=0).min() > 0.5
    scales = np.array([m.hfield_size[0, 2] for m in env.models])
    assert 0 < scales.min() < scales.max() <= env.terrain_top + 1e-9 and np.ptp(scales) > 0.2 * env.terrain_top
    flat = make_env(TerrainConfig(), envs=1)
    on_floor = lowest_foot_clearance(flat, 0)  # the home pose as it meets the flat floor
    flat.close()
    for i in range(env.num_envs):  # on the field as on the floor: not sunk deeper, not dropped from high above
        assert on_floor - 1e-6 < lowest_foot_clearance(env, i) < on_floor + 0.06
    env.close()


def test_the_field_meets_the_floor_at_its_edges_and_takes_the_floors_friction():
    env = make_env(ROUGH, envs=2)
    n = int(env.base_model.hfield_nrow[0])
    heights = env.base_model.hfield_data.reshape(n, n)
    assert heights[[0, -1]].max() == 0 and heights[:, [0, -1]].max() == 0 and heights.max() > 0.5
    terrain = mujoco.mj_name2id(env.base_model, mujoco.mjtObj.mjOBJ_GEOM, "terrain")
    env.reset_all()
    for i, model in enumerate(env.models):
        assert model.geom_friction[terrain, 0] == pytest.approx(env.params["friction"][i])
    env.close()


def test_a_standing_robot_stays_up_on_the_rough_field():
    env = make_env(ROUGH)
    for _ in range(50):  # 1 s holding the default pose
        _, _, done, extras = env.step(torch.zeros(env.num_envs, 12))
        assert not (done & ~extras["time_outs"]).any()
    env.close()


def test_bad_terrain_settings_are_refused():
    with pytest.raises(ValueError, match="terrain"):
        TerrainConfig(step_height=-0.01)
    with pytest.raises(ValueError, match="terrain"):
        TerrainConfig(size=4.0, spawn_radius=2.5)
