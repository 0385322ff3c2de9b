"""`real_robot collect`: run the deployed policy with a command schedule and log trajectories to data_logs/.

A thin shell over the robot session (deploy/session.py: `collect(SessionConfig, CollectConfig)`), which holds
what a collection does: soft start, policy, safety monitors, one log record per control step, an episode per
soft start, stand-in resets or operator resets between episodes.

Episodes ended by a safety trip are data (the log records each one), not a failure. Exit codes
(robot_spec/exit_codes.py): 0 the asked steps/episodes were logged (or Ctrl-C with no amount asked), 1 no
robot, 2 bad input (also --runtime-config not matching the bridge's pacing), 4 shortfall (the robot tripped at
the start of episode after episode), 130 Ctrl-C before the asked amount.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deploy.session import CollectConfig, EpisodeStartError, SessionConfig, collect
from real_robot.lcm_bus import DEFAULT_LCM_URL
from robot_spec.config import ConfigError
from robot_spec.exit_codes import ExitCode
from robot_spec.spec import PolicyMismatchError
from robot_spec.args import device_arg, out_dir_arg


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="real_robot collect", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--policy", type=Path, required=True, help="policy file written by save_policy (policy.pt)")
    amount = p.add_mutually_exclusive_group()
    amount.add_argument("--steps", type=int, help="stop after this many policy steps (transitions) are logged")
    amount.add_argument("--episodes", type=int, help="stop after this many episodes (default: until Ctrl-C)")
    p.add_argument("--episode-s", type=float, default=20.0, help="time limit of an episode's policy phase "
                   "(robot time, default 20 s)")  # fmt: skip
    p.add_argument("--schedule", default="walk",
                   help="command schedule: a YAML file, or the name of configs/deploy/schedule_<name>.yaml "
                        "(default: walk)")  # fmt: skip
    p.add_argument("--speed", choices=["low", "high"], default="high",
                   help="speed preset the schedule must stay within (default: high, the training range)")
    p.add_argument("--out", type=out_dir_arg, help="log folder (default: data_logs/collect_<date-time>)")
    p.add_argument("--operator-reset", action="store_true",
                   help="a real robot: between episodes keep damping and wait for Enter (default: reset the stand-in "
                        "robot over sim_control)")  # fmt: skip
    p.add_argument("--action-noise", type=float, default=0.0,
                   help="std of Gaussian noise added to the policy's actions (action units; default 0: the policy "
                        "mean). Logs with some action spread are what offline fine-tuning can improve from")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the action noise and of each episode's sensor noise on the stand-in (default: 0)")
    p.add_argument("--stand-in-profile", help="the stand-in's reality-gap profile, recorded in the log meta")
    p.add_argument("--reset-settle-s", type=float, default=1.0,
                   help="robot time to wait in damping after a stand-in reset (default: 1.0)")
    p.add_argument("--robot", default="go1", help="robot spec in configs/robots/ (default: go1)")
    p.add_argument("--lcm-url", default=DEFAULT_LCM_URL, help=f"LCM URL (default: {DEFAULT_LCM_URL})")
    p.add_argument("--channel-prefix", default="", help="prefix of every LCM channel name (default: none)")
    p.add_argument("--runtime-config", default="runtime",
                   help="configs/deploy/<name>.yaml: runtime (real time, default) or runtime_fast (stand-in --fast)")
    p.add_argument("--device", type=device_arg, default="cpu", help="torch device for the policy (default: cpu)")
    return p


def configs(args: argparse.Namespace) -> tuple[SessionConfig, CollectConfig]:
    """The session and the collection the command line describes."""
    session = SessionConfig(
        robot=args.robot, lcm_url=args.lcm_url, channel_prefix=args.channel_prefix, runtime_config=args.runtime_config,
        operator_reset=args.operator_reset, reset_settle_s=args.reset_settle_s, device=args.device,
    )  # fmt: skip
    collection = CollectConfig(
        policy=args.policy, steps=args.steps, episodes=args.episodes, episode_s=args.episode_s, schedule=args.schedule,
        speed=args.speed, out=args.out, action_noise=args.action_noise, seed=args.seed,
        stand_in_profile=args.stand_in_profile,
    )  # fmt: skip
    return session, collection


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        collector = collect(*configs(args))
    except (PolicyMismatchError, ConfigError, FileNotFoundError, ValueError) as err:
        print(f"real_robot collect: error: {err}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    except TimeoutError as err:  # every episode logged so far stays in the log folder
        print(f"real_robot collect: {err}", file=sys.stderr)
        return ExitCode.FAILED
    except EpisodeStartError as err:
        print(f"real_robot collect: stopped short: {err}", file=sys.stderr)
        return ExitCode.SHORTFALL
    if collector.cut_short:
        print(f"real_robot collect: stopped by the operator after {collector.steps} policy steps, "
              f"{collector.episodes} episodes", file=sys.stderr)  # fmt: skip
        return ExitCode.ABORTED
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
