"""`real_robot <command>`: the stand-in robot, the SDK ⇄ LCM bridge, data collection, log checks, calibration."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "sim-robot": ("real_robot.sim_robot", "stand-in Go1: MuJoCo + reality-gap profile, Unitree UDP protocol on 127.0.0.1"),
    "bridge": ("real_robot.bridge", "Unitree SDK ⇄ LCM bridge at 500 Hz with a command watchdog"),
    "collect": ("real_robot.collect_cli", "run a policy with a command schedule and log trajectories to data_logs/"),
    "logs": ("real_robot.logs_cli", "summarise and check a log folder"),
    "random-profile": ("robot_spec.reality_gap", "write a random reality-gap profile for sim-robot --profile"),
    "calibrate": ("real_robot.calibrate", "identify a reality-gap profile (friction, payload, gains, ...) from logs"),
    "sockets": ("real_robot.sockets", "list the sockets of processes; fail if one is not on loopback"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = [f"  {name:10s} {help_}" for name, (_, help_) in COMMANDS.items()]
        print("usage: real_robot <command> [options]\n\ncommands:\n" + "\n".join(lines))
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
