"""Repeatability of a stand-in evaluation: the same policy, seed and episodes evaluated twice (fast mode).

A bit-reproducible stand-in would give identical logs. Reported per profile: each run's return and falls, the
first robot tick after the reset, the largest joint-angle difference at the first logged record and the largest
observation difference over the episode (how far the two runs drift apart).

    python benchmarks/stand_in_repeatability.py --policy policy.pt [--profiles none strong] [--episodes 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import save  # noqa: E402
from real_robot.datalog import read_log_folder  # noqa: E402
from robot_spec import load_robot  # noqa: E402
from uni_o4.robot_eval import RobotEvalConfig, evaluate_on_stand_in  # noqa: E402


def compare(first: Path, second: Path) -> dict:
    """How the first episodes of two runs differ."""
    a, b = (read_log_folder(f).episodes[0].records for f in (first, second))
    n = min(len(a["q"]), len(b["q"]))
    return {
        "first_tick_us": [int(a["robot_tick_us"][0]), int(b["robot_tick_us"][0])],
        "start_q_max_diff_rad": float(np.abs(a["q"][0] - b["q"][0]).max()),
        "obs_max_diff": float(np.abs(a["obs"][:n] - b["obs"][:n]).max()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", type=Path, required=True, help="policy file (policy.pt)")
    p.add_argument("--profiles", nargs="+", default=["none", "strong"])
    p.add_argument("--episodes", type=int, default=2)
    p.add_argument("--episode-s", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=101)
    args = p.parse_args()
    if not args.policy.is_file():
        p.error(f"policy not found: {args.policy}")
    spec = load_robot("go1")
    cfg = RobotEvalConfig(episodes=args.episodes, episode_s=args.episode_s, seed=args.seed)
    results = {}
    with tempfile.TemporaryDirectory(prefix="repeat_") as tmp:
        for profile in args.profiles:
            folders = [Path(tmp) / f"{profile}_{run}" for run in range(2)]
            runs = [evaluate_on_stand_in(args.policy, profile, folder, spec, cfg) for folder in folders]
            results[profile] = {
                "runs": [{k: m[k] for k in ("mean_return", "fall_rate", "policy_steps")} for m in runs],
                **compare(*folders),
            }
            r = results[profile]
            print(f"{profile:8s} returns {[round(m['mean_return'], 4) for m in r['runs']]}, falls "
                  f"{[m['fall_rate'] for m in r['runs']]}, first tick {r['first_tick_us']} us, start q Δ "
                  f"{r['start_q_max_diff_rad']:.2e} rad, obs Δ {r['obs_max_diff']:.3g}")  # fmt: skip
    save("stand_in_repeatability", {"setting": {**vars(args), "policy": str(args.policy)}, "profiles": results})


if __name__ == "__main__":
    main()
