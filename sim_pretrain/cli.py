"""`sim_pretrain train` and `sim_pretrain eval`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from robot_spec.config import ConfigError, load_config, named_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sim_pretrain", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="pretrain a locomotion policy with rsl_rl PPO in MuJoCo")
    train.add_argument("--robot", default="go1", help="robot spec in configs/robots/ (default: go1)")
    train.add_argument("--preset", default="quick", help="training preset configs/train/<robot>_<preset>.yaml")
    train.add_argument("--num-envs", type=int, help="parallel environments (preset default: 512)")
    train.add_argument("--iterations", type=int, help="total PPO iterations (counted from 0, also when resuming)")
    train.add_argument("--seed", type=int)
    train.add_argument("--resume", type=Path, help="checkpoint model_<it>.pt (or its run folder) to continue")
    train.add_argument("--runs", type=Path, default=Path("runs"), help="parent folder of run folders")
    train.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 ...")

    ev = sub.add_parser("eval", help="evaluate a policy under a command grid and randomised dynamics")
    ev.add_argument("--policy", type=Path, required=True, help="exported policy.pt")
    ev.add_argument("--robot", default="go1")
    ev.add_argument("--preset", default="default", help="evaluation preset configs/eval/<preset>.yaml")
    ev.add_argument("--out", type=Path, help="folder for metrics.json and plots (default: next to the policy)")
    ev.add_argument("--seed", type=int)
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--gait", type=float, nargs=3, metavar=("VX", "VY", "YAW"),
                    help="also render the gait under this command (gait.gif + gait_filmstrip.png; needs EGL)")

    args = parser.parse_args(argv)
    try:
        return _train(args) if args.command == "train" else _eval(args)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"sim_pretrain {args.command}: error: {err}", file=sys.stderr)
        return 2


def _train(args: argparse.Namespace) -> int:
    from robot_spec import load_robot
    from sim_pretrain.train import train
    from sim_pretrain.train_config import TrainConfig

    load_robot(args.robot)  # unknown robot names are answered with the known ones
    overrides: dict = {"env": {"robot": args.robot}}
    if args.num_envs is not None:
        overrides["env"]["num_envs"] = args.num_envs
    if args.iterations is not None:
        overrides["iterations"] = args.iterations
    if args.seed is not None:
        overrides["seed"] = args.seed
        overrides["env"]["seed"] = args.seed

    resume, run_dir = None, None
    if args.resume is not None:
        resume = _latest_checkpoint(args.resume)
        run_dir = resume.parent
    preset = named_config("train", f"{args.robot}_{args.preset}")
    cfg = load_config(TrainConfig, preset, overrides)
    if run_dir is None:
        run_dir = args.runs / args.robot / f"{time.strftime('%Y%m%d-%H%M%S')}_{args.preset}"
    print(f"run folder: {run_dir}")
    policy = train(cfg, run_dir, device=args.device, resume=resume)
    print(f"exported policy: {policy} (+ {policy.with_suffix('.onnx').name})")
    return 0


def _latest_checkpoint(path: Path) -> Path:
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"--resume: no checkpoint or run folder at {path}")
    checkpoints = sorted(path.glob("model_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
    if not checkpoints:
        raise FileNotFoundError(f"--resume: no model_<it>.pt checkpoint in {path}")
    return checkpoints[-1]


def _eval(args: argparse.Namespace) -> int:
    from sim_pretrain.evaluate import EvalConfig, evaluate_policy, write_report
    from robot_spec import load_robot
    from robot_spec.policy_io import load_policy

    spec = load_robot(args.robot)
    policy = load_policy(args.policy, spec, device=args.device)
    overrides = {"seed": args.seed} if args.seed is not None else None
    cfg = load_config(EvalConfig, named_config("eval", args.preset), overrides)
    metrics = evaluate_policy(policy, cfg, device=args.device)
    out = args.out or args.policy.parent / "eval"
    write_report(metrics, out)
    if args.gait is not None:
        from sim_pretrain.render import render_gait

        print(f"gait: {render_gait(policy, list(args.gait), out)}")
    print(f"fall rate {metrics['fall_rate']:.3f}, mean tracking error {metrics['mean_tracking_error']:.3f} m/s, "
          f"mean return {metrics['mean_return']:.2f} -> {out}/metrics.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
