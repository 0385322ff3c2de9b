"""`real_robot <command>`: the stand-in robot, the SDK ⇄ LCM bridge, data collection, log checks, calibration.

`real_robot <command> --help` lists a command's options."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from robot_spec.exit_codes import ExitCode

COMMANDS = {
    "sim-robot": ("real_robot.sim_robot", "stand-in Go1: MuJoCo + reality-gap profile, Unitree UDP protocol on 127.0.0.1"),
    "bridge": ("real_robot.bridge", "Unitree SDK ⇄ LCM bridge at 500 Hz with a command watchdog"),
    "collect": ("real_robot.collect_cli", "run a policy with a command schedule and log trajectories to data_logs/"),
    "logs": ("real_robot.logs_cli", "summarise and check a log folder"),
    "random-profile": ("robot_spec.reality_gap", "write a random reality-gap profile for sim-robot --profile"),
    "calibrate": ("real_robot.calibrate", "identify a reality-gap profile (friction, payload, gains, ...) from logs"),
    "sockets": ("real_robot.sockets", "list the sockets of processes; fail if one is not on loopback"),
}


def build_parser() -> argparse.ArgumentParser:
    """Subcommands the argparse way; each command's own parser (in its module, imported only when it runs) reads
    the rest, so `real_robot logs` does not import MuJoCo."""
    parser = argparse.ArgumentParser(prog="real_robot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for name, (_, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)  # its --help is the command's own
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    try:
        if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
            parser.error(f"unknown command '{argv[0]}' (commands: {', '.join(COMMANDS)})")
        command = parser.parse_args(argv[:1]).command
        return importlib.import_module(COMMANDS[command][0]).main(argv[1:])
    except BrokenPipeError:  # `real_robot ... | head`: the reader has gone; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
