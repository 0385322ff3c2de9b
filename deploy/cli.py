"""`deploy run`: a policy on the robot through the LCM bridge, safety monitors on, logging on.
`deploy arm`: ask the bridge and/or a running deploy to re-arm after a latched trip.

Exit codes (robot_spec/exit_codes.py): 0 done (--duration reached, or Ctrl-C without --duration), 1 no robot,
2 bad input (also a runtime config whose pacing does not match the bridge's), 3 a safety monitor tripped during
the run (or the bridge is latched from an earlier trip), 130 Ctrl-C before --duration.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from tqdm import tqdm

from deploy.command_sources import make_command_source
from deploy.commands import load_speed_preset
from deploy.runtime import Controller, Phase, Runtime, load_runtime_config
from deploy.safety import SafetyMonitor, load_safety_config
from real_robot.arming import ArmingError
from deploy.trips import (
    REARM,
    check_bridge_mode,
    is_safety_trip,
    is_stand_in,
    latched_bridge_message,
    trip_line,
    wait_for_bridge_status,
)
from robot_spec.config import ConfigError, check_number, to_dict
from robot_spec.exit_codes import ExitCode
from robot_spec.policy_io import load_policy
from robot_spec.spec import PolicyMismatchError, load_robot
from robot_spec.args import device_arg, out_dir_arg

EXIT_BAD_INPUT = ExitCode.BAD_INPUT
EXIT_NO_ROBOT = ExitCode.FAILED


def build_parser() -> argparse.ArgumentParser:
    from real_robot.lcm_bus import DEFAULT_LCM_URL

    parser = argparse.ArgumentParser(prog="deploy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a policy on the robot (soft start, policy, damping on any safety trip)")
    run.add_argument("--policy", type=Path, required=True, help="policy file written by save_policy (policy.pt)")
    run.add_argument("--speed", choices=["low", "high"], required=True,
                     help="command ranges from configs/deploy/speed_<speed>.yaml (high = the training range)")
    run.add_argument("--commands", default="remote",
                     help="remote (operator sticks), keyboard (w/a/s/d/q/e, space = stop; needs a terminal), "
                          "schedule:<YAML file, or name of configs/deploy/schedule_<name>.yaml> or ros2[:<topic>] "
                          "(geometry_msgs/Twist, default /cmd_vel; a stale one = stop) (default: remote)")
    run.add_argument("--ros2-out", action="store_true",
                     help="publish /joint_states, /imu, /odom (every step) and /diagnostics (the safety state: 1 Hz "
                          "and on change) on ROS 2, from a thread beside the control loop (needs the ros2 extra)")
    run.add_argument("--robot", default="go1", help="robot spec in configs/robots/ (default: go1)")
    run.add_argument("--duration", type=float, help="stop (damping) after this many seconds of robot time")
    run.add_argument("--log-dir", type=out_dir_arg,
                     help="log folder (default: data_logs/deploy_<date-time>); logging is on unless --no-log")
    run.add_argument("--no-log", action="store_true", help="do not log (not recommended: robot time is scarce)")
    run.add_argument("--device", type=device_arg, default="cpu", help="torch device for the policy (default: cpu)")
    run.add_argument("--runtime-config", default="runtime",
                     help="configs/deploy/<name>.yaml or a YAML file: runtime (real time, default) or runtime_fast "
                          "(the stand-in robot's --fast mode, robot time faster than wall time)")  # fmt: skip
    run.add_argument("--arm-bridge", action="store_true",
                     help="re-arm a bridge latched by an earlier trip before starting (done anyway on the stand-in "
                          "robot, whose bridge talks to 127.0.0.1; on a real robot check it first)")  # fmt: skip

    arm = sub.add_parser("arm", help="re-arm the bridge and/or a running deploy after a latched trip")
    arm.add_argument("--target", choices=["all", "bridge", "deploy"], default="all", help="who re-arms (default: all)")
    for command in (run, arm):
        command.add_argument("--lcm-url", default=DEFAULT_LCM_URL, help=f"LCM URL (default: {DEFAULT_LCM_URL})")
        command.add_argument("--channel-prefix", default="", help="prefix of every LCM channel name (default: none)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args) if args.command == "run" else arm(args)
    except (PolicyMismatchError, ConfigError, FileNotFoundError, ValueError, ArmingError) as err:
        print(f"deploy {args.command}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT


def run(args: argparse.Namespace) -> int:
    check_number("--duration", args.duration, 0.0, 1e9, low_open=True)  # None: until Ctrl-C
    spec = load_robot(args.robot)
    policy = load_policy(args.policy, spec, device=args.device)  # refuses another robot or observation layout
    with ExitStack() as stack:
        runtime = build_runtime(args, spec, policy, stack)
        previous_handler = signal.signal(signal.SIGINT, lambda *_: runtime.request_stop("operator_stop"))
        stack.callback(signal.signal, signal.SIGINT, previous_handler)
        print(f"deploy: policy {policy.policy_id} ({args.policy}), speed {args.speed}, commands {args.commands}; "
              f"waiting for the bridge on {args.lcm_url} ...")  # fmt: skip
        try:
            runtime.wait_for_state()
        except TimeoutError as err:
            print(f"deploy run: {err}", file=sys.stderr)
            return EXIT_NO_ROBOT
        if not start_on_bridge(args, runtime):
            return ExitCode.SAFETY_TRIP
        runtime.run(duration_s=args.duration)
        aborted = args.duration is not None and runtime.stop_reason == "operator_stop"
        runtime.request_stop("timeout" if args.duration is not None else "operator_stop")
        trip = runtime.run()["trip"]  # damping for stop_damping_s, then out
    print(f"deploy: stopped after {runtime.step_count} steps ({trip.reason}: {trip.detail})")
    safety_trip = runtime.on_step.first_trip
    if safety_trip is not None:
        print(f"deploy run: {trip_line(safety_trip)}; {runtime.controller.safety.trip_count} safety trip(s) in this "
              "run. Once the cause is fixed run again (the bridge re-arms itself on the stand-in; on a robot "
              "`deploy arm --target bridge` or --arm-bridge)", file=sys.stderr)  # fmt: skip
        return ExitCode.SAFETY_TRIP
    return ExitCode.ABORTED if aborted else ExitCode.OK


def start_on_bridge(args: argparse.Namespace, runtime: Runtime) -> bool:
    """Before the first target: the bridge paces as the runtime does (else BridgeModeError), and a trip latched by
    an earlier run is re-armed on the stand-in or with --arm-bridge, else explained (False: do not start)."""
    from real_robot.lcm_bus import publish_arm_request

    status = wait_for_bridge_status(runtime)
    check_bridge_mode(status, runtime.cfg.realtime)
    if status is None or not status.tripped:
        return True
    if not (args.arm_bridge or is_stand_in(status)):
        print(f"deploy run: {latched_bridge_message(status)}", file=sys.stderr)
        return False
    publish_arm_request(args.lcm_url, args.channel_prefix, target="bridge", source="deploy run")
    why = "--arm-bridge" if args.arm_bridge else "the stand-in robot"
    print(f"deploy: the bridge was latched from an earlier trip ({status.reason}); re-armed it ({why})")
    return True


def arm(args: argparse.Namespace) -> int:
    from real_robot.lcm_bus import publish_arm_request

    publish_arm_request(args.lcm_url, args.channel_prefix, target=args.target, source="deploy arm")
    print(f"deploy arm: arm_request for '{args.target}' sent")
    return 0


def build_runtime(args: argparse.Namespace, spec, policy, stack: ExitStack) -> Runtime:
    """The runtime on LCM with its command source, status line and (unless --no-log) log; closed by `stack`."""
    from deploy.lcm_io import LcmRobotIO
    from deploy.session import RunLog, run_meta

    cfg, safety_cfg = load_runtime_config(args.runtime_config), load_safety_config(args.robot)
    preset = load_speed_preset(args.speed)
    commands = make_command_source(args.commands, preset, cfg.remote, cfg.keyboard_step_fraction)
    if hasattr(commands, "__enter__"):  # the keyboard's terminal mode, ROS 2's node
        stack.enter_context(commands)
    ros2_out = None
    if args.ros2_out:  # before subscribing to the robot: states would pile up while ROS 2 starts (~1 s)
        from deploy.ros2 import Ros2StatePublisher

        ros2_out = stack.enter_context(Ros2StatePublisher(spec))
    io = LcmRobotIO(args.lcm_url, args.channel_prefix)
    stack.callback(io.close)
    controller = Controller(spec, policy, SafetyMonitor(spec, safety_cfg), commands, cfg)
    status = stack.enter_context(StatusLine(args.duration, controller.dt))
    log = None
    if not args.no_log:
        folder = args.log_dir or Path("data_logs") / f"deploy_{time.strftime('%Y%m%d-%H%M%S')}"
        meta = run_meta(
            spec, policy, cfg, safety_cfg, commands=args.commands, speed=args.speed, speed_preset=to_dict(preset),
            lcm_url=args.lcm_url, channel_prefix=args.channel_prefix, ros2_out=args.ros2_out,
        )  # fmt: skip
        log = stack.enter_context(RunLog(folder, spec, meta, lambda: {"commands": args.commands}))
        print(f"deploy: logging to {folder}")

    runtime = Runtime(controller, io, cfg, StepHandler(log, status, ros2_out))
    stack.callback(runtime.close)
    return runtime


class StepHandler:
    """The runtime's `on_step`: log the record, update the status line, say each safety trip once as it happens."""

    def __init__(self, log, status: StatusLine, ros2_out=None):
        self.log, self.status, self.ros2_out = log, status, ros2_out
        self.first_trip = None  # the run's first safety trip (not a stop)
        self.trips_said = 0

    def __call__(self, record: dict) -> None:
        if self.log is not None:
            self.log.on_step(record)
        if self.ros2_out is not None:  # after the log: the target went out, the record is on its way to disk
            self.ros2_out.on_step(record)
        self.status.update(record)
        if is_safety_trip(record["trip"]) and record["trip_count"] > self.trips_said:
            self.trips_said = record["trip_count"]
            self.first_trip = self.first_trip or record["trip"]
            tqdm.write(f"deploy: {trip_line(record['trip'])}. {REARM}; Ctrl-C ends the run")


class StatusLine:
    """A live one-line status (a tqdm bar): robot time, phase, command, measured velocity and tilt, safety."""

    def __init__(self, duration_s: float | None, dt: float):
        self.dt = dt
        self.bar = tqdm(total=duration_s, desc="deploy", bar_format="{desc}: {n:.1f} s{postfix}", mininterval=0.2)

    def update(self, record: dict) -> None:
        if record["step"] % 10:
            return
        self.bar.n = record["step"] * self.dt
        trip = record["trip"]
        safety = f"TRIPPED {trip.reason}: {trip.detail}" if trip else "ok"
        self.bar.set_postfix_str(f"{Phase(record['phase']).name.lower():10s} {self.motion(record)} safety {safety}",
                                 refresh=True)  # fmt: skip

    @staticmethod
    def motion(record: dict) -> str:
        """The command beside what the robot does: body velocity (odometry, if there is a source) and tilt."""
        vx, vy, yaw = record["command"]
        lin, rpy = record["odometry"].lin_vel, record["state"].rpy
        measured = f"v ({lin[0]:+.2f}, {lin[1]:+.2f})" if np.all(np.isfinite(lin[:2])) else "v n/a (no odometry)"
        tilt = math.degrees(max(abs(rpy[0]), abs(rpy[1])))
        return f"cmd ({vx:+.2f}, {vy:+.2f}, {yaw:+.2f}) {measured} tilt {tilt:4.1f}°"

    def __enter__(self) -> StatusLine:
        return self

    def __exit__(self, *_exc) -> None:
        self.bar.close()


if __name__ == "__main__":
    sys.exit(main())
