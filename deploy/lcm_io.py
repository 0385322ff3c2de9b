"""The runtime's robot side over LCM (real_robot.lcm_bus): newest bridge state in, PD targets and status out.

Single-threaded: `poll(timeout)` waits on the LCM socket and dispatches whatever arrived, so the control loop
never races a handler thread. Every joint or body state builds a fresh `RobotState`, so a record handed to a
logger is never changed afterwards. Received ticks pass a plausibility window (`TickWindow`): a crafted or
corrupt state far from the robot's clock is counted in `refused_states` and dropped, never paced by.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np

from deploy.commands import RemoteSticks
from deploy.runtime import BridgeStatus, Odometry, PdTarget, RobotState
from deploy.safety import Trip
from real_robot.arming import BIND, ArmVerifier, arm_request, load_secret, new_session
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
MAX_TICK_US = 2**53  # no robot clock gets here (285 years); below it, tick arithmetic in floats stays exact
TICK_WINDOW_US = 500_000  # a state this far (robot time) from the newest accepted tick is implausible ...
RESYNC_STATES = 5  # ... unless this many states in a row continue it: the robot's clock really jumped
ODOMETRY_KEPT = 32  # recent odometry messages kept to pair with a state by time (0.32 s at 100 Hz)


class TickWindow:
    """Plausibility window on received robot ticks. A tick within TICK_WINDOW_US of the newest accepted one is
    accepted; the first tick, and one outside the window, only once RESYNC_STATES states in a row continue it
    (the robot's clock at start, a restarted bridge or board), so one crafted message (2**62, or 10 s ahead)
    can neither overflow nor stall the loop, even as the first message deploy hears."""

    def __init__(self) -> None:
        self.newest: int | None = None
        self.refused = 0
        self._chain: tuple[int, int] | None = None  # an implausible tick and how many states in a row continue it

    def accept(self, tick: int) -> bool:
        if not 0 <= tick <= MAX_TICK_US:
            self.refused += 1
            return False
        if self.newest is not None and abs(tick - self.newest) <= TICK_WINDOW_US:
            self.newest = max(self.newest, tick)
            return True
        chain = self._chain
        count = chain[1] + 1 if chain is not None and 0 < tick - chain[0] <= TICK_WINDOW_US else 1
        if count >= RESYNC_STATES:
            self.newest, self._chain = tick, None
            return True
        self._chain = (tick, count)
        self.refused += 1
        return False

    def near(self, tick: int) -> bool:
        """A tick beside the accepted ones (a body state's), without moving the window."""
        return 0 <= tick <= MAX_TICK_US and (self.newest is None or abs(tick - self.newest) <= TICK_WINDOW_US)


def _array(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


class LcmRobotIO:
    def __init__(self, url: str, channel_prefix: str = ""):
        self.secret = load_secret()  # this user's arming secret (real_robot.arming): ArmingError if unreadable
        self.session = new_session()  # carried in every pd_target: the bridge applies only the armed session's
        self._bound = False
        self._arms = ArmVerifier(self.secret)
        self.node = LcmNode(url, channel_prefix)
        self.state: RobotState | None = None
        self.odometry: Odometry | None = None  # the newest
        self._odometry: deque[tuple[int, Odometry]] = deque(maxlen=ODOMETRY_KEPT)  # (sender's stamp, odometry)
        self._joint: joint_state_t | None = None
        self._body: body_state_t | None = None
        self._tick: tuple[int, float, int] | None = None  # newest tick, host time it arrived, states repeating it
        self._tick_step_us = 0
        self._ticks = TickWindow()
        self.refused_states = 0  # joint/body states dropped as implausible (see TickWindow)
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
        tick, previous = msg.robot_tick_us, self._ticks.newest
        if not self._ticks.accept(tick):
            self.refused_states += 1
            return
        if previous is not None and abs(tick - previous) > TICK_WINDOW_US:  # the clock really jumped: a new base
            self._tick = None
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
        if not self._ticks.near(msg.robot_tick_us):
            self.refused_states += 1
            return
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
        self._odometry.append((msg.timestamp_us, self.odometry))

    def odometry_at(self, stamp_us: float) -> Odometry | None:
        """The newest odometry stamped at or before `stamp_us` (its sender's clock), never one from later."""
        for stamp, odometry in reversed(self._odometry):
            if stamp <= stamp_us:
                return odometry
        return None

    def _on_arm_request(self, msg: arm_request_t, received_us: int) -> None:
        if msg.target in ARM_TARGETS and self._arms.accept(msg, received_us):  # unsigned or replayed: refused
            self._arm_requested = True

    @property
    def refused_arms(self) -> int:
        return self._arms.refused

    def _on_safety_status(self, msg: safety_status_t, _received_us: int) -> None:
        if msg.source == "bridge":
            self._bridge = BridgeStatus(msg.tripped, msg.reason, msg.timestamp_us, msg.follow, msg.robot_ip)

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
    def arm_bridge(self, target: str = "bridge", source: str = "deploy") -> None:
        """A signed arm_request with this session's token: "bind" makes the bridge take our targets, "bridge"
        also re-arms it after a trip."""
        self.node.publish("arm_request", arm_request(self.secret, now_us(), target, source, self.session))
        self._bound = True

    def publish_target(self, target: PdTarget, sequence: int, robot_tick_us: int) -> None:
        if not self._bound:  # the bridge answers states, so it is up by now: bind it before the first target
            self.arm_bridge(BIND)
        msg = pd_target_t()
        msg.timestamp_us, msg.sequence, msg.robot_tick_us = now_us(), sequence, robot_tick_us
        msg.session = self.session
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
