"""Reality-gap profiles: how a robot's dynamics and sensors differ from the training simulator's nominal model.

Loaded from configs/reality_gap/<name>.yaml (or a path to a profile file): `none` (the training simulator's
nominal dynamics), `mild`, and `strong` (the default for experiments). Factors multiply the robot spec's
figures; offsets add to them. The schema lives here, below both simulators, so that the stand-in robot
(real_robot) and the training simulator (sim_pretrain) read the same profile the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import mujoco

from robot_spec.config import ConfigError, from_dict, named_config, read_yaml
from robot_spec.mjcf import PhysicsOptions
from robot_spec.spec import RobotSpec

DEFAULT_PROFILE = "strong"


@dataclass(frozen=True)
class SensorNoise:
    """Standard deviations: white noise on every reading, or a bias drawn once per robot start (seeded)."""

    joint_pos: float = 0.0  # rad
    joint_vel: float = 0.0  # rad/s
    gyro: float = 0.0  # rad/s
    accelerometer: float = 0.0  # m/s^2
    orientation: float = 0.0  # rad, a small random rotation of the reported IMU attitude


@dataclass(frozen=True)
class RealityGapProfile:
    name: str
    description: str
    physics_dt: float  # s; must divide the board's 2 ms period (PD is recomputed every physics step)
    physics: PhysicsOptions  # contact and solver model (the training simulator's is the fast, coarse one)
    friction: float  # foot-ground friction coefficient (the training simulator samples around 1.0)
    added_mass: float  # kg on the trunk (payload)
    motor_strength: float  # scales every torque, and the torque limits
    kp_factor: float  # realised Kp / commanded Kp
    kd_factor: float  # realised Kd / commanded Kd
    actuator_latency_s: float  # a command acts this long after it arrives
    joint_frictionloss_factor: float  # scales the joints' dry friction
    joint_damping_factor: float  # scales the joints' viscous damping
    noise: SensorNoise = field(default_factory=SensorNoise)
    bias: SensorNoise = field(default_factory=SensorNoise)

    def __post_init__(self) -> None:
        positive = ("physics_dt", "friction", "motor_strength", "kp_factor", "kd_factor")
        non_negative = ("actuator_latency_s", "joint_frictionloss_factor", "joint_damping_factor")
        bad = [n for n in positive if not getattr(self, n) > 0] + [n for n in non_negative if not getattr(self, n) >= 0]
        if bad:
            raise ConfigError(f"reality-gap profile '{self.name}': out of range: {', '.join(bad)}")


def load_reality_gap(name: str) -> RealityGapProfile:
    """Profile `name` from configs/reality_gap/ (or a .yaml path); an unknown name is a ConfigError listing the
    known ones."""
    path = named_config("reality_gap", name)
    profile = from_dict(RealityGapProfile, read_yaml(path), where=str(path))
    if profile.name != path.stem:
        raise ConfigError(f"{path}: name is '{profile.name}', expected '{path.stem}' (the file's stem)")
    return profile


def apply_body_dynamics(model: mujoco.MjModel, spec: RobotSpec, profile: RealityGapProfile) -> None:
    """The profile's time step, foot friction, payload and joint friction/damping, written into `model` (built
    from `spec` with `profile.physics`). The motors are each simulator's own business."""
    model.opt.timestep = profile.physics_dt
    contact_geoms = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, n) for n in ["floor", *spec.foot_names]]
    model.geom_friction[contact_geoms, 0] = profile.friction
    trunk = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "trunk")
    model.body_mass[trunk] += profile.added_mass
    model.dof_frictionloss[6:] *= profile.joint_frictionloss_factor
    model.dof_damping[6:] *= profile.joint_damping_factor
