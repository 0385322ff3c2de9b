"""Repeatability of a stand-in evaluation: the same policy, seed and episodes evaluated twice (fast mode).

The stand-in in lockstep repeats from its seeds, so the two runs' logs should be identical. Reported per profile:
each run's return and falls, the first robot tick of the first episode (when the run happened to start: it
differs), the largest difference of every logged measurement over all episodes, and whether the logs are
identical.

    python benchmarks/stand_in_repeatability.py --policy policy.pt [--profiles none strong] [--episodes 2] [--busy 6]

`--busy N` runs N busy loops beside the runs: a host as starved as one training beside the collection, where
timing leaks into a lockstep run first.
"""

from __future__ import annotations

import argparse
import subprocess
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
    """How two runs' logs differ: every episode, every logged measurement (host timestamps and the robot's
    absolute tick excepted: they say when, not what)."""
    runs = [read_log_folder(f).episodes for f in (first, second)]
    a, b = (episodes[0].records for episodes in runs)
    diffs = {}
    for ep_a, ep_b in zip(*runs):
        for key in ep_a.records:
            if key in ("timestamp_us", "robot_tick_us", "step"):
                continue
            x, y = ep_a.records[key], ep_b.records[key]
            n = min(len(x), len(y))
            diff = float(np.nanmax(np.abs(x[:n].astype(np.float64) - y[:n]), initial=0.0))
            diffs[key] = max(diffs.get(key, 0.0), diff)
    lengths = [[len(e.records["q"]) for e in episodes] for episodes in runs]
    return {
        "first_tick_us": [int(a["robot_tick_us"][0]), int(b["robot_tick_us"][0])],
        "start_q_max_diff_rad": float(np.abs(a["q"][0] - b["q"][0]).max()),
        "obs_max_diff": diffs["obs"],
        "records_per_episode": lengths,
        "identical": lengths[0] == lengths[1] and not any(diffs.values()),
        "max_diff_by_field": diffs,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", type=Path, required=True, help="policy file (policy.pt)")
    p.add_argument("--profiles", nargs="+", default=["none", "strong"])
    p.add_argument("--episodes", type=int, default=2)
    p.add_argument("--episode-s", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=101)
    p.add_argument("--busy", type=int, default=0, help="busy-loop processes beside the runs (default 0: idle host)")
    args = p.parse_args()
    if not args.policy.is_file():
        p.error(f"policy not found: {args.policy}")
    spec = load_robot("go1")
    cfg = RobotEvalConfig(episodes=args.episodes, episode_s=args.episode_s, seed=args.seed)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        with tempfile.TemporaryDirectory(prefix="repeat_") as tmp:
            results = measure(args, spec, cfg, Path(tmp))
    finally:
        for loop in busy:
            loop.kill()
    save("stand_in_repeatability" + (f"_busy{args.busy}" if args.busy else ""),
         {"setting": {**vars(args), "policy": str(args.policy)}, "profiles": results})


def measure(args: argparse.Namespace, spec, cfg: RobotEvalConfig, tmp: Path) -> dict:
    """Each profile evaluated twice into `tmp`: its row."""
    results = {}
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
              f"{r['start_q_max_diff_rad']:.2e} rad, obs Δ {r['obs_max_diff']:.3g}, identical: {r['identical']}")  # fmt: skip
    return results


if __name__ == "__main__":
    main()
