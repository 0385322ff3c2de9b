"""The runtime's robot side over LCM (real_robot.lcm_bus): newest bridge state in, PD targets and status out.

Single-threaded: `poll(timeout)` waits on the LCM socket and dispatches whatever arrived, so the control loop
never races a handler thread. Every joint or body state builds a fresh `RobotState`, so a record handed to a
logger is never changed afterwards.
"""

from __future__ import annotations

import time

import numpy as np

from deploy.commands import RemoteSticks
from deploy.runtime import BridgeStatus, Odometry, PdTarget, RobotState
from deploy.safety import Trip
from real_robot.lcm_bus import LcmNode, now_us
from real_robot.lcm_types.go1lcm import (
    arm_request_t,
    body_state_t,
    joint_state_t,
    odometry_t,
    pd_target_t,
    remote_command_t,
    safety_status_t,
)

ARM_TARGETS = ("deploy", "all")


def _array(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


class LcmRobotIO:
    def __init__(self, url: str, channel_prefix: str = ""):
        self.node = LcmNode(url, channel_prefix)
        self.state: RobotState | None = None
        self.odometry: Odometry | None = None
        self._joint: joint_state_t | None = None
        self._body: body_state_t | None = None
        self._tick: tuple[int, float, int] | None = None  # newest tick, host time it arrived, states repeating it
        self._tick_step_us = 0
        self._arm_requested = False
        self._bridge: BridgeStatus | None = None
        self.node.subscribe("joint_state", self._on_joint_state)
        self.node.subscribe("body_state", self._on_body_state)
        self.node.subscribe("odometry", self._on_odometry)
        self.node.subscribe("remote_command")
        self.node.subscribe("arm_request", self._on_arm_request)
        self.node.subscribe("safety_status", self._on_safety_status)

    # -- incoming
    def poll(self, timeout_s: float) -> None:
        self.node.handle(timeout_s)

    def _on_joint_state(self, msg: joint_state_t, _received_us: int) -> None:
        """Track when the newest tick arrived and how many states have repeated it since (a frozen board)."""
        tick = msg.robot_tick_us
        if self._tick is None or tick > self._tick[0]:
            if self._tick is not None:
                step = tick - self._tick[0]
                self._tick_step_us = step if self._tick_step_us == 0 else min(self._tick_step_us, step)
            self._tick = (tick, time.monotonic(), 0)
        else:
            last_tick, arrived, repeats = self._tick
            self._tick = (last_tick, arrived, repeats + 1)
        self._joint = msg
        self._rebuild_state()

    def _on_body_state(self, msg: body_state_t, _received_us: int) -> None:
        self._body = msg
        self._rebuild_state()

    def _rebuild_state(self) -> None:
        joint, body = self._joint, self._body
        if joint is None or body is None:
            return
        self.state = RobotState(
            robot_tick_us=joint.robot_tick_us, body_tick_us=body.robot_tick_us, stamp_us=joint.timestamp_us,
            received_s=self._tick[1], repeats=self._tick[2], tick_step_us=self._tick_step_us,
            q=_array(joint.q), dq=_array(joint.dq), tau_est=_array(joint.tau_est), quaternion=_array(body.quaternion),
            rpy=_array(body.rpy), gyro=_array(body.gyro), accelerometer=_array(body.accelerometer),
            foot_force=_array(body.foot_force),
        )  # fmt: skip

    def _on_odometry(self, msg: odometry_t, _received_us: int) -> None:
        self.odometry = Odometry(
            _array(msg.position), _array(msg.quaternion), _array(msg.lin_vel_body), _array(msg.ang_vel_body)
        )

    def _on_arm_request(self, msg: arm_request_t, _received_us: int) -> None:
        if msg.target in ARM_TARGETS:
            self._arm_requested = True

    def _on_safety_status(self, msg: safety_status_t, _received_us: int) -> None:
        if msg.source == "bridge":
            self._bridge = BridgeStatus(msg.tripped, msg.reason, msg.timestamp_us)

    def bridge_status(self) -> BridgeStatus | None:
        return self._bridge

    def remote(self) -> RemoteSticks | None:
        received = self.node.latest.get("remote_command")
        if received is None:
            return None
        msg: remote_command_t = received.msg
        return RemoteSticks(msg.lx, msg.ly, msg.rx, msg.ry, age_s=(now_us() - received.received_us) / 1e6)

    def take_arm_request(self) -> bool:
        requested, self._arm_requested = self._arm_requested, False
        return requested

    # -- outgoing
    def publish_target(self, target: PdTarget, sequence: int, robot_tick_us: int) -> None:
        msg = pd_target_t()
        msg.timestamp_us, msg.sequence, msg.robot_tick_us = now_us(), sequence, robot_tick_us
        for name in ("q_des", "dq_des", "kp", "kd", "tau_ff"):
            setattr(msg, name, getattr(target, name).tolist())
        self.node.publish("pd_target", msg)

    def publish_status(self, trip: Trip | None, trip_count: int) -> None:
        msg = safety_status_t()
        msg.timestamp_us, msg.source, msg.tripped, msg.trip_count = now_us(), "deploy", trip is not None, trip_count
        msg.reason = "" if trip is None else f"{trip.reason}: {trip.detail}"
        self.node.publish("safety_status", msg)

    def close(self) -> None:
        self.node.close()
