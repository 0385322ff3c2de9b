"""THE log record of one 50 Hz control step: `StepRecord`, and the log schema derived from it.

Written by the robot session (deploy/session.py) one record per control step, read back by the offline dataset
(uni_o4/log_dataset.py) and the robot evaluation. The on-disk schema is the one logs have always had (field
order, names, dtypes, shapes), so committed logs still load; `SCHEMA_VERSION` is recorded in every log's meta
(logs without it are version 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import IntEnum

import numpy as np

from real_robot.datalog import INTERRUPTED
from real_robot.datalog import OUTCOMES as FOOTER_OUTCOMES
from robot_spec.spec import RobotSpec

SCHEMA_VERSION = 1
SCHEMA_VERSION_KEY = "record_schema_version"  # in the log meta


class Phase(IntEnum):
    """The runtime's phase of a control step (logged as `phase`)."""

    SOFT_START = 0
    POLICY = 1
    DAMPING = 2


# How an episode ends: by the reason its damping was latched with (deploy.safety monitors or a stop).
FALL_MONITOR = "orientation"
STOP_OUTCOMES = {"timeout": "timeout", "operator_stop": "operator_stop"}
TERMINAL_OUTCOMES = frozenset({"fall", "safety_trip"})  # the robot ended the episode, not the clock or a person
OUTCOMES = frozenset({*FOOTER_OUTCOMES, INTERRUPTED})  # as read back; "interrupted": the file has no footer
assert {*STOP_OUTCOMES.values(), *TERMINAL_OUTCOMES} == set(FOOTER_OUTCOMES)


def episode_outcome(trip_reason: str) -> str:
    if trip_reason == FALL_MONITOR:
        return "fall"
    return STOP_OUTCOMES.get(trip_reason, "safety_trip")


def _column(dtype: str, *shape: str | int, labels: str = ""):
    """A record field: numpy dtype and shape; named dimensions are the robot's (see `DIMENSIONS`). `labels`
    names the elements of a fixed-size vector (space separated); a named dimension's come from the spec."""
    return field(metadata={"dtype": dtype, "shape": shape, "labels": labels.split()})


F32 = "float32"
DIMENSIONS = {  # named dimensions of the record, from the robot spec
    "joints": lambda spec: spec.num_joints,
    "feet": lambda spec: len(spec.foot_names),
    "obs": lambda spec: spec.observation.dim,
}
LABELS = {  # names of the elements along a named dimension (flat tables: `q.FL_hip_joint`, `obs.gyro_2`)
    "joints": lambda spec: list(spec.joint_names),
    "feet": lambda spec: list(spec.foot_names),
    "obs": lambda spec: [f"{t.name}_{i}" for t in spec.observation.terms for i in range(t.dim)],
}
XYZ, WXYZ = "x y z", "w x y z"


@dataclass
class StepRecord:
    """One control step as logged. Joint arrays in simulator order, feet in simulator foot order."""

    timestamp_us: int = _column("int64")  # host CLOCK_MONOTONIC at the step (µs)
    robot_tick_us: int = _column("int64")  # robot time of the step (the bridge's unwrapped LowState tick)
    step: int = _column("int32")  # control step counter of the run (consecutive in an episode: a gap = lost records)
    phase: int = _column("uint8")  # Phase: 0 soft start, 1 policy, 2 damping
    q: np.ndarray = _column(F32, "joints")  # joint position (rad, absolute), as measured
    dq: np.ndarray = _column(F32, "joints")
    tau_est: np.ndarray = _column(F32, "joints")  # estimated torque
    quaternion: np.ndarray = _column(F32, 4, labels=WXYZ)  # IMU attitude w, x, y, z
    rpy: np.ndarray = _column(F32, 3, labels="roll pitch yaw")
    gyro: np.ndarray = _column(F32, 3, labels=XYZ)  # body frame
    accelerometer: np.ndarray = _column(F32, 3, labels=XYZ)  # body frame
    foot_force: np.ndarray = _column(F32, "feet")  # raw foot force readings
    # odometry (tracking camera / stand-in truth), world; NaN if none
    odom_position: np.ndarray = _column(F32, 3, labels=XYZ)
    odom_quaternion: np.ndarray = _column(F32, 4, labels=WXYZ)  # w, x, y, z
    odom_lin_vel: np.ndarray = _column(F32, 3, labels=XYZ)  # body frame
    odom_ang_vel: np.ndarray = _column(F32, 3, labels=XYZ)  # body frame
    command: np.ndarray = _column(F32, 3, labels="vx vy yaw_rate")  # the policy's (0 outside the policy phase)
    obs: np.ndarray = _column(F32, "obs")  # exactly what the policy saw (0 outside the policy phase)
    action: np.ndarray = _column(F32, "joints")  # executed action (0 outside the policy phase / on a tripping step)
    q_des: np.ndarray = _column(F32, "joints")  # the PD target published
    kp: np.ndarray = _column(F32, "joints")
    kd: np.ndarray = _column(F32, "joints")
    tripped: int = _column("uint8")  # 1 while a safety trip (or stop) is latched

    @classmethod
    def from_runtime(cls, record: dict) -> StepRecord:
        """A runtime step record (deploy.runtime.Runtime.step)."""
        state, odom, target = record["state"], record["odometry"], record["target"]
        return cls(
            timestamp_us=np.int64(record["timestamp_us"]), robot_tick_us=np.int64(record["robot_tick_us"]),
            step=np.int32(record["step"]), phase=np.uint8(record["phase"]),
            q=state.q, dq=state.dq, tau_est=state.tau_est, quaternion=state.quaternion, rpy=state.rpy,
            gyro=state.gyro, accelerometer=state.accelerometer, foot_force=state.foot_force,
            odom_position=odom.position, odom_quaternion=odom.quaternion, odom_lin_vel=odom.lin_vel,
            odom_ang_vel=odom.ang_vel, command=record["command"], obs=record["obs"], action=record["action"],
            q_des=target.q_des, kp=target.kp, kd=target.kd, tripped=np.uint8(record["trip"] is not None),
        )  # fmt: skip

    def row(self) -> dict:
        """The record as the log writer takes it (field name -> value)."""
        return {name: getattr(self, name) for name in FIELD_NAMES}


FIELD_NAMES = tuple(f.name for f in fields(StepRecord))


def record_schema(spec: RobotSpec) -> dict[str, tuple[str, tuple[int, ...]]]:
    """The log schema of `spec`'s robot: field -> (dtype, shape), in StepRecord's field order."""
    return {
        f.name: (f.metadata["dtype"], tuple(DIMENSIONS[d](spec) if isinstance(d, str) else d
                                            for d in f.metadata["shape"]))  # fmt: skip
        for f in fields(StepRecord)
    }


def element_labels(spec: RobotSpec) -> dict[str, list[str]]:
    """Each field's element names, in row order (empty for a scalar field), e.g. {"q": ["FL_hip_joint", ...]}."""
    labels = {}
    for f in fields(StepRecord):
        named = [d for d in f.metadata["shape"] if isinstance(d, str)]
        labels[f.name] = LABELS[named[0]](spec) if named else f.metadata["labels"]
    return labels


def log_record(record: dict) -> dict:
    """A runtime step record as a `record_schema` row."""
    return StepRecord.from_runtime(record).row()
