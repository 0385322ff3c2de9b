"""Speed of the exact oracle's simulator (uni_o4.exact_env) against the training simulator on the same profile.

Policy steps per CPU-second of this process (time.process_time: every thread's CPU, so the figure holds on a busy
host, where wall time measures the other jobs), random actions, one thread each; and what that means for one
PPO iteration of the quick preset (512 envs x 24 steps).

    python benchmarks/exact_env_rate.py [--profiles strong unmodelled] [--envs 64] [--steps 30]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import save  # noqa: E402
from sim_pretrain.env import Go1Env  # noqa: E402
from sim_pretrain.env_config import DynamicsConfig, EnvConfig  # noqa: E402
from uni_o4.exact_env import StandInEnv  # noqa: E402

ITERATION_STEPS = 512 * 24  # the quick preset's PPO iteration


def rate(env, steps: int) -> float:
    """Env-steps per CPU-second."""
    env.step(torch.zeros(env.num_envs, env.num_actions))
    start = time.process_time()
    for _ in range(steps):
        env.step(0.3 * torch.randn(env.num_envs, env.num_actions))
    return env.num_envs * steps / (time.process_time() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profiles", nargs="+", default=["strong", "unmodelled"])
    p.add_argument("--envs", type=int, default=64)
    p.add_argument("--steps", type=int, default=30)
    args = p.parse_args()
    torch.set_num_threads(1)
    results = {}
    for profile in args.profiles:
        for name, env_class, physics in (("exact", StandInEnv, "profile"), ("training", Go1Env, "training")):
            env = env_class(EnvConfig(num_envs=args.envs, num_threads=1,
                                      dynamics=DynamicsConfig(profile=profile, physics=physics)))  # fmt: skip
            steps_per_cpu_s = rate(env, args.steps)
            env.close()
            results[f"{profile} {name}"] = {"env_steps_per_cpu_s": steps_per_cpu_s,
                                            "cpu_s_per_iteration": ITERATION_STEPS / steps_per_cpu_s}  # fmt: skip
            print(f"{profile:12s} {name:9s} {steps_per_cpu_s:7.0f} env-steps per CPU-s, "
                  f"{ITERATION_STEPS / steps_per_cpu_s:5.1f} CPU-s of env per PPO iteration (512 x 24)")
    save("exact_env_rate", {"setting": vars(args), "results": results})


if __name__ == "__main__":
    main()
