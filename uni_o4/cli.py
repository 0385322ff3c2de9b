"""`uni_o4 finetune --offline LOGS...` and `uni_o4 finetune --online ...`: fine-tuning on robot data."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from robot_spec.config import ConfigError, load_config, named_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="uni_o4", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    ft = sub.add_parser("finetune", help="offline fine-tuning on logs, or guarded online fine-tuning on the robot")
    mode = ft.add_mutually_exclusive_group(required=True)
    mode.add_argument("--offline", type=Path, nargs="+", metavar="LOG_DIR", help="log folders from real_robot collect")
    mode.add_argument("--online", action="store_true", help="online PPO on the robot (see --policy)")
    ft.add_argument("--init", type=Path, help="offline: sim-pretrained policy.pt to start from (default: BC)")
    ft.add_argument("--policy", type=Path, help="online: an offline result folder (or its deploy/policy.pt)")
    ft.add_argument("--algo", default="uni_o4", choices=["uni_o4"], help="fine-tuning method")
    ft.add_argument("--preset", default=None, help="configs/finetune/<preset>.yaml (default: the algorithm's)")
    ft.add_argument("--robot", default="go1")
    ft.add_argument("--out", type=Path, help="output folder (default runs/finetune/<time>); reuse it to resume")
    ft.add_argument("--cache", type=Path, help="artefact cache shared across runs (default <out>/cache)")
    ft.add_argument("--skip-damaged", action="store_true", help="report damaged log files and use the rest")
    ft.add_argument("--seed", type=int)
    ft.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    try:
        if args.offline:
            return finetune_offline(args)
        raise ConfigError("--online: see `uni_o4 finetune --online --help` (not built yet in this version)")
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"uni_o4 finetune: error: {err}", file=sys.stderr)
        return 2


def finetune_offline(args: argparse.Namespace) -> int:
    import torch
    from torch.utils.tensorboard import SummaryWriter

    from robot_spec import load_robot
    from robot_spec.policy_io import load_policy, save_policy
    from sim_pretrain.evaluate import EvalConfig, evaluate_policy
    from uni_o4 import gate
    from uni_o4.log_dataset import dataset_from_log_folder
    from uni_o4.offline import load_offline_config, run_offline
    from uni_o4.report import plot_offline

    spec = load_robot(args.robot)
    init = load_policy(args.init, spec) if args.init else None  # refuses a policy for another robot/layout
    overrides: dict = {"behaviour": {"init": "policy" if init else "bc"}}
    if args.seed is not None:
        overrides["seed"] = args.seed
    cfg = load_offline_config(named_config("finetune", args.preset or args.algo), overrides)
    out = args.out or Path("runs") / "finetune" / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)

    if len(args.offline) != 1:
        raise ConfigError("give one log folder (its subfolders are read); several folders: collect into one parent")
    data, log_report = dataset_from_log_folder(args.offline[0], spec, cfg.data, args.skip_damaged, args.device)
    print(f"dataset: {len(data)} transitions from {log_report.episodes} episodes "
          f"({log_report.terminals} terminals) in {args.offline[0]}")
    torch.manual_seed(cfg.seed)
    with SummaryWriter(str(out / "tensorboard")) as writer:
        result = run_offline(data, init.actor if init else None, cfg, out, args.device, writer,
                             obs_layout=spec.observation, cache_dir=args.cache)  # fmt: skip

    candidate = out / "candidate" / "policy.pt"
    save_policy(result.actor, spec, candidate, {
        "source": "uni_o4 offline", "init": str(args.init) if args.init else "bc", "data": log_report.files_hash,
        "am_q": result.final_score, "best_member": result.best_member,
    })  # fmt: skip
    gate_cfg = gate.GateConfig()
    sim = evaluate_policy(load_policy(candidate, spec), load_config(EvalConfig, named_config("eval", gate_cfg.eval_preset)),
                          device=args.device)  # fmt: skip
    decision = gate.decide(result.final_score, result.reference_score, sim, gate_cfg)
    incumbent = args.init if args.init else None
    if decision.passed or incumbent is not None:
        gate.apply(decision, candidate, incumbent or candidate, out)
    else:
        (out / "gate.json").write_text(json.dumps(asdict(decision), indent=2))
    plot_offline(result.summary(), decision, out / "offline_report.png")
    report = {"data": asdict(log_report), "offline": result.summary(), "sim_eval": sim, "gate": asdict(decision)}
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))

    verdict = "passed" if decision.passed else "REFUSED"
    print(f"AM-Q: initial {result.reference_score:.4g} -> fine-tuned {result.final_score:.4g}; "
          f"sim falls {sim['fall_rate']:.3f}; gate {verdict}: {'; '.join(decision.reasons)}")
    if decision.passed or incumbent is not None:
        print(f"policy to deploy: {out / 'deploy' / 'policy.pt'} ({'fine-tuned' if decision.passed else 'previous'})")
    else:
        print("no policy to deploy: the behaviour-cloned candidate did not pass and there is no previous policy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
