"""How do policies fare across reality-gap profiles? Each policy on the stand-in with each profile, the same robot
(robot seed) and the same episodes (sensor-noise seeds) for every policy: return, tracking error, falls.

Use it to see whether a policy is robust before fine-tuning it (a profile where every policy falls in every
episode leaves fine-tuning little data to learn from), and which profiles a change helps or hurts.

    python benchmarks/profile_sweep.py --policies a=runs/go1/<run>/policy.pt b=... \
        --profiles none strong unmodelled --episodes 8 --root runs/sweep
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import save  # noqa: E402
from robot_spec import load_robot  # noqa: E402
from uni_o4.robot_eval import RobotEvalConfig, evaluation_of  # noqa: E402

KEYS = ("mean_return", "tracking_error_xy", "fall_rate", "trip_rate", "episodes", "policy_steps")


def named_policy(text: str) -> tuple[str, Path]:
    name, _, path = text.partition("=")
    if not path:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=PATH")
    return name, Path(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policies", nargs="+", type=named_policy, required=True, metavar="NAME=PATH")
    p.add_argument("--profiles", nargs="+", required=True, help="configs/reality_gap/ names or .yaml paths")
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--seed", type=int, default=0, help="the stand-in robot (episodes: seed + 100, as gap_recovery)")
    p.add_argument("--root", type=Path, default=Path("runs/sweep"))
    p.add_argument("--name", default="profile_sweep")
    args = p.parse_args()
    spec = load_robot("go1")
    cfg = RobotEvalConfig(episodes=args.episodes, seed=args.seed + 100, robot_seed=args.seed)
    rows: dict[str, dict] = {}
    for profile in args.profiles:
        label = Path(profile).stem
        for name, policy in args.policies:
            metrics = evaluation_of(policy, profile, args.root / label / name, spec, cfg)
            rows.setdefault(label, {})[name] = {k: metrics[k] for k in KEYS}
            print(f"{label:12s} {name:16s} return {metrics['mean_return']:6.2f}  tracking "
                  f"{metrics['tracking_error_xy']:.3f} m/s  falls {metrics['fall_rate']:.2f}", flush=True)  # fmt: skip
    save(args.name, {"policies": {n: str(p) for n, p in args.policies}, "seed": args.seed,
                     "episodes": args.episodes, "rows": rows})  # fmt: skip


if __name__ == "__main__":
    main()
