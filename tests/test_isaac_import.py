"""Isaac Gym policies imported into the robot contract (sim_pretrain/isaac_import.py, robot_spec/foreign.py).

Each source network is synthesised in its project's own export format and layer sizes, and fed by that project's
observation code re-implemented here from its published formulas (legged_gym compute_observations with Isaac's
x-y-z-w quaternion, unitree_rl_gym's deploy gravity formula, walk-these-ways' LCMAgent + HistoryWrapper). On the
same physical state the imported policy must command the same PD target through our observation and ActionMap.
"""

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from robot_spec import ObservationBuilder
from robot_spec.foreign import ForeignPolicyError
from robot_spec.policy_io import load_policy
from sim_pretrain.isaac_import import import_policy

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "import"
ISAAC = [f"{leg}_{k}_joint" for leg in ("FL", "FR", "RL", "RR") for k in ("hip", "thigh", "calf")]
SDK = [f"{leg}_{k}_joint" for leg in ("FR", "FL", "RR", "RL") for k in ("hip", "thigh", "calf")]
DEFAULT = {"FL_hip_joint": 0.1, "RL_hip_joint": 0.1, "FR_hip_joint": -0.1, "RR_hip_joint": -0.1,
           "FL_thigh_joint": 0.8, "RL_thigh_joint": 1.0, "FR_thigh_joint": 0.8, "RR_thigh_joint": 1.0,
           "FL_calf_joint": -1.5, "RL_calf_joint": -1.5, "FR_calf_joint": -1.5, "RR_calf_joint": -1.5}  # fmt: skip


def rsl_rl_actor(num_obs: int, hidden=(512, 256, 128), out: int = 12, seed: int = 0) -> nn.Sequential:
    """rsl_rl ActorCritic.actor (ELU); weights scaled up so the outputs vary over the test's states."""
    torch.manual_seed(seed)
    sizes, layers = [num_obs, *hidden], []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ELU()]
    layers.append(nn.Linear(sizes[-1], out))
    net = nn.Sequential(*layers)
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                m.weight.mul_(2.0)
    return net.eval()


def export_as_jit(net: nn.Module, path: Path) -> Path:
    """legged_gym / unitree_rl_gym helpers.export_policy_as_jit, walk-these-ways' checkpoint export."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.script(net).save(str(path))
    return path


def physical_states(n: int, seed: int = 0) -> dict:
    """Random physical states of a Go1, names -> values (joint values keyed by joint name)."""
    g = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        axis = g.normal(size=3)
        axis /= np.linalg.norm(axis)
        angle = g.uniform(-0.4, 0.4)
        quat = np.r_[np.cos(angle / 2), np.sin(angle / 2) * axis]  # body -> world, w x y z
        out.append({
            "quat_wxyz": quat, "gyro": g.normal(0, 1.0, 3), "lin_vel": g.normal(0, 0.5, 3),
            "command": g.uniform([-1, -0.6, -1], [1, 0.6, 1]),
            "q": {j: DEFAULT[j] + g.normal(0, 0.2) for j in ISAAC}, "dq": {j: g.normal(0, 3.0) for j in ISAAC},
            "prev_target": {j: DEFAULT[j] + g.normal(0, 0.15) for j in ISAAC},  # the last PD target sent
        })  # fmt: skip
    return out


def ours_act(policy, spec, st: dict, builder=None) -> dict:
    """Our side: ObservationBuilder from the physical state → imported policy → PD target (before the clamp)."""
    builder = builder or ObservationBuilder(spec)
    names = spec.joint_names
    default = spec.default_pose
    last = (np.array([st["prev_target"][j] for j in names]) - default) / spec.control.action_scale
    if st.get("first"):
        last = np.zeros(len(names))
    obs = builder.build(st["quat_wxyz"], st["gyro"], st["command"], [st["q"][j] for j in names],
                        [st["dq"][j] for j in names], last)  # fmt: skip
    action = policy.actor(obs)[0].detach().double().numpy()
    return dict(zip(names, default + spec.control.action_scale * action))


# ------------------------------------------------------------------ their observation code, re-implemented
def quat_rotate_inverse(q_xyzw: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """isaacgym.torch_utils.quat_rotate_inverse (Isaac Gym quaternions are x, y, z, w)."""
    q_w, q_vec = q_xyzw[:, -1], q_xyzw[:, :3]
    a = v * (2.0 * q_w**2 - 1.0).unsqueeze(-1)
    b = torch.cross(q_vec, v, dim=-1) * q_w.unsqueeze(-1) * 2.0
    c = q_vec * torch.bmm(q_vec.view(-1, 1, 3), v.view(-1, 3, 1)).squeeze(-1) * 2.0
    return a - b + c


def legged_gym_obs(st: dict, joints: list[str], lin_vel) -> torch.Tensor:
    """legged_robot.py compute_observations (flat), A1/Go2 obs_scales; `lin_vel` what base_lin_vel holds."""
    w, x, y, z = st["quat_wxyz"]
    quat = torch.tensor([[x, y, z, w]], dtype=torch.float32)
    gravity = quat_rotate_inverse(quat, torch.tensor([[0.0, 0.0, -1.0]]))[0]
    f = lambda v: torch.as_tensor(np.asarray(v), dtype=torch.float32)  # noqa: E731
    prev = [(st["prev_target"][j] - DEFAULT[j]) / 0.25 for j in joints]  # self.actions: the last action
    return torch.cat([
        f(lin_vel) * 2.0, f(st["gyro"]) * 0.25, gravity, f(st["command"]) * f([2.0, 2.0, 0.25]),
        f([st["q"][j] - DEFAULT[j] for j in joints]), f([st["dq"][j] for j in joints]) * 0.05, f(prev),
    ])[None]  # fmt: skip


def unitree_deploy_gravity(q_wxyz) -> np.ndarray:
    """unitree_rl_gym deploy_mujoco.get_gravity_orientation (MuJoCo's w, x, y, z)."""
    qw, qx, qy, qz = q_wxyz
    return np.array([2 * (-qz * qx + qw * qy), -2 * (qz * qy + qw * qx), 1 - 2 * (qw * qw + qz * qz)])


# ------------------------------------------------------------------ legged_gym
def legged_gym_cfg(tmp_path: Path, **changes) -> Path:
    cfg = yaml.safe_load((CONFIGS / "legged_gym_a1_flat.yaml").read_text())
    for dotted, value in changes.items():
        node, *_, = [cfg]
        keys = dotted.split("__")
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("order", ["isaac", "sdk"])
def test_legged_gym_import_commands_the_source_networks_targets(spec, tmp_path, order):
    joints = ISAAC if order == "isaac" else SDK  # "sdk": a network trained with the SDK's leg order FR, FL, RR, RL
    net = rsl_rl_actor(48)
    src = export_as_jit(net, tmp_path / "exported/policies/policy_1.pt")
    cfg = legged_gym_cfg(tmp_path, dof_names=joints)
    import_policy("legged_gym", src, cfg, spec, tmp_path / "policy.pt", {"base_lin_vel": "command"})
    policy = load_policy(tmp_path / "policy.pt", spec)  # our contract, checked against the robot spec
    for st in physical_states(8):
        cmd = [st["command"][0], st["command"][1], 0.0]  # base_lin_vel stands in as the command
        action = net(legged_gym_obs(st, joints, cmd))[0].detach().clamp(-100, 100).numpy()
        theirs = {j: DEFAULT[j] + 0.25 * a for j, a in zip(joints, action)}
        ours = ours_act(policy, spec, st)
        np.testing.assert_allclose([ours[j] for j in ISAAC], [theirs[j] for j in ISAAC], atol=2e-5)
    assert (tmp_path / "policy.onnx").stat().st_size > 0


def test_a_permuted_joint_order_changes_the_targets(spec, tmp_path):
    """The round trip above can fail: importing the SDK-ordered network as if it were Isaac-ordered does not match."""
    net = rsl_rl_actor(48)
    src = export_as_jit(net, tmp_path / "policy_1.pt")
    import_policy("legged_gym", src, legged_gym_cfg(tmp_path), spec, tmp_path / "p.pt", {"base_lin_vel": "command"})
    policy = load_policy(tmp_path / "p.pt", spec)
    st = physical_states(1)[0]
    action = net(legged_gym_obs(st, SDK, [*st["command"][:2], 0.0]))[0].detach().numpy()
    theirs = {j: DEFAULT[j] + 0.25 * a for j, a in zip(SDK, action)}
    ours = ours_act(policy, spec, st)
    assert np.abs(np.array([ours[j] - theirs[j] for j in ISAAC])).max() > 1e-2


def test_rsl_rl_checkpoint_imports_like_its_jit_export(spec, tmp_path):
    net = rsl_rl_actor(48)
    state = {f"actor.{k}": v for k, v in net.state_dict().items()}
    state.update({"critic.0.weight": torch.zeros(1, 48), "std": torch.ones(12)})
    torch.save({"model_state_dict": state, "optimizer_state_dict": {}, "iter": 1500, "infos": None},
               tmp_path / "model_1500.pt")  # fmt: skip
    export_as_jit(net, tmp_path / "policy_1.pt")
    cfg = legged_gym_cfg(tmp_path)
    for name in ("model_1500.pt", "policy_1.pt"):
        import_policy("legged_gym", tmp_path / name, cfg, spec, tmp_path / f"{name}.out.pt", {"base_lin_vel": "zero"})
    obs = torch.randn(5, spec.observation.dim)
    a = load_policy(tmp_path / "model_1500.pt.out.pt", spec)(obs)
    torch.testing.assert_close(a, load_policy(tmp_path / "policy_1.pt.out.pt", spec)(obs))


@pytest.mark.parametrize("changes, match", [
    ({}, "base_lin_vel: base linear velocity"),  # no --map: refused, the term named
    ({"terrain__measure_heights": True, "env__num_observations": 235}, "height_measurements"),
    ({"control__decimation": 2}, "control period 10.0 ms"),
    ({"control__stiffness": {"joint": 35.0}}, "PD gains Kp 35.0"),
    ({"env__num_observations": 50}, "num_observations = 50"),
    ({"dof_names": ISAAC[:9], "env__num_actions": 9}, "drives 9 joints"),
])  # fmt: skip
def test_legged_gym_refusals_name_the_reason(spec, tmp_path, changes, match):
    n = changes.get("env__num_actions", 12)
    src = export_as_jit(rsl_rl_actor(changes.get("env__num_observations", 12 + 3 * n), out=n), tmp_path / "p_1.pt")
    maps = {"base_lin_vel": "command"} if changes else {}
    with pytest.raises(ForeignPolicyError, match=match):
        import_policy("legged_gym", src, legged_gym_cfg(tmp_path, **changes), spec, tmp_path / "p.pt", maps)
    assert not (tmp_path / "p.pt").exists()


# ------------------------------------------------------------------ unitree_rl_gym
def test_unitree_rl_gym_go2_import_matches_its_observation_code(spec, tmp_path):
    net = rsl_rl_actor(48, seed=1)
    src = export_as_jit(net, tmp_path / "policy_1.pt")
    import_policy("unitree_rl_gym", src, CONFIGS / "unitree_rl_gym_go2.yaml", spec, tmp_path / "p.pt",
                  {"base_lin_vel": "command"})  # fmt: skip
    policy = load_policy(tmp_path / "p.pt", spec)
    cfg = yaml.safe_load((CONFIGS / "unitree_rl_gym_go2.yaml").read_text())
    default = np.array(cfg["default_angles"])
    for st in physical_states(6, seed=3):
        qj = np.array([st["q"][j] for j in ISAAC])
        prev = (np.array([st["prev_target"][j] for j in ISAAC]) - default) / cfg["action_scale"]
        obs = np.concatenate([
            np.r_[st["command"][:2], 0.0] * 2.0, st["gyro"] * cfg["ang_vel_scale"], unitree_deploy_gravity(st["quat_wxyz"]),
            st["command"] * np.array(cfg["cmd_scale"]), (qj - default) * cfg["dof_pos_scale"],
            np.array([st["dq"][j] for j in ISAAC]) * cfg["dof_vel_scale"], prev,
        ])  # fmt: skip
        action = net(torch.tensor(obs, dtype=torch.float32)[None])[0].detach().numpy()
        theirs = action * cfg["action_scale"] + default  # deploy_mujoco: target_dof_pos
        ours = ours_act(policy, spec, st)
        np.testing.assert_allclose([ours[j] for j in ISAAC], theirs, atol=2e-5)


def test_unitree_rl_gym_humanoid_deploy_yaml_is_refused(spec, tmp_path):
    g1 = {"simulation_dt": 0.002, "control_decimation": 10, "kps": [100, 100, 100, 150, 40, 40] * 2,
          "kds": [2, 2, 2, 4, 2, 2] * 2, "default_angles": [-0.1, 0.0, 0.0, 0.3, -0.2, 0.0] * 2,
          "ang_vel_scale": 0.25, "dof_pos_scale": 1.0, "dof_vel_scale": 0.05, "action_scale": 0.25,
          "cmd_scale": [2.0, 2.0, 0.25], "num_actions": 12, "num_obs": 47}  # deploy_mujoco/configs/g1.yaml  # fmt: skip
    (tmp_path / "g1.yaml").write_text(yaml.safe_dump(g1))
    src = export_as_jit(rsl_rl_actor(47, hidden=(32,)), tmp_path / "policy_1.pt")
    with pytest.raises(ForeignPolicyError, match="gains differ per joint"):
        import_policy("unitree_rl_gym", src, tmp_path / "g1.yaml", spec, tmp_path / "p.pt")
    g1.update(kps=[20] * 12, kds=[0.5] * 12)
    (tmp_path / "g1.yaml").write_text(yaml.safe_dump(g1))
    with pytest.raises(ForeignPolicyError, match="phase"):
        import_policy("unitree_rl_gym", src, tmp_path / "g1.yaml", spec, tmp_path / "p.pt")


# ------------------------------------------------------------------ walk-these-ways
WTW_SCALES = {"lin_vel": 2.0, "ang_vel": 0.25, "dof_pos": 1.0, "dof_vel": 0.05, "imu": 0.1,
              "height_measurements": 5.0, "friction_measurements": 1.0, "body_height_cmd": 2.0, "gait_phase_cmd": 1.0,
              "gait_freq_cmd": 1.0, "footswing_height_cmd": 0.15, "body_pitch_cmd": 0.3, "body_roll_cmd": 0.3,
              "aux_reward_cmd": 1.0, "compliance_cmd": 1.0, "stance_width_cmd": 1.0, "stance_length_cmd": 1.0}  # fmt: skip


def wtw_parameters(**env_changes) -> dict:
    """The published pretrain-v0 run's parameters.pkl values that matter (and some that do not, incl. arrays)."""
    from collections import OrderedDict

    env = {"num_observations": 70, "num_privileged_obs": 2, "num_actions": 12, "num_observation_history": 30,
           "observe_vel": False, "observe_only_ang_vel": False, "observe_only_lin_vel": False, "observe_yaw": False,
           "observe_contact_states": False, "observe_command": True, "observe_gait_commands": True,
           "observe_clock_inputs": True, "observe_two_prev_actions": True, "observe_imu": False, **env_changes}  # fmt: skip
    cfg = {
        "env": env, "obs_scales": WTW_SCALES,
        "terrain": {"mesh_type": "trimesh", "measure_heights": False, "env_origins": np.zeros((4, 3))},
        "commands": {"num_commands": 15, "pacing_offset": False},
        "init_state": {"pos": [0.0, 0.0, 0.34], "default_joint_angles": OrderedDict(DEFAULT)},
        "control": {"control_type": "actuator_net", "stiffness": {"joint": 20.0}, "damping": {"joint": 0.5},
                    "action_scale": 0.25, "hip_scale_reduction": 0.5, "decimation": 4},
        "normalization": {"clip_observations": 100.0, "clip_actions": 10.0},
        "sim": {"dt": 0.005},
    }  # fmt: skip
    return {"AC_Args": {"activation": "elu", "actor_hidden_dims": [512, 256, 128]}, "Cfg": cfg}


def wtw_run(tmp_path: Path, params: dict, seed: int = 0) -> tuple[Path, nn.Module, nn.Module]:
    run = tmp_path / "025417.456545"
    hist = params["Cfg"]["env"]["num_observations"] * params["Cfg"]["env"]["num_observation_history"]
    adaptation = rsl_rl_actor(hist, hidden=(256, 128), out=2, seed=seed)  # ActorCritic.adaptation_module
    body = rsl_rl_actor(hist + 2, out=12, seed=seed + 1)  # ActorCritic.actor_body
    export_as_jit(adaptation, run / "checkpoints/adaptation_module_latest.jit")
    export_as_jit(body, run / "checkpoints/body_latest.jit")
    (run / "parameters.pkl").write_bytes(pickle.dumps(params))
    return run, body, adaptation


class WtwDeploy:
    """go1_gym_deploy LCMAgent (get_obs, step, clock accounting) + HistoryWrapper + load_policy's policy."""

    def __init__(self, body, adaptation):
        self.body, self.adaptation = body, adaptation
        self.commands_scale = np.array([2.0, 2.0, 0.25, 2.0, 1, 1, 1, 1, 1, 0.15, 0.3, 0.3, 1.0, 1.0, 1.0])
        self.default = np.array([DEFAULT[j] for j in ISAAC])
        self.reset()

    def reset(self):
        self.actions, self.last_actions = torch.zeros(12), torch.zeros(12)
        self.gait_indices, self.clock_inputs = torch.zeros(1), torch.zeros(1, 4)
        self.obs_history = torch.zeros(1, 70 * 30)

    def get_obs(self, st):
        w, x, y, z = st["quat_wxyz"]
        R = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                      [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                      [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])  # fmt: skip
        gravity = R.T @ np.array([0, 0, -1])  # StateEstimator.get_gravity_vector
        cmds = np.r_[st["command"], 0.0, 3.0, 0.5, 0.0, 0.0, 0.5, 0.08, 0.0, 0.0, 0.33, 0.40, 0.0]  # RC mode 0
        ob = np.concatenate([gravity, cmds * self.commands_scale, np.array([st["q"][j] for j in ISAAC]) - self.default,
                             np.array([st["dq"][j] for j in ISAAC]) * 0.05, torch.clip(self.actions, -10, 10).numpy(),
                             self.last_actions.numpy(), self.clock_inputs[0].numpy()])  # fmt: skip
        obs = torch.tensor(ob[None], dtype=torch.float32)
        self.obs_history = torch.cat((self.obs_history[:, 70:], obs), dim=-1)
        return cmds

    def policy(self):
        latent = self.adaptation(self.obs_history)
        return self.body(torch.cat((self.obs_history, latent), dim=-1))

    def step(self, action, st):
        self.last_actions = self.actions[:]
        self.actions = torch.clip(action[0], -10, 10).detach()
        cmds = self.get_obs(st)
        self.gait_indices = torch.remainder(self.gait_indices + 0.02 * cmds[4], 1.0)
        feet = [self.gait_indices + cmds[5] + cmds[6] + cmds[7], self.gait_indices + cmds[6],
                self.gait_indices + cmds[7], self.gait_indices + cmds[5]]  # fmt: skip
        for i in range(4):
            self.clock_inputs[:, i] = torch.sin(2 * np.pi * feet[i])


def wtw_target(action: torch.Tensor) -> dict:
    """LCMAgent.publish_action: clip, × action_scale, hips × hip_scale_reduction, + default pose."""
    t = torch.clip(action[0], -10, 10).numpy() * 0.25
    t[[0, 3, 6, 9]] *= 0.5
    return {j: DEFAULT[j] + v for j, v in zip(ISAAC, t)}


def test_walk_these_ways_import_follows_its_deploy_loop(spec, tmp_path):
    run, body, adaptation = wtw_run(tmp_path, wtw_parameters())
    import_policy("walk_these_ways", run, None, spec, tmp_path / "p.pt")
    policy = load_policy(tmp_path / "p.pt", spec)
    builder = ObservationBuilder(spec)
    deploy = WtwDeploy(body, adaptation)
    for t, st in enumerate(physical_states(12, seed=5)):
        if t in (0, 7):  # episode starts (7: a second one: history, action memory and clock start afresh)
            deploy.reset()
            deploy.get_obs(st)
            st = {**st, "first": True}
        else:
            deploy.step(action, st)
            st = {**st, "prev_target": theirs}  # our last_action is the action of the target last sent
        action = deploy.policy().detach()
        theirs = wtw_target(action)
        ours = ours_act(policy, spec, st, builder)
        np.testing.assert_allclose([ours[j] for j in ISAAC], [theirs[j] for j in ISAAC], atol=5e-5,
                                   err_msg=f"step {t}")  # fmt: skip
    assert not (tmp_path / "p.onnx").exists()  # its history lives in the module: TorchScript only


def test_walk_these_ways_refusals_and_safe_parameters(spec, tmp_path):
    run, *_ = wtw_run(tmp_path, wtw_parameters(observe_imu=True, num_observations=73))
    with pytest.raises(ForeignPolicyError, match="unknown term 'imu'"):
        import_policy("walk_these_ways", run, None, spec, tmp_path / "p.pt")
    run, *_ = wtw_run(tmp_path, wtw_parameters(observe_only_lin_vel=True, num_observations=73))
    with pytest.raises(ForeignPolicyError, match="observes base_lin_vel"):
        import_policy("walk_these_ways", run, None, spec, tmp_path / "p.pt")
    # a parameters.pkl that names code: nothing it names runs
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (run / "parameters.pkl").write_bytes(pickle.dumps({"Cfg": {"env": Payload()}}))
    with pytest.raises(ForeignPolicyError, match="parameters.pkl"):
        import_policy("walk_these_ways", run, None, spec, tmp_path / "p.pt")
    assert not marker.exists()


# ------------------------------------------------------------------ downstream: the simulator, the CLI
def test_imported_policies_run_an_episode_in_our_simulator(spec, tmp_path):
    from sim_pretrain.evaluate import EvalConfig, evaluate_policy

    run, *_ = wtw_run(tmp_path, wtw_parameters())
    import_policy("walk_these_ways", run, None, spec, tmp_path / "wtw.pt")
    src = export_as_jit(rsl_rl_actor(48), tmp_path / "policy_1.pt")
    import_policy("legged_gym", src, legged_gym_cfg(tmp_path), spec, tmp_path / "lg.pt", {"base_lin_vel": "command"})
    cfg = EvalConfig(commands=[[0.5, 0.0, 0.0]], envs_per_command=2, episode_s=1.0, settle_s=0.2)
    for name in ("wtw.pt", "lg.pt"):
        metrics = evaluate_policy(load_policy(tmp_path / name, spec), cfg, progress=False)
        assert np.isfinite(metrics["mean_return"]) and 0.0 <= metrics["fall_rate"] <= 1.0


def test_cli_import_and_one_line_errors(tmp_path, capsys):
    from sim_pretrain.cli import main

    src = export_as_jit(rsl_rl_actor(48, hidden=(32,)), tmp_path / "policy_1.pt")
    cfg = str(CONFIGS / "legged_gym_a1_flat.yaml")
    assert main(["import", "--from", "legged_gym", "--policy", str(src), "--config", cfg, "--out",
                 str(tmp_path / "p.pt")]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert "base_lin_vel" in err and "\n" not in err and "Traceback" not in err
    assert main(["import", "--from", "legged_gym", "--policy", str(src), "--config", "legged_gym_a1_flat", "--out",
                 str(tmp_path / "p.pt"), "--map", "base_lin_vel=command"]) == 0  # fmt: skip
    assert (tmp_path / "p.pt").is_file()
    assert main(["import", "--from", "legged_gym", "--policy", str(src), "--config", "no_such_task", "--out",
                 str(tmp_path / "q.pt")]) == 2  # fmt: skip
    assert "legged_gym_a1_flat" in capsys.readouterr().err  # the known names


def test_fine_tuning_starts_from_the_imported_weights_or_refuses_clearly(spec, tmp_path):
    from robot_spec.policy_io import require_feed_forward
    from uni_o4.networks import GaussianPolicyEnsemble

    src = export_as_jit(rsl_rl_actor(48), tmp_path / "policy_1.pt")
    import_policy("legged_gym", src, legged_gym_cfg(tmp_path), spec, tmp_path / "lg.pt", {"base_lin_vel": "command"})
    imported = require_feed_forward(load_policy(tmp_path / "lg.pt", spec), "fine-tuning")
    ensemble = GaussianPolicyEnsemble.from_actor(imported.actor, 2)  # Uni-O4's stage 1 starts here
    obs = torch.randn(6, spec.observation.dim)
    torch.testing.assert_close(ensemble.export_member(1)(obs), imported(obs))
    run, *_ = wtw_run(tmp_path, wtw_parameters())
    import_policy("walk_these_ways", run, None, spec, tmp_path / "wtw.pt")
    with pytest.raises(ValueError, match="walk_these_ways import .* fine-tuning needs a feed-forward policy"):
        require_feed_forward(load_policy(tmp_path / "wtw.pt", spec), "fine-tuning")


def test_uni_o4_finetune_updates_the_imported_network(spec, tmp_path, monkeypatch):
    """`uni_o4 finetune --offline LOGS --init imported.pt`: the candidate is the imported network with its own
    weights moved by fine-tuning (same layers, near the import, not equal to it), not a network trained afresh."""
    from uni_o4 import finetune
    from uni_o4.cli import main
    from uni_o4.gate import GateDecision
    from test_uni_o4_log_dataset import _synthetic_records, _write_log  # a real log folder (LogWriter)

    src = export_as_jit(rsl_rl_actor(48, hidden=(32, 32), seed=3), tmp_path / "policy_1.pt")
    import_policy("legged_gym", src, legged_gym_cfg(tmp_path), spec, tmp_path / "lg.pt", {"base_lin_vel": "zero"})
    imported = load_policy(tmp_path / "lg.pt", spec).actor
    for episode in range(2):  # logs of the imported policy acting, with some action spread
        records = _synthetic_records(100, spec, seed=episode)
        with torch.no_grad():
            mean = imported(torch.as_tensor(records["obs"], dtype=torch.float32)).numpy()
        records["action"] = mean + np.random.default_rng(episode).normal(0, 0.1, mean.shape)
        _write_log(tmp_path / "logs" / f"collect_{episode}", spec, records)
    judged = []
    monkeypatch.setattr(finetune, "gate_candidate", lambda req, spec, candidate, scores: (
        judged.append(candidate) or (GateDecision(passed=True), {})))  # the gate's own tests live elsewhere
    assert main(["finetune", "--offline", str(tmp_path / "logs"), "--init", str(tmp_path / "lg.pt"),
                 "--preset", "uni_o4_tiny", "--out", str(tmp_path / "out")]) == 0  # fmt: skip

    (candidate_path,) = judged
    candidate = load_policy(candidate_path, spec).actor
    assert candidate.architecture == imported.architecture  # 45 -> 32 -> 32 -> 12, ELU: the imported layers
    before, after = imported.state_dict(), candidate.state_dict()
    assert before.keys() == after.keys()
    change = sum((after[k] - before[k]).norm() ** 2 for k in before) ** 0.5
    size = sum(before[k].norm() ** 2 for k in before) ** 0.5
    assert 0.0 < change < 0.2 * size, (float(change), float(size))  # updated, starting from the import
