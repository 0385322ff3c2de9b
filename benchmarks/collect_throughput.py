"""Data collection throughput: logged control steps per second of wall time, on the stand-in robot in real
time and in fast mode (lockstep with the bridge: as fast as the host allows).

The whole path runs: stand-in robot and SDK bridge (subprocesses), the deploy runtime with its monitors, and
the loss-proof log writer (`real_robot collect` in process). Reported: logged records/s and policy steps/s
of wall time, and robot time / wall time (the speed-up fast mode buys).

    python benchmarks/collect_throughput.py [--policy policy.pt] [--steps 500] [--profile none]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import save  # noqa: E402
from real_robot.collect_cli import main as collect_main  # noqa: E402
from real_robot.datalog import read_log_folder  # noqa: E402
from real_robot.loopback import LoopbackRobot  # noqa: E402
from robot_spec import load_robot  # noqa: E402
from robot_spec.config import CONFIG_DIR  # noqa: E402
from robot_spec.policy_io import ActorMLP, save_policy  # noqa: E402

DEFAULT_POLICY = Path("/work/policies/policy.pt")


def run_mode(policy: Path, fast: bool, steps: int, episode_s: float, profile: str, tmp: Path) -> dict:
    name = "fast" if fast else "real_time"
    runtime = yaml.safe_load((CONFIG_DIR / "deploy" / ("runtime_fast.yaml" if fast else "runtime.yaml")).read_text())
    runtime_file = tmp / f"runtime_{name}.yaml"
    runtime_file.write_text(yaml.safe_dump({**runtime, "soft_start_s": 1.0, "stand_s": 0.5}))
    out = tmp / f"log_{name}"
    with LoopbackRobot(profile=profile, fast=fast) as robot:
        start = time.perf_counter()
        code = collect_main([
            "--policy", str(policy), "--steps", str(steps), "--episode-s", str(episode_s), "--out", str(out),
            "--runtime-config", str(runtime_file), "--lcm-url", robot.lcm_url, "--channel-prefix", robot.prefix,
            "--stand-in-profile", profile, "--reset-settle-s", "0.5",
        ])  # fmt: skip
        wall = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"collect exited with {code}")
    episodes = read_log_folder(out).episodes
    records = sum(len(e) for e in episodes)
    policy_steps = sum(int((e.records["phase"] == 1).sum()) for e in episodes)
    robot_s = sum((e.records["robot_tick_us"][-1] - e.records["robot_tick_us"][0]) / 1e6 for e in episodes)
    return {
        "mode": name, "wall_s": wall, "episodes": len(episodes), "outcomes": [e.outcome for e in episodes],
        "records": records, "policy_steps": policy_steps, "records_per_s": records / wall,
        "policy_steps_per_s": policy_steps / wall, "logged_robot_time_s": robot_s,
        "robot_time_per_wall_time": robot_s / wall,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", type=Path, help=f"policy file (default: {DEFAULT_POLICY} if present, else "
                        "a freshly initialised 256-128-64 MLP that stands still)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=500, help="policy steps to collect per mode")
    parser.add_argument("--episode-s", type=float, default=5.0, help="episode time limit (robot time)")
    parser.add_argument("--profile", default="none", help="stand-in reality-gap profile (default: none)")
    parser.add_argument("--modes", nargs="+", choices=["real_time", "fast"], default=["real_time", "fast"])
    args = parser.parse_args()
    spec = load_robot("go1")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        policy = args.policy or (DEFAULT_POLICY if DEFAULT_POLICY.is_file() else None)
        if policy is None:
            policy = Path(tmp) / "policy.pt"
            actor = ActorMLP(spec.observation.dim, spec.num_joints, [256, 128, 64])
            actor.mlp[-1].weight.data.zero_()
            actor.mlp[-1].bias.data.zero_()
            save_policy(actor, spec, policy)
        for mode in args.modes:
            row = run_mode(policy, mode == "fast", args.steps, args.episode_s, args.profile, Path(tmp))
            rows.append(row)
            print(f"{mode:9s}: {row['records_per_s']:6.1f} records/s, {row['policy_steps_per_s']:6.1f} policy steps/s, "
                  f"robot time x{row['robot_time_per_wall_time']:.2f} of wall time, {row['episodes']} episodes "
                  f"{row['outcomes']}")  # fmt: skip
    save("collect_throughput", {"policy": str(policy), "profile": args.profile, "steps": args.steps, "rows": rows})


if __name__ == "__main__":
    main()
