"""The policy's observation: the layout (robot_spec/observation_layout.py), its frame history and the measured terms
computed from the robot's state.

One implementation serves the simulator (batched over environments) and the robot runtime (a batch of
one), so a policy sees the same numbers in both places.
"""

from __future__ import annotations

import torch

from robot_spec.observation_layout import ObservationLayout, ObsTerm  # noqa: F401  (re-exported: its usual home)


class ObservationHistory:
    """Stacks the last `history_length` frames, newest first; reset rows are filled with their new frame."""

    def __init__(self, layout: ObservationLayout, batch: int, device: str | torch.device = "cpu"):
        self.layout = layout
        self.buffer = torch.zeros(batch, layout.history_length, layout.frame_dim, device=device)
        self.fresh = torch.ones(batch, dtype=torch.bool, device=device)

    def push(self, frame: torch.Tensor) -> torch.Tensor:
        self.buffer = torch.roll(self.buffer, shifts=1, dims=1)
        self.buffer[:, 0] = frame
        if self.fresh.any():
            self.buffer[self.fresh] = frame[self.fresh].unsqueeze(1)
            self.fresh[:] = False
        return self.buffer.reshape(self.buffer.shape[0], -1)

    def reset(self, rows: torch.Tensor | None = None) -> None:
        if rows is None:
            self.fresh[:] = True
        else:
            self.fresh[rows] = True


def projected_gravity(quat_wxyz: torch.Tensor) -> torch.Tensor:
    """Gravity direction in the body frame, from the body→world quaternion (what the IMU gives)."""
    w, x, y, z = quat_wxyz.unbind(-1)
    return torch.stack(
        (-2.0 * (x * z - w * y), -2.0 * (y * z + w * x), -(1.0 - 2.0 * (x * x + y * y))),
        dim=-1,
    )


def roll_pitch(quat_wxyz: torch.Tensor) -> torch.Tensor:
    """Roll and pitch (rad) of the body→world quaternion, shape (..., 2)."""
    w, x, y, z = quat_wxyz.unbind(-1)
    roll = torch.atan2(2.0 * (w * x + y * z), 1.0 - 2.0 * (x * x + y * y))
    pitch = torch.asin(torch.clamp(2.0 * (w * y - z * x), -1.0, 1.0))
    return torch.stack((roll, pitch), dim=-1)


def rotate_inverse(quat_wxyz: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
    """Express a world-frame vector in the body frame."""
    w = quat_wxyz[..., :1]
    u = -quat_wxyz[..., 1:]
    t = 2.0 * torch.cross(u, vec, dim=-1)
    return vec + w * t + torch.cross(u, t, dim=-1)
