"""`uni_o4 finetune --offline LOGS...`, `uni_o4 finetune --online --policy RESULT` and `uni_o4 pipeline`.

Offline: a dataset from robot logs, fine-tuning with the chosen method, the deployment gate (AM-Q not below
the incumbent's, no falls in randomised simulation). Online: guarded fine-tuning on the robot through the
deploy runtime, starting from an offline result. Every run folder holds the config it used, TensorBoard logs,
a JSON report and plots; rerunning with the same --out resumes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from real_robot.lcm_bus import DEFAULT_LCM_URL
from robot_spec.config import ConfigError, load_config, named_config, save_config
from uni_o4.registry import METHODS

SOURCE_FILE = "finetune.json"  # what an offline run was made from: online fine-tuning reads it


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
    ft.add_argument("--stand-in", metavar="PROFILE",
                    help="online: run on a stand-in robot with this reality-gap profile (started for each rollout); "
                         "default: the robot behind the running bridge on --lcm-url, reset by the operator")
    ft.add_argument("--updates", type=int, help="online: number of updates (overrides the preset)")
    ft.add_argument("--rollout-steps", type=int,
                    help="online: policy steps per rollout (overrides the preset's episodes per rollout)")
    ft.add_argument("--lcm-url", default=DEFAULT_LCM_URL, help=f"online on a robot: LCM URL ({DEFAULT_LCM_URL})")
    ft.add_argument("--channel-prefix", default="", help="online on a robot: LCM channel prefix")
    ft.add_argument("--robot", default="go1")
    ft.add_argument("--out", type=Path, help="output folder (default runs/finetune/<time>); reuse it to resume")
    ft.add_argument("--cache", type=Path, help="artefact cache shared across runs (default <out>/cache)")
    ft.add_argument("--skip-damaged", action="store_true", help="report damaged log files and use the rest")
    ft.add_argument("--seed", type=int)
    ft.add_argument("--device", default="cpu", help="torch device: cpu, cuda, ...")
    from uni_o4.pipeline import add_pipeline_parser

    add_pipeline_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "pipeline":
            from uni_o4.pipeline import run_pipeline

            return run_pipeline(args, run_uni_o4=main)
        if args.offline:
            return finetune_offline(args)
        return finetune_online(args)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"uni_o4 {args.command}: error: {err}", file=sys.stderr)
        return 2


def _out(args: argparse.Namespace) -> Path:
    out = args.out or Path("runs") / "finetune" / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    return out


# --------------------------------------------------------------------------------------------- offline
def finetune_offline(args: argparse.Namespace) -> int:
    import torch
    from torch.utils.tensorboard import SummaryWriter

    from robot_spec import load_robot
    from robot_spec.policy_io import load_policy
    from uni_o4.log_dataset import dataset_from_log_folder, files_hash, log_folders
    from uni_o4.method import OfflineJob
    from uni_o4.registry import make_method

    method = make_method(args.algo)
    spec = load_robot(args.robot)
    init = load_policy(args.init, spec) if args.init else None  # refuses a policy for another robot/layout
    out = _out(args)
    job = OfflineJob(
        args.algo, args.preset or METHODS[args.algo].preset, list(args.offline), spec, out, init, args.init,
        args.seed, args.device, args.cache, args.ope_preset,
    )  # fmt: skip
    data_cfg = method.data_config(job)
    if data_cfg is not None:
        job.data, job.data_report = dataset_from_log_folder(job.logs, spec, data_cfg, args.skip_damaged, args.device)
        report = job.data_report
        print(f"dataset: {len(job.data)} transitions from {report.episodes} episodes "
              f"({report.terminals} terminals) in {' '.join(map(str, args.offline))}")  # fmt: skip
    folders = [folder for root in job.logs for folder in log_folders(root)]
    data_hash = job.data_report.files_hash if job.data_report else files_hash(folders)
    source = {"algo": args.algo, "data": [str(p) for p in args.offline], "init": str(args.init or ""),
              "preset": args.preset or args.algo, "data_hash": data_hash}  # fmt: skip
    (out / SOURCE_FILE).write_text(json.dumps(source, indent=2))
    torch.manual_seed(args.seed if args.seed is not None else 0)
    with SummaryWriter(str(out / "tensorboard")) as writer:
        job.writer = writer
        outcome = method.finetune_offline(job)
    decision, sim = gate_candidate(args, spec, outcome.candidate, (outcome.score, outcome.incumbent_score), out)
    method.report(outcome, decision, out)
    data = asdict(job.data_report) if job.data_report else None
    report = {"source": source, "data": data, "offline": outcome.details, "sim_eval": sim, "gate": asdict(decision)}
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    return 0


def gate_candidate(args, spec, candidate: Path, scores: tuple[float, float], out: Path):
    """The deployment gate; out/deploy/policy.pt is the candidate if it passed, else the incumbent (--init)."""
    from robot_spec.policy_io import load_policy
    from sim_pretrain.evaluate import EvalConfig, evaluate_policy
    from uni_o4 import gate

    gate_cfg = gate.GateConfig()
    eval_cfg = load_config(EvalConfig, named_config("eval", gate_cfg.eval_preset))
    sim = evaluate_policy(load_policy(candidate, spec), eval_cfg, device=args.device)
    decision = gate.decide(scores[0], scores[1], sim, gate_cfg)
    if decision.passed or args.init is not None:
        gate.apply(decision, candidate, args.init or candidate, out)
    else:
        (out / "gate.json").write_text(json.dumps(asdict(decision), indent=2))
    verdict = "passed" if decision.passed else "REFUSED"
    print(f"AM-Q: incumbent {scores[1]:.4g} -> candidate {scores[0]:.4g}; sim falls {sim['fall_rate']:.3f}; "
          f"gate {verdict}: {'; '.join(decision.reasons)}")  # fmt: skip
    if decision.passed or args.init is not None:
        print(f"policy to deploy: {out / 'deploy' / 'policy.pt'} ({'fine-tuned' if decision.passed else 'previous'})")
    else:
        print("no policy to deploy: the candidate did not pass and there is no previous policy (--init)")
    return decision, sim


# --------------------------------------------------------------------------------------------- online
def finetune_online(args: argparse.Namespace) -> int:
    from torch.utils.tensorboard import SummaryWriter

    from deploy.session import EpisodeStartError, SessionConfig
    from robot_spec import load_robot
    from uni_o4.online import OnlineConfig, OnlineRun, RobotLink, StandInRobotLink
    from uni_o4.registry import build_learner

    if args.policy is None or not (args.policy / SOURCE_FILE).is_file():
        raise FileNotFoundError(f"--online needs --policy: the output folder of `uni_o4 finetune --offline` "
                                f"(with {SOURCE_FILE}), got {args.policy}")  # fmt: skip
    spec = load_robot(args.robot)
    overrides: dict = {}
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.updates is not None:
        overrides["updates"] = args.updates
    if args.rollout_steps is not None:
        overrides["rollout_steps"] = args.rollout_steps
    cfg = load_config(OnlineConfig, named_config("finetune", args.preset or "online"), overrides)
    source = json.loads((args.policy / SOURCE_FILE).read_text())
    learner, data_cfg = build_learner(args.policy, source, spec, cfg, args.device)
    if args.stand_in:
        robot = StandInRobotLink(args.stand_in, cfg)
    else:
        session = SessionConfig(lcm_url=args.lcm_url, channel_prefix=args.channel_prefix, operator_reset=True)
        robot = RobotLink(cfg, session)
    out = _out(args)
    size = f"{cfg.rollout_steps} steps" if cfg.rollout_steps else f"{cfg.episodes_per_rollout} episode(s)"
    where = f"the stand-in ({args.stand_in})" if args.stand_in else "the robot"
    print(f"online {source['algo']} from {args.policy}: {cfg.updates} updates of {size} on {where} -> {out}")
    with SummaryWriter(str(out / "tensorboard")) as writer:
        try:
            state = OnlineRun(learner, spec, data_cfg, cfg, out, robot, writer).run()
        except (TimeoutError, EpisodeStartError) as err:  # no state from the bridge; a robot that cannot start
            print(f"uni_o4 finetune --online: {err}; rerun with --out {out} to resume", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"online: stopped by the operator (the robot is damping); rerun with --out {out} to resume")
            return 130
    rollbacks = sum("rollback" in h for h in state.history)
    print(f"online: {len(state.history)} rollouts, {rollbacks} rollback(s); best: update {state.best_iteration} "
          f"-> {out / 'deploy' / 'policy.pt'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
