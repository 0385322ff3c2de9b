"""`real_robot sim-robot`: a stand-in Go1 that speaks the robot board's low-level UDP protocol on 127.0.0.1.

A MuJoCo Go1 (robot_spec.mjcf) with a reality-gap profile (configs/reality_gap/) plays the robot's controller
board: it listens on its port for LowCmd packets, runs each motor's PD itself,
    tau = strength * (Kp' (q_des - q) + Kd' (dq_des - dq) + tau_ff),  Kp' = Kp * kp_factor, Kd' = Kd * kd_factor,
(q_des = PosStopF or dq_des = VelStopF switches that term off, mode 0 switches the motor off, |tau| is clipped at
the spec's torque limit * strength), and replies with LowState packets to the address the last LowCmd came from.
A command acts `actuator_latency_s` after it arrives. The robot starts lying on the ground with its motors off,
as a Go1 does before low-level control, so a client must soft-start it.

Effects the training simulator does not model, each off unless the profile asks (robot_spec.reality_gap):
per-joint motor strength, the motors' torque-speed line, encoder backlash (the PD and the reading use the lagging
angle), latency jitter (commands still act in order), a payload box with its own inertia and a trunk CoM error,
soft ground (solref/solimp), terrain (a heightfield drawn from the robot's seed: fixed over resets), and noisy,
dropping foot force readings.

Timing: one board tick is 2 ms of robot time (500 Hz). Real-time mode paces ticks by the wall clock (sleeps to
absolute deadlines, so no drift). Fast mode (--fast) runs in lockstep: a tick runs when a LowCmd arrives, or after
FAST_IDLE_TIMEOUT_S of wall time without one, so collection runs faster than real time and time still advances
when the client dies. LowState.tick is robot time in µs.

Reproducible from a seed in fast mode: what happens after a reset depends only on the commands that follow it,
tick by tick, when the reset is scheduled at a robot time (`at_robot_us`, which a client in lockstep can do
exactly) and restarts the sensor noise and the latency jitter (`seed`); the terrain is drawn once from the
robot's seed. Odometry is counted from the reset and sent before the tick's LowState, so a client stepping on
that LowState has already received it.

LCM (optional): publishes odometry_t on "<prefix>odometry" every 10 ms of robot time (ground truth, as a tracking
camera would measure; stamped with the clock the bridge uses in the same mode: robot time in fast mode, the host's
monotonic clock in real-time mode), and listens on "<prefix>sim_control" (sim_control_t):
    fault         drop_packets   no LowState replies
                  freeze_state   the same LowState bytes again and again
                  sensor_spike   + magnitude on joint `motor`'s position reading (motor -1: every joint and the gyro)
                  sensor_nan     NaN in joint `motor`'s readings (motor -1: every joint and the IMU)
                  dead_motor     joint `motor` (-1: all) produces no torque
                  weak_motor     joint `motor` (-1: all) gives only `magnitude` (0 < magnitude < 1) of its torque
                  fall           tips the robot over (rolled by `magnitude` rad, default FALL_ROLL)
                  each but fall lasts duration_s of robot time (0: until clear_faults)
    clear_faults  ends every fault
    push          adds `magnitude` m/s of velocity towards world (sticks[0], sticks[1]) (default: +y)
    reset         back to the start pose, motors off, faults cleared (a real robot would wait for the operator);
                  seed > 0 restarts the sensor noise with that stream
Any action with at_robot_us > 0 waits for that robot time (one that arrives too late acts at once, counted in
stats.late_requests).
    remote        the emulated remote's sticks: lx, ly, rx, ry = sticks
Joint indices are in simulator order. The same actions are available in-process on `StandInRobot`.
"""

from __future__ import annotations

import argparse
import math
import queue
import select
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

import mujoco
import numpy as np
from tqdm import tqdm

from real_robot import unitree_wire as wire
from real_robot.lcm_bus import DEFAULT_LCM_URL, LcmNode, check_url, now_us
from real_robot.lcm_types.go1lcm import odometry_t, sim_control_t
from robot_spec.reality_gap import (
    DEFAULT_PROFILE,
    Ground,
    Payload,
    RealityGapProfile,
    apply_body_dynamics,
    joint_strength,
    load_reality_gap,
)
from robot_spec.config import ConfigError, check_number
from robot_spec.mjcf import build_model_xml, sensor_slices
from robot_spec.rotations import rpy_of_quaternion
from robot_spec.spec import RobotSpec, load_robot
from robot_spec.terrain import add_terrain, ground_top

BOARD_DT = 0.002  # the board's 500 Hz loop
ODOMETRY_PERIOD_TICKS = 5  # 100 Hz
# Longer than a lockstep bridge waits for its controller (bridge.FOLLOW_CONTROLLER_WAIT_S): while a live bridge
# holds the robot for a slow controller, no idle tick moves robot time (that would make runs irreproducible).
FAST_IDLE_TIMEOUT_S = 4.0
STOP_POLL_S = 0.05  # fast mode: how soon stop() ends serve_forever while no command comes
MAX_LATE_S = 0.1  # real-time mode: further behind than this, the schedule restarts (counted as an overrun)
SETTLE_S = 1.0  # the start pose: lie down holding the lying pose this long, then this long with the motors off
FALL_ROLL = 2.0  # rad: on its side, past the point of return
IMU_TEMPERATURE_C = 35
MOTOR_TEMPERATURE_C = 40
RESET_STATE = mujoco.mjtState.mjSTATE_INTEGRATION  # everything mj_step reads, solver warm start included
TERRAIN_STREAM, JITTER_STREAM = 1, 2  # random streams of the robot's seed besides the sensor noise's
FAULTS = ("drop_packets", "freeze_state", "sensor_spike", "sensor_nan", "dead_motor", "weak_motor", "fall")
ACTIONS = ("fault", "clear_faults", "push", "reset", "remote")


@dataclass
class Fault:
    motor: int  # simulator joint index, -1 for all
    magnitude: float
    until: float  # robot time (s)

    def joints(self, num_joints: int) -> np.ndarray:
        return np.arange(num_joints) if self.motor < 0 else np.array([self.motor])


@dataclass
class MotorLaw:
    """The leg motors' PD as the board realises one command, in simulator order:
        tau = tau_ff + kp (q_des - q) + kd (dq_des - dq), clipped at the (strength-scaled) torque limit.
    Gains already carry the profile's kp/kd factors and motor strength; a term switched off (PosStopF, VelStopF),
    a motor in mode 0 and a motor whose command is not finite have zero gains and torque.
    """

    servo: np.ndarray
    q_des: np.ndarray
    dq_des: np.ndarray
    kp: np.ndarray
    kd: np.ndarray
    tau_ff: np.ndarray

    @classmethod
    def off(cls, n: int) -> MotorLaw:
        return cls(np.zeros(n, bool), *(np.zeros(n) for _ in range(5)))

    @classmethod
    def realise(cls, servo, q, dq, tau, kp, kd, profile: RealityGapProfile, strength=None) -> MotorLaw:
        """`strength`: per joint (default: the profile's motor_strength for all)."""
        runs = servo & np.isfinite(np.stack([q, dq, tau, kp, kd])).all(axis=0)
        position_on = runs & (q < np.float32(wire.POS_STOP_F))
        velocity_on = runs & (dq < np.float32(wire.VEL_STOP_F))
        strength = profile.motor_strength if strength is None else strength
        return cls(
            servo=runs,
            q_des=np.where(position_on, q, 0.0),
            dq_des=np.where(velocity_on, dq, 0.0),
            kp=np.where(position_on, kp * profile.kp_factor * strength, 0.0),
            kd=np.where(velocity_on, kd * profile.kd_factor * strength, 0.0),
            tau_ff=np.where(runs, tau * strength, 0.0),
        )

    @classmethod
    def from_low_cmd(cls, cmd: wire.LowCmd, spec: RobotSpec, profile: RealityGapProfile, strength=None) -> MotorLaw:
        fields = (cmd.mode, cmd.q, cmd.dq, cmd.tau, cmd.kp, cmd.kd)
        mode, q, dq, tau, kp, kd = (spec.from_sdk_order(values[: spec.num_joints]) for values in fields)
        return cls.realise(mode == wire.SERVO_MODE, q, dq, tau, kp, kd, profile, strength)

    def torque(self, q: np.ndarray, dq: np.ndarray, limit: np.ndarray) -> np.ndarray:
        return np.clip(self.tau_ff + self.kp * (self.q_des - q) + self.kd * (self.dq_des - dq), -limit, limit)


@dataclass(frozen=True)
class BoardMotors:
    """One robot's motors beyond the PD law, in simulator order: the (strength-scaled) torque limit, the
    torque-speed line and encoder backlash. Arrays broadcast, so a batch of robots (rows) works alike."""

    torque_limit: np.ndarray
    no_load_speed: np.ndarray
    torque_speed: bool
    backlash: float  # rad, width of the encoder's dead zone (0: none)

    @classmethod
    def of(cls, spec: RobotSpec, profile: RealityGapProfile) -> BoardMotors:
        m = profile.motors
        return cls(spec.torque_limit * joint_strength(profile, spec), spec.velocity_limit * m.no_load_speed_factor,
                   m.torque_speed, m.backlash)  # fmt: skip

    def encoder_angle(self, encoder_q: np.ndarray, true_q: np.ndarray) -> np.ndarray:
        """The joint angle the encoder sees: the true one, or with backlash, the last one within the dead zone."""
        if not self.backlash:
            return true_q
        return np.clip(encoder_q, true_q - self.backlash / 2, true_q + self.backlash / 2)

    def torque(self, law: MotorLaw, q: np.ndarray, dq: np.ndarray) -> np.ndarray:
        """The law's torque at the encoder reading `q` (calibration error included), limited by joint speed."""
        return self.limit_by_speed(law.torque(q, dq, self.torque_limit), dq)

    def limit_by_speed(self, tau: np.ndarray, dq: np.ndarray) -> np.ndarray:
        """The torque-speed line: less torque the faster a joint turns in the torque's direction."""
        if not self.torque_speed:
            return tau
        ratio = dq / self.no_load_speed
        upper = np.clip(self.torque_limit * (1.0 - ratio), 0.0, self.torque_limit)
        lower = np.clip(self.torque_limit * (-1.0 - ratio), -self.torque_limit, 0.0)
        return np.clip(tau, lower, upper)


@dataclass(frozen=True)
class SensorBias:
    """A robot's fixed calibration errors (drawn once from its seed): encoder offsets, gyro and accelerometer
    biases, and the IMU's mounting tilt (a rotation vector)."""

    q: np.ndarray
    gyro: np.ndarray
    accelerometer: np.ndarray
    tilt: np.ndarray

    @classmethod
    def draw(cls, profile: RealityGapProfile, num_joints: int, rng: np.random.Generator) -> SensorBias:
        b = profile.bias
        return cls(*(white(rng, std, size) for std, size in
                     ((b.joint_pos, num_joints), (b.gyro, 3), (b.accelerometer, 3), (b.orientation, 3))))  # fmt: skip


def white(rng: np.random.Generator, std: float, size: int) -> np.ndarray:
    """Gaussian noise, drawing nothing when `std` is 0 (so a profile without it leaves the stream alone)."""
    return rng.normal(0.0, std, size) if std else np.zeros(size)


def imu_quaternion(true_quaternion: np.ndarray, tilt: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """What the IMU reports: the trunk's attitude turned by its mounting tilt, then by this reading's noise."""
    return rotated(rotated(true_quaternion.copy(), tilt), noise)


@dataclass
class Stats:
    ticks: int = 0
    commands: int = 0
    resent_commands: int = 0  # fast mode: a client's resend of a command it had sent already (no tick)
    malformed_packets: int = 0
    states_sent: int = 0
    overruns: int = 0
    late_requests: int = 0  # scheduled sim_control actions that arrived after their robot time


@dataclass
class Sensors:
    """What the board measures this tick, in simulator order, before faults."""

    q: np.ndarray
    dq: np.ndarray
    ddq: np.ndarray
    tau: np.ndarray
    quaternion: np.ndarray
    gyro: np.ndarray
    accelerometer: np.ndarray
    foot_force: np.ndarray


def rotate_into_body(quat: np.ndarray, world_vec: np.ndarray) -> np.ndarray:
    inverse, out = np.empty(4), np.empty(3)
    mujoco.mju_negQuat(inverse, quat)
    mujoco.mju_rotVecQuat(out, world_vec, inverse)
    return out


def rotated(quat: np.ndarray, rotation_vector: np.ndarray) -> np.ndarray:
    """`quat` turned by a small rotation (axis * angle, body frame)."""
    out = quat.copy()
    mujoco.mju_quatIntegrate(out, rotation_vector, 1.0)
    return out


def build_stand_in_model(spec: RobotSpec, profile: RealityGapProfile, seed: int = 0) -> mujoco.MjModel:
    """The spec's model with the profile's physics, payload, ground and terrain (drawn from `seed`), and
    torque-controlled motors (the board runs the PD). With the new effects off this is the training model
    (robot_spec.mjcf) with the profile's body dynamics, as compiled from its XML."""
    mj_spec = mujoco.MjSpec.from_string(build_model_xml(spec, profile.physics))
    add_payload(mj_spec, profile.payload)
    if profile.ground.has_terrain:
        add_terrain(mj_spec, profile.ground, np.random.default_rng([seed, TERRAIN_STREAM]))
    model = mj_spec.compile()
    apply_body_dynamics(model, spec, profile)
    set_ground(model, profile)
    model.actuator_gainprm[:, 0] = 1.0  # position servos -> torque motors: force = ctrl
    model.actuator_biasprm[:, :3] = 0.0
    model.actuator_ctrllimited[:] = 0
    limit = spec.torque_limit * joint_strength(profile, spec)
    model.actuator_forcerange[:] = np.stack([-limit, limit], axis=1)
    return model


def add_payload(mj_spec: mujoco.MjSpec, payload: Payload) -> None:
    """The trunk's CoM error, and the payload as a box welded to the trunk (its mass, place and inertia)."""
    trunk = mj_spec.body("trunk")
    if any(payload.trunk_com_offset):
        trunk.ipos = np.asarray(trunk.ipos) + payload.trunk_com_offset
    if payload.mass > 0:
        box = trunk.add_body(name="payload", pos=list(payload.offset), ipos=[0.0, 0.0, 0.0], iquat=[1.0, 0, 0, 0],
                             mass=payload.mass, inertia=payload.inertia().tolist(), explicitinertial=True)  # fmt: skip
        # Seen, never touched: it rides on the trunk.
        box.add_geom(type=mujoco.mjtGeom.mjGEOM_BOX, size=[s / 2 for s in payload.size], contype=0, conaffinity=0,
                     rgba=[0.2, 0.5, 0.9, 1.0])  # fmt: skip


def set_ground(model: mujoco.MjModel, profile: RealityGapProfile) -> None:
    """Terrain friction as the floor's; the ground's softness on every geom (all contacts are robot-ground)."""
    terrain = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, "terrain")
    if terrain >= 0:
        model.geom_friction[terrain] = model.geom_friction[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, "floor")]
    if profile.ground.solref:
        model.geom_solref[:] = profile.ground.solref
    if profile.ground.solimp:
        model.geom_solimp[:] = profile.ground.solimp


class StandInRobot:
    """The stand-in board. Drive it with `step()` (one 2 ms tick) or `serve_forever()` (in a thread or process)."""

    def __init__(
        self,
        profile: RealityGapProfile | str = DEFAULT_PROFILE,
        port: int = 8007,
        fast: bool = False,
        seed: int = 0,
        lcm_url: str | None = DEFAULT_LCM_URL,
        channel_prefix: str = "",
        robot: str = "go1",
    ):
        self.profile = load_reality_gap(profile) if isinstance(profile, str) else profile
        substeps = BOARD_DT / self.profile.physics_dt
        if abs(substeps - round(substeps)) > 1e-9:
            raise ConfigError(f"profile {self.profile.name}: physics_dt must divide the board's {BOARD_DT} s period")
        self.substeps = round(substeps)
        self.spec = load_robot(robot)
        self.fast, self.seed = fast, seed
        self.rng = np.random.default_rng(seed)
        self.jitter_rng = np.random.default_rng([seed, 0, JITTER_STREAM])
        self.stats = Stats()
        self._build_physics()
        self._draw_biases()
        self._requests: queue.SimpleQueue[tuple[float, Callable[[], None]]] = queue.SimpleQueue()  # (at s, action)
        self._scheduled: list[tuple[float, Callable[[], None]]] = []
        self._stop = threading.Event()
        self.client: tuple[str, int] | None = None  # where LowState goes: the last LowCmd's sender
        self.sent_tick: int | None = None  # the tick of the newest LowState sent: what a fresh command answers
        self.remote = wire.RemoteState()

        self.lcm = LcmNode(lcm_url, channel_prefix) if lcm_url else None  # None: no LCM at all
        if self.lcm is not None:
            self.lcm.subscribe("sim_control", self._on_sim_control)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self._reset_now()

    # ------------------------------------------------------------------------------------------ construction
    def _build_physics(self) -> None:
        spec, self.model = self.spec, build_stand_in_model(self.spec, self.profile, self.seed)
        self.data = mujoco.MjData(self.model)
        self.sensor = sensor_slices(self.model, spec)
        self.strength = joint_strength(self.profile, spec)
        self.motors = BoardMotors.of(spec, self.profile)
        self.leg_sdk_order = [i // len(spec.joints_per_leg) for i in spec.sdk_index[:: len(spec.joints_per_leg)]]
        self.start_state = self._settled_lying_state()

    def _settled_lying_state(self) -> np.ndarray:
        m, d = self.model, self.data
        d.qpos[:] = m.qpos0
        d.qpos[7:] = self.spec.lying_pose
        mujoco.mj_kinematics(m, d)
        feet = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, f) for f in self.spec.foot_names]
        d.qpos[2] -= d.site_xpos[feet, 2].min() - self.spec.body.foot_radius  # feet on the ground
        d.qpos[2] += ground_top(m)  # on terrain: above it, to come down onto it
        # A Go1 lies down under its own control, then its motors go off and it comes to rest.
        n, c = self.spec.num_joints, self.spec.control
        hold = MotorLaw.realise(np.ones(n, bool), d.qpos[7:].copy(), np.zeros(n), np.zeros(n),
                                np.full(n, c.kp), np.full(n, c.kd), self.profile, self.strength)  # fmt: skip
        for _ in range(round(SETTLE_S / m.opt.timestep)):
            d.ctrl[:] = self.motors.torque(hold, d.qpos[7:], d.qvel[6:])
            mujoco.mj_step(m, d)
        d.ctrl[:] = 0.0
        mujoco.mj_step(m, d, round(SETTLE_S / m.opt.timestep))
        state = np.empty(mujoco.mj_stateSize(m, RESET_STATE))
        mujoco.mj_getState(m, d, state, RESET_STATE)
        return state

    def _draw_biases(self) -> None:
        self.bias = SensorBias.draw(self.profile, self.spec.num_joints, self.rng)

    # ------------------------------------------------------------------------------------------ in-process API
    # Thread-safe: each action runs at the start of the board's next tick, or of the first at robot time `at_s`.
    def inject_fault(self, kind: str, motor: int = -1, magnitude: float = 0.0, duration_s: float = 0.0,
                     at_s: float = 0.0) -> None:  # fmt: skip
        if kind not in FAULTS:
            raise ValueError(f"unknown fault '{kind}'; known: {', '.join(FAULTS)}")
        if not -1 <= motor < self.spec.num_joints:
            raise ValueError(f"fault motor {motor}: expected a joint index 0..{self.spec.num_joints - 1} or -1 (all)")
        if kind == "weak_motor" and not 0 < magnitude < 1:
            raise ValueError(f"weak_motor magnitude {magnitude}: expected the share of torque left, 0 < magnitude < 1")
        self._requests.put((at_s, lambda: self._start_fault(kind, motor, magnitude, duration_s)))

    def clear_faults(self, at_s: float = 0.0) -> None:
        self._requests.put((at_s, lambda: self.faults.clear()))

    def push(self, velocity_xy: tuple[float, float], at_s: float = 0.0) -> None:
        self._requests.put((at_s, lambda: self._add_velocity(np.asarray(velocity_xy, dtype=float))))

    def reset(self, seed: int = 0, at_s: float = 0.0) -> None:
        """Back to the start pose; `seed` > 0 also restarts the sensor noise (stream `seed` of this robot's seed)."""
        self._requests.put((at_s, lambda: self._reset_now(seed)))

    def set_remote(self, lx: float = 0.0, ly: float = 0.0, rx: float = 0.0, ry: float = 0.0, buttons: int = 0,
                   at_s: float = 0.0) -> None:  # fmt: skip
        remote = wire.RemoteState(lx=lx, ly=ly, rx=rx, ry=ry, buttons=buttons)
        self._requests.put((at_s, lambda: setattr(self, "remote", remote)))

    @property
    def robot_time(self) -> float:
        """Seconds since the board started (a reset moves the robot, it does not restart the board's clock)."""
        return self.stats.ticks * BOARD_DT

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self.sock.close()
        if self.lcm is not None:
            self.lcm.close()

    def __enter__(self) -> StandInRobot:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ the board's tick
    def step(self) -> None:
        """One 2 ms board tick: take commands, run the motors and physics, reply with a LowState."""
        self._handle_requests()
        self._expire_faults()
        self._receive_commands()
        command = self._command_due()
        for _ in range(self.substeps):
            self._physics_step(command)
        self.stats.ticks += 1
        self.ticks_since_reset += 1
        if self.ticks_since_reset % ODOMETRY_PERIOD_TICKS == 0:
            self._publish_odometry()
        self._send_state()
        if self.lcm is not None:
            self.lcm.handle(0.0)

    def _handle_requests(self) -> None:
        """Run the actions that are due, in the order they were requested."""
        while True:
            try:
                at_s, action = self._requests.get_nowait()
            except queue.Empty:
                break
            if at_s and at_s < self.robot_time - 1e-9:
                self.stats.late_requests += 1
            self._scheduled.append((at_s, action))
        if not self._scheduled:  # the usual tick: nothing asked for
            return
        due = [entry for entry in self._scheduled if entry[0] <= self.robot_time + 1e-9]
        self._scheduled = [entry for entry in self._scheduled if entry[0] > self.robot_time + 1e-9]
        for _at, action in due:
            action()

    def _receive_commands(self) -> bool:
        """Take every waiting LowCmd; True if one was fresh. In fast mode a command tagged as answering an older
        state than the newest sent is a resend (wire.answer_tag) and is dropped: acting on it would run a tick
        (and draw a latency) the same run on an idle host does not."""
        fresh = False
        while True:
            try:
                data, address = self.sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return fresh
            except ConnectionRefusedError:  # ICMP from a client that went away: not a packet
                continue
            try:
                cmd = wire.decode_low_cmd(data)
            except wire.WireError:
                self.stats.malformed_packets += 1
                continue
            self.client = address
            if self._is_resend(cmd):
                self.stats.resent_commands += 1
                continue
            self._accept_command(cmd)
            fresh = True

    def _is_resend(self, cmd: wire.LowCmd) -> bool:
        """Fast mode: tagged as answering a state older than the newest sent (untagged commands never are)."""
        if not self.fast or cmd.reserve == 0 or self.sent_tick is None:
            return False
        return cmd.reserve != wire.answer_tag(self.sent_tick)

    def _accept_command(self, cmd: wire.LowCmd) -> None:
        """Queue a received command to act after the actuation latency (and jitter)."""
        self.stats.commands += 1
        due = self.robot_time + self.profile.actuator_latency_s
        if jitter := self.profile.motors.latency_jitter_s:
            due += self.jitter_rng.uniform(0.0, jitter)  # in order still: see _command_due
        self.pending.append((due, MotorLaw.from_low_cmd(cmd, self.spec, self.profile, self.strength)))

    def _command_due(self) -> MotorLaw:
        """The newest command that is due; first in, first due (a late one holds back those behind it)."""
        while self.pending and self.pending[0][0] <= self.robot_time + 1e-9:
            self.active = self.pending.popleft()[1]
        return self.active

    def _physics_step(self, law: MotorLaw) -> None:
        d = self.data
        q = self._encoder_angle() + self.bias.q  # the motor's own encoder, calibration error included
        tau = self.motors.torque(law, q, d.qvel[6:])
        if "dead_motor" in self.faults:
            tau[self.faults["dead_motor"].joints(self.spec.num_joints)] = 0.0
        if weak := self.faults.get("weak_motor"):  # a strength factor on its whole torque, limit included
            tau[weak.joints(self.spec.num_joints)] *= weak.magnitude
        d.ctrl[:] = tau
        mujoco.mj_step(self.model, d)
        self.applied_torque = tau

    def _encoder_angle(self) -> np.ndarray:
        self.encoder_q = self.motors.encoder_angle(self.encoder_q, self.data.qpos[7:])
        return self.encoder_q

    def _measure(self) -> Sensors:
        d, s, noise, n, white = self.data, self.sensor, self.profile.noise, self.spec.num_joints, self._white
        quaternion = imu_quaternion(d.qpos[3:7], self.bias.tilt, white(noise.orientation, 3))
        return Sensors(
            q=self._encoder_angle() + self.bias.q + white(noise.joint_pos, n),
            dq=d.qvel[6:] + white(noise.joint_vel, n),
            ddq=d.qacc[6:].copy(),
            tau=self.applied_torque.copy(),
            quaternion=quaternion,
            gyro=d.sensordata[s["gyro"]] + self.bias.gyro + white(noise.gyro, 3),
            accelerometer=d.sensordata[s["accelerometer"]] + self.bias.accelerometer + white(noise.accelerometer, 3),
            foot_force=self._foot_force(d.sensordata[s["feet_touch"]].copy()),
        )

    def _foot_force(self, force: np.ndarray) -> np.ndarray:
        f = self.profile.foot_force
        if f.std:
            force += self.rng.normal(0.0, f.std, force.size)
        if f.dropout:
            force[self.rng.random(force.size) < f.dropout] = 0.0
        return force

    def _white(self, std: float, size: int) -> np.ndarray:
        return white(self.rng, std, size)

    def _apply_sensor_faults(self, m: Sensors) -> None:
        n = self.spec.num_joints
        if spike := self.faults.get("sensor_spike"):
            m.q[spike.joints(n)] += spike.magnitude
            if spike.motor < 0:
                m.gyro += spike.magnitude
        if nan := self.faults.get("sensor_nan"):
            m.q[nan.joints(n)] = np.nan
            m.dq[nan.joints(n)] = np.nan
            if nan.motor < 0:
                m.gyro[:] = m.accelerometer[:] = m.quaternion[:] = np.nan

    def _low_state(self) -> wire.LowState:
        m = self._measure()
        self._apply_sensor_faults(m)
        return wire.LowState(
            quaternion=m.quaternion,
            gyroscope=m.gyro,
            accelerometer=m.accelerometer,
            rpy=rpy_of_quaternion(m.quaternion) if np.all(np.isfinite(m.quaternion)) else np.full(3, np.nan),
            imu_temperature=IMU_TEMPERATURE_C,
            motor_mode=self._sdk_slots(np.where(self.active.servo, wire.SERVO_MODE, 0)).astype(np.int64),
            q=self._sdk_slots(m.q),
            dq=self._sdk_slots(m.dq),
            ddq=self._sdk_slots(m.ddq),
            tau_est=self._sdk_slots(m.tau),
            motor_temperature=self._sdk_slots(np.full(self.spec.num_joints, MOTOR_TEMPERATURE_C)),
            foot_force=m.foot_force[self.leg_sdk_order],
            tick=round(self.robot_time * 1e6),
            wireless_remote=wire.encode_remote(self.remote),
        )

    def _sdk_slots(self, sim_values: np.ndarray) -> np.ndarray:
        out = np.zeros(wire.NUM_MOTORS)
        out[: self.spec.num_joints] = self.spec.to_sdk_order(np.asarray(sim_values, dtype=float))
        return out

    def _send_state(self) -> None:
        if "freeze_state" not in self.faults or self.last_packet is None:
            state = self._low_state()
            self.last_packet, self.last_tick = wire.encode_low_state(state), state.tick
        if self.client is None or "drop_packets" in self.faults:
            return
        try:
            self.sock.sendto(self.last_packet, self.client)
            self.stats.states_sent += 1
            self.sent_tick = self.last_tick
        except OSError:  # the client's port is gone; keep serving until another client appears
            pass

    def _publish_odometry(self) -> None:
        if self.lcm is None:
            return
        d = self.data
        msg = odometry_t()
        msg.timestamp_us = round(self.robot_time * 1e6) if self.fast else now_us()
        msg.position = d.qpos[0:3].tolist()
        msg.quaternion = d.qpos[3:7].tolist()
        msg.lin_vel_body = rotate_into_body(d.qpos[3:7], d.qvel[0:3]).tolist()
        msg.ang_vel_body = d.qvel[3:6].tolist()  # a free joint's angular velocity is in the body frame
        self.lcm.publish("odometry", msg)

    # ------------------------------------------------------------------------------------------ faults and events
    def _start_fault(self, kind: str, motor: int, magnitude: float, duration_s: float) -> None:
        until = self.robot_time + duration_s if duration_s > 0 else math.inf
        if kind == "fall":  # an event, not a lasting condition
            self._tip_over(magnitude or FALL_ROLL)
            return
        self.faults[kind] = Fault(motor, magnitude, until)

    def _expire_faults(self) -> None:
        for kind in [k for k, f in self.faults.items() if f.until <= self.robot_time]:
            del self.faults[kind]

    def _tip_over(self, roll: float) -> None:
        """Turn the trunk `roll` rad about its long axis and drop it from standing height."""
        d = self.data
        d.qpos[3:7] = rotated(d.qpos[3:7].copy(), np.array([roll, 0.0, 0.0]))
        d.qpos[2] = max(d.qpos[2], self.spec.standing_height)
        d.qvel[:] = 0.0

    def _add_velocity(self, velocity_xy: np.ndarray) -> None:
        self.data.qvel[0:2] += velocity_xy

    def _reset_now(self, seed: int = 0) -> None:
        mujoco.mj_setState(self.model, self.data, self.start_state, RESET_STATE)
        mujoco.mj_forward(self.model, self.data)
        if seed > 0:
            self.rng = np.random.default_rng([self.seed, seed])
            self.jitter_rng = np.random.default_rng([self.seed, seed, JITTER_STREAM])
        self.encoder_q = self.data.qpos[7:].copy()  # backlash: the dead zone starts centred
        self.ticks_since_reset = 0
        self.faults: dict[str, Fault] = {}
        self.pending: deque[tuple[float, MotorLaw]] = deque()  # (robot time it acts, command)
        self.active = MotorLaw.off(self.spec.num_joints)
        self.applied_torque = np.zeros(self.spec.num_joints)
        self.last_packet: bytes | None = None  # what freeze_state repeats
        self.last_tick = 0  # its tick

    def _on_sim_control(self, msg: sim_control_t, _received_us: int) -> None:
        try:
            self._apply_sim_control(msg)
        except ValueError as err:  # a bad request must not stop the robot
            print(f"sim-robot: ignored sim_control message: {err}", file=sys.stderr)

    def _apply_sim_control(self, msg: sim_control_t) -> None:
        at_s = msg.at_robot_us / 1e6
        if msg.action == "fault":
            self.inject_fault(msg.fault, msg.motor, msg.magnitude, msg.duration_s, at_s)
        elif msg.action == "clear_faults":
            self.clear_faults(at_s)
        elif msg.action == "push":
            direction = np.array(msg.sticks[:2], dtype=float)
            norm = np.linalg.norm(direction)
            self.push(msg.magnitude * (direction / norm if norm > 0 else np.array([0.0, 1.0])), at_s)
        elif msg.action == "reset":
            self.reset(msg.seed, at_s)
        elif msg.action == "remote":
            lx, ly, rx, ry = msg.sticks
            self.set_remote(lx=lx, ly=ly, rx=rx, ry=ry, at_s=at_s)
        else:
            raise ValueError(f"unknown action '{msg.action}'; known: {', '.join(ACTIONS)}")

    # ------------------------------------------------------------------------------------------ serving
    def serve_forever(self, duration_s: float | None = None, progress: bool = False) -> None:
        """Run ticks until stop() (or `duration_s` of robot time): paced by the wall clock, or lockstep if fast."""
        self._stop.clear()
        end = self.robot_time + duration_s if duration_s else math.inf
        bar = tqdm(total=duration_s, unit="s", desc="robot time", disable=not progress)
        last_shown = self.robot_time
        wait = self._wait_for_command if self.fast else self._wait_for_deadline
        deadline = time.monotonic()
        while not self._stop.is_set() and self.robot_time < end - 1e-9:
            deadline = wait(deadline)
            self.step()
            if self.robot_time - last_shown >= 1.0:
                bar.update(round(self.robot_time - last_shown, 3))
                bar.set_postfix(commands=self.stats.commands, malformed=self.stats.malformed_packets)
                last_shown = self.robot_time
        bar.close()

    def _wait_for_command(self, deadline: float) -> float:
        """Until a fresh LowCmd has been taken, FAST_IDLE_TIMEOUT_S has passed or stop() (checked every
        STOP_POLL_S)."""
        idle_until = time.monotonic() + FAST_IDLE_TIMEOUT_S
        while not self._stop.is_set() and (remaining := idle_until - time.monotonic()) > 0:
            if select.select([self.sock], [], [], min(remaining, STOP_POLL_S))[0] and self._receive_commands():
                break
        return deadline

    def _wait_for_deadline(self, deadline: float) -> float:
        """Sleep to the next absolute deadline; if far behind, start a new schedule instead of rushing."""
        deadline += BOARD_DT
        delay = deadline - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -MAX_LATE_S:
            self.stats.overruns += 1
            deadline = time.monotonic()
        return deadline


# ---------------------------------------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="real_robot sim-robot",
        description="Stand-in Go1: MuJoCo with a reality-gap profile, serving the robot board's low-level UDP "
        "protocol (LowCmd in, LowState out) on 127.0.0.1 for the unmodified Unitree SDK.",
    )
    p.add_argument("--profile", default=DEFAULT_PROFILE, help=f"configs/reality_gap/ name (default: {DEFAULT_PROFILE})")
    p.add_argument("--robot", default="go1", help="robot spec in configs/robots/ (default: go1)")
    p.add_argument("--port", type=int, default=8007, help="UDP port the board listens on (default: 8007, as on a Go1)")
    p.add_argument("--fast", action="store_true", help="lockstep with the client instead of real time (for collection)")
    p.add_argument("--seed", type=int, default=0, help="seed for sensor noise and biases (default: 0)")
    p.add_argument("--lcm-url", default=DEFAULT_LCM_URL, help=f"LCM URL (default: {DEFAULT_LCM_URL})")
    p.add_argument("--channel-prefix", default="", help="prefix for the LCM channel names (default: none)")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this much robot time, s (default: never)")
    args = p.parse_args(argv)
    if not 0 <= args.port < 65536:
        p.error(f"--port {args.port}: expected 0..65535")
    try:
        check_url(args.lcm_url)
    except ValueError as err:
        p.error(str(err))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_number("--duration", args.duration, 0.0, 1e9)  # NaN would serve for ever
        robot = StandInRobot(args.profile, args.port, args.fast, args.seed, args.lcm_url, args.channel_prefix,
                             args.robot)  # fmt: skip
    except ValueError as err:  # a ConfigError (unknown profile) or a bad channel prefix
        print(f"sim-robot: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"sim-robot: cannot listen on 127.0.0.1:{args.port}: {err}", file=sys.stderr)
        return 1
    mode = "fast (lockstep)" if args.fast else "real time, 500 Hz"
    print(f"sim-robot: profile '{robot.profile.name}' on 127.0.0.1:{robot.port}, {mode}; lying down, motors off")
    with robot:
        try:
            robot.serve_forever(args.duration or None, progress=True)
        except KeyboardInterrupt:
            pass
    s = robot.stats
    print(f"sim-robot: {s.ticks} ticks, {s.commands} commands, {s.malformed_packets} malformed, {s.overruns} overruns")
    return 0


if __name__ == "__main__":
    sys.exit(main())
