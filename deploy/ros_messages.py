"""A log record (deploy/record.py StepRecord row) as ROS 2 messages, for the MCAP export (deploy/log_export.py)
and the live ROS 2 publisher (deploy/ros2.py) alike, so both show the same values under the same names.

Messages are plain dicts in the ROS 2 message structure: mcap-ros2-support encodes them to CDR with the
definitions in `MSGDEFS`, and deploy.ros2 copies them into rclpy messages. No ROS 2 install is needed here.

Frames: `odom` (the odometry's world frame) and `base` (the trunk; the IMU's frame too). Quaternions are
reordered from the log's w, x, y, z to ROS's x, y, z, w. Odometry twist is in `base`, as the log's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from deploy.record import STOP_OUTCOMES, Phase

ODOM_FRAME, BASE_FRAME = "odom", "base"
DIAGNOSTICS_PERIOD_S = 1.0  # robot time between /diagnostics messages when the safety state does not change
DIAGNOSTIC_OK, DIAGNOSTIC_WARN, DIAGNOSTIC_ERROR = 0, 1, 2  # diagnostic_msgs/DiagnosticStatus levels
DIAGNOSTIC_NAME = "go1 deploy: safety"

# The standard ROS 2 definitions (comments dropped; nested types package-qualified), for MCAP schemas.
# tests/test_ros2_out.py checks them against the message packages' own .msg files where those are installed.
MSGDEFS = {
    "builtin_interfaces/Time": "int32 sec\nuint32 nanosec",
    "std_msgs/Header": "builtin_interfaces/Time stamp\nstring frame_id",
    "geometry_msgs/Vector3": "float64 x\nfloat64 y\nfloat64 z",
    "geometry_msgs/Point": "float64 x\nfloat64 y\nfloat64 z",
    "geometry_msgs/Quaternion": "float64 x 0\nfloat64 y 0\nfloat64 z 0\nfloat64 w 1",
    "geometry_msgs/Pose": "geometry_msgs/Point position\ngeometry_msgs/Quaternion orientation",
    "geometry_msgs/Twist": "geometry_msgs/Vector3 linear\ngeometry_msgs/Vector3 angular",
    "geometry_msgs/TwistStamped": "std_msgs/Header header\ngeometry_msgs/Twist twist",
    "geometry_msgs/PoseWithCovariance": "geometry_msgs/Pose pose\nfloat64[36] covariance",
    "geometry_msgs/TwistWithCovariance": "geometry_msgs/Twist twist\nfloat64[36] covariance",
    "geometry_msgs/Transform": "geometry_msgs/Vector3 translation\ngeometry_msgs/Quaternion rotation",
    "geometry_msgs/TransformStamped": "std_msgs/Header header\nstring child_frame_id\n"
                                      "geometry_msgs/Transform transform",
    "tf2_msgs/TFMessage": "geometry_msgs/TransformStamped[] transforms",
    "sensor_msgs/JointState": "std_msgs/Header header\nstring[] name\nfloat64[] position\nfloat64[] velocity\n"
                              "float64[] effort",
    "sensor_msgs/Imu": "std_msgs/Header header\ngeometry_msgs/Quaternion orientation\n"
                       "float64[9] orientation_covariance\ngeometry_msgs/Vector3 angular_velocity\n"
                       "float64[9] angular_velocity_covariance\ngeometry_msgs/Vector3 linear_acceleration\n"
                       "float64[9] linear_acceleration_covariance",
    "nav_msgs/Odometry": "std_msgs/Header header\nstring child_frame_id\ngeometry_msgs/PoseWithCovariance pose\n"
                         "geometry_msgs/TwistWithCovariance twist",
    "diagnostic_msgs/KeyValue": "string key\nstring value",
    "diagnostic_msgs/DiagnosticStatus": "byte OK=0\nbyte WARN=1\nbyte ERROR=2\nbyte STALE=3\nbyte level\n"
                                        "string name\nstring message\nstring hardware_id\n"
                                        "diagnostic_msgs/KeyValue[] values",
    "diagnostic_msgs/DiagnosticArray": "std_msgs/Header header\ndiagnostic_msgs/DiagnosticStatus[] status",
}  # fmt: skip
_NESTED = re.compile(r"^(\w+/\w+)(\[\d*\])? ", re.MULTILINE)
RULE = "=" * 80


def msgdef(datatype: str) -> str:
    """The full definition of `datatype` as ROS 2 bags store it: its own, then every nested type's."""
    order, todo = [], [datatype]
    while todo:
        name = todo.pop(0)
        if name not in order:
            order.append(name)
            todo += [m.group(1) for m in _NESTED.finditer(MSGDEFS[name])]
    return "\n".join([MSGDEFS[datatype], *(f"{RULE}\nMSG: {name}\n{MSGDEFS[name]}" for name in order[1:])])


# --------------------------------------------------------------------------------------------- messages
def stamp(unix_ns: int) -> dict:
    return {"sec": unix_ns // 1_000_000_000, "nanosec": unix_ns % 1_000_000_000}


def header(unix_ns: int, frame_id: str = "") -> dict:
    return {"stamp": stamp(unix_ns), "frame_id": frame_id}


def _vector(v: Sequence[float]) -> dict:
    return {"x": float(v[0]), "y": float(v[1]), "z": float(v[2])}


def _quaternion(wxyz: Sequence[float]) -> dict:
    return {"x": float(wxyz[1]), "y": float(wxyz[2]), "z": float(wxyz[3]), "w": float(wxyz[0])}


def _floats(values) -> list[float]:
    return np.asarray(values, dtype=np.float64).tolist()


def joint_state(row: Mapping, unix_ns: int, joint_names: Sequence[str]) -> dict:
    """sensor_msgs/JointState: the measured q, dq and estimated torque, named as in the robot spec."""
    return {"header": header(unix_ns), "name": list(joint_names), "position": _floats(row["q"]),
            "velocity": _floats(row["dq"]), "effort": _floats(row["tau_est"])}  # fmt: skip


def joint_targets(row: Mapping, unix_ns: int, joint_names: Sequence[str]) -> dict:
    """sensor_msgs/JointState of the PD targets published (position = q_des)."""
    return {"header": header(unix_ns), "name": list(joint_names), "position": _floats(row["q_des"]),
            "velocity": [], "effort": []}  # fmt: skip


def imu(row: Mapping, unix_ns: int) -> dict:
    """sensor_msgs/Imu in `base`; covariances zero (= unknown)."""
    return {
        "header": header(unix_ns, BASE_FRAME), "orientation": _quaternion(row["quaternion"]),
        "orientation_covariance": [0.0] * 9, "angular_velocity": _vector(row["gyro"]),
        "angular_velocity_covariance": [0.0] * 9, "linear_acceleration": _vector(row["accelerometer"]),
        "linear_acceleration_covariance": [0.0] * 9,
    }  # fmt: skip


def has_odometry(row: Mapping) -> bool:
    """A robot without an odometry source logs NaN: then there is no /odom or /tf message for the step."""
    return bool(np.isfinite(row["odom_position"]).all() and np.isfinite(row["odom_quaternion"]).all())


def odometry(row: Mapping, unix_ns: int) -> dict:
    """nav_msgs/Odometry: pose of `base` in `odom`, twist in `base`; covariances zero (= unknown)."""
    return {
        "header": header(unix_ns, ODOM_FRAME), "child_frame_id": BASE_FRAME,
        "pose": {"pose": {"position": _vector(row["odom_position"]),
                          "orientation": _quaternion(row["odom_quaternion"])}, "covariance": [0.0] * 36},
        "twist": {"twist": {"linear": _vector(row["odom_lin_vel"]), "angular": _vector(row["odom_ang_vel"])},
                  "covariance": [0.0] * 36},
    }  # fmt: skip


def transform(row: Mapping, unix_ns: int) -> dict:
    """tf2_msgs/TFMessage with the odom -> base transform of the odometry."""
    return {"transforms": [{
        "header": header(unix_ns, ODOM_FRAME), "child_frame_id": BASE_FRAME,
        "transform": {"translation": _vector(row["odom_position"]), "rotation": _quaternion(row["odom_quaternion"])},
    }]}  # fmt: skip


def command(row: Mapping, unix_ns: int) -> dict:
    """geometry_msgs/TwistStamped of the velocity command the policy was given (vx, vy, yaw rate in `base`)."""
    vx, vy, yaw_rate = _floats(row["command"])
    return {"header": header(unix_ns, BASE_FRAME),
            "twist": {"linear": _vector([vx, vy, 0.0]), "angular": _vector([0.0, 0.0, yaw_rate])}}  # fmt: skip


def safety_state(row: Mapping, trip: str) -> tuple[int, bool]:
    """What /diagnostics reports, and what a change of which publishes at once: (phase, tripped)."""
    return int(row["phase"]), bool(row["tripped"]) or bool(trip)


def diagnostics(row: Mapping, unix_ns: int, trip: str = "", hardware_id: str = "go1") -> dict:
    """diagnostic_msgs/DiagnosticArray with the safety state: OK; WARN while a stop (timeout, operator) damps;
    ERROR with the trip ("monitor: values") while a safety trip or fall is latched."""
    phase, tripped = safety_state(row, trip)
    stopped = trip.split(":")[0] in STOP_OUTCOMES
    level = (DIAGNOSTIC_WARN if stopped else DIAGNOSTIC_ERROR) if tripped else DIAGNOSTIC_OK
    message = (f"{'stopped' if stopped else 'tripped'}: {trip or 'latched'}") if tripped else "ok"
    values = {"phase": Phase(phase).name.lower(), "tripped": str(tripped).lower(), "step": str(int(row["step"])),
              "robot_time_s": f"{int(row['robot_tick_us']) / 1e6:.6f}"}  # fmt: skip
    status = {
        "level": level, "name": DIAGNOSTIC_NAME, "message": message, "hardware_id": hardware_id,
        "values": [{"key": k, "value": v} for k, v in values.items()],
    }  # fmt: skip
    return {"header": header(unix_ns), "status": [status]}


class DiagnosticsSchedule:
    """When to send /diagnostics: on the first step, whenever the safety state (phase, tripped) changes, and
    every DIAGNOSTICS_PERIOD_S of robot time between."""

    def __init__(self, period_s: float = DIAGNOSTICS_PERIOD_S):
        self.period_us = int(round(period_s * 1e6))
        self.last: tuple[tuple[int, bool], int] | None = None  # (safety state, robot tick) of the last one sent

    def due(self, row: Mapping, trip: str = "") -> bool:
        state, tick = safety_state(row, trip), int(row["robot_tick_us"])
        if self.last is not None and state == self.last[0] and tick - self.last[1] < self.period_us:
            return False
        self.last = (state, tick)
        return True

