"""Reality-gap profiles: how the stand-in robot's dynamics and sensors differ from the training simulator.

Loaded from configs/reality_gap/<name>.yaml: `none` (the training simulator's nominal dynamics), `mild`, and
`strong` (the default for experiments). Factors multiply the robot spec's figures; offsets add to them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from robot_spec.config import ConfigError, from_dict, named_config, read_yaml
from robot_spec.mjcf import PhysicsOptions

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
    """Profile `name` from configs/reality_gap/; an unknown name is a ConfigError listing the known ones."""
    path = named_config("reality_gap", name)
    profile = from_dict(RealityGapProfile, read_yaml(path), where=str(path))
    if profile.name != name:
        raise ConfigError(f"{path}: name is '{profile.name}', expected '{name}' (the file's stem)")
    return profile
