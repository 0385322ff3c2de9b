"""`deploy run`: a policy on the robot through the LCM bridge, safety monitors on, logging on.
`deploy arm`: ask the bridge and/or a running deploy to re-arm after a latched trip."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from tqdm import tqdm

from deploy.command_sources import make_command_source
from deploy.commands import load_speed_preset
from deploy.runtime import Controller, Phase, Runtime, load_runtime_config
from deploy.safety import SafetyMonitor, load_safety_config
from robot_spec.config import ConfigError, check_number, to_dict
from robot_spec.policy_io import load_policy
from robot_spec.spec import PolicyMismatchError, load_robot

EXIT_BAD_INPUT = 2
EXIT_NO_ROBOT = 1


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
    run.add_argument("--log-dir", type=Path,
                     help="log folder (default: data_logs/deploy_<date-time>); logging is on unless --no-log")
    run.add_argument("--no-log", action="store_true", help="do not log (not recommended: robot time is scarce)")
    run.add_argument("--device", default="cpu", help="torch device for the policy (default: cpu)")
    run.add_argument("--runtime-config", default="runtime",
                     help="configs/deploy/<name>.yaml or a YAML file: runtime (real time, default) or runtime_fast "
                          "(the stand-in robot's --fast mode, robot time faster than wall time)")  # fmt: skip

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
    except (PolicyMismatchError, ConfigError, FileNotFoundError, ValueError) as err:
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
        runtime.run(duration_s=args.duration)
        runtime.request_stop("timeout" if args.duration is not None else "operator_stop")
        trip = runtime.run()["trip"]  # damping for stop_damping_s, then out
    print(f"deploy: stopped after {runtime.step_count} steps ({trip.reason}: {trip.detail})")
    return 0


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

    def on_step(record: dict) -> None:
        if log is not None:
            log.on_step(record)
        if ros2_out is not None:  # after the log: the target went out, the record is on its way to disk
            ros2_out.on_step(record)
        status.update(record)

    runtime = Runtime(controller, io, cfg, on_step)
    stack.callback(runtime.close)
    return runtime


class StatusLine:
    """A live one-line status (a tqdm bar): robot time, phase, command, safety."""

    def __init__(self, duration_s: float | None, dt: float):
        self.dt = dt
        self.bar = tqdm(total=duration_s, desc="deploy", bar_format="{desc}: {n:.1f} s{postfix}", mininterval=0.2)

    def update(self, record: dict) -> None:
        if record["step"] % 10:
            return
        self.bar.n = record["step"] * self.dt
        trip = record["trip"]
        safety = f"TRIPPED {trip.reason}: {trip.detail}" if trip else "ok"
        vx, vy, yaw = record["command"]
        self.bar.set_postfix_str(
            f"{Phase(record['phase']).name.lower():10s} cmd ({vx:+.2f}, {vy:+.2f}, {yaw:+.2f}) safety {safety}",
            refresh=True,
        )

    def __enter__(self) -> StatusLine:
        return self

    def __exit__(self, *_exc) -> None:
        self.bar.close()


if __name__ == "__main__":
    sys.exit(main())
