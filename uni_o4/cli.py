"""`uni_o4 finetune --offline LOGS...`, `uni_o4 finetune --online --policy RESULT` and `uni_o4 pipeline`.

Offline: a dataset from robot logs, fine-tuning with the chosen method, the deployment gate (the simulator
calibrated from the same logs judges candidate against incumbent; `--gate amq`: Uni-O4's AM-Q). Online: guarded
fine-tuning on the robot through the deploy runtime, starting from an offline result. Every run folder holds the
config it used, TensorBoard logs, a JSON report and plots; rerunning with the same --out resumes. A thin shell
over uni_o4/finetune.py.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from real_robot.lcm_bus import DEFAULT_LCM_URL
from robot_spec.config import OVERRIDE_HELP, ConfigError, parse_overrides
from robot_spec.exit_codes import ExitCode
from uni_o4.finetune import default_out
from uni_o4.gate import EVALUATORS
from uni_o4.pipeline import METHODS as PIPELINE_METHODS
from uni_o4.pipeline import PipelineRequest, run_pipeline
from uni_o4.pipeline import __doc__ as pipeline_doc
from uni_o4.registry import METHODS
from robot_spec.args import device_arg, out_dir_arg


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uni_o4", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    ft = sub.add_parser("finetune", help="offline fine-tuning on logs, or guarded online fine-tuning on the robot")
    mode = ft.add_mutually_exclusive_group(required=True)
    mode.add_argument("--offline", type=Path, nargs="+", metavar="LOG_DIR",
                      help="log folders from real_robot collect (folders below them are read too)")  # fmt: skip
    mode.add_argument("--online", action="store_true", help="online fine-tuning on the robot (see --policy)")
    ft.add_argument("--init", type=Path, help="offline: sim-pretrained policy.pt to start from (default: BC)")
    ft.add_argument("--policy", type=Path, help="online: the output folder of an offline run")
    ft.add_argument("--algo", default="uni_o4", choices=METHODS, help="offline: fine-tuning method (default uni_o4)")
    ft.add_argument("--preset", help="configs/finetune/<preset>.yaml (default: the algorithm's; online: online)")
    ft.add_argument("--ope-preset", default="uni_o4",
                    help="offline baselines: Uni-O4 preset whose AM-Q the gate scores with (default uni_o4)")
    ft.add_argument("--gate", default="calibrated", choices=EVALUATORS,
                    help="offline: the gate's evaluator: the simulator calibrated from the same logs (default; "
                         "needs --init) or Uni-O4's AM-Q")  # fmt: skip
    ft.add_argument("--gate-preset", default="sim_ppo",
                    help="offline, --gate calibrated: the sim_ppo preset whose calibration budget and gate it uses")
    ft.add_argument("--stand-in", metavar="PROFILE",
                    help="online: run on a stand-in robot with this reality-gap profile (started for each rollout); "
                         "default: the robot behind the running bridge on --lcm-url, reset by the operator")
    ft.add_argument("--updates", type=int, help="online: number of updates (overrides the preset)")
    ft.add_argument("--rollout-steps", type=int,
                    help="online: policy steps per rollout (overrides the preset's episodes per rollout)")
    ft.add_argument("--lcm-url", default=DEFAULT_LCM_URL, help=f"online on a robot: LCM URL ({DEFAULT_LCM_URL})")
    ft.add_argument("--channel-prefix", default="", help="online on a robot: LCM channel prefix")
    ft.add_argument("--robot", default="go1")
    ft.add_argument("--out", type=out_dir_arg, help="output folder (default runs/finetune/<time>); reuse it to resume")
    ft.add_argument("--cache", type=Path, help="artefact cache shared across runs (default <out>/cache)")
    ft.add_argument("--skip-damaged", action="store_true", help="report damage (file, offset) and use every intact frame")
    ft.add_argument("--seed", type=int, help="seed (default: the preset's)")
    ft.add_argument("--device", type=device_arg, default="cpu", help="torch device: cpu, cuda, ... (default: cpu)")
    ft.add_argument("--set", nargs="+", metavar="KEY=VALUE", help=OVERRIDE_HELP)
    add_pipeline_parser(sub)
    return parser


def add_pipeline_parser(sub) -> None:
    p = sub.add_parser("pipeline", help="pretrain -> stand-in -> collect -> offline -> online, with a results table",
                       description=pipeline_doc, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--algo", choices=PIPELINE_METHODS,
                   help="fine-tuning method (default %(default)s: the one that recovers the gap on the stand-ins, "
                        "see the README; uni_o4 for Uni-O4 on the logs)")  # fmt: skip
    p.add_argument("--robot", help="robot spec in configs/robots/ (default: %(default)s)")
    p.add_argument("--profile", help="stand-in reality-gap profile (configs/reality_gap/)")
    p.add_argument("--policy", type=Path, help="the sim-pretrained policy.pt to start from, beside its run's config "
                   "and checkpoint (default: the shipped robust one, policies/<robot>_robust)")
    p.add_argument("--pretrain-preset", help="pretrain with this sim_pretrain preset first (e.g. quick) instead")
    p.add_argument("--data", type=Path, help="log folder(s) collected before: skip collection (e.g. another method's)")
    p.add_argument("--collect-steps", type=int, help="logged robot steps for offline (default %(default)s)")
    p.add_argument("--collect-noise", type=float,
                   help="std of the Gaussian noise on the collected actions (action units; default %(default)s): "
                        "logs of the deterministic policy alone leave offline fine-tuning nothing to compare")
    p.add_argument("--offline-preset", help="configs/finetune/ preset (default <algo>_quick)")
    p.add_argument("--gate", choices=EVALUATORS,
                   help="the log methods' offline gate: the simulator calibrated from the logs (default) or AM-Q")
    p.add_argument("--gate-preset",
                   help="--gate calibrated: the sim_ppo preset whose calibration budget and gate it uses")
    p.add_argument("--online-preset", help="configs/finetune/ preset (default %(default)s)")
    p.add_argument("--oracle-iterations", type=int,
                   help="PPO iterations of an oracle row in the true profile's simulator (a yardstick: 150 in "
                        "benchmarks/gap_recovery.py; default %(default)s: none)")
    p.add_argument("--eval-episodes", type=int, help="stand-in episodes per evaluation (default %(default)s)")
    p.add_argument("--eval-episode-s", type=float, help="length of an evaluation episode (default %(default)s s)")
    p.add_argument("--out", type=out_dir_arg, help="pipeline folder (default runs/pipeline/<time>); reuse it to resume")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", type=device_arg, help="torch device: cpu, cuda, ...")
    p.set_defaults(**vars(PipelineRequest()))  # one source of the defaults: the request's


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "pipeline":
            return run_pipeline(PipelineRequest(**{f.name: getattr(args, f.name) for f in fields(PipelineRequest)}))
        return offline(args) if args.offline else online(args)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"uni_o4 {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # what is done stays done: a rerun with the same --out resumes
        print(f"uni_o4 {args.command}: {err or 'stopped by the operator'}; rerun with the same --out to resume",
              file=sys.stderr)  # fmt: skip
        return ExitCode.ABORTED


# --------------------------------------------------------------------------------------------- commands
def offline(args: argparse.Namespace) -> int:
    from uni_o4.finetune import OfflineRequest, finetune_offline

    finetune_offline(OfflineRequest(
        list(args.offline), args.out or default_out(), args.algo, args.init, args.preset, args.ope_preset,
        args.robot, args.cache, args.skip_damaged, args.seed, args.device, parse_overrides(args.set), args.gate,
        args.gate_preset,
    ))  # fmt: skip
    return 0


def online(args: argparse.Namespace) -> int:
    from deploy.session import EpisodeStartError
    from uni_o4.finetune import OnlineRequest, finetune_online

    out = args.out or default_out()
    request = OnlineRequest(args.policy, out, args.preset, args.stand_in, args.updates, args.rollout_steps,
                            args.lcm_url, args.channel_prefix, args.robot, args.seed, args.device,
                            parse_overrides(args.set))  # fmt: skip
    try:
        finetune_online(request)
    except TimeoutError as err:  # no state from the bridge
        print(f"uni_o4 finetune --online: {err}; rerun with --out {out} to resume", file=sys.stderr)
        return ExitCode.FAILED
    except EpisodeStartError as err:  # a robot that cannot start: a safety trip ended the run
        print(f"uni_o4 finetune --online: {err}; once fixed, rerun with --out {out} to resume", file=sys.stderr)
        return ExitCode.SAFETY_TRIP
    except KeyboardInterrupt:
        print(f"online: stopped by the operator (the robot is damping); rerun with --out {out} to resume")
        return ExitCode.ABORTED
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
