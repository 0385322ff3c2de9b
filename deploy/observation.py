"""The policy's observation on the robot, built exactly as sim_pretrain/env.py `_observe` builds it.

Same terms, same meaning (projected gravity from the IMU quaternion, gyro, command, joint positions
relative to the default pose, joint velocities, last action), scaled and stacked by the shared
`ObservationLayout.frame` and `ObservationHistory`, so the policy sees the numbers it was trained on.
"""

from __future__ import annotations

import numpy as np
import torch

from robot_spec.observation import ObservationHistory, projected_gravity
from robot_spec.spec import RobotSpec


def _row(values: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.float32)).reshape(1, -1)


class ObservationBuilder:
    def __init__(self, spec: RobotSpec):
        self.layout = spec.observation
        self.default_pose = _row(spec.default_pose)
        self.history = ObservationHistory(self.layout, batch=1)

    def reset(self) -> None:
        """Start a new history (the next frame fills every slot), as the simulator does at an episode reset."""
        self.history.reset()

    def build(
        self, quaternion: np.ndarray, gyro: np.ndarray, command: np.ndarray, q: np.ndarray, dq: np.ndarray,
        last_action: np.ndarray,
    ) -> torch.Tensor:  # fmt: skip
        """Observation of shape (1, dim) from raw measurements (simulator joint order, body-frame gyro)."""
        raw = {
            "projected_gravity": projected_gravity(_row(quaternion)),
            "gyro": _row(gyro),
            "command": _row(command),
            "joint_pos": _row(q) - self.default_pose,
            "joint_vel": _row(dq),
            "last_action": _row(last_action),
        }
        return self.history.push(self.layout.frame(raw))
