"""Where the velocity command (vx, vy, yaw rate) comes from: the operator's remote, a schedule, a keyboard or
ROS 2 (deploy.ros2).

Every source answers `command(t_s, remote)` with t_s the robot time since the policy phase began and
`remote` the newest remote-control sticks (or None); its answer always lies inside the speed preset
(configs/deploy/speed_<name>.yaml), whose `high` preset is the training command range.
"""

from __future__ import annotations

import os
import select
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TextIO

import numpy as np

from robot_spec.config import ConfigError, check_fields, check_number, load_config, named_config

AXES = ("vx", "vy", "yaw_rate")


@dataclass(frozen=True)
class SpeedPreset:
    lin_vel_x: list[float]  # [min, max] m/s
    lin_vel_y: list[float]  # [min, max] m/s
    yaw_rate: list[float]  # [min, max] rad/s

    def __post_init__(self) -> None:
        for name, (low, high) in zip(AXES, self.ranges()):
            for end, value in (("min", low), ("max", high)):
                check_number(f"speed preset: {name} {end}", value, -10.0, 10.0)
            if not low <= 0.0 <= high:
                raise ConfigError(f"speed preset: the {name} range [{low}, {high}] must contain 0 (standing still)")

    def ranges(self) -> list[list[float]]:
        return [self.lin_vel_x, self.lin_vel_y, self.yaw_rate]

    @property
    def low(self) -> np.ndarray:
        return np.array([r[0] for r in self.ranges()])

    @property
    def high(self) -> np.ndarray:
        return np.array([r[1] for r in self.ranges()])

    def clip(self, command: np.ndarray) -> np.ndarray:
        return np.clip(command, self.low, self.high)


def load_speed_preset(name: str) -> SpeedPreset:
    return load_config(SpeedPreset, named_config("deploy", f"speed_{name}"))


@dataclass
class RemoteSticks:
    """The operator remote's sticks in [-1, 1] and how long ago (s) they were received."""

    lx: float
    ly: float
    rx: float
    ry: float
    age_s: float


class CommandSource(Protocol):
    def command(self, t_s: float, remote: RemoteSticks | None) -> np.ndarray: ...


# ------------------------------------------------------------------------------------------------ remote
@dataclass(frozen=True)
class RemoteConfig:
    deadzone: float = 0.05  # stick travel ignored around the centre
    timeout_s: float = 0.5  # sticks older than this command a stop

    def __post_init__(self) -> None:
        check_fields(self, "deadzone", 0.0, 1.0)
        check_fields(self, "timeout_s", 0.0, 10.0, low_open=True)


class RemoteCommand:
    """Left stick: forward (up) and sideways (left); right stick: turn (left). Full travel = the preset's range end."""

    def __init__(self, preset: SpeedPreset, cfg: RemoteConfig):
        self.preset, self.cfg = preset, cfg

    def command(self, t_s: float, remote: RemoteSticks | None) -> np.ndarray:
        if remote is None or remote.age_s > self.cfg.timeout_s:
            return np.zeros(3)
        sticks = np.array([remote.ly, -remote.lx, -remote.rx])  # a stick pushed right: −y, −yaw on the body
        sticks = np.where(np.abs(sticks) < self.cfg.deadzone, 0.0, np.clip(sticks, -1.0, 1.0))
        scale = np.where(sticks >= 0, self.preset.high, -self.preset.low)
        return sticks * scale


# ------------------------------------------------------------------------------------------------ schedule
@dataclass(frozen=True)
class Segment:
    duration_s: float
    vx: float = 0.0
    vy: float = 0.0
    yaw_rate: float = 0.0

    def __post_init__(self) -> None:
        check_fields(self, "duration_s", 0.0, 1e6, low_open=True)
        check_fields(self, "vx vy yaw_rate")  # finite: a NaN passes every comparison with the speed preset

    @property
    def command(self) -> np.ndarray:
        return np.array([self.vx, self.vy, self.yaw_rate])


@dataclass(frozen=True)
class Schedule:
    segments: list[Segment]
    repeat: bool = False  # start over after the last segment; otherwise stand still

    def __post_init__(self) -> None:
        if not self.segments:
            raise ConfigError("command schedule: needs at least one segment")

    @property
    def duration_s(self) -> float:
        return sum(s.duration_s for s in self.segments)

    def check_within(self, preset: SpeedPreset, where: str) -> None:
        """A schedule asking for more than the preset allows is a mistake, not something to clip silently."""
        for i, segment in enumerate(self.segments):
            c = segment.command
            if np.any(c < preset.low - 1e-9) or np.any(c > preset.high + 1e-9):
                raise ConfigError(
                    f"{where}: segment {i} commands {dict(zip(AXES, c.tolist()))}, outside the speed preset "
                    f"{dict(zip(AXES, np.stack([preset.low, preset.high], 1).tolist()))}"
                )


def resolve_schedule_path(name_or_path: str) -> Path:
    """A file path, or the name of configs/deploy/schedule_<name>.yaml."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.suffix or "/" in name_or_path:
        raise ConfigError(f"command schedule file not found: {path}")
    return named_config("deploy", f"schedule_{name_or_path}")


def load_schedule(name_or_path: str, preset: SpeedPreset) -> Schedule:
    path = resolve_schedule_path(name_or_path)
    schedule = load_config(Schedule, path)
    schedule.check_within(preset, str(path))
    return schedule


class ScheduledCommand:
    def __init__(self, schedule: Schedule):
        self.schedule = schedule
        self.ends = np.cumsum([s.duration_s for s in schedule.segments])

    def command(self, t_s: float, remote: RemoteSticks | None = None) -> np.ndarray:
        total = self.ends[-1]
        if t_s >= total:
            if not self.schedule.repeat:
                return np.zeros(3)
            t_s = t_s % total
        index = int(np.searchsorted(self.ends, t_s, side="right"))
        return self.schedule.segments[min(index, len(self.ends) - 1)].command


# ------------------------------------------------------------------------------------------------ keyboard
@dataclass
class KeyboardCommand:
    """w/s: forward/back, a/d: left/right, q/e: turn left/right, space: stop. Needs stdin to be a terminal.

    Each press moves one axis by `step_fraction` of the preset's larger range end. Use as a context manager:
    the terminal is put in cbreak mode (keys arrive without Enter) and restored on exit.
    """

    preset: SpeedPreset
    step_fraction: float = 0.1
    stream: TextIO = field(default_factory=lambda: sys.stdin)
    keys = {"w": (0, 1.0), "s": (0, -1.0), "a": (1, 1.0), "d": (1, -1.0), "q": (2, 1.0), "e": (2, -1.0)}

    def __post_init__(self) -> None:
        if not self.stream.isatty():
            raise ValueError("keyboard commands need an interactive terminal, but stdin is not a TTY")
        self.current = np.zeros(3)
        self.step = self.step_fraction * np.maximum(self.preset.high, -self.preset.low)
        self._saved_mode = None

    def __enter__(self) -> KeyboardCommand:
        import termios
        import tty

        self._saved_mode = termios.tcgetattr(self.stream)
        tty.setcbreak(self.stream)
        return self

    def __exit__(self, *exc) -> None:
        import termios

        if self._saved_mode is not None:
            termios.tcsetattr(self.stream, termios.TCSADRAIN, self._saved_mode)

    def press(self, key: str) -> None:
        if key == " ":
            self.current[:] = 0.0
        elif key.lower() in self.keys:
            axis, sign = self.keys[key.lower()]
            self.current[axis] += sign * self.step[axis]
            self.current = self.preset.clip(self.current)

    def command(self, t_s: float, remote: RemoteSticks | None = None) -> np.ndarray:
        fd = self.stream.fileno()  # read the descriptor: a buffered text stream would hide keys from select
        while select.select([fd], [], [], 0.0)[0]:
            keys = os.read(fd, 64).decode(errors="ignore")
            if not keys:
                break
            for key in keys:
                self.press(key)
        return self.current.copy()

