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
from uni_o4.registry import ALGOS

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
    ft.add_argument("--algo", default="uni_o4", choices=ALGOS, help="offline: fine-tuning method (default uni_o4)")
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
    from uni_o4.baselines import baseline_data_config
    from uni_o4.log_dataset import dataset_from_log_folder

    spec = load_robot(args.robot)
    init = load_policy(args.init, spec) if args.init else None  # refuses a policy for another robot/layout
    out = _out(args)
    data_cfg = offline_config(args, init is not None).data if args.algo == "uni_o4" else baseline_data_config()
    data, log_report = dataset_from_log_folder(list(args.offline), spec, data_cfg, args.skip_damaged, args.device)
    print(f"dataset: {len(data)} transitions from {log_report.episodes} episodes "
          f"({log_report.terminals} terminals) in {' '.join(map(str, args.offline))}")  # fmt: skip
    source = {"algo": args.algo, "data": [str(p) for p in args.offline], "init": str(args.init or ""),
              "preset": args.preset or args.algo, "data_hash": log_report.files_hash}  # fmt: skip
    (out / SOURCE_FILE).write_text(json.dumps(source, indent=2))
    torch.manual_seed(args.seed if args.seed is not None else 0)
    with SummaryWriter(str(out / "tensorboard")) as writer:
        train = offline_uni_o4 if args.algo == "uni_o4" else offline_baseline
        candidate, scores, details = train(args, spec, data, init, out, writer)
    decision, sim = gate_candidate(args, spec, candidate, scores, out)
    if args.algo == "uni_o4":
        from uni_o4.report import plot_offline

        plot_offline(details, decision, out / "offline_report.png")
    report = {"source": source, "data": asdict(log_report), "offline": details, "sim_eval": sim,
              "gate": asdict(decision)}  # fmt: skip
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    return 0


def offline_config(args: argparse.Namespace, has_init: bool):
    from uni_o4.offline import load_offline_config

    overrides: dict = {"behaviour": {"init": "policy" if has_init else "bc"}}
    if args.seed is not None:
        overrides["seed"] = args.seed
    return load_offline_config(named_config("finetune", args.preset or "uni_o4"), overrides)


def offline_uni_o4(args, spec, data, init, out, writer):
    """Uni-O4 stages 1 and 2; returns (candidate policy file, (candidate, incumbent) AM-Q, summary)."""
    from robot_spec.policy_io import save_policy
    from uni_o4.offline import run_offline

    cfg = offline_config(args, init is not None)
    result = run_offline(data, init.actor if init else None, cfg, out, args.device, writer,
                         obs_layout=spec.observation, cache_dir=args.cache)  # fmt: skip
    candidate = out / "candidate" / "policy.pt"
    save_policy(result.actor, spec, candidate, {
        "source": "uni_o4 offline", "init": str(args.init or "bc"), "am_q": result.final_score,
        "best_member": result.best_member,
    })  # fmt: skip
    return candidate, (result.final_score, result.reference_score), result.summary()


def offline_baseline(args, spec, data, init, out, writer):
    """IQL / Cal-QL / O3F offline training; scored by the same AM-Q yardstick as Uni-O4 for the gate."""
    import torch

    from deploy.safety import load_safety_config
    from robot_spec.config import to_dict
    from robot_spec.policy_io import save_policy
    from uni_o4.baselines import SafeActionSet, load_baseline_config, make_algorithm, train
    from uni_o4.offline import amq_scores, load_offline_config

    overrides = {"seed": args.seed} if args.seed is not None else None
    cfg = load_baseline_config(args.algo, named_config("finetune", args.preset or args.algo), overrides)
    save_config(cfg, out / "baseline_config.yaml")
    safe_set = SafeActionSet.from_spec(spec, load_safety_config(args.robot).max_action_delta)
    start = init.actor if init is not None and args.algo != "calql" else None  # Cal-QL's policy is tanh-squashed
    algorithm = make_algorithm(args.algo, cfg, data, safe_set, args.device, init_actor=start)
    history = train(algorithm, lambda: data.sample(cfg.batch_size), cfg.offline_steps, progress=True)
    for step in range(0, len(history), 100):
        for key, value in history[step].items():
            writer.add_scalar(f"{args.algo}/{key}", value, step)
    torch.save({"algo": args.algo, "config": to_dict(cfg), "state": algorithm.state_dict()}, out / "algorithm.pt")
    candidate = out / "candidate" / "policy.pt"
    save_policy(algorithm.export_actor(), spec, candidate, {"source": f"{args.algo} offline"})
    ope_cfg = load_offline_config(named_config("finetune", args.ope_preset))
    actors = [algorithm.export_actor()] + ([init.actor] if init is not None else [])
    scores = amq_scores(data, actors, ope_cfg, args.cache or out / "cache", spec.observation, writer)
    incumbent = scores[1] if init is not None else float("-inf")
    return candidate, (scores[0], incumbent), {"algo": args.algo, "steps": len(history), "final": history[-1],
                                               "am_q": scores}  # fmt: skip


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
    from uni_o4.online import OnlineConfig, OnlineRun, RobotLink, StandInRobotLink, build_learner

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
