"""The "exact" simulator: sim_pretrain's Go1 task with each environment's physics the stand-in robot's own.

For the oracle that is a true ceiling on a reality-gap profile, effects the training simulator cannot express
included. Per environment, what real_robot.sim_robot.StandInRobot does, from the same code:
  - its model (build_stand_in_model: the profile's solver, contact options and time step, payload box, CoM error,
    soft ground, terrain drawn from the robot's seed) and its 2 ms board tick;
  - the policy's target sent as the runtime and the bridge send it: ActionMap's clamped target with the spec's
    gains, re-sent every tick, each copy acting after the latency plus its own jitter draw, in order
    (MotorLaw.realise: the profile's per-joint strength and Kp/Kd factors);
  - the motors' torque-speed line, encoder backlash and offsets (BoardMotors, SensorBias);
  - observations from what its sensors report (encoder, IMU with its mounting tilt, the profile's noise);
    rewards and terminations from the ground truth, as Go1Env's.
Environment i is the stand-in robot of seed `cfg.seed * num_envs + i` (its calibration errors and terrain), so
with seed 0 environment 0 is the robot that gap_recovery evaluates seed 0 on. Nothing else is randomised (the
stand-in is one robot); commands, pushes, resets and the logged starts are Go1Env's. The training observation
noise (`cfg.noise`) is not added: the sensors' own noise is the profile's.

Cost: one mj_step per environment per tick in one thread (10 ticks a policy step); the motor law, latency and
readings are batched across environments.
Not modelled here (the stand-in has them, a policy run never meets them): faults, the soft start, foot force.
"""

from __future__ import annotations

import dataclasses

import mujoco
import numpy as np
import torch

from real_robot.sim_robot import (
    BOARD_DT,
    JITTER_STREAM,
    BoardMotors,
    MotorLaw,
    SensorBias,
    build_stand_in_model,
    imu_quaternion,
    white,
)
from robot_spec.config import ConfigError
from robot_spec.mjcf import home_qpos, sensor_slices
from robot_spec.reality_gap import joint_strength, load_reality_gap
from robot_spec.terrain import ground_top
from sim_pretrain.backends import BACKENDS
from sim_pretrain.env import STATE_SPEC, Go1Env

BACKEND = "stand_in"
NOISE_STREAM = 3  # the readings' noise, beside the stand-in's streams of the same seed
DUE_EPS = 1e-9  # as the stand-in compares robot times


def register() -> None:
    """Make `backend: stand_in` buildable by sim_pretrain.backends.make_env (and so by train/finetune_in_sim)."""
    BACKENDS[BACKEND] = StandInEnv


def assign_rows(target: MotorLaw, source: MotorLaw, rows: np.ndarray) -> None:
    """Environments `rows` of the batched law `target` take `source`'s."""
    for f in dataclasses.fields(MotorLaw):
        getattr(target, f.name)[rows] = getattr(source, f.name)[rows]


@dataclasses.dataclass
class Sent:
    """One policy step's target as the board queues it, per environment: when it acts (after every copy sent
    before it, as the board runs commands in order) and in which environments it has not acted yet."""

    due: np.ndarray  # (envs,) robot time, s
    law: MotorLaw  # (envs, joints)
    waiting: np.ndarray  # (envs,) bool


class StandInEnv(Go1Env):
    """Go1Env's task on the stand-in's physics (see the module notes); `cfg.dynamics.profile` names the robot."""

    # ----------------------------------------------------------------- construction
    def _build_physics(self) -> None:
        cfg, spec, n = self.cfg, self.spec, self.num_envs
        if not cfg.dynamics.profile:
            raise ConfigError(f"the {BACKEND} backend needs dynamics.profile (the stand-in's reality-gap profile)")
        self.profile = p = load_reality_gap(cfg.dynamics.profile)
        self.substeps = round(BOARD_DT / p.physics_dt)
        self.decimation = round(self.dt / BOARD_DT)  # board ticks per policy step
        if abs(self.substeps * p.physics_dt - BOARD_DT) > 1e-9 or abs(self.decimation * BOARD_DT - self.dt) > 1e-9:
            raise ConfigError(f"profile {p.name}: physics_dt must divide the board's {BOARD_DT} s tick, which must "
                              "divide the policy period")  # fmt: skip
        self.robot_seeds = [cfg.seed * n + i for i in range(n)]
        if p.ground.has_terrain:  # each robot's own floor
            self.models = [build_stand_in_model(spec, p, s) for s in self.robot_seeds]
        else:  # one model serves all: mj_step only reads it
            self.models = [build_stand_in_model(spec, p)] * n
        self.base_model = m = self.models[0]
        self.datas = [mujoco.MjData(model) for model in self.models]
        self.motors = BoardMotors.of(spec, p)
        self.strength = joint_strength(p, spec)
        biases = [SensorBias.draw(p, spec.num_joints, np.random.default_rng(s)) for s in self.robot_seeds]
        self.sensor_bias = SensorBias(*(np.stack(rows) for rows in zip(*(dataclasses.astuple(b) for b in biases))))
        self.noise_rng = np.random.default_rng([cfg.seed, NOISE_STREAM])
        self.jitter_rng = np.random.default_rng([cfg.seed, 0, JITTER_STREAM])  # the stand-in of seed cfg.seed's
        self.ticks = 0  # the board clock: robot time = ticks * BOARD_DT (a reset does not restart it)

        self.state_size = mujoco.mj_stateSize(m, STATE_SPEC)
        self.qpos, self.qvel = slice(1, 1 + m.nq), slice(1 + m.nq, 1 + m.nq + m.nv)
        self.sensors = sensor_slices(m, spec)
        data = mujoco.MjData(m)
        data.qpos[:] = home_qpos(m, spec)
        mujoco.mj_forward(m, data)
        self.home_state = np.empty(self.state_size)
        mujoco.mj_getState(m, data, self.home_state, STATE_SPEC)
        self.starts = self._load_initial_states()

    def _build_buffers(self) -> None:
        super()._build_buffers()
        n, j, p = self.num_envs, self.num_actions, self.profile
        self.params.update(friction=np.full(n, p.friction), added_mass=np.full(n, p.added_mass),
                           motor_strength=np.full(n, p.motor_strength))  # fmt: skip
        self.encoder_q = np.zeros((n, j))
        self.hold = self._law(np.tile(self.spec.default_pose, (n, 1)))  # the soft start's last target
        self.active = self._law(np.tile(self.spec.default_pose, (n, 1)))
        self.sent: list[Sent] = []
        self.last_due = np.full(n, -np.inf)  # the latest due time of any copy sent since the reset

    def _law(self, targets: np.ndarray) -> MotorLaw:
        """How the board realises the runtime's PD target (the spec's gains, no velocity or feed-forward term)."""
        c, ones, zeros = self.spec.control, np.ones(targets.shape, bool), np.zeros(targets.shape)
        return MotorLaw.realise(ones, targets, zeros, zeros, np.full(targets.shape, c.kp), np.full(targets.shape, c.kd),
                                self.profile, self.strength)  # fmt: skip

    # ----------------------------------------------------------------- physics
    def _simulate(self, actions: torch.Tensor) -> None:
        law = self._law(self.action_map.targets(actions.cpu().numpy()))
        for tick in range(self.decimation):
            self._send(law, first=tick == 0)
            self._take_due_commands()
            for _ in range(self.substeps):
                self._physics_step()
            self.ticks += 1

    def _send(self, law: MotorLaw, first: bool) -> None:
        """The bridge's copy of the newest target for this tick: it acts after the latency (and jitter), and
        not before the copies sent earlier."""
        due = np.full(self.num_envs, self.ticks * BOARD_DT + self.profile.actuator_latency_s)
        if jitter := self.profile.motors.latency_jitter_s:
            due += self.jitter_rng.uniform(0.0, jitter, self.num_envs)
        self.last_due = np.maximum(self.last_due, due)
        if first:
            self.sent.append(Sent(self.last_due.copy(), law, np.ones(self.num_envs, bool)))

    def _take_due_commands(self) -> None:
        now = self.ticks * BOARD_DT + DUE_EPS
        for sent in self.sent:  # oldest first: the newest due target wins
            rows = sent.waiting & (sent.due <= now)
            if rows.any():
                assign_rows(self.active, sent.law, rows)
                sent.waiting &= ~rows
        self.sent = [sent for sent in self.sent if sent.waiting.any()]

    def _physics_step(self) -> None:
        true_q = np.stack([d.qpos[7:] for d in self.datas])
        dq = np.stack([d.qvel[6:] for d in self.datas])
        self.encoder_q = self.motors.encoder_angle(self.encoder_q, true_q)
        tau = self.motors.torque(self.active, self.encoder_q + self.sensor_bias.q, dq)
        for model, data, torque in zip(self.models, self.datas, tau):
            data.ctrl[:] = torque
            mujoco.mj_step(model, data)

    def _measure(self) -> dict[str, torch.Tensor]:
        return self._measurements(*self._truth())

    def _truth(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (np.stack([d.qpos for d in self.datas]), np.stack([d.qvel for d in self.datas]),
                np.stack([d.sensordata for d in self.datas]))  # fmt: skip

    # ----------------------------------------------------------------- observations
    def _observation_terms(self) -> dict[str, torch.Tensor]:
        """What the stand-in's sensors report now (StandInRobot._measure's readings), as the runtime reads them."""
        qpos, qvel, sensordata = self._truth()
        noise, bias, rng, n, j = self.profile.noise, self.sensor_bias, self.noise_rng, self.num_envs, self.num_actions
        self.encoder_q = self.motors.encoder_angle(self.encoder_q, qpos[:, 7:])
        quaternion = np.stack([imu_quaternion(qpos[i, 3:7], bias.tilt[i], white(rng, noise.orientation, 3))
                               for i in range(n)])  # fmt: skip
        q = self.encoder_q + bias.q + white(rng, noise.joint_pos, n * j).reshape(n, j)
        dq = qvel[:, 6:] + white(rng, noise.joint_vel, n * j).reshape(n, j)
        gyro = sensordata[:, self.sensors["gyro"]] + bias.gyro + white(rng, noise.gyro, n * 3).reshape(n, 3)
        return self.obs_builder.terms(quaternion, gyro, self.commands, q, dq, self.actions)

    # ----------------------------------------------------------------- resets
    def _reset_rows(self, rows: torch.Tensor) -> None:
        idx = rows.cpu().numpy()
        for i, state in zip(idx, self._start_states(len(idx))):
            model, data = self.models[i], self.datas[i]
            mujoco.mj_resetData(model, data)
            mujoco.mj_setState(model, data, state, STATE_SPEC)
            data.qpos[2] += ground_top(model) if self.profile.ground.has_terrain else 0.0
            mujoco.mj_forward(model, data)
            self.encoder_q[i] = data.qpos[7:]  # backlash: the dead zone starts centred
        mask = np.zeros(self.num_envs, bool)
        mask[idx] = True
        for sent in self.sent:  # the board forgets what was queued
            sent.waiting &= ~mask
        self.last_due[mask] = -np.inf
        assign_rows(self.active, self.hold, mask)
        self._reset_task(rows)

    def _push(self, idx: np.ndarray, velocity_xy: np.ndarray) -> None:
        for i, v in zip(idx, velocity_xy):
            self.datas[i].qvel[:2] += v

    def close(self) -> None:
        pass
