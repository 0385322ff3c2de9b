"""What every package shares about the robot: its specification, observation layout and MuJoCo model.

The names below load on first use: the stand-in robot and the SDK bridge are separate processes that need the spec
but not torch (which the observation and policy modules import), and every stand-in start pays for each import.
"""

from importlib import import_module

_HOMES = {
    "ConfigError": "robot_spec.config",
    "load_config": "robot_spec.config",
    "save_config": "robot_spec.config",
    "ObservationHistory": "robot_spec.observation",
    "ObservationLayout": "robot_spec.observation_layout",
    "projected_gravity": "robot_spec.observation",
    "ActionMap": "robot_spec.policy_map",
    "ObservationBuilder": "robot_spec.policy_map",
    "PolicyMismatchError": "robot_spec.spec",
    "RobotSpec": "robot_spec.spec",
    "check_policy_contract": "robot_spec.spec",
    "load_robot": "robot_spec.spec",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'robot_spec' has no attribute {name!r}")
    return getattr(import_module(_HOMES[name]), name)
