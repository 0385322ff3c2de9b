"""Typed configuration of the simulated Go1 task (loaded from the `env:` section of a training preset)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from robot_spec.mjcf import PhysicsOptions
from sim_pretrain.rewards import RewardConfig


@dataclass
class CommandConfig:
    lin_vel_x: list[float] = field(default_factory=lambda: [-1.0, 1.0])
    lin_vel_y: list[float] = field(default_factory=lambda: [-0.5, 0.5])
    yaw_rate: list[float] = field(default_factory=lambda: [-1.0, 1.0])
    resample_s: float = 10.0  # commands change at episode start and every this many seconds
    zero_probability: float = 0.1  # share of commands that ask the robot to stand


@dataclass
class RandomizationConfig:
    """Ranges are sampled uniformly per environment at every reset."""

    friction: list[float] = field(default_factory=lambda: [0.5, 1.25])
    added_mass: list[float] = field(default_factory=lambda: [-1.0, 2.0])  # kg on the trunk
    motor_strength: list[float] = field(default_factory=lambda: [0.9, 1.1])  # scales torque limit and gains
    kp_factor: list[float] = field(default_factory=lambda: [0.9, 1.1])  # PD gain realisation error
    kd_factor: list[float] = field(default_factory=lambda: [0.9, 1.1])
    latency_substeps: list[int] = field(default_factory=lambda: [0, 2])  # old target held this many sim steps
    push_interval_s: float = 8.0
    push_velocity: float = 0.5  # m/s, added to the trunk's horizontal velocity
    init_joint_noise: float = 0.1  # rad around the default pose at reset
    # The trunk's centre of mass moved up to this far (m) along each axis: a payload off-centre, a battery or
    # cable harness; applies around a profile's figures too (no log identifies it). 0: off.
    com_displacement: float = 0.0
    # Encoder backlash: each env's dead zone drawn up to this width (rad). The reading, and the PD through it,
    # stays put until the joint has moved half the width past it (as the stand-in's motors do); a Go1's
    # gearboxes have some, and a policy that never met it can fall over 0.02 rad of it. 0: off.
    backlash: float = 0.0
    # Each joint's motor its own strength (torque limit and realised gains): a factor drawn per env and joint in
    # 1 ± this, on top of motor_strength. Worn or hot motors differ joint by joint; the calibration fits one
    # strength for all, and a policy fine-tuned on even motors fell over a weak leg the sim policy walked on. 0: off.
    joint_strength: float = 0.0
    # Share of environments (drawn at each reset) on the accurate contact model (robot_spec.mjcf.ACCURATE_CONTACT:
    # elliptic cones, a converged solver, legs that touch the ground) instead of the physics options' fast one. No log
    # tells the contact model apart: on a real foot it is neither. A policy fine-tuned on the fast model alone fell
    # standing on a robot with elliptic contacts the sim policy stood on; one fine-tuned with elliptic cones at the
    # fast solver's iterations froze for whole turns on the accurate model (docs/reality_gap.md). 0: off.
    accurate_contact_share: float = 0.0

    def __post_init__(self) -> None:
        if not (self.com_displacement >= 0 and self.backlash >= 0 and 0 <= self.joint_strength < 1
                and 0 <= self.accurate_contact_share <= 1):  # fmt: skip
            raise ValueError(f"randomization: com_displacement {self.com_displacement} and backlash {self.backlash} "
                             f"must be >= 0, joint_strength {self.joint_strength} in [0, 1), accurate_contact_share "
                             f"{self.accurate_contact_share} in [0, 1] (0: off)")


@dataclass
class NoiseConfig:
    """Observation noise (std, in raw units, before scaling) per term."""

    enabled: bool = True
    projected_gravity: float = 0.05
    gyro: float = 0.2
    joint_pos: float = 0.01
    joint_vel: float = 1.5


@dataclass
class TerminationConfig:
    max_roll_pitch: float = 1.0  # rad
    trunk_contact_force: float = 1.0  # N on the trunk: it touched the ground
    min_base_height: float = 0.15
    # An episode's first action further than this from zero on any joint (policy action units) ends it, as
    # deploy's action_rate monitor (configs/safety/: max_action_delta) ends the robot's first policy step after the
    # soft start, whose last action is zero. Fine-tuning for a robot sets it (train.within_action_limit): policies
    # trained without it learned a first step past the limit from the robot's crouched starts. Later steps pay the
    # rewards' action_jump instead: exploration noise alone (std ~0.7) crosses the limit on some joint every ~30
    # steps, too often to end episodes on. 0: off.
    max_first_action: float = 0.0

    def __post_init__(self) -> None:
        if not self.max_first_action >= 0:
            raise ValueError(f"termination.max_first_action {self.max_first_action}: expected >= 0 (0: off)")


DYNAMICS_FIGURES = ("friction", "added_mass", "motor_strength", "kp_factor", "kd_factor", "latency_s",
                    "joint_frictionloss_factor")  # the last only drawn when given a range (else the profile's)


@dataclass
class DynamicsConfig:
    """Centre the simulator on one robot's dynamics — a reality-gap profile: the stand-in's own (the oracle) or one
    calibrated from the robot's logs — instead of the nominal model. Randomisation then spreads narrowly around the
    profile's figures (the ranges in RandomizationConfig are not used), and each episode draws sensor biases with
    the profile's spread, as a robot does at each start."""

    profile: str = ""  # configs/reality_gap/ name or a .yaml path; "" = the nominal training model
    physics: str = "profile"  # "profile": its solver, contact model and time step; "training": the fast ones
    spread: float = 0.1  # relative half-width around friction, motor strength, Kp and Kd factors
    added_mass_spread: float = 0.5  # kg either side
    latency_spread_s: float = 0.002  # either side
    sensor_bias: bool = True
    # Explicit intervals for some figures instead of the spreads around the profile's: what the logs bound but do
    # not pin down (a calibration's plausible range). Keys: DYNAMICS_FIGURES, values [low, high] (latency in s).
    ranges: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.physics not in ("profile", "training"):
            raise ValueError(f"dynamics.physics: expected 'profile' or 'training', got {self.physics!r}")
        if not all(0 <= v < 1e3 for v in (self.spread, self.added_mass_spread, self.latency_spread_s)):
            raise ValueError("dynamics: spreads must be finite and >= 0")
        if not self.spread < 1:
            raise ValueError(f"dynamics.spread {self.spread}: a relative spread must stay below 1 (figures stay > 0)")
        for name, interval in self.ranges.items():
            if name not in DYNAMICS_FIGURES:
                raise ValueError(f"dynamics.ranges: unknown figure {name!r} "
                                 f"(expected one of {', '.join(DYNAMICS_FIGURES)})")
            if not (len(interval) == 2 and all(math.isfinite(v) for v in interval) and interval[0] <= interval[1]
                    and (name == "added_mass" or interval[0] >= 0)):  # fmt: skip
                raise ValueError(f"dynamics.ranges.{name} {interval}: expected [low, high], low <= high "
                                 "(>= 0 but mass)")


@dataclass
class InitialStatesConfig:
    """Where episodes begin besides the default pose. On the robot the policy takes over wherever deploy's soft start
    left the robot: on a weak, heavy or sticky one a crouch far from the default pose (strong: rear calves 0.6 rad
    off, nose up 0.2 rad), which a simulator that starts every episode at the default pose never trains or tests.
    `file`: the robot's own policy-start states (.npz with `q` and `roll_pitch`, see real_robot.start_states)."""

    file: str = ""  # "" = every episode at the default pose
    share: float = 0.5  # of resets that start from one of the file's states (+ init_joint_noise), the rest at home

    def __post_init__(self) -> None:
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"initial_states.share {self.share}: expected a share in [0, 1]")


@dataclass
class TerrainConfig:
    """Uneven ground (robot_spec.terrain): tiles of random height up to `step_height` on hills of grade up to
    `slope`, one field for all environments, each environment at reset on a random spot of it with its own share
    in [0, 1] of the roughness (some flat, some the full height). No log identifies the floor a robot will meet,
    so fine-tuning randomises it: a policy trained on a flat floor stumbles over a 2 cm step."""

    step_height: float = 0.0  # m; 0 with slope 0: the flat floor plane alone
    slope: float = 0.0  # steepest grade of the hills (rise/run)
    tile_size: float = 0.4  # m
    size: float = 14.0  # m, the side of the square field (flat floor beyond)
    spawn_radius: float = 3.0  # m, resets land within this distance of the field's centre on each axis

    def __post_init__(self) -> None:
        if not (self.step_height >= 0 and self.slope >= 0 and self.tile_size > 0 and self.size > 0
                and 0 <= self.spawn_radius < self.size / 2):  # fmt: skip
            raise ValueError("terrain: step_height, slope >= 0, tile_size, size > 0, spawn_radius in [0, size/2)")

    @property
    def enabled(self) -> bool:
        return self.step_height > 0 or self.slope > 0


@dataclass
class StandUpConfig:
    """Episodes that begin where deploy's soft start hands the robot to the policy: lying down, the PD targets
    ramped to the default pose over `ramp_s`, then held `hold_s` (deploy's runtime.yaml: soft_start_s, stand_s),
    simulated at reset under the episode's dynamics and ground. A real robot ends that stand in a crouch of its
    own (on the stand-ins: calves 0.2-0.6 rad short of the default pose, nose up 0.1-0.25 rad), and a policy that
    only ever started from the default pose can fall in its first seconds from there."""

    share: float = 0.0  # of resets; 0: none (the default pose, or initial_states)
    ramp_s: float = 3.0
    hold_s: float = 1.0

    def __post_init__(self) -> None:
        if not (0.0 <= self.share <= 1.0 and self.ramp_s >= 0 and self.hold_s >= 0 and self.ramp_s + self.hold_s > 0):
            raise ValueError("stand_up: share in [0, 1], ramp_s and hold_s >= 0 with a positive sum expected")


@dataclass
class EnvConfig:
    robot: str = "go1"
    backend: str = "mujoco"  # simulator (sim_pretrain.backends.BACKENDS)
    num_envs: int = 512
    episode_length_s: float = 20.0
    num_threads: int = 2  # physics threads (mujoco.rollout)
    physics: PhysicsOptions = field(default_factory=PhysicsOptions)
    commands: CommandConfig = field(default_factory=CommandConfig)
    rewards: RewardConfig = field(default_factory=RewardConfig)
    randomization: RandomizationConfig = field(default_factory=RandomizationConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    termination: TerminationConfig = field(default_factory=TerminationConfig)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    initial_states: InitialStatesConfig = field(default_factory=InitialStatesConfig)
    terrain: TerrainConfig = field(default_factory=TerrainConfig)
    stand_up: StandUpConfig = field(default_factory=StandUpConfig)
    seed: int = 0
