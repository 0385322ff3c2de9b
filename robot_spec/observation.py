"""The policy's observation: which measured terms, in which order, with which scales.

One implementation serves the simulator (batched over environments) and the robot runtime (a batch of
one), so a policy sees the same numbers in both places.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class ObsTerm:
    name: str
    dim: int
    scale: list[float]  # one value for the whole term, or one per element

    def scale_vector(self) -> torch.Tensor:
        if len(self.scale) not in (1, self.dim):
            raise ValueError(f"observation term {self.name}: scale needs 1 or {self.dim} values, got {len(self.scale)}")
        return torch.tensor(self.scale, dtype=torch.float32).expand(self.dim).clone()


@dataclass(frozen=True)
class ObservationLayout:
    terms: list[ObsTerm]
    history_length: int = 1
    clip: float = 100.0

    @property
    def frame_dim(self) -> int:
        return sum(t.dim for t in self.terms)

    @property
    def dim(self) -> int:
        return self.frame_dim * self.history_length

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.terms]

    def slices(self) -> dict[str, slice]:
        """Where each term sits inside one frame."""
        out, start = {}, 0
        for term in self.terms:
            out[term.name] = slice(start, start + term.dim)
            start += term.dim
        return out

    def scale_vector(self) -> torch.Tensor:
        return torch.cat([t.scale_vector() for t in self.terms])

    def describe(self) -> dict:
        return {
            "terms": [{"name": t.name, "dim": t.dim, "scale": list(t.scale)} for t in self.terms],
            "history_length": self.history_length,
            "clip": self.clip,
        }

    def frame(self, measurements: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scale and clip one frame from raw measurements of shape (batch, dim) keyed by term name."""
        missing = [n for n in self.names if n not in measurements]
        if missing:
            raise KeyError(f"observation terms missing from measurements: {missing}")
        raw = torch.cat([measurements[name] for name in self.names], dim=-1)
        scale = self.scale_vector().to(raw.device)
        return torch.clamp(raw * scale, -self.clip, self.clip)


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


def quaternion_rpy(roll, pitch, yaw) -> np.ndarray:
    """The body→world quaternion (w, x, y, z) of roll, pitch, yaw (rad; z-y-x order, as the IMU reports them);
    scalars or arrays of one shape, components on the first axis."""
    cr, sr = np.cos(np.multiply(roll, 0.5)), np.sin(np.multiply(roll, 0.5))
    cp, sp = np.cos(np.multiply(pitch, 0.5)), np.sin(np.multiply(pitch, 0.5))
    cy, sy = np.cos(np.multiply(yaw, 0.5)), np.sin(np.multiply(yaw, 0.5))
    return np.stack([cr * cp * cy + sr * sp * sy, sr * cp * cy - cr * sp * sy,
                     cr * sp * cy + sr * cp * sy, cr * cp * sy - sr * sp * cy])  # fmt: skip


def rpy_of_quaternion(quat_wxyz) -> np.ndarray:
    """Roll, pitch, yaw (rad) of body→world quaternions (w, x, y, z on the first axis): quaternion_rpy's inverse."""
    w, x, y, z = np.asarray(quat_wxyz, dtype=float)
    return np.stack([np.arctan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y)),
                     np.arcsin(np.clip(2 * (w * y - z * x), -1.0, 1.0)),
                     np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))])  # fmt: skip


def rotate_inverse(quat_wxyz: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
    """Express a world-frame vector in the body frame."""
    w = quat_wxyz[..., :1]
    u = -quat_wxyz[..., 1:]
    t = 2.0 * torch.cross(u, vec, dim=-1)
    return vec + w * t + torch.cross(u, t, dim=-1)
