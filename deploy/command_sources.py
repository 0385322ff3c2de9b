"""The command source `deploy run --commands` names: remote, keyboard, schedule or ROS 2 (its own module, since
deploy.ros2 builds on deploy.commands)."""

from __future__ import annotations

from deploy.commands import (
    CommandSource,
    KeyboardCommand,
    RemoteCommand,
    RemoteConfig,
    ScheduledCommand,
    SpeedPreset,
    load_schedule,
)


def make_command_source(spec: str, preset: SpeedPreset, remote: RemoteConfig, keyboard_step_fraction: float = 0.1
                        ) -> CommandSource:  # fmt: skip
    """`remote`, `keyboard`, `schedule:<file or name>` or `ros2[:<topic>]` (geometry_msgs/Twist, deploy.ros2)."""
    if spec == "remote":
        return RemoteCommand(preset, remote)
    if spec == "keyboard":
        return KeyboardCommand(preset, keyboard_step_fraction)
    if spec.startswith("schedule:"):
        return ScheduledCommand(load_schedule(spec.split(":", 1)[1], preset))
    if spec == "ros2" or spec.startswith("ros2:"):
        from deploy.ros2 import DEFAULT_TOPIC, Ros2Command

        return Ros2Command(preset, remote, spec.split(":", 1)[1] if ":" in spec else DEFAULT_TOPIC)
    raise ValueError(f"unknown command source {spec!r}; use remote, keyboard, schedule:<file> or ros2[:<topic>]")

