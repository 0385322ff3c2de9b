"""How a policy meets the robot: measurements → observation, and action → PD target.

The one implementation of both maps. The simulator (a batch of environments), the robot runtime (a batch of
one) and the log relabelling (a rebuilt observation) all call these, so a policy sees the same numbers and its
actions do the same thing everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from robot_spec.observation import ObservationHistory, projected_gravity
from robot_spec.spec import RobotSpec


def _rows(values, device: torch.device | str = "cpu") -> torch.Tensor:
    """float32 (batch, dim); a 1-D reading is a batch of one."""
    t = torch.as_tensor(values, dtype=torch.float32, device=device)
    return t.unsqueeze(0) if t.dim() == 1 else t


def observation_terms(
    spec: RobotSpec, quaternion, gyro, command, q, dq, last_action, device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """The raw (unscaled) observation terms, (batch, dim) each, from what a robot measures: the IMU quaternion
    (body→world, wxyz), the body-frame gyro, the command, joint positions and velocities (simulator joint order)
    and the last action. Arrays or tensors; 1-D inputs are a batch of one."""
    default_pose = torch.as_tensor(spec.default_pose, dtype=torch.float32, device=device)
    return {
        "projected_gravity": projected_gravity(_rows(quaternion, device)),
        "gyro": _rows(gyro, device),
        "command": _rows(command, device),
        "joint_pos": _rows(q, device) - default_pose,
        "joint_vel": _rows(dq, device),
        "last_action": _rows(last_action, device),
    }


class ObservationBuilder:
    """Observation terms → scaled, clipped frame (the spec's layout) → history stack, for `batch` robots."""

    def __init__(self, spec: RobotSpec, batch: int = 1, device: torch.device | str = "cpu"):
        self.spec, self.device = spec, device
        self.layout = spec.observation
        self.history = ObservationHistory(self.layout, batch, device)

    def terms(self, quaternion, gyro, command, q, dq, last_action) -> dict[str, torch.Tensor]:
        return observation_terms(self.spec, quaternion, gyro, command, q, dq, last_action, self.device)

    def push(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """The observation (batch, dim) after adding the frame of `terms` (a simulator may perturb them first)."""
        return self.history.push(self.layout.frame(terms))

    def build(self, quaternion, gyro, command, q, dq, last_action) -> torch.Tensor:
        """The observation (batch, dim) from raw measurements."""
        return self.push(self.terms(quaternion, gyro, command, q, dq, last_action))

    def reset(self, rows: torch.Tensor | None = None) -> None:
        """Start a new history (the next frame fills every slot) for `rows` (default: all), as at an episode reset."""
        self.history.reset(rows)


@dataclass(frozen=True)
class ActionMap:
    """PD target = default pose + action_scale · action, clamped once into the target box: the joint range inside
    both the model's (URDF) and the SDK's position limits, less the spec's `limits.target_margin`. The simulator
    and the robot clamp alike, so the bridge's SDK clamp after it is only a last line of defence."""

    default_pose: np.ndarray
    scale: float
    clip: float  # |action| bound (the spec's action_clip)
    lower: np.ndarray  # target box, per joint (simulator order)
    upper: np.ndarray

    @classmethod
    def from_spec(cls, spec: RobotSpec) -> ActionMap:
        margin = spec.limits.target_margin
        lower = np.maximum(spec.position_lower, spec.per_joint(spec.limits.sdk_position_lower)) + margin
        upper = np.minimum(spec.position_upper, spec.per_joint(spec.limits.sdk_position_upper)) - margin
        if not (lower < spec.default_pose).all() or not (spec.default_pose < upper).all():
            raise ValueError(f"robot {spec.name}: the default pose must lie inside the target box "
                             "(joint limits less limits.target_margin)")  # fmt: skip
        return cls(spec.default_pose, spec.control.action_scale, spec.control.action_clip, lower, upper)

    def targets(self, actions: np.ndarray) -> np.ndarray:
        """PD targets (float64, simulator joint order) for actions of shape (..., joints)."""
        return np.clip(self.default_pose + self.scale * np.asarray(actions, dtype=np.float64), self.lower, self.upper)

    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The inverse: per joint, the actions within ±clip whose targets the clamp leaves untouched."""
        low = np.maximum((self.lower - self.default_pose) / self.scale, -self.clip)
        high = np.minimum((self.upper - self.default_pose) / self.scale, self.clip)
        return low, high
