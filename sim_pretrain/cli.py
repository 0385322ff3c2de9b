"""`sim_pretrain train`, `finetune`, `eval` and `import` (a policy from legged_gym, walk-these-ways, unitree_rl_gym)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from robot_spec.args import device_arg, out_dir_arg
from robot_spec.config import OVERRIDE_HELP, ConfigError, check_number, load_config, named_config, parse_overrides
from robot_spec.exit_codes import ExitCode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sim_pretrain", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="pretrain a locomotion policy with rsl_rl PPO in MuJoCo")
    train.add_argument("--robot", default="go1", help="robot spec in configs/robots/ (default: go1)")
    train.add_argument("--preset", default="quick",
                       help="training preset: configs/train/<robot>_<preset>.yaml, or a .yaml file (default: quick)")
    train.add_argument("--num-envs", type=int, help="parallel environments (default: the preset's, 512)")
    train.add_argument("--iterations", type=int, help="total PPO iterations (counted from 0, also when resuming; "
                       "default: the preset's)")  # fmt: skip
    train.add_argument("--seed", type=int, help="seed of training and the environments (default: the preset's, 0)")
    train.add_argument("--resume", type=Path, help="checkpoint model_<it>.pt (or its run folder) to continue, with "
                       "the run's own config.yaml (--preset is then not read)")  # fmt: skip
    train.add_argument("--set", nargs="+", metavar="KEY=VALUE", help=OVERRIDE_HELP)
    train.add_argument("--runs", type=Path, default=Path("runs"), help="parent folder of run folders")
    train.add_argument("--device", type=device_arg, default="cpu", help="torch device: cpu, cuda, cuda:1 ...")

    ft = sub.add_parser("finetune", help="PPO fine-tuning of a pretrained policy in the simulator set to a robot's "
                        "dynamics (a reality-gap profile: calibrated from logs by `real_robot calibrate`, or a stand-in's)")
    ft.add_argument("--policy", type=Path, required=True,
                    help="pretraining run folder, its model_<it>.pt, or its policy.pt (the run folder beside it)")
    ft.add_argument("--dynamics", required=True, help="reality-gap profile: configs/reality_gap/ name or a .yaml path")
    ft.add_argument("--physics", default="training", choices=("training", "profile"),
                    help="training: the fast training solver with the profile's figures (default); profile: the "
                         "profile's own solver, contact model and time step (several times slower)")
    ft.add_argument("--iterations", type=int, default=150, help="PPO iterations (default: 150)")
    ft.add_argument("--spread", type=float, default=0.1,
                    help="relative randomisation half-width around the profile's figures (default: 0.1)")
    ft.add_argument("--num-envs", type=int, help="parallel environments (default: the pretraining run's)")
    ft.add_argument("--seed", type=int, help="seed (default: the pretraining run's)")
    ft.add_argument("--out", type=out_dir_arg, help="run folder (default: runs/<robot>/<time>_finetune)")
    ft.add_argument("--device", type=device_arg, default="cpu", help="torch device: cpu, cuda, ...")

    ev = sub.add_parser("eval", help="evaluate a policy under a command grid and randomised dynamics")
    ev.add_argument("--policy", type=Path, required=True, help="exported policy.pt")
    ev.add_argument("--robot", default="go1", help="robot spec in configs/robots/ (default: go1)")
    ev.add_argument("--preset", default="default",
                    help="evaluation preset: configs/eval/<preset>.yaml, or a .yaml file (default: default)")
    ev.add_argument("--out", type=out_dir_arg, help="folder for metrics.json and plots (default: <policy folder>/eval)")
    ev.add_argument("--seed", type=int, help="seed of the randomised dynamics (default: the preset's, 0)")
    ev.add_argument("--device", type=device_arg, default="cpu", help="torch device: cpu, cuda, ... (default: cpu)")
    ev.add_argument("--set", nargs="+", metavar="KEY=VALUE", help=OVERRIDE_HELP)
    ev.add_argument("--gait", type=float, nargs=3, metavar=("VX", "VY", "YAW"),
                    help="also render the gait under this command (gait.gif + gait_filmstrip.png; needs EGL)")

    imp = sub.add_parser("import", help="convert a legged_gym / walk-these-ways / unitree_rl_gym policy into a "
                         "policy.pt with the robot contract")
    imp.add_argument("--from", dest="source", required=True, choices=("legged_gym", "walk_these_ways", "unitree_rl_gym"))
    imp.add_argument("--policy", type=Path, required=True,
                     help="legged_gym/unitree_rl_gym: exported policy_1.pt (or an rsl_rl model_<it>.pt); "
                          "walk_these_ways: the run folder holding checkpoints/ and parameters.pkl")
    imp.add_argument("--config", type=Path, help="legged_gym: the task's values as YAML; unitree_rl_gym: its "
                     "deploy YAML (a path, or a name in configs/import/: legged_gym_a1_flat, unitree_rl_gym_go2); "
                     "walk_these_ways: parameters.pkl (default: in the run folder)")
    imp.add_argument("--map", action="append", default=[], metavar="TERM=STANDIN",
                     help="stand in for a term a Go1 cannot measure, explicitly: base_lin_vel=command|zero")
    imp.add_argument("--robot", default="go1")
    imp.add_argument("--out", type=Path, required=True, help="our policy file to write (policy.pt)")

    args = parser.parse_args(argv)
    try:
        return {"train": _train, "finetune": _finetune, "eval": _eval, "import": _import}[args.command](args)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"sim_pretrain {args.command}: error: {err}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    except KeyboardInterrupt as err:  # train / finetune: one Ctrl-C saves a checkpoint (TrainingStopped), a second aborts
        _say(f"sim_pretrain {args.command}: {err or 'stopped by the operator'}")
        return ExitCode.ABORTED


def _train(args: argparse.Namespace) -> int:
    from robot_spec import load_robot
    from sim_pretrain.distributed import Ranks, rank_config
    from sim_pretrain.train import new_run_dir, read_checkpoint, train
    from sim_pretrain.train_config import load_train_config

    check_number("--iterations", args.iterations, 1, integer=True)  # -1 exported an untrained policy
    check_number("--num-envs", args.num_envs, 1, integer=True)
    load_robot(args.robot)  # unknown robot names are answered with the known ones
    resume, run_dir, preset = None, None, args.preset
    if args.resume is not None:
        resume = _latest_checkpoint(args.resume)
        read_checkpoint(resume)  # a crafted or foreign file is refused before its folder's config is read
        run_dir = resume.parent
        preset = str(run_dir / "config.yaml")  # the run goes on as it was configured (its --set values too)
    extra = parse_overrides(args.set)
    cfg = load_train_config(args.robot, preset, args.seed, args.num_envs, args.iterations, extra)
    rank_config(cfg, Ranks.from_env())  # under torchrun: refuses environments the processes cannot share evenly
    if run_dir is None:
        run_dir = new_run_dir(args.runs, args.robot, Path(args.preset).stem)
    _say(f"run folder: {run_dir}")
    policy = train(cfg, run_dir, device=args.device, resume=resume)
    _say(f"exported policy: {policy} (+ {policy.with_suffix('.onnx').name})")
    return 0


def _say(message: str) -> None:
    """Print, from rank 0 only under torchrun (it alone writes the run folder)."""
    from sim_pretrain.distributed import Ranks

    if Ranks.from_env().is_main:
        print(message)


def _latest_checkpoint(path: Path) -> Path:
    from sim_pretrain.train import latest_checkpoint

    try:
        return latest_checkpoint(path)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"--resume: {err}") from None


def _finetune(args: argparse.Namespace) -> int:
    from robot_spec.reality_gap import load_reality_gap
    from sim_pretrain.env_config import DynamicsConfig
    from sim_pretrain.train import finetune_in_sim

    if args.iterations <= 0:
        raise ValueError(f"--iterations {args.iterations}: expected > 0")
    if args.num_envs is not None and args.num_envs <= 0:
        raise ValueError(f"--num-envs {args.num_envs}: expected > 0")
    load_reality_gap(args.dynamics)  # an unknown profile is answered with the known ones
    dynamics = DynamicsConfig(profile=args.dynamics, physics=args.physics, spread=args.spread)
    out = args.out or Path("runs") / "go1" / f"{time.strftime('%Y%m%d-%H%M%S')}_finetune"
    _say(f"run folder: {out}")
    policy = finetune_in_sim(args.policy, dynamics, args.iterations, out, device=args.device, seed=args.seed,
                             num_envs=args.num_envs)
    _say(f"exported policy: {policy} (+ {policy.with_suffix('.onnx').name})")
    return 0


def _eval(args: argparse.Namespace) -> int:
    if args.gait is not None:  # mujoco reads MUJOCO_GL when first imported: before evaluate imports it
        os.environ.setdefault("MUJOCO_GL", "egl")
    from sim_pretrain.evaluate import EvalConfig, evaluate_policy, write_report
    from robot_spec import load_robot
    from robot_spec.policy_io import load_policy

    spec = load_robot(args.robot)
    policy = load_policy(args.policy, spec, device=args.device)
    overrides = {"seed": args.seed} if args.seed is not None else {}
    preset_file = named_config("eval", args.preset)
    cfg = load_config(EvalConfig, preset_file, {**overrides, **parse_overrides(args.set)})
    metrics = evaluate_policy(policy, cfg, device=args.device)
    metrics = {"preset": str(preset_file), "seed": cfg.seed, "set": args.set or [], **metrics}  # what produced them
    out = args.out or args.policy.parent / "eval"
    write_report(metrics, out)
    if args.gait is not None:
        from sim_pretrain.render import render_gait

        print(f"gait: {render_gait(policy, list(args.gait), out)}")
    print(f"fall rate {metrics['fall_rate']:.3f}, mean tracking error {metrics['mean_tracking_error']:.3f} m/s, "
          f"mean return {metrics['mean_return']:.2f} -> {out}/metrics.json")
    return 0


def _import(args: argparse.Namespace) -> int:
    from robot_spec import load_robot
    from sim_pretrain.isaac_import import import_policy

    maps = {}
    for item in args.map:
        term, sep, standin = item.partition("=")
        if not sep:
            raise ValueError(f"--map {item!r}: expected TERM=STANDIN, e.g. base_lin_vel=command")
        maps[term] = standin
    config = args.config
    if config is not None and not config.exists() and not config.suffix:  # a shipped one: configs/import/<name>.yaml
        config = named_config("import", str(config))
    contract = import_policy(args.source, args.policy, config, load_robot(args.robot), args.out, maps)
    arch = contract["architecture"]
    print(f"imported {args.source} policy -> {args.out} ({arch.get('kind', 'mlp')}, "
          f"{arch['obs_dim']} -> {arch['action_dim']}, robot {contract['robot']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
