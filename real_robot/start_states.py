"""Where the policy took over on the robot, from its logs: the measured joint angles and the IMU's roll and pitch at
each episode's first policy step.

Deploy's soft start stands the robot up with its PD gains; a weak, heavy or sticky robot ends it in a crouch far
from the default pose (on `strong`: rear calves 0.6 rad past the target, nose up 0.2 rad), and the policy must
walk off from there. A simulator that starts every episode at the default pose never trains or tests that moment:
measured on strong, the sim policy fell in 31 % of simulated episodes started at the default pose and in 56 %
started from these states (the robot: 75 %; benchmarks/start_states.py). Only what every robot measures is used
(no tracking camera).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from real_robot.calibrate import POLICY_PHASE
from real_robot.datalog import read_log_folder


def policy_starts(folders: list[Path]) -> dict[str, np.ndarray]:
    """`q` (n, joints) and `roll_pitch` (n, 2) at the first untripped policy step of every episode with finite
    readings; ValueError when the logs hold none."""
    q, roll_pitch = [], []
    for folder in folders:
        for episode in read_log_folder(folder):
            r = episode.records
            acting = np.flatnonzero((r["phase"] == POLICY_PHASE) & (r["tripped"] == 0))
            if len(acting) and np.isfinite(r["q"][acting[0]]).all() and np.isfinite(r["rpy"][acting[0], :2]).all():
                q.append(r["q"][acting[0]])
                roll_pitch.append(r["rpy"][acting[0], :2])
    if not q:
        raise ValueError(f"no policy-phase start in {', '.join(map(str, folders))}")
    return {"q": np.array(q, dtype=np.float32), "roll_pitch": np.array(roll_pitch, dtype=np.float32)}


def save_policy_starts(folders: list[Path], out: Path) -> Path:
    """policy_starts of `folders` as an .npz (sim_pretrain's `initial_states.file`)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **policy_starts(folders))
    return out
