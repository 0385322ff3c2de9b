"""What every package shares about the robot: its specification, observation layout and MuJoCo model."""

from robot_spec.config import ConfigError, load_config, save_config
from robot_spec.observation import ObservationHistory, ObservationLayout, projected_gravity
from robot_spec.policy_map import ActionMap, ObservationBuilder
from robot_spec.spec import PolicyMismatchError, RobotSpec, check_policy_contract, load_robot

__all__ = [
    "ActionMap",
    "ConfigError",
    "ObservationBuilder",
    "ObservationHistory",
    "ObservationLayout",
    "PolicyMismatchError",
    "RobotSpec",
    "check_policy_contract",
    "load_config",
    "load_robot",
    "projected_gravity",
    "save_config",
]
