"""ROS 2 for the deploy runtime: velocity commands in (`deploy run --commands ros2[:<topic>]`, `Ros2Command`) and
the robot's state out (`deploy run --ros2-out`, `Ros2StatePublisher`).

A navigation stack or a teleop node publishes geometry_msgs/Twist on /cmd_vel (linear.x forward, linear.y left,
angular.z yaw rate, body frame, SI units); the policy follows the newest one, clipped to the speed preset. A
Twist older than the remote's timeout (RemoteConfig.timeout_s) commands a stop, so a publisher that dies leaves
the robot standing, never walking on; a Twist with a non-finite field is dropped and counted.

The subscription is spun by its own executor thread, so the control loop only reads the newest command.
DDS stays on loopback unless the environment says otherwise (`keep_dds_on_loopback`): with neither
ROS_AUTOMATIC_DISCOVERY_RANGE nor FASTDDS_DEFAULT_PROFILES_FILE set, Fast DDS runs with
configs/ros2/fastdds_loopback.xml: every socket on 127.0.0.1, discovery by unicast to this host's well-known
ports (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST alone still binds 0.0.0.0 and the LAN address); publishers on this
host find it with their default settings or LOCALHOST. Set ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET to command the
robot from another machine. rclpy comes with the `ros2` extra (`pip install -e ".[ros2]"`, CPython 3.11 on x86_64, like the
Unitree SDK).

State out, each control step after its PD target has gone out (robot time: 50 Hz on the Go1):
    /joint_states  sensor_msgs/JointState   q, dq, estimated torque, joint names from the robot spec   every step
    /imu           sensor_msgs/Imu          attitude, gyro, accelerometer (frame `base`)                every step
    /odom          nav_msgs/Odometry        odom -> base pose, body-frame twist          every step with odometry
    /diagnostics   diagnostic_msgs/DiagnosticArray: the safety state (OK / ERROR with the trip)   1 s, and on change
The messages are deploy.ros_messages' (the MCAP export's too); stamps are the step's host time as Unix time.
/tf is not published: tf2_msgs has no wheel on the package index (the odometry carries frames odom and base).
The runtime's `on_step` only queues the step; a thread of this module builds and publishes the messages.
"""

from __future__ import annotations

import importlib
import math
import os
import queue
import threading
import time

import numpy as np

from deploy import ros_messages as ros
from deploy.commands import RemoteConfig, RemoteSticks, SpeedPreset
from deploy.record import StepRecord, record_schema
from robot_spec.config import CONFIG_DIR
from robot_spec.spec import RobotSpec

DEFAULT_TOPIC = "/cmd_vel"
NODE_NAME = "go1_deploy_commands"
STATE_NODE_NAME = "go1_deploy_state"
STATE_QUEUE_STEPS = 50  # steps waiting for the publisher thread (1 s); beyond that the newest are dropped, counted
STATE_QOS_DEPTH = 50  # 1 s of steps: a subscriber that falls behind a moment loses none
LOOPBACK_PROFILE = CONFIG_DIR / "ros2" / "fastdds_loopback.xml"


def keep_dds_on_loopback() -> None:
    """Unless the user chose how DDS reaches the network: Fast DDS bound to 127.0.0.1 (read by rclpy.init)."""
    if "ROS_AUTOMATIC_DISCOVERY_RANGE" in os.environ or "FASTDDS_DEFAULT_PROFILES_FILE" in os.environ:
        return
    os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(LOOPBACK_PROFILE)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "SYSTEM_DEFAULT"  # the profile decides where DDS goes


def _rclpy():
    """rclpy, or a ValueError saying how to get it (the ROS 2 parts asked for are not in this install)."""
    keep_dds_on_loopback()
    try:
        import rclpy
    except ImportError as error:
        raise ValueError(f"ROS 2 needs rclpy: pip install -e '.[ros2]' ({error})") from error
    return rclpy


class Ros2Command:
    """The newest Twist on `topic` as a (vx, vy, yaw rate) command; a command source for the Controller."""

    def __init__(self, preset: SpeedPreset, cfg: RemoteConfig, topic: str = DEFAULT_TOPIC):
        rclpy = _rclpy()
        try:
            from geometry_msgs.msg import Twist
            from rclpy.exceptions import NameValidationException
            from rclpy.executors import SingleThreadedExecutor
        except ImportError as error:  # a ValueError: the commands asked for are not available in this install
            raise ValueError(f"ROS 2 commands need rclpy: pip install -e '.[ros2]' ({error})") from error
        self.preset, self.timeout_s, self.topic = preset, cfg.timeout_s, topic
        self.dropped = 0  # Twists with a NaN or infinite field
        self._lock = threading.Lock()
        self._latest: tuple[float, np.ndarray] | None = None  # (host monotonic time, command)
        self._context = rclpy.Context()
        rclpy.init(context=self._context)  # ROS_DOMAIN_ID from the environment, as every ROS 2 node
        self._node = rclpy.create_node(NODE_NAME, context=self._context)
        try:
            self._node.create_subscription(Twist, topic, self._on_twist, 10)
        except NameValidationException as error:
            self._node.destroy_node()
            self._context.try_shutdown()
            raise ValueError(f"{topic!r} is not a ROS 2 topic name: {error}") from error
        self._executor = SingleThreadedExecutor(context=self._context)
        self._executor.add_node(self._node)
        self._spinner = threading.Thread(target=self._executor.spin, name="ros2_commands", daemon=True)
        self._spinner.start()

    def _on_twist(self, msg) -> None:
        values = (msg.linear.x, msg.linear.y, msg.angular.z)
        if not all(math.isfinite(v) for v in values):
            self.dropped += 1
            return
        with self._lock:
            self._latest = (time.monotonic(), np.array(values))

    def command(self, t_s: float, remote: RemoteSticks | None = None) -> np.ndarray:
        with self._lock:
            latest = self._latest
        if latest is None or time.monotonic() - latest[0] > self.timeout_s:
            return np.zeros(3)
        return self.preset.clip(latest[1])

    def close(self) -> None:
        self._executor.shutdown()
        self._node.destroy_node()
        self._context.try_shutdown()
        self._spinner.join(timeout=2.0)

    def __enter__(self) -> Ros2Command:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _message_class(namespaced):
    """The rclpy class of a rosidl type, e.g. diagnostic_msgs.msg.DiagnosticStatus."""
    return getattr(importlib.import_module(".".join(namespaced.namespaces)), namespaced.name)


def to_ros(cls, values: dict):
    """A deploy.ros_messages dict as an rclpy message of class `cls` (nested dicts and lists of dicts too)."""
    msg = cls()
    for name, slot in zip(cls.get_fields_and_field_types(), cls.SLOT_TYPES):
        value = values.get(name)
        if isinstance(value, dict):
            value = to_ros(_message_class(slot), value)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            value = [to_ros(_message_class(slot.value_type), item) for item in value]
        elif isinstance(value, int) and getattr(slot, "typename", "") == "octet":  # a `byte` field takes bytes
            value = bytes([value])
        if value is not None:
            setattr(msg, name, value)
    return msg


class Ros2StatePublisher:
    """The robot's state on ROS 2 (see the module notes). Use `on_step` as (part of) the runtime's `on_step`: it
    only queues the step, after the step's target went out; the publishing happens in this object's thread."""

    def __init__(self, spec: RobotSpec):
        rclpy = _rclpy()
        try:
            from diagnostic_msgs.msg import DiagnosticArray
            from nav_msgs.msg import Odometry
            from sensor_msgs.msg import Imu, JointState
        except ImportError as error:
            raise ValueError(f"--ros2-out needs the ROS 2 message packages: pip install -e '.[ros2]' ({error})") \
                from error  # fmt: skip

        self.joint_names, self.hardware_id = list(spec.joint_names), spec.name
        self.published = {"/joint_states": 0, "/imu": 0, "/odom": 0, "/diagnostics": 0}
        self.dropped = 0  # steps the publisher thread had no room for
        self.clock_offset_ns = time.time_ns() - time.monotonic_ns()  # host monotonic -> Unix time
        self._diagnostics = ros.DiagnosticsSchedule()
        self._context = rclpy.Context()
        rclpy.init(context=self._context)
        self._node = rclpy.create_node(STATE_NODE_NAME, context=self._context)
        types = {"/joint_states": JointState, "/imu": Imu, "/odom": Odometry, "/diagnostics": DiagnosticArray}
        self._types = types
        self._publishers = {topic: self._node.create_publisher(cls, topic, STATE_QOS_DEPTH)
                            for topic, cls in types.items()}  # fmt: skip
        self._warm_up(spec)
        self._queue: queue.Queue = queue.Queue(maxsize=STATE_QUEUE_STEPS)
        self._thread = threading.Thread(target=self._run, name="ros2_state", daemon=True)
        self._thread.start()

    def on_step(self, record: dict) -> None:
        """Queue a runtime step record for publishing; never blocks the control loop. The record is not changed
        after its step (every state is a fresh RobotState, every target a fresh PdTarget), so the thread reads it."""
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        while (record := self._queue.get()) is not None:
            trip = record["trip"]
            self._publish(StepRecord.from_runtime(record).row(), f"{trip.reason}: {trip.detail}" if trip else "")

    def _warm_up(self, spec: RobotSpec) -> None:
        """Build one message of each type now: the first build imports and loads type support, which must not
        hold the interpreter while the control loop runs."""
        row = {name: np.zeros(shape, dtype) for name, (dtype, shape) in record_schema(spec).items()}
        row["odom_quaternion"][0] = 1.0
        built = {"/joint_states": ros.joint_state(row, 0, self.joint_names), "/imu": ros.imu(row, 0),
                 "/odom": ros.odometry(row, 0), "/diagnostics": ros.diagnostics(row, 0)}  # fmt: skip
        for topic, values in built.items():
            to_ros(self._types[topic], values)

    def _publish(self, row: dict, trip: str) -> None:
        stamp_ns = int(row["timestamp_us"]) * 1000 + self.clock_offset_ns
        messages = {"/joint_states": ros.joint_state(row, stamp_ns, self.joint_names), "/imu": ros.imu(row, stamp_ns)}
        if ros.has_odometry(row):
            messages["/odom"] = ros.odometry(row, stamp_ns)
        if self._diagnostics.due(row, trip):
            messages["/diagnostics"] = ros.diagnostics(row, stamp_ns, trip, self.hardware_id)
        for topic, values in messages.items():
            self._publishers[topic].publish(to_ros(self._types[topic], values))
            self.published[topic] += 1

    def close(self) -> None:
        """Publish what is queued, then leave ROS 2."""
        self._queue.put(None)
        self._thread.join(timeout=5.0)
        self._node.destroy_node()
        self._context.try_shutdown()

    def __enter__(self) -> Ros2StatePublisher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
