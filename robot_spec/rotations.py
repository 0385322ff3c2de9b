"""Roll, pitch, yaw ⇄ quaternion in numpy, for the processes that never load torch (the stand-in robot)."""

from __future__ import annotations

import numpy as np


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
