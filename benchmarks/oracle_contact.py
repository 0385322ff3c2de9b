"""Does the oracle (PPO from the sim policy in the training simulator set to a profile's true figures) freeze on the
stand-in because it trained on the fast contact model? The pipeline's oracle recipe with a share of its
environments on the accurate contact model (sim_pretrain RandomizationConfig.accurate_contact_share) against
the sim policy, on the stand-in robots (12 episodes of the walk schedule each, the same episodes for every policy).

    python benchmarks/oracle_contact.py --profile strong --seeds 2 0 --shares 0 0.5 --root runs/oracle_contact

Each oracle trains once into <root>/<profile>_s<seed>_share<share>/ and each evaluation is cached beside it (a
rerun resumes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import save  # noqa: E402
from robot_spec import load_robot  # noqa: E402
from robot_spec.policy_io import shipped_policy  # noqa: E402
from sim_pretrain.env_config import DynamicsConfig  # noqa: E402
from sim_pretrain.train import finetune_in_sim  # noqa: E402
from uni_o4.robot_eval import RobotEvalConfig, evaluation_of  # noqa: E402
from uni_o4.sim_ppo import deploy_action_limit  # noqa: E402

KEYS = ("tracking_error_xy", "tracking_error_yaw", "mean_return", "fall_rate", "stalled_s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", type=Path, default=None, help="the sim policy (default: the shipped robust one)")
    p.add_argument("--profile", default="strong")
    p.add_argument("--seeds", type=int, nargs="+", default=[2, 0], help="stand-in robots; each oracle's PPO seed too")
    p.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.5], help="accurate_contact_share values")
    p.add_argument("--iterations", type=int, default=150)
    p.add_argument("--episodes", type=int, default=12)
    p.add_argument("--root", type=Path, default=Path("runs/oracle_contact"))
    p.add_argument("--name", default=None)
    args = p.parse_args(argv)
    policy = args.policy or shipped_policy("go1")
    spec, rows = load_robot("go1"), []
    for seed in args.seeds:
        evaluation = RobotEvalConfig(episodes=args.episodes, robot_seed=seed)
        runs = {"sim policy": policy}
        for share in args.shares:
            run = args.root / f"{args.profile}_s{seed}_share{share:g}"
            if not (run / "policy.pt").is_file():
                finetune_in_sim(policy, DynamicsConfig(profile=args.profile, physics="training"), args.iterations, run,
                                seed=seed, action_limit=deploy_action_limit("go1"),
                                randomization={"accurate_contact_share": share})  # fmt: skip
            runs[f"oracle, accurate contact share {share:g}"] = run / "policy.pt"
        for who, path in runs.items():
            folder = args.root / f"eval_{args.profile}_s{seed}_{who.replace(' ', '_').replace(',', '')}"
            m = evaluation_of(path, args.profile, folder, spec, evaluation)
            rows.append({"robot_seed": seed, "policy": who, **{k: m[k] for k in KEYS},
                         "stalled_s_per_episode": [r["stalled_s"] for r in m["per_episode"]]})  # fmt: skip
            print(f"seed {seed} {who:38s} xy {m['tracking_error_xy']:.3f}  yaw {m['tracking_error_yaw']:.3f}  "
                  f"return {m['mean_return']:.2f}  falls {m['fall_rate']:.2f}  stalled {m['stalled_s']:.1f} s/ep")
    save(args.name or f"oracle_contact_{args.profile}", {"args": {k: str(v) for k, v in vars(args).items()},
                                                          "rows": rows})  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
