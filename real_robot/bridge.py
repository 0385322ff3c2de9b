"""`real_robot bridge`: the Unitree SDK (UDP to the robot's board) ⇄ LCM, at 500 Hz, with a latched watchdog.

Each cycle: read the newest LowState and publish it on LCM in simulator joint/foot order (joint_state,
body_state, remote_command); apply the newest pd_target as a LowCmd in SDK order (through the SDK's
PositionLimit and PowerProtect); publish safety_status at ~10 Hz and at once on change.

Until the first valid pd_target arrives, and whenever the watchdog has tripped (no fresh target within a few
policy periods, a non-finite or negative-gain target, a stream of refused ones, a PowerProtect violation), the
robot gets a damping command: Kp 0 with q = PosStopF (position loop off), dq 0 with Kd > 0 (velocity loop on),
tau 0. A trip latches until an authenticated arm_request for "bridge"/"all" arrives and a valid target is
received after it. Only the session that armed the bridge (real_robot.arming) drives the motors; its targets
are refused outside the bounds (BridgeCore) and q_des is clamped to the SDK's position range inside them
(PositionLimit would clamp anyway, and saturating at a joint limit is normal policy behaviour).
Malformed LCM messages are dropped and counted by the typed subscriber (real_robot.lcm_bus).

Layers: `BridgeCore` (pure: messages and time in, `MotorCommand` out) · `SdkLink` (the real SDK) ·
`Bridge` (one cycle of I/O) · `run_realtime` / `run_follow` (pacing). Time is one abstraction: wall time in
real-time mode, the robot's LowState tick in --follow mode (the stand-in running faster than real time).
"""

from __future__ import annotations

import argparse
import ipaddress
import platform
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np
from tqdm import tqdm

from real_robot.clock import Pacer
from real_robot.clock import now_us as wall_us
from real_robot.lcm_bus import DEFAULT_LCM_URL, LcmNode
from real_robot.lcm_types.go1lcm import (
    arm_request_t,
    body_state_t,
    joint_state_t,
    pd_target_t,
    remote_command_t,
    safety_status_t,
)
from real_robot.unitree_wire import LOWLEVEL, POS_STOP_F, SERVO_MODE, answer_tag, decode_remote
from real_robot.watchdog import Watchdog, WatchdogStatus
from real_robot.arming import BIND, ArmVerifier, load_secret
from robot_spec.config import ConfigError, check_fields, check_number, load_config, named_config
from robot_spec.spec import RobotSpec, load_robot

TARGET_FIELDS = ("q_des", "dq_des", "kp", "kd", "tau_ff")
FOLLOW_POLL_S = 100e-6  # --follow: SDK Recv() is non-blocking, so poll for the next LowState this often
FOLLOW_IDLE_SEND_S = 0.02  # --follow: send anyway after this long without a LowState (see run_follow)
# --follow: wall time a due pd_target is waited for before robot time moves on. At 1 s a collection on a loaded host
# (a PPO run and busy loops on 2 cores) tripped stale_state in most episodes: its runtime was descheduled longer than
# that and robot time ran on without it (docs/reality_gap.md). A dead controller still trips the watchdog, this later.
FOLLOW_CONTROLLER_WAIT_S = 3.0
EXIT_DAMPING_CYCLES = 5  # damping commands sent on shutdown, so the motors do not keep the last target


@dataclass(frozen=True)
class BridgeConfig:
    control_hz: int  # LowCmd rate in real-time mode
    robot_ip: str
    robot_port: int
    local_port: int
    watchdog_periods: int  # policy periods without a fresh pd_target before damping
    damping_kd: float  # N·m·s/rad per joint in damping mode
    power_level: int  # SDK Safety.PowerProtect level, 1..10
    status_hz: float  # safety_status rate (plus one message on every change)
    kp_max: float  # N·m/rad: a target with a larger Kp is refused
    kd_max: float  # N·m·s/rad: a target with a larger Kd is refused
    q_margin: float  # rad: a q_des further than this outside the joint's range (URDF or SDK) is refused
    target_max_age_ms: float  # a target answering a robot tick older than this (or not yet sent) is refused
    refusals_to_trip: int  # this many refused targets in a row trip the watchdog

    def __post_init__(self) -> None:
        check_fields(self, "kp_max kd_max q_margin target_max_age_ms", 0.0, 1e3)
        check_fields(self, "refusals_to_trip", 1, 1000, integer=True)
        if not 1 <= self.power_level <= 10:
            raise ConfigError(f"power_level must be 1..10 (SDK PowerProtect), got {self.power_level}")
        if self.watchdog_periods < 1 or self.control_hz <= 0 or self.status_hz <= 0:
            raise ConfigError("watchdog_periods, control_hz and status_hz must be positive")
        for name in ("robot_port", "local_port"):
            if not 0 < getattr(self, name) < 65536:
                raise ConfigError(f"{name} must be a UDP port 1..65535, got {getattr(self, name)}")
        if self.damping_kd <= 0:
            raise ConfigError(f"damping_kd must be positive (damping with Kd 0 is free fall), got {self.damping_kd}")


def load_bridge_config(robot: str, **overrides) -> BridgeConfig:
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return load_config(BridgeConfig, named_config("bridge", robot), overrides)


# ------------------------------------------------------------------------------------------------ pure core
@dataclass(frozen=True)
class MotorCommand:
    """One LowCmd's leg motors, in SDK motor order."""

    q: np.ndarray
    dq: np.ndarray
    kp: np.ndarray
    kd: np.ndarray
    tau: np.ndarray
    damping: bool


class BridgeCore:
    """pd_target/arm_request messages and the time in, the motor command out. No sockets, no clock of its own.

    A target is applied only if it carries the session token of the last authenticated arm (others: counted in
    `foreign`), answers a robot tick the bridge has sent and not older than target_max_age_ms, and lies within
    the bounds (`refused`, and refusals_to_trip in a row trip the watchdog). A non-finite or negative-gain
    target trips at once (`rejected`). Inside the bounds q_des is clamped to the SDK's position range as before.
    """

    def __init__(self, spec: RobotSpec, cfg: BridgeConfig, secret: bytes):
        self.spec, self.cfg = spec, cfg
        self.policy_period_us = round(1e6 * spec.control.policy_dt)
        self.watchdog = Watchdog(cfg.watchdog_periods * self.policy_period_us)
        self.q_lower = spec.per_joint(spec.limits.sdk_position_lower)
        self.q_upper = spec.per_joint(spec.limits.sdk_position_upper)
        self.q_bounds = (np.minimum(spec.position_lower, self.q_lower) - cfg.q_margin,
                         np.maximum(spec.position_upper, self.q_upper) + cfg.q_margin)  # fmt: skip
        n = spec.num_joints
        self.damping = MotorCommand(
            q=np.full(n, POS_STOP_F), dq=np.zeros(n), kp=np.zeros(n), kd=np.full(n, cfg.damping_kd), tau=np.zeros(n), damping=True
        )
        self.arms = ArmVerifier(secret)
        self.session: int | None = None  # the token of the last authenticated arm that named one
        self.newest_tick_us: int | None = None  # robot time of the newest state sent
        self.target: MotorCommand | None = None
        self.answered_tick_us: int | None = None  # the robot tick the newest target answers
        self._refused_in_row = 0
        self.counts = {"targets": 0, "rejected": 0, "clamped": 0, "arm_requests": 0, "refused": 0, "foreign": 0,
                       "arm_refused": 0}  # fmt: skip

    def observe_tick(self, robot_time_us: int) -> None:
        self.newest_tick_us = robot_time_us

    def on_pd_target(self, msg: pd_target_t, now_us: int) -> None:
        if self.session is None or msg.session != self.session:
            self.counts["foreign"] += 1
            return
        fields = {name: np.asarray(getattr(msg, name), dtype=np.float64) for name in TARGET_FIELDS}
        problem = _target_problem(fields)
        if problem:  # never a controller's rounding: trip at once
            self.counts["rejected"] += 1
            self.watchdog.trip(f"invalid pd_target #{msg.sequence}: {problem}")
            return
        problem = self._tick_problem(msg.robot_tick_us) or self._bounds_problem(fields)
        if problem:
            self._refuse(msg.sequence, problem)
            return
        self._refused_in_row = 0
        self.answered_tick_us = msg.robot_tick_us
        q = np.clip(fields["q_des"], self.q_lower, self.q_upper)
        if not np.array_equal(q, fields["q_des"]):
            self.counts["clamped"] += 1
        sdk = self.spec.to_sdk_order
        self.target = MotorCommand(sdk(q), sdk(fields["dq_des"]), sdk(fields["kp"]), sdk(fields["kd"]), sdk(fields["tau_ff"]), damping=False)
        self.counts["targets"] += 1
        self.watchdog.target_received(now_us)

    def _refuse(self, sequence: int, problem: str) -> None:
        """Count and ignore; a stream of refusals trips (the last good target holds until then, or the watchdog)."""
        self.counts["refused"] += 1
        self._refused_in_row += 1
        if self._refused_in_row >= self.cfg.refusals_to_trip:
            self.watchdog.trip(f"refused pd_target #{sequence}: {problem} ({self._refused_in_row} in a row)")

    def _tick_problem(self, tick: int) -> str:
        newest = self.newest_tick_us
        if newest is None or tick > newest:
            return f"answers robot tick {tick} µs, not sent yet (newest {newest})"
        if tick < newest - 1e3 * self.cfg.target_max_age_ms or (self.answered_tick_us or 0) > tick:
            return f"answers robot tick {tick} µs: stale (newest {newest}, last answered {self.answered_tick_us})"
        return ""

    def _bounds_problem(self, fields: dict[str, np.ndarray]) -> str:
        spec, cfg, (low, high) = self.spec, self.cfg, self.q_bounds
        checks = {
            "q_des outside the joint range": np.any((fields["q_des"] < low) | (fields["q_des"] > high)),
            "|dq_des| above the velocity limit": np.any(np.abs(fields["dq_des"]) > spec.velocity_limit),
            "|tau_ff| above the torque limit": np.any(np.abs(fields["tau_ff"]) > spec.torque_limit),
            f"kp above kp_max {cfg.kp_max}": np.any(fields["kp"] > cfg.kp_max),
            f"kd above kd_max {cfg.kd_max}": np.any(fields["kd"] > cfg.kd_max),
        }
        return ", ".join(name for name, bad in checks.items() if bad)

    def on_arm_request(self, msg: arm_request_t, now_us: int) -> None:
        """An authenticated arm (see real_robot.arming) for "bind" sets the session; for "bridge"/"all" it also
        re-arms (with session 0: the current session)."""
        if msg.target not in (BIND, "bridge", "all"):
            return
        if not self.arms.accept(msg, now_us):
            self.counts["arm_refused"] += 1
            return
        if msg.session:
            self.session = msg.session
        if msg.target != BIND:
            self.counts["arm_requests"] += 1
            self.watchdog.arm_requested()

    def on_power_violation(self, level: int) -> None:
        self.watchdog.trip(f"power_protect: SDK PowerProtect (level {level}) reported a power violation")

    def command(self, now_us: int) -> MotorCommand:
        return self.target if self.watchdog.check(now_us) else self.damping


def _target_problem(fields: dict[str, np.ndarray]) -> str:
    bad = [name for name, values in fields.items() if not np.all(np.isfinite(values))]
    if bad:
        return f"non-finite values in {', '.join(bad)}"
    if np.any(fields["kp"] < 0) or np.any(fields["kd"] < 0):
        return "negative gains"
    return ""


# ------------------------------------------------------------------------------------------------ state → LCM
@dataclass(frozen=True)
class LowStateReading:
    """One LowState as the bridge reads it, in simulator joint and foot order (the runtime's view of the robot,
    assembled from the LCM messages built from this, is deploy.runtime.RobotState)."""

    tick: int  # the board's µs counter (uint32, wraps)
    q: np.ndarray
    dq: np.ndarray
    tau_est: np.ndarray
    quaternion: np.ndarray  # w, x, y, z
    rpy: np.ndarray
    gyro: np.ndarray
    accelerometer: np.ndarray
    foot_force: np.ndarray
    remote: bytes  # the 40 wirelessRemote bytes


def sdk_foot_index(spec: RobotSpec) -> list[int]:
    """SDK foot slot of each simulator foot: a leg's SDK slot is its hip motor's SDK index ÷ joints per leg."""
    per_leg = len(spec.joints_per_leg)
    return [spec.sdk_index[leg * per_leg] // per_leg for leg in range(len(spec.legs))]


def read_state(low_state, spec: RobotSpec, foot_index: list[int]) -> LowStateReading:
    motors = low_state.motorState[: spec.num_joints]
    imu = low_state.imu
    return LowStateReading(
        tick=int(low_state.tick),
        q=spec.from_sdk_order(np.array([m.q for m in motors])),
        dq=spec.from_sdk_order(np.array([m.dq for m in motors])),
        tau_est=spec.from_sdk_order(np.array([m.tauEst for m in motors])),
        quaternion=np.array(imu.quaternion, dtype=np.float64),
        rpy=np.array(imu.rpy, dtype=np.float64),
        gyro=np.array(imu.gyroscope, dtype=np.float64),
        accelerometer=np.array(imu.accelerometer, dtype=np.float64),
        foot_force=np.array(low_state.footForce, dtype=np.float64)[foot_index],
        remote=bytes(low_state.wirelessRemote),
    )


def joint_state_msg(state: LowStateReading, robot_time_us: int, now_us: int) -> joint_state_t:
    msg = joint_state_t()
    msg.timestamp_us, msg.robot_tick_us = now_us, robot_time_us
    msg.q, msg.dq, msg.tau_est = state.q.tolist(), state.dq.tolist(), state.tau_est.tolist()
    return msg


def body_state_msg(state: LowStateReading, robot_time_us: int, now_us: int) -> body_state_t:
    msg = body_state_t()
    msg.timestamp_us, msg.robot_tick_us = now_us, robot_time_us
    msg.quaternion, msg.rpy = state.quaternion.tolist(), state.rpy.tolist()
    msg.gyro, msg.accelerometer = state.gyro.tolist(), state.accelerometer.tolist()
    msg.foot_force = state.foot_force.tolist()
    return msg


def remote_msg(remote: bytes, now_us: int) -> remote_command_t:
    sticks = decode_remote(remote)
    msg = remote_command_t()
    msg.timestamp_us, msg.buttons = now_us, sticks.buttons
    msg.lx, msg.ly, msg.rx, msg.ry = sticks.lx, sticks.ly, sticks.rx, sticks.ry
    return msg


# ------------------------------------------------------------------------------------------------ clocks
class Clock(Protocol):
    def now_us(self) -> int: ...


class WallClock:
    """Real-time mode: the host's monotonic clock."""

    def now_us(self) -> int:
        return wall_us()


class RobotClock:
    """Robot time: LowState.tick (uint32 µs, wraps every 71.6 min) unwrapped into a monotonic count.

    A robot restart (tick jumping back) reads as a huge step forward, which trips the watchdog: the safe side.
    """

    def __init__(self) -> None:
        self._tick: int | None = None
        self._now_us = 0

    def observe(self, tick: int) -> int:
        self._now_us = tick if self._tick is None else self._now_us + (tick - self._tick) % (1 << 32)
        self._tick = tick
        return self._now_us

    def now_us(self) -> int:
        return self._now_us


# ------------------------------------------------------------------------------------------------ SDK side
class SdkUnavailable(RuntimeError):
    """The Unitree SDK extension cannot be imported on this platform."""


def load_sdk():
    try:
        import unitree_legged_sdk.robot_interface as sdk
    except ImportError as err:
        raise SdkUnavailable(
            f"cannot import the Unitree SDK module unitree_legged_sdk.robot_interface ({err}).\n"
            "The PyPI wheel unitree-legged-sdk==3.8.20231105 is a CPython 3.11 x86_64 Linux extension only; this is "
            f"{platform.python_implementation()} {platform.python_version()} on {platform.machine()} ({sys.platform}).\n"
            "Everything else in the stack works without it; run the bridge on an x86_64 Linux host with Python 3.11."
        ) from err
    return sdk


class SdkLink:
    """The robot side: the unmodified Unitree SDK's UDP, LowCmd, LowState and Safety(Go1)."""

    def __init__(self, sdk, cfg: BridgeConfig, num_motors: int):
        self.udp = sdk.UDP(LOWLEVEL, cfg.local_port, cfg.robot_ip, cfg.robot_port)
        self.cmd, self.state = sdk.LowCmd(), sdk.LowState()
        self.safety = sdk.Safety(sdk.LeggedType.Go1)
        self.power_level = cfg.power_level
        self.udp.InitCmdData(self.cmd)
        self._motors = self.cmd.motorCmd[:num_motors]  # live references into self.cmd

    def receive(self) -> bool:
        """True when a new LowState arrived; Recv() is non-blocking and keeps the newest waiting packet."""
        if self.udp.Recv() != 0:
            return False
        self.udp.GetRecv(self.state)
        return True

    def write(self, command: MotorCommand) -> None:
        columns = (command.q.tolist(), command.dq.tolist(), command.kp.tolist(), command.kd.tolist(), command.tau.tolist())
        for motor, q, dq, kp, kd, tau in zip(self._motors, *columns):
            motor.mode, motor.q, motor.dq, motor.Kp, motor.Kd, motor.tau = SERVO_MODE, q, dq, kp, kd, tau

    def protect(self) -> bool:
        """The SDK's own guards on a target command: clamp positions, then check power (False: violation).

        Not used on damping commands: PositionLimit would turn the PosStopF sentinel into a real joint-limit target.
        """
        self.safety.PositionLimit(self.cmd)
        return self.safety.PowerProtect(self.cmd, self.state, self.power_level) >= 0

    def send(self) -> None:
        self.udp.SetSend(self.cmd)
        self.udp.Send()


def check_port_free(port: int) -> None:
    """The SDK only prints a bind failure and carries on deaf, so check the local port first."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("0.0.0.0", port))
        except OSError as err:
            raise ConfigError(f"local UDP port {port} is not free ({err.strerror}); pick another with --local-port") from err


# ------------------------------------------------------------------------------------------------ one cycle of I/O
class Bridge:
    """Publishes each new LowState on LCM and turns the newest LCM target into one LowCmd per `control()`.

    Malformed LCM messages are dropped (and counted in `node.malformed`) by the typed subscriber.
    """

    def __init__(self, core: BridgeCore, robot: SdkLink, node: LcmNode, cfg: BridgeConfig, follow: bool):
        self.core, self.robot, self.node = core, robot, node
        self.robot_clock = RobotClock()
        self.clock: Clock = self.robot_clock if follow else WallClock()
        self.follow, self.robot_ip = follow, cfg.robot_ip  # told in every status: the runtime checks its own mode
        self.heard_tick: int | None = None  # the newest LowState's raw tick: what --follow commands answer
        self.foot_index = sdk_foot_index(core.spec)
        self.status_period_us = round(1e6 / cfg.status_hz)
        self._status_sent: WatchdogStatus | None = None
        self._status_sent_us = 0
        node.subscribe("pd_target", lambda msg, _received_us: core.on_pd_target(msg, self.clock.now_us()))
        node.subscribe("arm_request", core.on_arm_request)  # arms are stamped on the host's monotonic clock

    def poll_state(self) -> bool:
        """Publish the newest LowState if one arrived since the last call; True if it did."""
        if not self.robot.receive():
            return False
        state = read_state(self.robot.state, self.core.spec, self.foot_index)
        self.heard_tick = state.tick
        robot_time_us = self.robot_clock.observe(state.tick)
        self.core.observe_tick(robot_time_us)
        now = wall_us()
        self.node.publish("joint_state", joint_state_msg(state, robot_time_us, now))
        self.node.publish("body_state", body_state_msg(state, robot_time_us, now))
        self.node.publish("remote_command", remote_msg(state.remote, now))
        return True

    def handle_lcm(self) -> None:
        self.node.handle(0.0)

    def target_due(self) -> bool:
        """--follow: a policy period of robot time has passed since the state the newest target answers, so the
        controller owes the next one (any target counts, damping ones too: the pace is not the watchdog's job)."""
        answered = self.core.answered_tick_us
        return answered is not None and self.robot_clock.now_us() >= answered + self.core.policy_period_us

    def control(self) -> MotorCommand:
        """Send one LowCmd: the newest target while the watchdog is live, damping otherwise."""
        self.handle_lcm()
        now = self.clock.now_us()
        command = self.core.command(now)
        self.robot.write(command)
        if self.follow:  # which state this answers (none yet: any tick will do); no tick for a resend
            self.robot.cmd.reserve = 0 if self.heard_tick is None else answer_tag(self.heard_tick)
        if not command.damping and not self.robot.protect():
            self.core.on_power_violation(self.robot.power_level)
            command = self.core.command(now)
            self.robot.write(command)
        self.robot.send()
        self.publish_status(now)
        return command

    def publish_status(self, now_us: int) -> None:
        """~status_hz, and at once when the watchdog's state changes."""
        status = self.core.watchdog.status()
        if status == self._status_sent and now_us - self._status_sent_us < self.status_period_us:
            return
        msg = safety_status_t()
        msg.timestamp_us, msg.source = wall_us(), "bridge"
        msg.tripped, msg.reason, msg.trip_count = status.tripped, status.reason, status.trip_count
        msg.follow, msg.robot_ip = self.follow, self.robot_ip
        self.node.publish("safety_status", msg)
        self._status_sent, self._status_sent_us = status, now_us

    def shutdown(self) -> None:
        """Leave the motors damping rather than holding the last target."""
        self.robot.write(self.core.damping)
        for _ in range(EXIT_DAMPING_CYCLES):
            self.robot.send()
            time.sleep(0.002)


# ------------------------------------------------------------------------------------------------ pacing
def run_realtime(bridge: Bridge, pacer: Pacer, keep_running: Callable[[], bool], on_cycle: Callable[[], None]) -> None:
    while keep_running():
        bridge.poll_state()
        bridge.control()
        on_cycle()
        pacer.wait()


def run_follow(
    bridge: Bridge,
    keep_running: Callable[[], bool],
    on_cycle: Callable[[], None],
    idle_send_s: float = FOLLOW_IDLE_SEND_S,
    controller_wait_s: float = FOLLOW_CONTROLLER_WAIT_S,
) -> None:
    """One LowCmd per received LowState: the stand-in sets the pace (and the watchdog counts its ticks).

    Lockstep with the controller as well: a target answers the state of one robot tick; a policy period later
    the robot holds (no LowCmd) until the next target arrives, up to `controller_wait_s` of wall time. So each
    target acts for exactly one policy period of robot ticks whatever the host's timing (runs on the stand-in
    repeat from a seed), a host too busy to run the controller pauses robot time instead of tripping the
    watchdog, and a controller that has stopped still trips it (after one wait). A board only answers a client
    that commands it, so after `idle_send_s` without a LowState the bridge sends its current command anyway (at
    start-up that is damping); each command names the state it answers (unitree_wire.answer_tag), so a resend
    while the stand-in is merely slow to reply runs no second tick.
    """
    last_cycle = time.monotonic()
    state_pending = False
    wait_deadline: float | None = None  # set when a target falls due, kept (run out) until one arrives
    while keep_running():
        state_pending |= bridge.poll_state()
        now = time.monotonic()
        if bridge.target_due():
            wait_deadline = wait_deadline or now + controller_wait_s
        else:
            wait_deadline = None
        waiting = wait_deadline is not None and now < wait_deadline
        if not waiting and (state_pending or now - last_cycle > idle_send_s):
            bridge.control()
            on_cycle()
            state_pending, last_cycle = False, time.monotonic()
        else:
            bridge.handle_lcm()
            time.sleep(FOLLOW_POLL_S)


# ------------------------------------------------------------------------------------------------ command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="real_robot bridge",
        description="Unitree SDK ⇄ LCM bridge: publishes the robot's state on LCM and sends the newest pd_target "
        "to the robot at 500 Hz; damping until the first target and whenever the watchdog trips (latched until "
        "an arm_request). Defaults come from configs/bridge/<robot>.yaml.",
    )
    p.add_argument("--robot", default="go1", help="robot spec and bridge config name (default: go1)")
    p.add_argument("--robot-ip", help="the robot board's IPv4 address (default from config: the stand-in on 127.0.0.1)")
    p.add_argument("--robot-port", type=int, help="the board's low-level UDP port (config default 8007)")
    p.add_argument("--local-port", type=int, help="this side's UDP port (config default 8090)")
    p.add_argument("--lcm-url", default=DEFAULT_LCM_URL, help=f"LCM provider URL (default: {DEFAULT_LCM_URL})")
    p.add_argument("--channel-prefix", default="", help="prefix for every LCM channel name (default: none)")
    p.add_argument("--power-level", type=int, help="SDK PowerProtect level 1..10 (config default 9)")
    p.add_argument("--follow", action="store_true", help="step once per received LowState and count the watchdog "
                   "in robot time (for the stand-in's faster-than-real-time mode)")  # fmt: skip
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (default: run until Ctrl-C)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_number("--duration", args.duration, 0.0, 1e9)  # NaN would run for ever
        spec = load_robot(args.robot)
        cfg = load_bridge_config(
            args.robot, robot_ip=args.robot_ip, robot_port=args.robot_port, local_port=args.local_port,
            power_level=args.power_level,
        )  # fmt: skip
        check_address(cfg)
        sdk = load_sdk()
        check_port_free(cfg.local_port)
        secret = load_secret()
        node = LcmNode(args.lcm_url, args.channel_prefix)
    except (ConfigError, SdkUnavailable, ValueError, RuntimeError) as err:  # RuntimeError: LCM could not start
        print(f"real_robot bridge: {err}", file=sys.stderr)
        return 2
    core = BridgeCore(spec, cfg, secret)
    bridge = Bridge(core, SdkLink(sdk, cfg, spec.num_joints), node, cfg, args.follow)
    mode = "follow (robot time)" if args.follow else f"real time {cfg.control_hz} Hz"
    print(f"bridge: robot {cfg.robot_ip}:{cfg.robot_port} from :{cfg.local_port}, LCM {args.lcm_url}, {mode}")
    print(f"bridge: stopped; {run(bridge, cfg, args.follow, args.duration)}")
    return 0


def check_address(cfg: BridgeConfig) -> None:
    try:
        ipaddress.IPv4Address(cfg.robot_ip)
    except ValueError as err:
        raise ConfigError(f"--robot-ip {cfg.robot_ip!r} is not an IPv4 address ({err})") from err


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def run(bridge: Bridge, cfg: BridgeConfig, follow: bool, duration_s: float) -> str:
    """Run until Ctrl-C or `duration_s`, with a status bar; always leave the motors damping. Returns a summary."""
    end = time.monotonic() + duration_s if duration_s > 0 else float("inf")
    bar = tqdm(unit=" cycles", desc="bridge", mininterval=1.0)
    pacer = Pacer(1.0 / cfg.control_hz)

    def on_cycle() -> None:
        bar.update()
        if bar.n % 500 == 0:
            status = bridge.core.watchdog.status()
            state = f"TRIPPED ({status.reason})" if status.tripped else ("live" if bridge.core.watchdog.live else "waiting")
            counts, malformed = bridge.core.counts, sum(bridge.node.malformed.values())
            bar.set_postfix_str(f"{state}, trips {status.trip_count}, clamped {counts['clamped']}, refused "
                                f"{counts['refused']}, foreign {counts['foreign']}, malformed {malformed}")

    def keep_running() -> bool:
        return time.monotonic() < end

    # A service manager's SIGTERM stops the bridge like Ctrl-C does: through the damping shutdown.
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous_sigterm = signal.signal(signal.SIGTERM, _interrupt) if on_main_thread else None
    try:
        if follow:
            run_follow(bridge, keep_running, on_cycle)
        else:
            run_realtime(bridge, pacer, keep_running, on_cycle)
    except KeyboardInterrupt:
        pass
    finally:
        bridge.shutdown()
        bar.close()
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous_sigterm)
    overruns = "" if follow else f", {pacer.overruns} loop overruns (> 1 period late)"
    counts = bridge.core.counts | {"malformed": dict(bridge.node.malformed)}
    return f"{bar.n} cycles{overruns}, trips {bridge.core.watchdog.trip_count}, {counts}"


if __name__ == "__main__":
    sys.exit(main())
