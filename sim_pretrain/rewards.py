"""legged_gym-style reward terms, defined once for the simulator and for relabelling real-robot logs.

Every term reads only `RewardInputs`, quantities a real robot log also holds (odometry for body
velocity and height, IMU, joint encoders, torque estimates, foot contacts, the command and actions).
`RewardTracker` keeps the few quantities that need the previous step, so a log replayed in time order
gets exactly the reward the simulator gave.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class RewardConfig:
    scales: dict[str, float] = field(
        default_factory=lambda: {
            "tracking_lin_vel": 1.0,
            "tracking_ang_vel": 0.5,
            "lin_vel_z": -2.0,
            "ang_vel_xy": -0.05,
            "orientation": -1.0,
            "torques": -2.0e-4,
            "joint_acc": -2.5e-7,
            "action_rate": -0.01,
            "feet_air_time": 1.0,
            "joint_pos_limits": -10.0,
            "base_height": -10.0,
        }
    )
    tracking_sigma: float = 0.25
    air_time_target: float = 0.5  # s; steps longer than this are rewarded
    base_height_target: float = 0.30
    soft_joint_limit: float = 0.9  # fraction of the joint range that is free of penalty
    only_positive: bool = True  # clip the total at zero so early episodes are not taught to end themselves
    # action_jump's free band: |a_t - a_(t-1)| per joint (policy action units) that costs nothing. Fine-tuning for a
    # robot scales the term (sim_pretrain.train.within_action_limit) to keep the policy inside deploy's action_rate
    # limit.
    action_jump_limit: float = 0.0

    def __post_init__(self) -> None:
        if self.scales.get("action_jump") and not self.action_jump_limit > 0:
            raise ValueError(f"rewards: action_jump needs action_jump_limit > 0, got {self.action_jump_limit}")


@dataclass
class RewardInputs:
    """One policy step for a batch; body-frame velocities. Shapes (batch, ·)."""

    command: torch.Tensor  # vx, vy, yaw rate
    lin_vel: torch.Tensor  # body frame (odometry on a robot)
    ang_vel: torch.Tensor  # body frame (gyro)
    projected_gravity: torch.Tensor
    base_height: torch.Tensor  # (batch,)
    joint_pos: torch.Tensor  # absolute
    joint_vel: torch.Tensor
    torques: torch.Tensor
    action: torch.Tensor
    foot_contact: torch.Tensor  # bool (batch, 4)


class RewardTracker:
    """Previous action, joint velocity and feet air time, per batch row."""

    def __init__(self, batch: int, num_joints: int, num_feet: int, device: str | torch.device = "cpu"):
        self.last_action = torch.zeros(batch, num_joints, device=device)
        self.last_joint_vel = torch.zeros(batch, num_joints, device=device)
        self.air_time = torch.zeros(batch, num_feet, device=device)
        self.last_contact = torch.zeros(batch, num_feet, dtype=torch.bool, device=device)

    def reset(self, rows: torch.Tensor) -> None:
        for buf in (self.last_action, self.last_joint_vel, self.air_time, self.last_contact):
            buf[rows] = 0


class RewardFunction:
    def __init__(self, cfg: RewardConfig, joint_lower: torch.Tensor, joint_upper: torch.Tensor, dt: float):
        unknown = set(cfg.scales) - set(TERMS)
        if unknown:
            raise ValueError(f"unknown reward term(s) {sorted(unknown)}; known: {sorted(TERMS)}")
        self.cfg = cfg
        self.dt = dt
        mid, half = (joint_upper + joint_lower) / 2, (joint_upper - joint_lower) / 2
        self.soft_lower = mid - half * cfg.soft_joint_limit
        self.soft_upper = mid + half * cfg.soft_joint_limit

    def __call__(self, x: RewardInputs, tracker: RewardTracker) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total reward (scaled by dt, as legged_gym) and each term's contribution; advances the tracker."""
        terms = {name: TERMS[name](self, x, tracker) * scale * self.dt for name, scale in self.cfg.scales.items()}
        total = torch.stack([v for k, v in terms.items() if k not in UNCLIPPED]).sum(0)
        if self.cfg.only_positive:
            total = total.clamp(min=0.0)
        for name in UNCLIPPED.intersection(terms):
            total = total + terms[name]
        self._advance(x, tracker)
        return total, terms

    def _advance(self, x: RewardInputs, t: RewardTracker) -> None:
        t.air_time = torch.where(x.foot_contact, torch.zeros_like(t.air_time), t.air_time + self.dt)
        t.last_contact = x.foot_contact.clone()
        t.last_action = x.action.clone()
        t.last_joint_vel = x.joint_vel.clone()


def _tracking_lin_vel(f: RewardFunction, x: RewardInputs, t: RewardTracker) -> torch.Tensor:
    error = (x.command[:, :2] - x.lin_vel[:, :2]).square().sum(-1)
    return torch.exp(-error / f.cfg.tracking_sigma)


def _tracking_ang_vel(f: RewardFunction, x: RewardInputs, t: RewardTracker) -> torch.Tensor:
    return torch.exp(-(x.command[:, 2] - x.ang_vel[:, 2]).square() / f.cfg.tracking_sigma)


def _feet_air_time(f: RewardFunction, x: RewardInputs, t: RewardTracker) -> torch.Tensor:
    # Paid once, at touchdown, for the swing that just ended; only while asked to move. A foot read off the ground
    # for one step alone is a dropped contact reading (a Go1's foot sensors drop them; legged_gym filters contacts
    # over two steps for this), not a step: without this a stance with dropouts pays -0.5 s per dropped reading.
    touchdown = x.foot_contact & ~t.last_contact & (t.air_time > 1.5 * f.dt)
    swing = t.air_time + f.dt
    reward = ((swing - f.cfg.air_time_target) * touchdown).sum(-1)
    return reward * (x.command[:, :2].norm(dim=-1) > 0.1)


def _action_jump(f: RewardFunction, x: RewardInputs, t: RewardTracker) -> torch.Tensor:
    return ((x.action - t.last_action).abs() - f.cfg.action_jump_limit).clamp(min=0).sum(-1)


def _joint_pos_limits(f: RewardFunction, x: RewardInputs, t: RewardTracker) -> torch.Tensor:
    below = (f.soft_lower.to(x.joint_pos) - x.joint_pos).clamp(min=0)
    above = (x.joint_pos - f.soft_upper.to(x.joint_pos)).clamp(min=0)
    return (below + above).sum(-1)


TERMS = {
    "tracking_lin_vel": _tracking_lin_vel,
    "tracking_ang_vel": _tracking_ang_vel,
    "lin_vel_z": lambda f, x, t: x.lin_vel[:, 2].square(),
    "ang_vel_xy": lambda f, x, t: x.ang_vel[:, :2].square().sum(-1),
    "orientation": lambda f, x, t: x.projected_gravity[:, :2].square().sum(-1),
    "torques": lambda f, x, t: x.torques.square().sum(-1),
    "joint_acc": lambda f, x, t: ((x.joint_vel - t.last_joint_vel) / f.dt).square().sum(-1),
    "action_rate": lambda f, x, t: (x.action - t.last_action).square().sum(-1),
    "action_jump": _action_jump,
    "feet_air_time": _feet_air_time,
    "joint_pos_limits": _joint_pos_limits,
    "base_height": lambda f, x, t: (x.base_height - f.cfg.base_height_target).square(),
}
# Added after the only_positive clip: a step that jumps past the robot's action limit would end its episode on the
# robot, so its cost must not vanish into a clipped-away total.
UNCLIPPED = frozenset({"action_jump"})
