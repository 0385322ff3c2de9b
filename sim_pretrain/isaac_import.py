"""`sim_pretrain import`: read a policy as legged_gym, walk-these-ways or unitree_rl_gym export it, with the
project's own configuration values, and write our policy.pt (robot contract inside) that runs it on our robot.

What each project writes (read from their code, robot_spec/foreign.py has the maps):
- legged_gym (leggedrobotics/legged_gym, rsl_rl): `export_policy_as_jit` → exported/policies/policy_1.pt, a
  TorchScript nn.Sequential (Linear/activation); training checkpoints model_<it>.pt hold `model_state_dict`
  (actor.<i>.weight ...). Config values are Python classes; we read them from a YAML with the same nesting.
  Observation: lin_vel·2, ang_vel·0.25, gravity, commands·(2, 2, 0.25), dof_pos, dof_vel·0.05, actions
  [+ 187 height samples when terrain.measure_heights].
- walk-these-ways (Improbable-AI/walk-these-ways): <run>/checkpoints/body_latest.jit +
  adaptation_module_latest.jit (TorchScript Sequentials) and <run>/parameters.pkl (the Cfg as dicts), read
  here without running any code it names. Observation (go1_gym_deploy LCMAgent): gravity, 15 commands · scales,
  dof_pos, dof_vel·0.05, actions, last actions, 4 clock inputs; 30 frames, oldest first.
- unitree_rl_gym (unitreerobotics/unitree_rl_gym): the same policy_1.pt export, and a deploy YAML
  (deploy/deploy_mujoco/configs/*.yaml keys). 48 observations = legged_gym's flat layout; 9 + 3n + 2 = the
  humanoid deploy layout with a phase clock.
"""

from __future__ import annotations

import collections
import pickle
from pathlib import Path

import torch
import yaml

from robot_spec.foreign import (
    ForeignConvention, ForeignTerm, ForeignPolicyError, check_activation, check_convention,
    fold_into_actor, input_map, mlp_layers, output_map,
)  # fmt: skip
from robot_spec.policy_io import save_policy
from robot_spec.spec import RobotSpec
from robot_spec.wtw_actor import WalkTheseWaysActor

SOURCES = ("legged_gym", "walk_these_ways", "unitree_rl_gym")
ISAAC_JOINTS = [f"{leg}_{kind}_joint" for leg in ("FL", "FR", "RL", "RR") for kind in ("hip", "thigh", "calf")]
JIT_ACTIVATIONS = {"ELU": "elu", "ReLU": "relu", "Tanh": "tanh", "SiLU": "silu"}
# walk-these-ways' trotting gait, as its deploy's remote-control defaults give it (cheetah_state_estimator.py,
# mode 0): commands 3..14 = body height 0, frequency 3 Hz, phase 0.5, offset 0, bound 0, duration 0.5, footswing
# 0.08 m, pitch 0, roll 0, stance width 0.33 m, stance length 0.40 m, aux reward 0.
WTW_TROT = [0.0, 3.0, 0.5, 0.0, 0.0, 0.5, 0.08, 0.0, 0.0, 0.33, 0.40, 0.0]


def import_policy(source: str, policy: Path, config: Path | None, spec: RobotSpec, out: Path,
                  maps: dict[str, str] | None = None) -> dict:  # fmt: skip
    """Convert and write `out` (policy.pt, + .onnx for feed-forward policies); returns the contract written."""
    maps = maps or {}
    if source == "legged_gym":
        actor, src = _legged_gym(policy, _yaml(config, "--config (legged_gym task values)"), spec, maps)
    elif source == "unitree_rl_gym":
        actor, src = _unitree_rl_gym(policy, _yaml(config, "--config (unitree_rl_gym deploy YAML)"), spec, maps)
    elif source == "walk_these_ways":
        actor, src = _walk_these_ways(policy, config, spec, maps)
    else:
        raise ForeignPolicyError(f"--from {source}: known sources {list(SOURCES)}")
    info = {"source": source, "imported_from": str(policy), "config": str(config) if config else None,
            "convention": src.describe()}  # fmt: skip
    return save_policy(actor, spec, out, info)


# ------------------------------------------------------------------------------------------------ legged_gym
def _legged_gym(policy: Path, cfg: dict, spec: RobotSpec, maps: dict[str, str]):
    joints = cfg.get("dof_names", ISAAC_JOINTS)
    n = int(_get(cfg, "env.num_actions"))
    s = _get(cfg, "normalization.obs_scales")
    terms = [
        ForeignTerm("base_lin_vel", 3, [s["lin_vel"]]), ForeignTerm("base_ang_vel", 3, [s["ang_vel"]]),
        ForeignTerm("projected_gravity", 3, [1.0]),
        ForeignTerm("commands", 3, [s["lin_vel"], s["lin_vel"], s["ang_vel"]]),
        ForeignTerm("dof_pos", n, [s["dof_pos"]]), ForeignTerm("dof_vel", n, [s["dof_vel"]]),
        ForeignTerm("actions", n, [1.0]),
    ]  # fmt: skip
    if _get(cfg, "terrain.measure_heights"):
        terms.append(ForeignTerm("height_measurements", _height_points(cfg), [s["height_measurements"]]))
    src = ForeignConvention(
        project="legged_gym", joint_names=list(joints),
        default_joint_pos=_per_joint(cfg, "init_state.default_joint_angles", joints),
        action_scale=[float(_get(cfg, "control.action_scale"))] * len(joints),
        clip_actions=float(_get(cfg, "normalization.clip_actions")),
        kp=_gain(cfg, "stiffness", joints), kd=_gain(cfg, "damping", joints),
        policy_dt=float(_get(cfg, "sim.dt")) * int(_get(cfg, "control.decimation")), terms=terms, maps=maps,
    )  # fmt: skip
    if _get(cfg, "control.control_type") != "P":
        raise ForeignPolicyError(f"legged_gym control_type {_get(cfg, 'control.control_type')!r}: "
                                 "only position targets (P) are importable")
    perm = check_convention(src, spec)
    _check_count(src, int(_get(cfg, "env.num_observations")), "env.num_observations")
    layers, activation = _read_network(policy, "legged_gym", cfg.get("policy", {}).get("activation", "elu"))
    return fold_into_actor(layers, activation, src, spec, perm), src


def _height_points(cfg: dict) -> int:
    """Samples of the height scan (legged_gym's default grid: 17 × 11 = 187)."""
    terrain = cfg.get("terrain", {})
    return len(terrain.get("measured_points_x", range(17))) * len(terrain.get("measured_points_y", range(11)))


# ------------------------------------------------------------------------------------------------ unitree_rl_gym
def _unitree_rl_gym(policy: Path, cfg: dict, spec: RobotSpec, maps: dict[str, str]):
    n = int(_get(cfg, "num_actions"))
    num_obs = int(_get(cfg, "num_obs"))
    joints = cfg.get("joint_names", ISAAC_JOINTS if n == 12 else [f"joint_{i}" for i in range(n)])
    cmd = [float(v) for v in _get(cfg, "cmd_scale")]
    common = [
        ForeignTerm("base_ang_vel", 3, [_get(cfg, "ang_vel_scale")]), ForeignTerm("projected_gravity", 3, [1.0]),
        ForeignTerm("commands", 3, cmd), ForeignTerm("dof_pos", n, [_get(cfg, "dof_pos_scale")]),
        ForeignTerm("dof_vel", n, [_get(cfg, "dof_vel_scale")]), ForeignTerm("actions", n, [1.0]),
    ]  # fmt: skip
    if num_obs == 3 + 3 * n + 9:  # legged_robot.py compute_observations (go2): lin vel first
        terms = [ForeignTerm("base_lin_vel", 3, [cfg.get("lin_vel_scale", 2.0)]), *common]
    elif num_obs == 9 + 3 * n + 2:  # deploy_mujoco.py (humanoids): + sin/cos of a 0.8 s phase
        terms = [*common, ForeignTerm("phase", 2, [1.0])]
    else:
        raise ForeignPolicyError(f"unitree_rl_gym num_obs {num_obs} matches neither layout for {n} actions "
                                 f"({12 + 3 * n}: legged_robot with base_lin_vel; {11 + 3 * n}: deploy with phase)")
    kps, kds = [float(v) for v in _get(cfg, "kps")], [float(v) for v in _get(cfg, "kds")]
    if len(set(kps)) > 1 or len(set(kds)) > 1:
        raise ForeignPolicyError(f"unitree_rl_gym gains differ per joint (kps {kps}, kds {kds}); robot '{spec.name}' "
                                 f"has one Kp {spec.control.kp} and Kd {spec.control.kd}")  # fmt: skip
    src = ForeignConvention(
        project="unitree_rl_gym", joint_names=list(joints),
        default_joint_pos=[float(v) for v in _get(cfg, "default_angles")],
        action_scale=[float(_get(cfg, "action_scale"))] * n, clip_actions=float(cfg.get("clip_actions", 100.0)),
        kp=kps[0], kd=kds[0], policy_dt=float(_get(cfg, "simulation_dt")) * int(_get(cfg, "control_decimation")),
        terms=terms, maps=maps,
    )  # fmt: skip
    perm = check_convention(src, spec)
    layers, activation = _read_network(policy, "unitree_rl_gym", cfg.get("activation", "elu"))
    return fold_into_actor(layers, activation, src, spec, perm), src


# ------------------------------------------------------------------------------------------------ walk-these-ways
def _walk_these_ways(run: Path, params: Path | None, spec: RobotSpec, maps: dict[str, str]):
    ckpt = run / "checkpoints" if (run / "checkpoints").is_dir() else run  # the run folder or its checkpoints/
    params = params or ckpt.parent / "parameters.pkl"
    cfg = read_wtw_parameters(params)["Cfg"]
    src, gait = _wtw_convention(cfg, maps)
    perm = check_convention(src, spec, stateful_ok=True)
    _check_count(src, int(cfg["env"]["num_observations"]), "env.num_observations")
    body, act_b = _read_network(ckpt / "body_latest.jit", "walk_these_ways")
    adapt, act_a = _read_network(ckpt / "adaptation_module_latest.jit", "walk_these_ways")
    hist = src.frame_dim * src.history_length
    latent = adapt[-1][0].shape[0]
    if act_a != act_b or adapt[0][0].shape[1] != hist or body[0][0].shape[1] != hist + latent:
        raise ForeignPolicyError(f"walk_these_ways networks do not fit the run's parameters: adaptation module "
                                 f"{adapt[0][0].shape[1]} -> {latent}, body {body[0][0].shape[1]} inputs, history "
                                 f"{src.history_length} × {src.frame_dim} = {hist}")  # fmt: skip
    ours = spec.observation.slices()["last_action"]
    index, out_scale, out_offset = output_map(src, spec, perm)
    actor = WalkTheseWaysActor(
        obs_dim=spec.observation.dim, action_dim=spec.num_joints, frame_dim=src.frame_dim,
        history_length=src.history_length, body_hidden=[w.shape[0] for w, _ in body[:-1]],
        adaptation_hidden=[w.shape[0] for w, _ in adapt[:-1]], latent_dim=latent, activation=act_b, gait=gait,
        policy_dt=src.policy_dt, clip_actions=src.clip_actions, our_last_action=[ours.start, ours.stop],
        slices={k: [v.start, v.stop] for k, v in src.slices().items()}, out_index=index,
    )  # fmt: skip
    M, c = input_map(src, spec, perm)
    with torch.no_grad():
        actor.in_matrix.copy_(M), actor.in_offset.copy_(c), actor.out_scale.copy_(out_scale)
        actor.out_offset.copy_(out_offset)
        _load_layers(actor.body, body)
        _load_layers(actor.adaptation_module, adapt)
    return actor.eval(), src


def _wtw_convention(cfg: dict, maps: dict[str, str]) -> tuple[ForeignConvention, list[float]]:
    env, s, n = cfg["env"], cfg["obs_scales"], int(_get(cfg, "env.num_actions"))
    num_cmd = int(_get(cfg, "commands.num_commands"))
    if num_cmd < 9 or num_cmd > 15 or cfg["commands"].get("pacing_offset"):
        raise ForeignPolicyError(f"walk_these_ways commands: {num_cmd} with pacing_offset "
                                 f"{cfg['commands'].get('pacing_offset')}; importable: 9-15, no pacing offset")
    cmd_scale = [s["lin_vel"], s["lin_vel"], s["ang_vel"], s["body_height_cmd"], 1, 1, 1, 1, 1,
                 s["footswing_height_cmd"], s["body_pitch_cmd"], s["body_roll_cmd"], s["stance_width_cmd"],
                 s["stance_length_cmd"], s["aux_reward_cmd"]][:num_cmd]  # fmt: skip  (LCMAgent.commands_scale)
    terms = [ForeignTerm("projected_gravity", 3, [1.0]), ForeignTerm("commands", num_cmd, cmd_scale),
             ForeignTerm("dof_pos", n, [s["dof_pos"]]), ForeignTerm("dof_vel", n, [s["dof_vel"]]),
             ForeignTerm("actions", n, [1.0])]  # fmt: skip
    if env.get("observe_two_prev_actions"):
        terms.append(ForeignTerm("last_actions", n, [1.0]))
    if env.get("observe_clock_inputs"):
        terms.append(ForeignTerm("clock_inputs", 4, [1.0]))
    if env.get("observe_vel"):
        terms[:0] = [ForeignTerm("base_lin_vel", 3, [s["lin_vel"]]), ForeignTerm("base_ang_vel", 3, [s["ang_vel"]])]
    elif env.get("observe_only_lin_vel"):
        terms.insert(0, ForeignTerm("base_lin_vel", 3, [s["lin_vel"]]))
    for flag, name, dim in (("observe_yaw", "yaw", 1), ("observe_contact_states", "contact_states", 4),
                            ("observe_imu", "imu", 3)):  # fmt: skip
        if env.get(flag):
            terms.append(ForeignTerm(name, dim, [1.0]))
    if cfg.get("terrain", {}).get("measure_heights"):
        terms.append(ForeignTerm("height_measurements", _height_points(cfg), [s["height_measurements"]]))
    control = cfg["control"]
    scale = float(control["action_scale"])
    hip = float(control.get("hip_scale_reduction", 1.0))
    src = ForeignConvention(
        project="walk_these_ways", joint_names=ISAAC_JOINTS,  # LCMAgent's order; the SDK remap is its own
        default_joint_pos=_per_joint(cfg, "init_state.default_joint_angles", ISAAC_JOINTS),
        action_scale=[scale * hip if "hip" in j else scale for j in ISAAC_JOINTS],
        clip_actions=float(_get(cfg, "normalization.clip_actions")),
        kp=_gain(cfg, "stiffness", ISAAC_JOINTS), kd=_gain(cfg, "damping", ISAAC_JOINTS),
        policy_dt=float(_get(cfg, "sim.dt")) * int(control["decimation"]), terms=terms,
        history_length=int(env["num_observation_history"]), command_defaults=WTW_TROT[: num_cmd - 3], maps=maps,
    )  # fmt: skip
    return src, [WTW_TROT[1], WTW_TROT[2], WTW_TROT[3], WTW_TROT[4]]


class _Inert:
    """Stands in for every object a pickle names (tensors, arrays, classes): nothing it names is ever called."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


class _DataOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        return collections.OrderedDict if (module, name) == ("collections", "OrderedDict") else _Inert


def read_wtw_parameters(path: Path) -> dict:
    """walk-these-ways' parameters.pkl as plain dicts, without importing or running anything it names (its
    tensors and arrays, e.g. the terrain's origins, come back as inert placeholders)."""
    if not path.is_file():
        raise FileNotFoundError(f"walk_these_ways parameters not found: {path}")
    try:
        data = _DataOnly(path.open("rb")).load()
    except Exception as err:  # a damaged or foreign pickle: say which file
        raise ForeignPolicyError(f"{path}: not a walk-these-ways parameters.pkl ({type(err).__name__}: {err})") \
            from None
    sections = ("env", "obs_scales", "commands", "init_state", "control", "normalization", "sim")
    cfg = data.get("Cfg") if isinstance(data, dict) else None
    if not isinstance(cfg, dict) or not all(isinstance(cfg.get(k), dict) for k in sections):
        raise ForeignPolicyError(f"{path}: not a walk-these-ways parameters.pkl (a dict 'Cfg' with {list(sections)})")
    return data


# ------------------------------------------------------------------------------------------------ helpers
def _read_network(path: Path, project: str, activation: str = "elu") -> tuple[list, str]:
    """Linear layers and activation of a TorchScript nn.Sequential (export_policy_as_jit, walk-these-ways' jit
    files) or of an rsl_rl checkpoint model_<it>.pt (model_state_dict, actor.<i>.*; `activation` from config)."""
    if not path.is_file():
        raise FileNotFoundError(f"{project} policy not found: {path}")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or "model_state_dict" not in state:
            raise ForeignPolicyError(f"{path}: neither a TorchScript export nor an rsl_rl checkpoint "
                                     "(model_state_dict)")
        return mlp_layers(state["model_state_dict"], "actor."), check_activation(activation, project)
    if "reset_memory" in dir(module) or "memory" in dict(module.named_children()):
        raise ForeignPolicyError(f"{path}: a recurrent (LSTM) export; only feed-forward policies are importable")
    kinds = {child.original_name for _, child in module.named_children()} - {"Linear"}
    names = {JIT_ACTIVATIONS.get(k, k) for k in kinds}
    if len(names) != 1:
        raise ForeignPolicyError(f"{path}: expected Linear layers and one activation, found {sorted(kinds)}")
    return mlp_layers(dict(module.state_dict())), check_activation(names.pop(), project)


def _load_layers(seq: torch.nn.Sequential, layers: list) -> None:
    linears = [m for m in seq if isinstance(m, torch.nn.Linear)]
    for lin, (w, b) in zip(linears, layers, strict=True):
        lin.weight.copy_(w)
        lin.bias.copy_(b)


def _check_count(src: ForeignConvention, declared: int, key: str) -> None:
    if src.frame_dim != declared:
        raise ForeignPolicyError(f"{src.project} {key} = {declared}, but its observation terms "
                                 f"{[t.name for t in src.terms]} add up to {src.frame_dim}")  # fmt: skip


def _per_joint(cfg: dict, key: str, joints: list[str]) -> list[float]:
    values = _get(cfg, key)
    missing = [j for j in joints if j not in values]
    if missing:
        raise ForeignPolicyError(f"{key} has no value for {missing}")
    return [float(values[j]) for j in joints]


def _gain(cfg: dict, kind: str, joints: list[str]) -> float:
    """legged_gym's rule: a joint takes the gain of the first key contained in its name; one value for all."""
    table = _get(cfg, f"control.{kind}")
    gains = {float(next((v for k, v in table.items() if k in j), float("nan"))) for j in joints}
    if len(gains) != 1 or any(g != g for g in gains):  # differing, or a joint without a gain (nan)
        raise ForeignPolicyError(f"control.{kind} {table} does not give every joint one value")
    return gains.pop()


def _get(cfg: dict, dotted: str):
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ForeignPolicyError(f"config value {dotted} missing")
        node = node[part]
    return node


def _yaml(path: Path | None, what: str) -> dict:
    if path is None:
        raise ForeignPolicyError(f"{what} is required")
    if not path.is_file():
        raise FileNotFoundError(f"config not found: {path}")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ForeignPolicyError(f"{path}: expected a mapping")
    return data
