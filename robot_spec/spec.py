"""The robot specification: joints, pose, gains, limits, control rates and the observation layout.

Loaded by name from robots/<name>.yaml in the config folders (configs/, and $GO1_SIM2REAL_CONFIGS first).
Simulation, deployment, safety and learning all read the robot from here, and every exported policy carries
`policy_contract()` so it can never run with a layout it was not trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from robot_spec.config import ConfigError, from_dict, named_config, read_yaml
from robot_spec.observation_layout import ObservationLayout

LYING_THIGH_OFFSET = 0.4  # rad further back than the default pose ...
LYING_CALF_MARGIN = 0.1  # ... and calves folded to this far from their stop: a Go1 lying down


@dataclass(frozen=True)
class ControlSpec:
    policy_hz: int
    sim_dt: float
    decimation: int
    kp: float
    kd: float
    action_scale: float
    action_clip: float

    @property
    def policy_dt(self) -> float:
        return 1.0 / self.policy_hz


@dataclass(frozen=True)
class LimitSpec:
    """Per joint kind (hip, thigh, calf); `RobotSpec` tiles them over the legs."""

    position_lower: list[float]
    position_upper: list[float]
    sdk_position_lower: list[float]
    sdk_position_upper: list[float]
    torque: list[float]
    velocity: list[float]
    target_margin: float = 0.0  # rad: PD targets stay this far inside the joint range (robot_spec.policy_map)


@dataclass(frozen=True)
class LinkSpec:
    mass: float
    com: list[float]
    inertia: list[float]


@dataclass(frozen=True)
class TrunkSpec(LinkSpec):
    box_half_extents: list[float] = field(default_factory=lambda: [0.125, 0.04, 0.057])


@dataclass(frozen=True)
class BodySpec:
    trunk: TrunkSpec
    hip_offset: list[float]
    thigh_offset: list[float]
    calf_offset: list[float]
    foot_offset: list[float]
    foot_radius: float
    hip: LinkSpec
    thigh: LinkSpec
    calf: LinkSpec
    joint_damping: float
    armature: list[float]
    joint_frictionloss: float
    foot_friction: float

    @property
    def total_mass(self) -> float:
        return self.trunk.mass + 4 * (self.hip.mass + self.thigh.mass + self.calf.mass)


@dataclass(frozen=True)
class RobotSpec:
    name: str
    legs: list[str]
    joints_per_leg: list[str]
    sdk_index: list[int]
    sdk_num_motors: int
    default_joint_pos: list[float]
    standing_height: float
    spawn_height: float
    control: ControlSpec
    limits: LimitSpec
    observation: ObservationLayout
    body: BodySpec

    def __post_init__(self) -> None:
        n = self.num_joints
        if len(self.default_joint_pos) != n:
            raise ValueError(f"robot {self.name}: default_joint_pos has {len(self.default_joint_pos)} values, need {n}")
        if sorted(self.sdk_index) != list(range(n)):
            raise ValueError(f"robot {self.name}: sdk_index must be a permutation of 0..{n - 1}")

    @property
    def num_joints(self) -> int:
        return len(self.legs) * len(self.joints_per_leg)

    @cached_property
    def joint_names(self) -> list[str]:
        return [f"{leg}_{kind}_joint" for leg in self.legs for kind in self.joints_per_leg]

    @cached_property
    def foot_names(self) -> list[str]:
        return [f"{leg}_foot" for leg in self.legs]

    def per_joint(self, per_kind: list[float]) -> np.ndarray:
        """Tile a (hip, thigh, calf) triple over the legs, in simulator joint order."""
        return np.tile(np.asarray(per_kind, dtype=np.float64), len(self.legs))

    @cached_property
    def default_pose(self) -> np.ndarray:
        return np.asarray(self.default_joint_pos, dtype=np.float64)

    @cached_property
    def lying_pose(self) -> np.ndarray:
        """A Go1 lying down: thighs further back than the default pose, calves folded near their stop (where the
        stand-in starts, and deploy's soft start stands it up from)."""
        per_leg = len(self.joints_per_leg)
        pose = self.default_pose.copy()
        pose[1::per_leg] += LYING_THIGH_OFFSET
        pose[2::per_leg] = self.position_lower[2::per_leg] + LYING_CALF_MARGIN
        return pose

    @cached_property
    def position_lower(self) -> np.ndarray:
        return self.per_joint(self.limits.position_lower)

    @cached_property
    def position_upper(self) -> np.ndarray:
        return self.per_joint(self.limits.position_upper)

    @cached_property
    def torque_limit(self) -> np.ndarray:
        return self.per_joint(self.limits.torque)

    @cached_property
    def velocity_limit(self) -> np.ndarray:
        return self.per_joint(self.limits.velocity)

    def to_sdk_order(self, sim_values: np.ndarray) -> np.ndarray:
        """Simulator order (FL, FR, RL, RR) → SDK motor order (FR, FL, RR, RL), first 12 slots."""
        out = np.empty_like(sim_values)
        out[..., self.sdk_index] = sim_values
        return out

    def from_sdk_order(self, sdk_values: np.ndarray) -> np.ndarray:
        return sdk_values[..., self.sdk_index]

    def policy_contract(self) -> dict:
        """What a policy depends on. Written into every exported policy and checked before it runs."""
        c = self.control
        return {
            "robot": self.name,
            "joint_names": list(self.joint_names),
            "default_joint_pos": [float(v) for v in self.default_joint_pos],
            "action_scale": c.action_scale,
            "policy_hz": c.policy_hz,
            "kp": c.kp,
            "kd": c.kd,
            "observation": self.observation.describe(),
        }


class PolicyMismatchError(ValueError):
    """An exported policy was trained for a different robot or observation layout."""


def check_policy_contract(policy_contract: dict, spec: RobotSpec, source: str = "policy") -> None:
    expected = spec.policy_contract()
    differences = [
        f"  {key}: policy has {policy_contract.get(key)!r}, robot spec has {value!r}"
        for key, value in expected.items()
        if policy_contract.get(key) != value
    ]
    if differences:
        raise PolicyMismatchError(
            f"{source} does not match robot spec '{spec.name}' and will not be run:\n" + "\n".join(differences)
        )


def load_robot(name: str) -> RobotSpec:
    """The robot called `name`: robots/<name>.yaml in the config folders (robot_spec.config.config_dirs), or a
    path to a spec file; unknown names list the known ones. Its MuJoCo model is built from the spec (mjcf.py)."""
    path = named_config("robots", name)
    spec = from_dict(RobotSpec, read_yaml(path), where=str(path))
    if spec.name != path.stem and not name.endswith((".yaml", ".yml")):
        raise ConfigError(f"{path}: names robot '{spec.name}', but is found by the name '{path.stem}'")
    return spec
