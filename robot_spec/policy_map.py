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


class RobotObservation:
    """`ObservationBuilder`'s numbers for one robot, in numpy, into buffers made once: the 50 Hz runtime's path,
    with no allocation per step. The same float32 operations in the same order, so the same bits (tests compare
    it with `ObservationBuilder` on recorded states)."""

    def __init__(self, spec: RobotSpec):
        layout = spec.observation
        unknown = set(layout.names) - set(TERM_FILLS)
        if unknown:
            raise KeyError(f"observation terms missing from measurements: {sorted(unknown)}")
        self.history = np.zeros((layout.history_length, layout.frame_dim), np.float32)  # newest first
        self.obs = self.history.reshape(-1)  # a view: the observation (dim,) the policy reads
        self.frame = np.zeros(layout.frame_dim, np.float32)
        self.terms = [(TERM_FILLS[name], self.frame[sl]) for name, sl in layout.slices().items()]
        self.scale = layout.scale_vector().numpy()
        self.low, self.high = np.full(layout.frame_dim, -layout.clip, np.float32), np.full(layout.frame_dim, layout.clip,
                                                                                           np.float32)  # fmt: skip
        self.default_pose = spec.default_pose.astype(np.float32)
        self.gravity = _GravityScratch()
        self.fresh = True

    def build(self, quaternion, gyro, command, q, dq, last_action) -> np.ndarray:
        """The observation (dim,) from raw measurements (1-D arrays); a view of this object's buffer, overwritten
        by the next call."""
        values = {"quaternion": quaternion, "gyro": gyro, "command": command, "q": q, "dq": dq,
                  "last_action": last_action}  # fmt: skip
        for fill, out in self.terms:
            fill(self, values, out)
        np.multiply(self.frame, self.scale, out=self.frame)
        np.minimum(np.maximum(self.frame, self.low, out=self.frame), self.high, out=self.frame)  # torch.clamp
        history = self.history
        if self.fresh:  # a new history: the frame fills every slot
            history[:] = self.frame
            self.fresh = False
        else:
            for i in range(len(history) - 1, 0, -1):  # shift older frames back, oldest dropped
                history[i] = history[i - 1]
            history[0] = self.frame
        return self.obs

    def reset(self) -> None:
        self.fresh = True


class _GravityScratch:
    """float32 scratch for `projected_gravity` on one quaternion (views of one buffer, made once)."""

    def __init__(self) -> None:
        self.quat = np.zeros(4, np.float32)
        self.w, self.x, self.y, self.z = (self.quat[i : i + 1] for i in range(4))
        self.a, self.b = np.zeros(1, np.float32), np.zeros(1, np.float32)
        self.one, self.two, self.minus_two = (np.array([v], np.float32) for v in (1.0, 2.0, -2.0))  # as torch casts


def _fill_gravity(obs: RobotObservation, values: dict, out: np.ndarray) -> None:
    """observation.projected_gravity's formula, operation by operation in float32:
    (-2 (x z - w y), -2 (y z + w x), -(1 - 2 (x x + y y)))."""
    g = obs.gravity
    np.copyto(g.quat, values["quaternion"])
    w, x, y, z, a, b, one, two, minus_two = g.w, g.x, g.y, g.z, g.a, g.b, g.one, g.two, g.minus_two
    np.multiply(x, z, out=a), np.multiply(w, y, out=b), np.subtract(a, b, out=a), np.multiply(a, minus_two, out=out[0:1])
    np.multiply(y, z, out=a), np.multiply(w, x, out=b), np.add(a, b, out=a), np.multiply(a, minus_two, out=out[1:2])
    np.multiply(x, x, out=a), np.multiply(y, y, out=b), np.add(a, b, out=a), np.multiply(a, two, out=a)
    np.subtract(one, a, out=a), np.negative(a, out=out[2:3])


def _fill_joint_pos(obs: RobotObservation, values: dict, out: np.ndarray) -> None:
    np.copyto(out, values["q"])  # to float32 first, as the torch path does
    np.subtract(out, obs.default_pose, out=out)


def _copy(key: str):
    return lambda obs, values, out: np.copyto(out, values[key])


TERM_FILLS = {  # observation term -> how RobotObservation fills it (observation_terms' terms)
    "projected_gravity": _fill_gravity,
    "gyro": _copy("gyro"),
    "command": _copy("command"),
    "joint_pos": _fill_joint_pos,
    "joint_vel": _copy("dq"),
    "last_action": _copy("last_action"),
}


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

    def targets(self, actions: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """PD targets (float64, simulator joint order) for actions of shape (..., joints); into `out` if given
        (float64, the targets' shape: no allocation)."""
        if out is None:
            return np.clip(self.default_pose + self.scale * np.asarray(actions, dtype=np.float64), self.lower,
                           self.upper)  # fmt: skip
        np.copyto(out, actions)  # to float64 first, as above
        np.multiply(out, self.scale, out=out)
        np.add(self.default_pose, out, out=out)
        return np.clip(out, self.lower, self.upper, out=out)

    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The inverse: per joint, the actions within ±clip whose targets the clamp leaves untouched."""
        low = np.maximum((self.lower - self.default_pose) / self.scale, -self.clip)
        high = np.minimum((self.upper - self.default_pose) / self.scale, self.clip)
        return low, high
