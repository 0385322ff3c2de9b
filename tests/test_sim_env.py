"""The vectorised Go1 env: rsl_rl VecEnv contract, rewards and terminations on hand-made states, randomisation."""

import numpy as np
import pytest
import torch
from tensordict import TensorDict

from sim_pretrain.env import PRIVILEGED_DIM, Go1Env
from sim_pretrain.env_config import EnvConfig
from sim_pretrain.rewards import RewardConfig, RewardFunction, RewardInputs, RewardTracker


@pytest.fixture(scope="module")
def env():
    cfg = EnvConfig(num_envs=6, num_threads=1, episode_length_s=0.2, seed=3)
    env = Go1Env(cfg)
    yield env
    env.close()


def test_vecenv_contract(env, spec):
    obs = env.get_observations()
    assert isinstance(obs, TensorDict)
    assert obs["policy"].shape == (6, spec.observation.dim)
    assert obs["privileged"].shape == (6, PRIVILEGED_DIM)
    obs, rew, dones, extras = env.step(torch.zeros(6, 12))
    assert rew.shape == (6,) and dones.shape == (6,) and dones.dtype == torch.bool
    assert extras["time_outs"].shape == (6,)
    # Episodes of 0.2 s = 10 policy steps end as timeouts, not terminations, and are reset.
    for _ in range(9):
        obs, rew, dones, extras = env.step(torch.zeros(6, 12))
    assert dones.all() and extras["time_outs"].all()
    assert "episode" in extras and (env.episode_length_buf == 0).all()


def test_policy_observation_is_what_the_robot_measures(env, spec):
    env.reset_all()
    obs, *_ = env.step(torch.zeros(6, 12))
    s = spec.observation.slices()
    frame = obs["policy"][:, : spec.observation.frame_dim]
    # Standing level: gravity points down in the body frame; joints near the default pose; last action echoed.
    torch.testing.assert_close(frame[:, s["projected_gravity"]][:, 2], -torch.ones(6), atol=0.15, rtol=0)
    assert frame[:, s["joint_pos"]].abs().max() < 0.5
    torch.testing.assert_close(frame[:, s["last_action"]], torch.zeros(6, 12))
    torch.testing.assert_close(frame[:, s["command"]], env.commands * torch.tensor([2.0, 2.0, 0.25]))


def test_randomisation_stays_in_its_ranges(env):
    r = env.cfg.randomization
    for _ in range(3):
        env.reset_all()
        for key, (low, high) in [("friction", r.friction), ("added_mass", r.added_mass),
                                 ("motor_strength", r.motor_strength), ("kp_factor", r.kp_factor)]:
            assert (env.params[key] >= low).all() and (env.params[key] <= high).all(), key
        assert ((env.latency >= r.latency_substeps[0]) & (env.latency <= r.latency_substeps[1])).all()
        for i, model in enumerate(env.models):  # the sampled values really reach the physics
            assert model.geom_friction[env.friction_geoms[0], 0] == pytest.approx(env.params["friction"][i])
            base = env.base_model.body_mass[env.trunk_id]
            assert model.body_mass[env.trunk_id] == pytest.approx(base + env.params["added_mass"][i])
    spread = env.params["friction"].max() - env.params["friction"].min()
    assert spread > 0.05  # really sampled, not a constant


def env_with(num_envs: int = 4, noise: bool = True, **randomization) -> Go1Env:
    """A small env (seed 3, one thread) with these RandomizationConfig fields set."""
    cfg = EnvConfig(num_envs=num_envs, num_threads=1, seed=3)
    for name, value in randomization.items():
        setattr(cfg.randomization, name, value)
    cfg.noise.enabled = noise
    return Go1Env(cfg)


def test_the_trunk_centre_of_mass_moves_only_when_asked_and_within_its_range():
    """com_displacement: each env's trunk CoM moved per reset within ±d on each axis, in the physics; off by default
    (no draws, so every other draw stays as it was)."""
    off = env_with()
    assert not any(k.startswith("com_") for k in off.params)
    assert all((m.body_ipos[off.trunk_id] == off.base_model.body_ipos[off.trunk_id]).all() for m in off.models)
    off.close()
    env = env_with(com_displacement=0.04)
    for _ in range(2):
        env.reset_all()
        moved = np.array([m.body_ipos[env.trunk_id] - env.base_model.body_ipos[env.trunk_id] for m in env.models])
        drawn = np.stack([env.params[axis] for axis in ("com_x", "com_y", "com_z")], axis=1)
        np.testing.assert_allclose(moved, drawn, atol=1e-12)
        assert np.abs(moved).max() <= 0.04 and np.abs(moved).max() > 0.005 and len(np.unique(moved[:, 0])) == 4
    env.close()


def test_backlash_holds_the_encoder_inside_its_dead_zone_and_the_pd_and_the_policy_see_that_reading():
    """randomization.backlash: each env's dead-zone width drawn per reset up to the maximum; the reading follows the
    joint only once it is half a width away (so it lags, within that), the policy observes the reading, and the PD
    drives the reading (not the true angle) to the target. Off by default: no draws, readings are the truth."""
    off = env_with(num_envs=2)
    assert "backlash" not in off.params
    off.close()
    env = env_with(noise=False, backlash=0.06)
    width = env.params["backlash"]
    assert (width >= 0).all() and (width <= 0.06).all() and len(np.unique(width)) == 4
    np.testing.assert_array_equal(env.encoder_q, env.state[:, env.qpos][:, 7:])  # centred at reset
    lags = []
    for step in range(20):
        q_before, reading, previous = env.state[:, env.qpos][:, 7:].copy(), env.encoder_q.copy(), env.prev_targets
        actions = torch.randn(4, env.num_actions, generator=torch.Generator().manual_seed(step)) * 0.5
        env.step(actions)
        late = (np.arange(env.decimation)[None, :] < env.latency[:, None])[..., None]
        unshifted = np.where(late, previous[:, None], env.prev_targets[:, None])
        going = (env.episode_length_buf == step + 1).numpy()  # rows not reset since the start
        np.testing.assert_allclose(env.control[going], (unshifted + (q_before - reading)[:, None])[going], atol=1e-12)
        lag = env.encoder_q - env.state[:, env.qpos][:, 7:]
        assert (np.abs(lag) <= width[:, None] / 2 + 1e-12).all()
        lags.append(np.abs(lag).max(axis=1))
        observed = env._observation_terms()["joint_pos"]
        truth = env.obs_builder.terms(env.measured["quat"], env.measured["ang_vel"], env.commands,
                                      torch.as_tensor(env.encoder_q, dtype=torch.float32), env.measured["joint_vel"],
                                      env.actions)["joint_pos"]  # fmt: skip
        torch.testing.assert_close(observed, truth)
    assert (np.max(lags, axis=0) > 0.3 * width).all()  # the readings really lag their joints
    env.close()


def test_joint_strength_scales_each_joints_gains_and_torque_limit_by_its_own_draw():
    """joint_strength: each env and joint a factor in 1 ± s per reset, on the realised Kp, Kd and torque limit (with
    the env's motor strength); off by default: no draws, every joint alike."""
    off = env_with(num_envs=2)
    assert "joint_strength" not in off.params and len(np.unique(off.models[0].actuator_gainprm[:, 0])) == 1
    off.close()
    env = env_with(joint_strength=0.2)
    for _ in range(2):
        env.reset_all()
        factor = env.params["joint_strength"]
        assert factor.shape == (4, env.num_actions) and (np.abs(factor - 1) <= 0.2).all()
        assert np.abs(factor - 1).max() > 0.1 and len(np.unique(factor)) == factor.size
        for i, m in enumerate(env.models):
            strength = env.params["motor_strength"][i] * factor[i]
            kp = env.spec.control.kp * env.params["kp_factor"][i] * strength
            np.testing.assert_allclose(m.actuator_gainprm[:, 0], kp)
            np.testing.assert_allclose(m.actuator_biasprm[:, 2], -env.spec.control.kd * env.params["kd_factor"][i]
                                       * strength)  # fmt: skip
            np.testing.assert_allclose(m.actuator_forcerange, env.base_model.actuator_forcerange * strength[:, None])
    env.close()


def test_accurate_contact_share_puts_that_share_of_envs_on_the_accurate_contact_model_and_the_rest_on_the_fast_one():
    """accurate_contact_share: per env at each reset, in about that share of envs the accurate contact model
    (elliptic cone, its impratio and solver iterations, leg geoms that collide), the physics options' elsewhere;
    off by default (no draws)."""
    import mujoco

    from robot_spec.mjcf import ACCURATE_CONTACT, LEG_CONTACT

    off = env_with(num_envs=2)
    assert "contact_draw" not in off.params and all(m.opt.cone == mujoco.mjtCone.mjCONE_PYRAMIDAL for m in off.models)
    assert len(off.leg_geoms) == 12 and not off.base_model.geom_contype[off.leg_geoms].any()  # hip, thigh, calf × 4
    off.close()
    env = env_with(num_envs=40, accurate_contact_share=0.25)
    base, legs, shares = env.base_model, env.leg_geoms, []
    for _ in range(2):
        env.reset_all()
        accurate = np.array([m.opt.cone == mujoco.mjtCone.mjCONE_ELLIPTIC for m in env.models])
        np.testing.assert_array_equal(accurate, env.params["contact_draw"] < 0.25)
        for m, a in zip(env.models, accurate):
            assert (m.opt.impratio, m.opt.iterations, m.opt.ls_iterations) == (
                (ACCURATE_CONTACT.impratio, ACCURATE_CONTACT.iterations, ACCURATE_CONTACT.ls_iterations) if a
                else (base.opt.impratio, base.opt.iterations, base.opt.ls_iterations))  # fmt: skip
            assert (m.geom_contype[legs] == (LEG_CONTACT[0] if a else 0)).all()
            assert (m.geom_conaffinity[legs] == (LEG_CONTACT[1] if a else 0)).all()
        shares.append(accurate.mean())
    assert 0.05 < np.mean(shares) < 0.45
    env.step(torch.zeros(40, env.num_actions))  # the mixed models step together
    env.close()


def test_legs_touch_the_ground_only_on_the_accurate_contact_model():
    """A robot lowered onto its bellies' height: its calves meet the floor on the accurate model, and pass through
    it on the fast one (feet and trunk only)."""
    import mujoco

    for share, legs_touch in ((0.0, False), (1.0, True)):
        env = env_with(num_envs=1, accurate_contact_share=share)
        model, data = env.models[0], mujoco.MjData(env.models[0])
        data.qpos[:] = env.home_state[env.qpos]
        data.qpos[2] = 0.05  # trunk low: the legs' geoms reach below the floor
        mujoco.mj_forward(model, data)
        touching = {int(g) for c in data.contact[: data.ncon] for g in (c.geom1, c.geom2)}
        assert bool(touching & set(env.leg_geoms.tolist())) == legs_touch
        env.close()


@pytest.mark.parametrize("field", ["backlash", "com_displacement", "joint_strength", "accurate_contact_share"])
def test_a_negative_randomisation_width_is_refused(field):
    from sim_pretrain.env_config import RandomizationConfig, TerminationConfig

    with pytest.raises(ValueError, match=field):
        RandomizationConfig(**{field: -0.01})
    with pytest.raises(ValueError, match="max_first_action"):
        TerminationConfig(max_first_action=float("nan"))


def test_a_first_action_past_the_action_rate_limit_ends_the_episode_as_deploys_monitor_would():
    """termination.max_first_action: an episode's first action further than the limit from zero on some joint (as
    the robot's action_rate monitor sees the first step after the soft start) ends that env's episode; within it,
    later in the episode, or with the limit off (the default), it does not."""
    cfg = EnvConfig(num_envs=3, num_threads=1, seed=3)
    cfg.termination.max_first_action = 3.0
    env = Go1Env(cfg)
    actions = torch.zeros(3, env.num_actions)
    actions[1, 5] = 3.2  # past the limit on one joint
    actions[2, :] = 2.9  # within it on every joint
    _, _, dones, extras = env.step(actions)
    assert dones.tolist() == [False, True, False] and not extras["time_outs"].any()
    actions[:] = 0.0
    actions[0, :] = 3.2  # a second step: not checked
    _, _, dones, _ = env.step(actions)
    assert not dones[0]
    env.close()
    off = env_with(num_envs=2)
    _, _, dones, _ = off.step(torch.full((2, off.num_actions), 3.5))
    assert not dones.any()
    off.close()


def test_within_the_action_limit_a_jump_past_the_band_costs_and_a_wild_first_step_ends():
    """Fine-tuning for a robot (train.within_action_limit): the first step past deploy's limit ends the episode, and a
    later jump past ACTION_BAND x limit costs its excess in the reward, while the same steps cost nothing without."""
    from sim_pretrain.train import ACTION_BAND, ACTION_JUMP_COST, within_action_limit

    base = EnvConfig(num_envs=2, num_threads=1, seed=3)
    base.noise.enabled = False
    env = Go1Env(within_action_limit(base, 3.0))
    assert env.cfg.termination.max_first_action == 3.0
    actions = torch.zeros(2, env.num_actions)
    actions[1, 0] = 3.2
    _, _, dones, _ = env.step(actions)
    assert dones.tolist() == [False, True]
    jump = ACTION_BAND * 3.0 + 0.5
    actions[:] = 0.0
    actions[0, 2] = jump  # a second step's jump, 0.5 past the band
    _, with_limit, _, _ = env.step(actions)
    env.close()
    plain = Go1Env(base)
    plain.step(torch.zeros(2, plain.num_actions))
    _, without, _, _ = plain.step(actions)
    plain.close()
    assert with_limit[0] - without[0] == pytest.approx(-ACTION_JUMP_COST * 0.5 * env.dt, rel=1e-4)


def test_a_stand_up_start_begins_where_deploys_soft_start_leaves_the_robot():
    """stand_up.share 1: every episode begins after lying down and standing up under PD (the robot on its feet,
    joints moved from the lying pose to near, but not exactly at, the default pose: the crouch a robot hands over
    in); share 0 draws nothing and starts at the default pose."""
    from sim_pretrain.env_config import StandUpConfig

    cfg = EnvConfig(num_envs=3, num_threads=1, seed=3)
    cfg.randomization.init_joint_noise = 0.0
    cfg.stand_up = StandUpConfig(share=1.0, ramp_s=1.0, hold_s=0.5)
    env = Go1Env(cfg)
    q = env.state[:, env.qpos]
    joints, default, lying = q[:, 7:], env.spec.default_pose, env.spec.lying_pose
    assert (np.abs(joints - default).max(axis=1) < 0.5 * np.abs(lying - default).max()).all()  # stood up ...
    assert (np.abs(joints - default).max(axis=1) > 0.02).all()  # ... into a crouch of its own, not the target
    assert (q[:, 2] > 0.18).all() and np.abs(env.state[:, env.qvel]).mean() < 0.5  # on its feet, settled
    env.close()
    cfg.stand_up = StandUpConfig()
    flat = Go1Env(cfg)
    np.testing.assert_allclose(flat.state[:, flat.qpos][:, 7:], np.tile(default, (3, 1)))
    flat.close()


def test_a_stand_up_start_lies_down_level_whatever_start_it_was_given(spec, tmp_path):
    """A row drawn from tilted logged starts (initial_states) that stands up lies down level first, at the lying
    height, and ends on its feet like any other: the stand decides where the episode begins."""
    from sim_pretrain.env_config import InitialStatesConfig, StandUpConfig

    starts = tmp_path / "starts.npz"
    np.savez(starts, q=np.tile(spec.default_pose, (2, 1)), roll_pitch=np.array([[0.3, -0.3], [0.3, -0.3]]))
    cfg = EnvConfig(num_envs=3, num_threads=1, seed=3)
    cfg.initial_states = InitialStatesConfig(str(starts), share=1.0)
    cfg.stand_up = StandUpConfig(share=1.0, ramp_s=0.0, hold_s=0.02)  # barely any stand: where it lay down
    env = Go1Env(cfg)
    q = env.state[:, env.qpos]
    np.testing.assert_allclose(q[:, 7:], np.tile(spec.lying_pose, (3, 1)), atol=0.1)
    assert (np.abs(q[:, 4:6]).max(axis=1) < 0.05).all()  # level: the logged tilt is gone
    env.close()


def _inputs(n=2, **overrides):
    x = dict(
        command=torch.tensor([[1.0, 0.0, 0.0]] * n), lin_vel=torch.zeros(n, 3), ang_vel=torch.zeros(n, 3),
        projected_gravity=torch.tensor([[0.0, 0.0, -1.0]] * n), base_height=torch.full((n,), 0.3),
        joint_pos=torch.zeros(n, 12), joint_vel=torch.zeros(n, 12), torques=torch.zeros(n, 12),
        action=torch.zeros(n, 12), foot_contact=torch.ones(n, 4, dtype=torch.bool),
    )
    x.update(overrides)
    return RewardInputs(**x)


def _reward_fn(**scales):
    cfg = RewardConfig(scales=scales, only_positive=False)
    return RewardFunction(cfg, -10 * torch.ones(12), 10 * torch.ones(12), dt=0.02)


def test_tracking_reward_peaks_at_the_command():
    f = _reward_fn(tracking_lin_vel=1.0)
    on = _inputs(lin_vel=torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    total, terms = f(on, RewardTracker(2, 12, 4))
    assert total[0] == pytest.approx(0.02)  # exp(0) × scale × dt
    assert total[1] == pytest.approx(0.02 * np.exp(-1 / 0.25))


def test_feet_air_time_pays_a_real_swing_and_not_a_dropped_contact_reading():
    """Foot 0 swings for 10 steps; foot 1 stands but its sensor reads 0 for one step (a dropped reading)."""
    f, tracker = _reward_fn(feet_air_time=1.0), RewardTracker(1, 12, 4)
    contacts = [[True] * 4] + [[False, True, True, True] for _ in range(10)] + [[True] * 4] * 3
    contacts[5][1] = False
    paid = torch.stack([f(_inputs(1, foot_contact=torch.tensor([c])), tracker)[1]["feet_air_time"] for c in contacts])
    assert paid[11].item() == pytest.approx((11 * 0.02 - 0.5) * 0.02)  # the swing, paid at touchdown
    assert (paid[:11] == 0).all() and (paid[12:] == 0).all()  # the dropped reading costs nothing


def test_penalties_have_the_right_sign_and_size():
    f = _reward_fn(orientation=-1.0, action_rate=-0.01)
    tilted = _inputs(projected_gravity=torch.tensor([[0.0, 0.0, -1.0], [0.6, 0.0, -0.8]]),
                     action=torch.tensor([[0.0] * 12, [1.0] * 12]))
    total, terms = f(tilted, RewardTracker(2, 12, 4))
    assert terms["orientation"][0] == 0 and terms["orientation"][1] == pytest.approx(-0.36 * 0.02)
    assert terms["action_rate"][1] == pytest.approx(-0.01 * 12 * 0.02)


def test_only_positive_clips_the_total():
    cfg = RewardConfig(scales={"orientation": -1.0}, only_positive=True)
    f = RewardFunction(cfg, -torch.ones(12), torch.ones(12), dt=0.02)
    total, _ = f(_inputs(projected_gravity=torch.tensor([[0.6, 0.0, -0.8]] * 2)), RewardTracker(2, 12, 4))
    assert (total == 0).all()


def test_action_jump_costs_only_past_its_band_and_survives_the_clip():
    """action_jump: each joint's |a_t - a_(t-1)| beyond the band, added after the only_positive clip (a jump that the
    robot's monitor would stop must cost something even on a step whose other terms sum below zero)."""
    cfg = RewardConfig(scales={"orientation": -1.0, "action_jump": -5.0}, only_positive=True, action_jump_limit=2.0)
    f = RewardFunction(cfg, -torch.ones(12), torch.ones(12), dt=0.02)
    action = torch.zeros(2, 12)
    action[0, 3], action[1, :2] = 1.9, torch.tensor([2.5, -3.0])  # inside the band; 0.5 + 1.0 past it
    total, terms = f(_inputs(projected_gravity=torch.tensor([[0.6, 0.0, -0.8]] * 2), action=action),
                     RewardTracker(2, 12, 4))  # fmt: skip
    assert terms["action_jump"][0] == 0 and terms["action_jump"][1] == pytest.approx(-5.0 * 1.5 * 0.02)
    assert total[0] == 0 and total[1] == pytest.approx(-5.0 * 1.5 * 0.02)  # orientation clipped, the jump not
    with pytest.raises(ValueError, match="action_jump_limit"):
        RewardConfig(scales={"action_jump": -1.0})


def test_unknown_reward_term_is_named():
    with pytest.raises(ValueError, match="unknown reward term.*'speed'"):
        RewardFunction(RewardConfig(scales={"speed": 1.0}), -torch.ones(12), torch.ones(12), 0.02)


def test_terminations_on_hand_made_states(env):
    env.reset_all()
    env.step(torch.zeros(6, 12))
    m = env.measured
    tilt = env.cfg.termination.max_roll_pitch + 0.1
    m["quat"] = torch.tensor([[np.cos(tilt / 2), np.sin(tilt / 2), 0.0, 0.0]] * 6)  # rolled over
    m["quat"][0] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    m["trunk_force"] = torch.zeros(6)
    m["base_height"] = torch.full((6,), 0.3)
    assert env._terminated().tolist() == [False] + [True] * 5
    m["quat"][:] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    m["trunk_force"][1] = 50.0  # trunk on the ground
    m["base_height"][2] = 0.05
    assert env._terminated().tolist() == [False, True, True, False, False, False]


# ------------------------------------------------------------------------------------------------ factory, robots
def test_make_env_builds_the_backend_and_refuses_an_unknown_one():
    from robot_spec.config import ConfigError
    from sim_pretrain.backends import make_env

    cfg = EnvConfig(num_envs=2, num_threads=1, seed=3)
    env = make_env("go1", "mujoco", cfg)
    assert isinstance(env, Go1Env) and env.cfg.backend == "mujoco" and env.cfg.dynamics == cfg.dynamics
    direct = Go1Env(cfg)
    torch.testing.assert_close(env.step(torch.ones(2, 12))[0]["policy"], direct.step(torch.ones(2, 12))[0]["policy"])
    env.close()
    direct.close()
    with pytest.raises(ConfigError, match=r"^unknown simulator backend 'isaac'; known: mujoco$"):
        make_env("go1", "isaac", cfg)


def test_a_new_robot_is_a_spec_file_found_by_name(tmp_path, monkeypatch):
    """A toy robot: go1's spec under another name and stiffer gains, in a config folder of its own."""
    import yaml

    from robot_spec import load_robot
    from robot_spec.config import CONFIG_DIR, ConfigError
    from sim_pretrain.backends import make_env

    toy = yaml.safe_load((CONFIG_DIR / "robots" / "go1.yaml").read_text())
    toy["name"], toy["control"]["kp"] = "toy", 25.0
    (tmp_path / "robots").mkdir()
    (tmp_path / "robots" / "toy.yaml").write_text(yaml.safe_dump(toy))
    with pytest.raises(ConfigError, match="unknown robots 'toy'"):
        load_robot("toy")
    monkeypatch.setenv("GO1_SIM2REAL_CONFIGS", str(tmp_path))
    assert load_robot("toy").name == "toy" and load_robot("go1").name == "go1"
    with pytest.raises(ConfigError, match=r"known: go1, toy"):
        load_robot("go2")
    env = make_env("toy", "mujoco", EnvConfig(num_envs=2, num_threads=1, seed=0))
    assert env.spec.name == "toy" and (env.base_model.actuator_gainprm[:, 0] == 25.0).all()
    for _ in range(5):
        obs, reward, *_ = env.step(torch.zeros(2, 12))
    assert torch.isfinite(obs["policy"]).all() and torch.isfinite(reward).all()
    env.close()
    (tmp_path / "robots" / "toy.yaml").write_text(yaml.safe_dump({**toy, "name": "toy2"}))
    with pytest.raises(ConfigError, match="names robot 'toy2', but is found by the name 'toy'"):
        load_robot("toy")
