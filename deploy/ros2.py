"""ROS 2 velocity commands for the deploy runtime: `deploy run --commands ros2[:<topic>]`.

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
"""

from __future__ import annotations

import math
import os
import threading
import time

import numpy as np

from deploy.commands import RemoteConfig, RemoteSticks, SpeedPreset
from robot_spec.config import CONFIG_DIR

DEFAULT_TOPIC = "/cmd_vel"
NODE_NAME = "go1_deploy_commands"
LOOPBACK_PROFILE = CONFIG_DIR / "ros2" / "fastdds_loopback.xml"


def keep_dds_on_loopback() -> None:
    """Unless the user chose how DDS reaches the network: Fast DDS bound to 127.0.0.1 (read by rclpy.init)."""
    if "ROS_AUTOMATIC_DISCOVERY_RANGE" in os.environ or "FASTDDS_DEFAULT_PROFILES_FILE" in os.environ:
        return
    os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(LOOPBACK_PROFILE)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "SYSTEM_DEFAULT"  # the profile decides where DDS goes


class Ros2Command:
    """The newest Twist on `topic` as a (vx, vy, yaw rate) command; a command source for the Controller."""

    def __init__(self, preset: SpeedPreset, cfg: RemoteConfig, topic: str = DEFAULT_TOPIC):
        keep_dds_on_loopback()
        try:
            import rclpy
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
