"""The stand-in robot, the bridge's target handling and the deploy runtime in one process, in lockstep.

For measuring the safety monitors over many robot-hours (benchmarks/monitor_grid.py) and testing them in seconds:
no subprocesses, no sockets. `InProcessRobot` is the runtime's `RobotIO`: the real `LcmRobotIO` (on memq://,
private to this process) fed by the bridge's own message builders, and each `poll` that would wait runs one
2 ms tick of the stand-in board (`InMemoryBoard`: a `StandInRobot` whose LowCmd and LowState are handed over
as objects, not encoded packets; encoding was most of a tick's cost):

    BridgeCore.command (the newest target: clamped, SDK order, watchdog) -> LowCmd -> board tick -> LowState
    -> joint_state / body_state -> LcmRobotIO.state

So a target answering the state of tick T acts from tick T + 2 ms (plus the board's latency), as with
`bridge --follow`. Robot time is the board's, whatever this host's load: the runtime learns how much has
passed since the newest state from the board's ticks (as `repeats`), not from wall time; so a board that stops
answering (dropped packets) shows as stale state after the same robot time as on hardware in real time.
Left out: the SDK's PowerProtect, and the processes' own timing (the stand-in's fast mode is lockstep anyway).
The ground truth the benchmark judges by (`truth`) is read from the simulation after every tick.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from deploy.lcm_io import LcmRobotIO
from deploy.runtime import BridgeStatus
from real_robot import unitree_wire as wire
from real_robot.bridge import BridgeCore, body_state_msg, joint_state_msg, load_bridge_config, sdk_foot_index
from real_robot.bridge import LowStateReading
from real_robot.arming import BIND
from real_robot.lcm_bus import now_us
from real_robot.sim_robot import BOARD_DT, StandInRobot
from robot_spec.rotations import rpy_of_quaternion
from robot_spec.reality_gap import RealityGapProfile

TICK_US = round(BOARD_DT * 1e6)


@dataclasses.dataclass
class Truth:
    """What the simulation knows and the robot's sensors may not: the trunk's true attitude and height."""

    time_us: int = 0  # board time of the newest tick
    roll_pitch: float = 0.0  # max(|roll|, |pitch|), rad
    height: float = 0.0  # m
    fell_us: int | None = None  # first tick the trunk was tilted beyond FALL_TILT (since `new_episode`)


FALL_TILT = 1.0  # rad: the training simulator's fall termination (sim_pretrain TerminationConfig.max_roll_pitch)


class InMemoryBoard(StandInRobot):
    """The stand-in board with its wire in memory: `command` hands it a LowCmd, `state` is the LowState it sent
    on its last tick (None while it drops packets). Faults act as on the wire: a frozen board repeats its last
    LowState, a dropping one sends none."""

    def __init__(self, profile: RealityGapProfile | str, seed: int = 0, robot: str = "go1"):
        super().__init__(profile, port=0, fast=True, seed=seed, lcm_url=None, robot=robot)
        self.inbox: wire.LowCmd | None = None
        self.state: wire.LowState | None = None

    def command(self, cmd: wire.LowCmd) -> None:
        self.inbox = cmd

    def _receive_commands(self) -> None:
        if self.inbox is not None:
            self._accept_command(self.inbox)
            self.inbox = None

    def _send_state(self) -> None:
        if "freeze_state" not in self.faults or self.last_state is None:
            self.last_state = self._low_state()
        self.state = None if "drop_packets" in self.faults else self.last_state

    def _reset_now(self, seed: int = 0) -> None:
        super()._reset_now(seed)
        self.last_state: wire.LowState | None = None


class InProcessRobot(LcmRobotIO):
    """A `RobotIO` whose waits run the stand-in board (see the module notes)."""

    def __init__(self, robot: InMemoryBoard):
        super().__init__("memq://", f"inproc{id(self):x}_")
        self.robot, self.spec = robot, robot.spec
        self.bridge_cfg = load_bridge_config(self.spec.name)
        self.foot_index = sdk_foot_index(self.spec)
        self.truth = Truth()
        self.node.subscribe("pd_target", lambda msg, _received: self.core.on_pd_target(msg, self.board_us))
        self.node.subscribe("arm_request", lambda msg, received: self.core.on_arm_request(msg, received))
        self._new_core()

    def _new_core(self) -> None:
        """A bridge core bound to this runtime's session, as deploy binds the real bridge before its first target."""
        self.core = BridgeCore(self.spec, self.bridge_cfg, self.secret)
        self.arm_bridge(BIND, "in_process")
        self.node.handle(0.0)

    @property
    def board_us(self) -> int:
        return round(self.robot.robot_time * 1e6)

    def new_episode(self) -> None:
        """A fresh bridge (as after an operator's re-arm) and a fresh fall record."""
        self._new_core()
        self.truth.fell_us = None

    # -- RobotIO
    def poll(self, timeout_s: float) -> None:
        """A wait of any length is one board tick (the runtime waits in a loop until its state is due)."""
        if timeout_s > 0:
            self.tick()

    def publish_target(self, target, sequence: int, robot_tick_us: int) -> None:
        super().publish_target(target, sequence, robot_tick_us)
        self.node.handle(0.0)  # to the bridge core at once

    def publish_status(self, trip, trip_count: int) -> None:
        pass  # nobody listens in this process

    def bridge_status(self) -> BridgeStatus:
        status = self.core.watchdog.status()
        return BridgeStatus(status.tripped, status.reason, now_us())

    def remote(self):
        return None

    # -- the board and the bridge
    def tick(self, ticks: int = 1) -> None:
        for _ in range(ticks):
            self._send(self.core.command(self.board_us))
            self.robot.step()
            self._receive()
            self._observe_truth()
        self._align_clock()

    def _send(self, command) -> None:
        mode = np.full(self.spec.num_joints, wire.SERVO_MODE)
        self.robot.command(wire.LowCmd(mode=mode, q=command.q, dq=command.dq, tau=command.tau, kp=command.kp,
                                       kd=command.kd))  # fmt: skip

    def _receive(self) -> None:
        """The board's LowState of this tick (none while it drops packets), published as the bridge would."""
        if self.robot.state is None:
            return
        reading = read_low_state(self.robot.state, self.spec, self.foot_index)
        self.core.observe_tick(reading.tick)  # the bridge accepts targets only for ticks it has sent
        stamp = now_us()
        self._on_joint_state(joint_state_msg(reading, reading.tick, stamp), stamp)
        self._on_body_state(body_state_msg(reading, reading.tick, stamp), stamp)

    def _align_clock(self) -> None:
        """The runtime's view of robot time since the newest state: the board's ticks since it, counted as
        repeats (as a frozen board's repeated states are), never this host's wall time (a busy host would read
        as stale state)."""
        if self.state is None or not self._tick_step_us:
            return
        repeats = (self.board_us - self.state.robot_tick_us) // self._tick_step_us
        self._tick = (self._tick[0], math.inf, repeats)
        self.state = dataclasses.replace(self.state, received_s=math.inf, repeats=repeats)

    def _observe_truth(self) -> None:
        data, truth = self.robot.data, self.truth
        truth.time_us = self.board_us
        truth.roll_pitch = float(np.abs(rpy_of_quaternion(data.qpos[3:7])[:2]).max())
        truth.height = float(data.qpos[2])
        if truth.fell_us is None and truth.roll_pitch > FALL_TILT:
            truth.fell_us = truth.time_us


def read_low_state(state: wire.LowState, spec, foot_index: list[int]) -> LowStateReading:
    """real_robot.bridge.read_state for a wire.LowState instead of the SDK's LowState object."""
    n = spec.num_joints
    return LowStateReading(
        tick=int(state.tick), q=spec.from_sdk_order(state.q[:n]), dq=spec.from_sdk_order(state.dq[:n]),
        tau_est=spec.from_sdk_order(state.tau_est[:n]), quaternion=np.asarray(state.quaternion, dtype=np.float64),
        rpy=np.asarray(state.rpy, dtype=np.float64), gyro=np.asarray(state.gyroscope, dtype=np.float64),
        accelerometer=np.asarray(state.accelerometer, dtype=np.float64),
        foot_force=np.asarray(state.foot_force, dtype=np.float64)[foot_index], remote=state.wireless_remote,
    )  # fmt: skip
