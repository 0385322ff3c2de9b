"""A quick log from a stand-in robot with a known profile, for tests/test_calibrate.py.

The stand-in (real_robot.sim_robot.StandInRobot, fast mode, no LCM) is driven in-process as the bridge drives it in
lockstep: each target answers the state of one tick and is commanded every tick of the next policy period. Only
the wire is skipped (packing and CRCs in Python cost more than the physics): commands enter the robot's latency
queue as its UDP receiver would put them there, and states are its LowState before encoding. After a soft start the targets are a trot-like open-loop gait around the default pose plus noise,
which excites the joints (gains, latency, joint friction) and moves the feet over the floor. Odometry is the
stand-in's ground truth, as it publishes it. Records follow real_robot.collect.record_schema.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from real_robot import unitree_wire as wire
from real_robot.collect import record_schema
from real_robot.datalog import LogWriter
from real_robot.sim_robot import MotorLaw, StandInRobot, lying_pose, rotate_into_body
from robot_spec.reality_gap import RealityGapProfile

TICKS_PER_STEP = 10  # 50 Hz policy on the 500 Hz board
SOFT_START_STEPS = 75
GAIT_HZ = 2.0


def gait_target(spec, step: int, rng: np.random.Generator, noise: float, amplitude: float) -> np.ndarray:
    """Diagonal leg pairs swing in antiphase: thigh forward and calf folded while a foot is up."""
    t = step / spec.control.policy_hz
    phase = 2 * np.pi * GAIT_HZ * t + np.array([0.0, np.pi, np.pi, 0.0])  # FR, FL, RR, RL
    lift = np.maximum(np.sin(phase), 0.0)
    offsets = np.zeros((4, 3))
    offsets[:, 0] = 0.1 * np.sin(2 * np.pi * 0.5 * t)  # hips sway sideways, slowly
    offsets[:, 1] = amplitude * 0.5 * np.cos(phase)  # thighs swing
    offsets[:, 2] = -amplitude * lift  # calves fold while swinging
    return spec.default_pose + offsets.reshape(-1) + rng.normal(0.0, noise, spec.num_joints)


class InProcessStandIn(StandInRobot):
    """The stand-in without its UDP wire: `command` is what the next ticks receive; `state` the last LowState."""

    command: wire.LowCmd | None = None
    state: wire.LowState | None = None

    def _receive_commands(self) -> None:
        if self.command is not None:  # as StandInRobot._receive_commands queues a received LowCmd
            self.stats.commands += 1
            due = self.robot_time + self.profile.actuator_latency_s
            self.pending.append((due, MotorLaw.from_low_cmd(self.command, self.spec, self.profile)))

    def _send_state(self) -> None:
        self.state = self._low_state()


class Driver:
    """The test's bridge + controller: one command per tick, one record per policy step."""

    def __init__(self, robot: InProcessStandIn):
        self.robot, self.spec = robot, robot.spec

    @property
    def state(self) -> wire.LowState:
        return self.robot.state

    def period(self, q_des: np.ndarray, kp: float, kd: float) -> None:
        cmd = wire.LowCmd()
        n = self.spec.num_joints
        cmd.mode[:n] = wire.SERVO_MODE
        cmd.q[:n], cmd.dq[:n] = self.spec.to_sdk_order(q_des), 0.0
        cmd.kp[:n], cmd.kd[:n] = kp, kd
        self.robot.command = cmd
        for _ in range(TICKS_PER_STEP):
            self.robot.step()

    def record(self, step: int, phase: int, q_des: np.ndarray, kp: float, kd: float) -> dict:
        s, d, spec, n = self.state, self.robot.data, self.spec, self.spec.num_joints
        from_sdk = lambda values: spec.from_sdk_order(np.asarray(values)[:n])  # noqa: E731
        return {
            "timestamp_us": np.int64(s.tick), "robot_tick_us": np.int64(s.tick), "step": np.int32(step),
            "phase": np.uint8(phase), "q": from_sdk(s.q), "dq": from_sdk(s.dq), "tau_est": from_sdk(s.tau_est),
            "quaternion": s.quaternion, "rpy": s.rpy, "gyro": s.gyroscope, "accelerometer": s.accelerometer,
            "foot_force": np.asarray(s.foot_force), "odom_position": d.qpos[0:3].copy(),
            "odom_quaternion": d.qpos[3:7].copy(), "odom_lin_vel": rotate_into_body(d.qpos[3:7], d.qvel[0:3]),
            "odom_ang_vel": d.qvel[3:6].copy(), "command": np.zeros(3), "obs": np.zeros(spec.observation.dim),
            "action": np.zeros(n), "q_des": q_des, "kp": np.full(n, kp), "kd": np.full(n, kd),
            "tripped": np.uint8(0),
        }  # fmt: skip


def write_gait_log(folder: Path, profile: RealityGapProfile, policy_steps: int, seed: int = 0,
                   noise: float = 0.05, amplitude: float = 0.5, episode_steps: int = 500) -> None:  # fmt: skip
    """`policy_steps` policy-phase records in episodes of `episode_steps`, each after a soft start."""
    rng = np.random.default_rng(seed)
    with InProcessStandIn(profile, port=0, fast=True, seed=seed, lcm_url=None) as robot:
        spec, driver = robot.spec, Driver(robot)
        kp, kd = spec.control.kp, spec.control.kd
        with LogWriter(folder, record_schema(spec), {"stand_in_profile": profile.name}) as log:
            done, episode = 0, 0
            while done < policy_steps:
                robot.reset(seed=episode + 1)
                driver.period(lying_pose(spec), 0.0, 0.0)  # the reset lands; motors still off
                log.start_episode({"episode": episode})
                start = driver.state and spec.from_sdk_order(np.asarray(driver.state.q)[: spec.num_joints])
                for k in range(SOFT_START_STEPS + min(episode_steps, policy_steps - done)):
                    if k < SOFT_START_STEPS:
                        phase, alpha = 0, min(1.0, k / (SOFT_START_STEPS - 15))
                        q_des = (1 - alpha) * start + alpha * spec.default_pose
                    else:
                        phase, q_des = 1, gait_target(spec, k, rng, noise, amplitude)
                    log.append(driver.record(k, phase, q_des, kp, kd))
                    driver.period(q_des, kp, kd)
                done += min(episode_steps, policy_steps - done)
                log.end_episode("timeout", "generated episode over")
                episode += 1
