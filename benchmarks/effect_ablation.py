"""Which of a profile's effects makes a policy fall? The same policy on the stand-in with the profile as it is and
with one effect taken away at a time (each variant a profile file beside the results), the same episodes.

    python benchmarks/effect_ablation.py --policy runs/.../policy.pt --profile random_1 \
        --without ground.step_height=0 motors.latency_jitter_s=0 payload.mass=0 --root runs/ablation

--exact: instead of the stand-in over the wire, the stand-in's own physics in the vectorised task
(uni_o4.exact_env, the same board code): the eval preset's command grid, 8 robots (stand-in seeds 0-7) per command,
episodes from `--starts` (a sim_ppo calibration's starts.npz: where the robot's policy took over). Seconds a
variant instead of minutes; it says which command and which robots fall.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import save  # noqa: E402
from robot_spec import load_robot  # noqa: E402
from robot_spec.config import named_config  # noqa: E402
from uni_o4.robot_eval import RobotEvalConfig, evaluation_of  # noqa: E402

KEYS = ("mean_return", "tracking_error_xy", "tracking_error_yaw", "fall_rate", "trip_rate", "episodes", "fell", "fall_rate_by_command")


def variant(profile: dict, change: str) -> dict:
    """`profile` with dotted fields set (`ground.step_height=0`; several joined by '+' in one variant)."""
    out = yaml.safe_load(yaml.safe_dump(profile))
    for one in change.split("+"):
        key, value = one.split("=", 1)
        *path, leaf = key.split(".")
        node = out
        for part in path:
            node = node[part]
        if leaf not in node:
            raise ValueError(f"{key}: no such field in the profile")
        node[leaf] = yaml.safe_load(value)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", type=Path, required=True)
    p.add_argument("--profile", required=True, help="configs/reality_gap/ name or a .yaml path")
    p.add_argument("--without", nargs="+", required=True, metavar="FIELD=VALUE",
                   help="one variant per change (FIELD=VALUE+FIELD=VALUE: several in one)")
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--seed", type=int, default=0, help="the stand-in robot (episodes: seed + 100, as gap_recovery)")
    p.add_argument("--root", type=Path, default=Path("runs/ablation"))
    p.add_argument("--name", default="effect_ablation")
    p.add_argument("--exact", action="store_true", help="in the stand-in's physics in the vectorised task (fast)")
    p.add_argument("--starts", type=Path, help="--exact: the robot's policy starts (.npz); default: the home pose")
    args = p.parse_args()
    if args.starts is not None and not (args.exact and args.starts.is_file()):
        p.error(f"--starts {args.starts}: needs --exact and an existing .npz of the robot's policy starts")
    spec, cfg = load_robot("go1"), RobotEvalConfig(episodes=args.episodes, seed=args.seed + 100, robot_seed=args.seed)
    base = yaml.safe_load(named_config("reality_gap", args.profile).read_text())
    args.root.mkdir(parents=True, exist_ok=True)
    rows = {}
    for change in ["as is", *args.without]:
        name = "as_is" if change == "as is" else change.replace(".", "_").replace("=", "_").replace("+", "__")
        profile = args.root / f"{base['name']}_{name}.yaml"  # a profile is named after its file
        profile.write_text(yaml.safe_dump({**(base if change == "as is" else variant(base, change)),
                                           "name": profile.stem}, sort_keys=False))  # fmt: skip
        if args.exact:
            metrics = exact_evaluation(args.policy, profile, args.starts, spec)
        else:
            metrics = evaluation_of(args.policy, str(profile), args.root / name, spec, cfg)
        rows[change] = {k: metrics[k] for k in KEYS if k in metrics}
        print(f"{change:32s} return {metrics['mean_return']:6.2f}  tracking {metrics['tracking_error_xy']:.3f} m/s  "
              f"yaw {metrics.get('tracking_error_yaw', float('nan')):.3f} rad/s  "
              f"falls {metrics['fall_rate']:.2f}", flush=True)  # fmt: skip
    save(args.name, {"policy": str(args.policy), "profile": args.profile, "seed": args.seed, "rows": rows})


def exact_evaluation(policy: Path, profile: Path, starts: Path | None, spec) -> dict:
    """The eval preset's grid in uni_o4.exact_env with `profile`, as the gap_recovery evaluation's keys, and which
    episodes fell (command-major: episode i meets command i // 8 on stand-in robot i % 8)."""
    from robot_spec.config import load_config
    from robot_spec.policy_io import load_policy
    from sim_pretrain.env_config import DynamicsConfig, InitialStatesConfig
    from sim_pretrain.evaluate import EvalConfig, evaluate_policy
    from uni_o4 import exact_env

    exact_env.register()
    cfg = load_config(EvalConfig, named_config("eval", "default"))
    cfg.env.backend, cfg.env.dynamics = exact_env.BACKEND, DynamicsConfig(profile=str(profile), physics="profile")
    if starts is not None:
        cfg.env.initial_states = InitialStatesConfig(str(starts), share=1.0)
    m = evaluate_policy(load_policy(policy, spec), cfg, progress=False)
    return {"mean_return": m["mean_return"], "tracking_error_xy": m["mean_tracking_error"], "fall_rate": m["fall_rate"],
            "episodes": m["episodes"], "fell": [i for i, f in enumerate(m["per_episode"]["fell"]) if f],
            "fall_rate_by_command": {str(r["command"]): r["fall_rate"] for r in m["per_command"]}}


if __name__ == "__main__":
    main()
