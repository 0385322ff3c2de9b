"""The training simulator centred on one robot's dynamics (a reality-gap profile), and PPO fine-tuning in it."""

import mujoco
import numpy as np
import pytest
import torch
import yaml

from robot_spec.policy_io import load_policy
from robot_spec.reality_gap import load_reality_gap
from sim_pretrain.cli import main
from sim_pretrain.env import Go1Env
from sim_pretrain.env_config import DynamicsConfig, EnvConfig, NoiseConfig


def make_env(profile: str, physics: str = "profile", **dynamics) -> Go1Env:
    cfg = EnvConfig(num_envs=4, num_threads=1, noise=NoiseConfig(enabled=False), seed=2,
                    dynamics=DynamicsConfig(profile=profile, physics=physics, **dynamics))
    return Go1Env(cfg)


def test_profile_physics_and_figures_reach_the_model():
    strong = load_reality_gap("strong")
    env = make_env("strong")
    m = env.base_model
    assert m.opt.timestep == strong.physics_dt and env.decimation == 10  # 20 ms policy period
    assert m.opt.cone == mujoco.mjtCone.mjCONE_ELLIPTIC and m.opt.iterations == strong.physics.iterations
    nominal = make_env("none").base_model
    np.testing.assert_allclose(m.dof_frictionloss[6:], nominal.dof_frictionloss[6:] * strong.joint_frictionloss_factor)
    np.testing.assert_allclose(m.dof_damping[6:], nominal.dof_damping[6:] * strong.joint_damping_factor)
    for key, value in [("friction", strong.friction), ("motor_strength", strong.motor_strength),
                       ("kp_factor", strong.kp_factor), ("kd_factor", strong.kd_factor)]:
        assert (abs(env.params[key] / value - 1) <= 0.1 + 1e-9).all(), key
    assert (abs(env.params["added_mass"] - strong.added_mass) <= 0.5 + 1e-9).all()
    # Latency 6 ms +- 2 ms in 2 ms physics steps.
    assert ((env.latency >= 2) & (env.latency <= 4)).all()
    for i, model in enumerate(env.models):
        p = env.params
        kp = env.spec.control.kp * p["kp_factor"][i] * p["motor_strength"][i]
        np.testing.assert_allclose(model.actuator_gainprm[:, 0], kp)
        trunk_mass = env.base_model.body_mass[env.trunk_id] + p["added_mass"][i]
        assert model.body_mass[env.trunk_id] == pytest.approx(trunk_mass)


def test_training_physics_keeps_the_fast_solver_with_the_profile_figures():
    env = make_env("strong", physics="training")
    assert env.base_model.opt.timestep == env.spec.control.sim_dt and env.decimation == 4
    assert env.base_model.opt.cone == mujoco.mjtCone.mjCONE_PYRAMIDAL
    assert (abs(env.params["friction"] / 0.6 - 1) <= 0.1 + 1e-9).all()


def test_explicit_ranges_replace_the_spreads_around_the_profile():
    env = make_env("strong", physics="training", ranges={"friction": [0.3, 1.2], "latency_s": [0.0, 0.0],
                                                          "joint_frictionloss_factor": [4.0, 5.0]})  # fmt: skip
    draws = []
    for _ in range(10):
        env.reset_all()
        draws.append(env.params["friction"].copy())
    draws = np.concatenate(draws)
    assert draws.min() >= 0.3 and draws.max() <= 1.2 and draws.max() - draws.min() > 0.5  # far beyond 0.6 +- 10 %
    assert (env.latency == 0).all()
    nominal = make_env("none").base_model.dof_frictionloss[6:]
    for i, model in enumerate(env.models):  # strong's own factor (2.5) replaced by each env's draw
        factor = env.params["joint_frictionloss_factor"][i]
        assert 4.0 <= factor <= 5.0 and np.allclose(model.dof_frictionloss[6:], nominal * factor)
    assert (abs(env.params["kp_factor"] / 0.9 - 1) <= 0.1 + 1e-9).all()  # the others keep their spreads
    with pytest.raises(ValueError, match="unknown figure"):
        DynamicsConfig(ranges={"mass": [0.0, 1.0]})
    with pytest.raises(ValueError, match="low <= high"):
        DynamicsConfig(ranges={"friction": [1.0, 0.5]})


def test_sensor_bias_offsets_what_the_policy_sees_and_where_the_motor_holds(spec):
    env = make_env("strong", spread=0.0)
    bias = env.bias["joint_pos"]
    assert np.abs(bias).max() > 0 and not np.allclose(bias[0], bias[1])  # drawn per episode
    for _ in range(50):  # hold the default pose (action 0) until the robot settles
        obs, *_ = env.step(torch.zeros(4, 12))
    s = spec.observation.slices()
    seen = obs["policy"][:, : spec.observation.frame_dim][:, s["joint_pos"]].numpy()
    true = env.measured["joint_pos"].numpy() - spec.default_pose
    np.testing.assert_allclose(seen - true, bias, atol=1e-5)  # readings carry the encoder offset
    # The motor servoes its own (offset) encoder to the target: MuJoCo's servo, on the true angle, gets target - bias.
    np.testing.assert_allclose(env.control[:, -1], spec.default_pose - bias)


def test_nominal_env_unchanged_by_an_empty_dynamics_section():
    a = Go1Env(EnvConfig(num_envs=3, num_threads=1, seed=4))
    b = Go1Env(EnvConfig(num_envs=3, num_threads=1, seed=4, dynamics=DynamicsConfig(profile="")))
    for _ in range(5):
        actions = torch.randn(3, 12)
        oa, ra, *_ = a.step(actions)
        ob, rb, *_ = b.step(actions)
    torch.testing.assert_close(oa["policy"], ob["policy"])
    assert a.decimation == 4 and not np.any(a.bias["joint_pos"])


def test_bad_dynamics_are_refused():
    with pytest.raises(ValueError, match="physics"):
        DynamicsConfig(profile="strong", physics="fast")
    with pytest.raises(ValueError, match="unknown reality_gap"):
        make_env("no_such_profile")


def test_finetune_in_a_profile_starts_from_the_pretrained_run(tmp_path, spec):
    runs = tmp_path / "runs"
    assert main(["train", "--preset", "tiny", "--runs", str(runs), "--seed", "3", "--iterations", "1"]) == 0
    (run,) = (runs / "go1").iterdir()
    out = tmp_path / "ft"
    assert main(["finetune", "--policy", str(run / "policy.pt"), "--dynamics", "strong", "--iterations", "1",
                 "--num-envs", "4", "--out", str(out)]) == 0
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["env"]["dynamics"]["profile"] == "strong" and config["env"]["num_envs"] == 4
    assert config["actor"] == yaml.safe_load((run / "config.yaml").read_text())["actor"]
    start = max(run.glob("model_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
    start_w = torch.load(start, weights_only=False)["actor_state_dict"]["mlp.0.weight"]
    tuned_w = torch.load(out / "model_0.pt", weights_only=False)["actor_state_dict"]["mlp.0.weight"]
    assert (tuned_w - start_w).norm() < 0.05 * start_w.norm()  # one update away from the pretrained actor
    assert load_policy(out / "policy.pt", spec).contract["info"]["run"] == str(out)
    assert main(["finetune", "--policy", str(run), "--dynamics", "nope", "--out", str(tmp_path / "x")]) == 2
