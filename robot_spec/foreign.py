"""Policies trained elsewhere (Isaac Gym: legged_gym, walk-these-ways, unitree_rl_gym) meet our robot contract.

A `ForeignConvention` states how the other project feeds and reads its network: its joint order, default pose,
action scale (per joint), action clip, PD gains, control period and observation frame (terms in order, with their
scales) and history. From it and our robot spec come two affine maps:

  their observation frame = M · our observation + c   (every term a Go1 measures; stateful terms filled later)
  our action[k]          = out_scale[k] · their action[out_index[k]] + out_offset[k]

so on the same physical state the imported network sees the numbers its own observation code would give it, and
its action becomes the same PD target through our ActionMap. A feed-forward network is folded into an ActorMLP
(first layer · M, last layer rows mapped): hidden layers keep their weights, the function is the same, and every
tool that takes a policy takes it unchanged. Walk-these-ways (30 frames of history, two previous actions, a gait
clock, an adaptation module) becomes `WalkTheseWaysActor` (wtw_actor.py), which keeps that state itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from robot_spec.policy_io import ACTIVATIONS, ActorMLP
from robot_spec.spec import RobotSpec

# Their observation terms we can build from what a Go1 measures (term -> dims as a function of joint count J).
MEASURED_TERMS = ("projected_gravity", "base_ang_vel", "commands", "dof_pos", "dof_vel", "actions")
STATEFUL_TERMS = ("last_actions", "clock_inputs")  # walk-these-ways: kept by WalkTheseWaysActor
# Terms a real Go1 cannot give the policy, and what `maps` may stand in for them.
UNMEASURABLE = {
    "base_lin_vel": "base linear velocity (a Go1 has no sensor for it; map it explicitly, e.g. "
                    "--map base_lin_vel=command, or to odometry where a tracking camera exists)",
    "height_measurements": "terrain height scan (a Go1 has no height map)",
    "contact_states": "foot contact states (not in the robot's observation)",
    "yaw": "heading (not in the robot's observation)",
    "phase": "a gait phase clock (sin/cos of time; not in the robot's observation)",
}  # fmt: skip
LIN_VEL_MAPS = ("command", "zero")  # stand-ins a user may choose for base_lin_vel


class ForeignPolicyError(ValueError):
    """A foreign policy cannot be mapped onto the robot contract; the message names what and why."""


@dataclass(frozen=True)
class ForeignTerm:
    name: str
    dim: int
    scale: list[float]  # one value or one per element (their obs_scales)

    def scale_vector(self) -> torch.Tensor:
        if len(self.scale) not in (1, self.dim):
            raise ForeignPolicyError(f"observation term {self.name}: scale needs 1 or {self.dim} values")
        return torch.tensor(self.scale, dtype=torch.float32).expand(self.dim).clone()


@dataclass(frozen=True)
class ForeignConvention:
    project: str
    joint_names: list[str]  # their joint order
    default_joint_pos: list[float]  # their order
    action_scale: list[float]  # per joint, their order (walk-these-ways: hips × hip_scale_reduction)
    clip_actions: float
    kp: float
    kd: float
    policy_dt: float  # sim dt × decimation
    terms: list[ForeignTerm]  # one frame, in order
    history_length: int = 1  # frames, oldest first (walk-these-ways' obs_history)
    command_defaults: list[float] = field(default_factory=list)  # raw commands beyond (vx, vy, yaw)
    maps: dict[str, str] = field(default_factory=dict)  # explicit stand-ins for unmeasurable terms

    @property
    def frame_dim(self) -> int:
        return sum(t.dim for t in self.terms)

    def slices(self) -> dict[str, slice]:
        out, start = {}, 0
        for t in self.terms:
            out[t.name] = slice(start, start + t.dim)
            start += t.dim
        return out

    def describe(self) -> dict:
        return {
            "project": self.project, "joint_names": self.joint_names, "default_joint_pos": self.default_joint_pos,
            "action_scale": self.action_scale, "clip_actions": self.clip_actions, "kp": self.kp, "kd": self.kd,
            "policy_dt": self.policy_dt, "history_length": self.history_length,
            "terms": [{"name": t.name, "dim": t.dim, "scale": t.scale} for t in self.terms],
            "command_defaults": self.command_defaults, "maps": self.maps,
        }  # fmt: skip


# ------------------------------------------------------------------------------------------------ checks
def check_convention(src: ForeignConvention, spec: RobotSpec, stateful_ok: bool = False) -> list[int]:
    """Refuse what cannot be mapped (one clear message); return `perm`: their joint index of each of our joints."""
    n = spec.num_joints
    if len(src.joint_names) != n:
        raise ForeignPolicyError(f"{src.project} policy drives {len(src.joint_names)} joints, "
                                 f"robot '{spec.name}' has {n}")
    if sorted(src.joint_names) != sorted(spec.joint_names):
        unknown = sorted(set(src.joint_names) - set(spec.joint_names))
        raise ForeignPolicyError(f"{src.project} joint names {unknown} are not joints of robot '{spec.name}'")
    if abs(src.policy_dt - spec.control.policy_dt) > 1e-9:
        raise ForeignPolicyError(f"{src.project} control period {src.policy_dt * 1e3:.1f} ms (sim dt × decimation) "
                                 f"differs from robot '{spec.name}': {spec.control.policy_dt * 1e3:.1f} ms")
    if (src.kp, src.kd) != (spec.control.kp, spec.control.kd):
        raise ForeignPolicyError(f"{src.project} PD gains Kp {src.kp} Kd {src.kd} differ from robot '{spec.name}' "
                                 f"(Kp {spec.control.kp}, Kd {spec.control.kd}); the spec allows only its own")
    problems = []
    for term in src.terms:  # every term that cannot be mapped, in one message
        try:
            _check_term(term, src, n, stateful_ok)
        except ForeignPolicyError as err:
            problems.append(str(err))
    if problems:
        raise ForeignPolicyError("; ".join(problems))
    if src.history_length != 1 and not stateful_ok:
        raise ForeignPolicyError(f"{src.project} policy reads {src.history_length} frames of history; "
                                 "only walk-these-ways' history is supported")  # fmt: skip
    _check_our_layout(spec)
    return [src.joint_names.index(name) for name in spec.joint_names]


def _check_term(term: ForeignTerm, src: ForeignConvention, n: int, stateful_ok: bool) -> None:
    expected = {"projected_gravity": 3, "base_ang_vel": 3, "base_lin_vel": 3, "clock_inputs": 4,
                "dof_pos": n, "dof_vel": n, "actions": n, "last_actions": n}  # fmt: skip
    if term.name == "base_lin_vel" and term.name in src.maps:
        if src.maps[term.name] not in LIN_VEL_MAPS:
            raise ForeignPolicyError(f"--map base_lin_vel={src.maps[term.name]}: known stand-ins {list(LIN_VEL_MAPS)}")
    elif term.name in UNMEASURABLE:
        raise ForeignPolicyError(f"{src.project} policy observes {term.name}: {UNMEASURABLE[term.name]}")
    elif term.name in STATEFUL_TERMS and not stateful_ok:
        raise ForeignPolicyError(f"{src.project} policy observes {term.name}, kept only by the walk-these-ways import")
    elif term.name not in MEASURED_TERMS + STATEFUL_TERMS:
        raise ForeignPolicyError(f"{src.project} policy observes an unknown term {term.name!r}; known: "
                                 f"{list(MEASURED_TERMS + STATEFUL_TERMS)}, refused: {sorted(UNMEASURABLE)}")
    if term.name in expected and term.dim != expected[term.name]:
        raise ForeignPolicyError(f"{src.project} term {term.name} has {term.dim} values, "
                                 f"expected {expected[term.name]}")
    if term.name == "commands" and term.dim != 3 + len(src.command_defaults):
        raise ForeignPolicyError(f"{src.project} commands has {term.dim} values: (vx, vy, yaw) come from the "
                                 f"robot's command, the other {term.dim - 3} need defaults, "
                                 f"{len(src.command_defaults)} given")


def _check_our_layout(spec: RobotSpec) -> None:
    needed = ["projected_gravity", "gyro", "command", "joint_pos", "joint_vel", "last_action"]
    missing = [t for t in needed if t not in spec.observation.names]
    if missing or spec.observation.history_length != 1:
        raise ForeignPolicyError(f"robot '{spec.name}' observation must hold {needed} with history_length 1 to import "
                                 f"into (missing {missing}, history {spec.observation.history_length})")  # fmt: skip


# ------------------------------------------------------------------------------------------------ the maps
def input_map(src: ForeignConvention, spec: RobotSpec, perm: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, c): their frame = M · our observation + c; rows of stateful terms are zero (filled by their keeper)."""
    ours = spec.observation.slices()
    inv_scale = 1.0 / spec.observation.scale_vector()  # our observation → raw measurement
    our_default = torch.as_tensor(spec.default_pose, dtype=torch.float32)
    their_default = torch.tensor(src.default_joint_pos, dtype=torch.float32)
    their_action_scale = torch.tensor(src.action_scale, dtype=torch.float32)
    s_ours = spec.control.action_scale
    M = torch.zeros(src.frame_dim, spec.observation.dim)
    c = torch.zeros(src.frame_dim)
    mine = {v: k for k, v in enumerate(perm)}  # their joint j -> our joint k

    def pick(row: int, our_term: str, index: int, gain: float = 1.0) -> None:
        col = ours[our_term].start + index
        M[row, col] = gain * inv_scale[col]

    for term, sl in src.slices().items():
        r0 = sl.start
        if term == "projected_gravity":
            for i in range(3):
                pick(r0 + i, "projected_gravity", i)
        elif term == "base_ang_vel":
            for i in range(3):
                pick(r0 + i, "gyro", i)
        elif term == "base_lin_vel" and src.maps.get(term) == "command":  # vx, vy as commanded, vz 0
            for i in range(2):
                pick(r0 + i, "command", i)
        elif term == "commands":
            for i in range(3):
                pick(r0 + i, "command", i)
            c[r0 + 3 : sl.stop] = torch.tensor(src.command_defaults, dtype=torch.float32)
        elif term in ("dof_pos", "dof_vel"):
            for j in range(sl.stop - r0):
                pick(r0 + j, "joint_pos" if term == "dof_pos" else "joint_vel", mine[j])
                if term == "dof_pos":  # q − their default = our joint_pos + our default − their default
                    c[r0 + j] = our_default[mine[j]] - their_default[j]
        elif term == "actions":  # the same PD target: their default + s_j a_j = our default + s a
            for j in range(sl.stop - r0):
                pick(r0 + j, "last_action", mine[j], s_ours / float(their_action_scale[j]))
                c[r0 + j] = (our_default[mine[j]] - their_default[j]) / their_action_scale[j]
    scale = torch.cat([t.scale_vector() for t in src.terms])
    return scale[:, None] * M, scale * c


def output_map(src: ForeignConvention, spec: RobotSpec,
               perm: list[int]) -> tuple[list[int], torch.Tensor, torch.Tensor]:  # fmt: skip
    """(out_index, out_scale, out_offset): our action k from their action out_index[k], same PD target."""
    s = spec.control.action_scale
    scale = torch.tensor([src.action_scale[j] / s for j in perm], dtype=torch.float32)
    offset = torch.tensor([(src.default_joint_pos[j] - spec.default_pose[k]) / s for k, j in enumerate(perm)],
                          dtype=torch.float32)  # fmt: skip
    return list(perm), scale, offset


# ------------------------------------------------------------------------------------------------ networks
def mlp_layers(state: dict[str, torch.Tensor], prefix: str = "") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight, bias) of an nn.Sequential's Linear layers from its state dict (keys <prefix><i>.weight)."""
    heads = [k[len(prefix) :].split(".")[0] for k in state if k.startswith(prefix) and k.endswith(".weight")]
    idx = sorted({int(h) for h in heads if h.isdigit()})
    if not idx:
        raise ForeignPolicyError(f"no Linear layers {prefix}<i>.weight in the checkpoint")
    return [(state[f"{prefix}{i}.weight"].float(), state[f"{prefix}{i}.bias"].float()) for i in idx]


def check_activation(name: str, project: str) -> str:
    if name not in ACTIVATIONS:
        raise ForeignPolicyError(f"{project} network uses activation {name!r}; importable: {sorted(ACTIVATIONS)}")
    return name


def fold_into_actor(layers, activation: str, src: ForeignConvention, spec: RobotSpec, perm: list[int]) -> ActorMLP:
    """A feed-forward network with both maps folded into its first and last layers: the same function of our
    observation, our joint order and our action units. Hidden layers keep their weights."""
    M, c = input_map(src, spec, perm)
    (w0, b0), (wl, bl) = layers[0], layers[-1]
    if w0.shape[1] != src.frame_dim or wl.shape[0] != len(src.joint_names):
        raise ForeignPolicyError(f"{src.project} network maps {w0.shape[1]} -> {wl.shape[0]}, its config says "
                                 f"{src.frame_dim} -> {len(src.joint_names)}")  # fmt: skip
    weights = [(w.clone(), b.clone()) for w, b in layers]
    weights[0] = (w0 @ M, b0 + w0 @ c)
    index, scale, offset = output_map(src, spec, perm)
    wl, bl = weights[-1]
    weights[-1] = (scale[:, None] * wl[index], scale * bl[index] + offset)
    hidden = [w.shape[0] for w, _ in layers[:-1]]
    actor = ActorMLP(spec.observation.dim, spec.num_joints, hidden, activation)
    linears = [m for m in actor.mlp if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for lin, (w, b) in zip(linears, weights, strict=True):
            lin.weight.copy_(w)
            lin.bias.copy_(b)
    return actor.eval()
