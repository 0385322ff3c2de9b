"""Reality-gap profiles: how a robot's dynamics and sensors differ from the training simulator's nominal model.

Loaded from configs/reality_gap/<name>.yaml (or a path to a profile file): `none` (the training simulator's
nominal dynamics), `mild`, `strong` (the default for experiments) and `unmodelled` (mild plus effects the
training simulator has no parameter for). Factors multiply the robot spec's figures; offsets add to them. The
schema lives here, below both simulators, so that the stand-in robot (real_robot) and the training simulator
(sim_pretrain) read the same profile the same way.

The groups `motors`, `payload`, `ground` and `foot_force` are effects only the stand-in robot realises (the
training simulator ignores them): a fine-tuning method cannot close this part of the gap by fitting the
training model's parameters. Each is off by default. `random_profile(seed)` draws a profile from RANDOM_RANGES
for unseen reality-gap cases; `write_profile` saves one for `real_robot sim-robot --profile path.yaml`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import mujoco
import numpy as np
import yaml

from robot_spec.config import ConfigError, from_dict, named_config, read_yaml, to_dict
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


def _check(group: str, bad: list[str]) -> None:
    if bad:
        raise ConfigError(f"reality-gap {group}: out of range: {', '.join(bad)}")


@dataclass(frozen=True)
class MotorEffects:
    """The motors and their command path beyond one strength factor and a fixed delay."""

    # Per-joint strength, times motor_strength: 12 factors (simulator order) or one per joint kind (hip, thigh,
    # calf); () for none. Scales that joint's gains, feed-forward torque and torque limit.
    strength_per_joint: tuple[float, ...] = ()
    # The DC motor's torque-speed line (the form of Isaac Lab's DCMotor): the torque a joint can apply in its
    # direction of motion falls linearly from the stall torque (the spec's torque limit x strength) at rest to 0
    # at the no-load speed (the spec's velocity limit x no_load_speed_factor); braking torque keeps the full limit.
    torque_speed: bool = False
    no_load_speed_factor: float = 1.0
    # Encoder backlash: the measured (and PD-controlled) joint angle stays put until the true angle has moved
    # this far (rad, the dead zone's full width) from it, then follows at the zone's edge.
    backlash: float = 0.0
    # Extra delay of each command, uniform in [0, latency_jitter_s], on top of actuator_latency_s; seeded;
    # commands still act in the order they arrived (one delayed command holds back the ones behind it).
    latency_jitter_s: float = 0.0

    def __post_init__(self) -> None:
        bad = [n for n in ("backlash", "latency_jitter_s") if not getattr(self, n) >= 0]
        bad += ["no_load_speed_factor"] if not self.no_load_speed_factor > 0 else []
        bad += ["strength_per_joint"] if not all(f > 0 for f in self.strength_per_joint) else []
        _check("motors", bad)


@dataclass(frozen=True)
class Payload:
    """A box strapped to the trunk (a welded body with its own inertia), and the trunk's own CoM error."""

    mass: float = 0.0  # kg; 0: no payload
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)  # m, the box's centre in the trunk frame
    size: tuple[float, float, float] = (0.2, 0.12, 0.06)  # m, full side lengths (its inertia is a solid box's)
    trunk_com_offset: tuple[float, float, float] = (0.0, 0.0, 0.0)  # m, added to the trunk's centre of mass

    def __post_init__(self) -> None:
        bad = [] if self.mass >= 0 else ["mass"]
        bad += [] if len(self.size) == 3 and all(s > 0 for s in self.size) else ["size"]
        bad += [n for n in ("offset", "trunk_com_offset") if len(getattr(self, n)) != 3]
        _check("payload", bad)

    def inertia(self) -> np.ndarray:
        """Principal inertia of a solid box (kg m^2)."""
        x, y, z = np.square(self.size)
        return self.mass / 12 * np.array([y + z, x + z, x + y])


@dataclass(frozen=True)
class Ground:
    """The floor's softness and shape (the training floor is a rigid flat plane)."""

    # MuJoCo contact softness (solref: time constant s, damping ratio; solimp: 5 numbers); () for MuJoCo's
    # defaults. Every contact in the model is robot-ground, so the values go onto every geom (MuJoCo mixes a
    # contact's two geoms' values).
    solref: tuple[float, ...] = ()
    solimp: tuple[float, ...] = ()
    # Terrain: a heightfield drawn from the stand-in's seed (the same robot, the same floor, over every reset):
    # square tiles of uniform random height in [0, step_height] (low steps) on gentle hills whose steepest
    # grade is `slope` (rise/run). Both 0: flat.
    step_height: float = 0.0  # m
    tile_size: float = 0.4  # m
    slope: float = 0.0
    terrain_size: float = 10.0  # m, the side of the square terrain centred on the start point (flat floor beyond)

    def __post_init__(self) -> None:
        bad = [] if len(self.solref) in (0, 2) else ["solref (2 numbers)"]
        bad += [] if len(self.solimp) in (0, 5) else ["solimp (5 numbers)"]
        bad += [n for n in ("step_height", "slope") if not getattr(self, n) >= 0]
        bad += [n for n in ("tile_size", "terrain_size") if not getattr(self, n) > 0]
        _check("ground", bad)

    @property
    def has_terrain(self) -> bool:
        return self.step_height > 0 or self.slope > 0


@dataclass(frozen=True)
class FootForceNoise:
    """The foot force sensors (Go1's are notoriously unreliable): white noise and dropped readings."""

    std: float = 0.0  # N, white noise on each reading
    dropout: float = 0.0  # probability that a reading is 0 (each foot, each tick)

    def __post_init__(self) -> None:
        _check("foot_force", [] if self.std >= 0 and 0 <= self.dropout <= 1 else ["std or dropout"])


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
    # Effects the training simulator does not model (the stand-in robot only; all off by default).
    motors: MotorEffects = field(default_factory=MotorEffects)
    payload: Payload = field(default_factory=Payload)
    ground: Ground = field(default_factory=Ground)
    foot_force: FootForceNoise = field(default_factory=FootForceNoise)

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


def joint_strength(profile: RealityGapProfile, spec: RobotSpec) -> np.ndarray:
    """Each joint's motor strength: motor_strength times the per-joint (or per-kind) factors."""
    factors = profile.motors.strength_per_joint
    if not factors:
        return np.full(spec.num_joints, profile.motor_strength)
    if len(factors) == len(spec.joints_per_leg):
        return profile.motor_strength * spec.per_joint(list(factors))
    if len(factors) == spec.num_joints:
        return profile.motor_strength * np.array(factors)
    raise ConfigError(f"reality-gap profile '{profile.name}': motors.strength_per_joint has {len(factors)} factors; "
                      f"expected {spec.num_joints} (one per joint) or {len(spec.joints_per_leg)} (hip, thigh, calf)")


# ---------------------------------------------------------------------------------------- random profiles
# Ranges of random_profile (uniform; "on" effects are each present with probability ON_PROBABILITY). The
# existing fields span a little beyond the training randomisation (see strong.yaml); the new effects span from
# off to about twice what `unmodelled` has, terrain from flat to 2 cm steps and 4 % slopes (`unmodelled` has none:
# a policy trained on flat ground falls on it, see unmodelled.yaml). Contact model: strong's.
ON_PROBABILITY = 0.6
RANDOM_RANGES: dict[str, tuple[float, float]] = {
    "friction": (0.5, 1.1),
    "added_mass": (0.0, 2.0),
    "motor_strength": (0.8, 1.05),
    "kp_factor": (0.85, 1.1),
    "kd_factor": (0.8, 1.5),
    "actuator_latency_s": (0.0, 0.012),
    "joint_frictionloss_factor": (0.5, 3.0),
    "joint_damping_factor": (0.7, 2.0),
    "sensor_scale": (0.0, 1.5),  # times strong's noise and bias
    "strength_per_joint": (0.8, 1.05),  # each of 12
    "no_load_speed_factor": (0.8, 1.2),  # with torque_speed on
    "backlash": (0.0, 0.03),
    "latency_jitter_s": (0.0, 0.008),
    "payload_mass": (0.0, 2.0),
    "payload_offset_x": (-0.1, 0.1),
    "payload_offset_y": (-0.04, 0.04),
    "payload_offset_z": (0.03, 0.1),
    "trunk_com_offset": (-0.02, 0.02),  # each axis
    "solref_timeconst": (0.02, 0.06),  # s (MuJoCo's default 0.02 is rigid)
    "step_height": (0.0, 0.02),
    "slope": (0.0, 0.04),
    "foot_force_std": (0.0, 15.0),
    "foot_force_dropout": (0.0, 0.1),
}


def random_profile(seed: int) -> RealityGapProfile:
    """A reality-gap profile drawn from RANDOM_RANGES with `seed` (named random_<seed>): an unseen robot."""
    rng = np.random.default_rng([seed, 16])

    def draw(key: str, size: int | None = None):
        values = rng.uniform(*RANDOM_RANGES[key], size)
        return tuple(round(float(v), 4) for v in values) if size else round(float(values), 4)

    def coin() -> bool:
        return bool(rng.random() < ON_PROBABILITY)

    def maybe(key: str) -> float:
        value = draw(key)  # drawn either way: each figure's draw does not depend on the others' coins
        return value if coin() else 0.0

    strong = load_reality_gap("strong")
    scale = draw("sensor_scale")
    strength, torque_speed, no_load = draw("strength_per_joint", 12), coin(), draw("no_load_speed_factor")
    motors = MotorEffects(strength_per_joint=strength if coin() else (), torque_speed=torque_speed,
                          no_load_speed_factor=no_load if torque_speed else 1.0, backlash=maybe("backlash"),
                          latency_jitter_s=maybe("latency_jitter_s"))  # fmt: skip
    offset = (draw("payload_offset_x"), draw("payload_offset_y"), draw("payload_offset_z"))
    payload = Payload(mass=maybe("payload_mass"), offset=offset, trunk_com_offset=draw("trunk_com_offset", 3))
    timeconst = maybe("solref_timeconst")
    ground = Ground(solref=(timeconst, 1.0) if timeconst else (), step_height=maybe("step_height"),
                    slope=maybe("slope"))  # fmt: skip
    foot_force = FootForceNoise(std=maybe("foot_force_std"), dropout=maybe("foot_force_dropout"))
    body = ("friction", "added_mass", "motor_strength", "kp_factor", "kd_factor", "actuator_latency_s",
            "joint_frictionloss_factor", "joint_damping_factor")  # fmt: skip
    return RealityGapProfile(
        name=f"random_{seed}",
        description=f"random reality gap drawn by robot_spec.reality_gap.random_profile({seed})",
        physics_dt=strong.physics_dt, physics=strong.physics, **{k: draw(k) for k in body},
        noise=_scaled(strong.noise, scale), bias=_scaled(strong.bias, scale),
        motors=motors, payload=payload, ground=ground, foot_force=foot_force,
    )  # fmt: skip


def _scaled(noise: SensorNoise, scale: float) -> SensorNoise:
    return SensorNoise(**{f.name: round(getattr(noise, f.name) * scale, 4) for f in dataclasses.fields(noise)})


def write_profile(profile: RealityGapProfile, path: str | Path) -> Path:
    """Save `profile` as YAML that load_reality_gap(path) reads back (the file is named after the profile)."""
    path = Path(path)
    if path.suffix != ".yaml" or path.stem != profile.name:
        raise ConfigError(f"{path}: a profile file is named <profile name>.yaml ({profile.name}.yaml)")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(profile), sort_keys=False))
    return path


def main(argv: list[str] | None = None) -> int:
    """`real_robot random-profile --seed S [--out DIR]`: write random_<S>.yaml for `sim-robot --profile`."""
    import argparse
    import sys

    about = "Draw a random reality-gap profile (RANDOM_RANGES in robot_spec/reality_gap.py), write random_<seed>.yaml."
    p = argparse.ArgumentParser(prog="real_robot random-profile", description=about)
    p.add_argument("--seed", type=int, required=True, help="which random profile (the same seed, the same profile)")
    p.add_argument("--out", type=Path, default=Path("."), help="folder to write it into (default: here)")
    args = p.parse_args(argv)
    profile = random_profile(args.seed)
    try:
        path = write_profile(profile, args.out / f"{profile.name}.yaml")
    except OSError as err:
        print(f"random-profile: cannot write into {args.out}: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0
