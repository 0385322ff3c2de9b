"""Does the simulator say what the robot says once episodes start where the robot's policy took over?

For each policy: the share of simulated episodes that fall, in the vectorised simulator set to a profile (its own
solver; no randomisation around it), under the walk schedule deploy uses (configs/deploy/schedule_walk.yaml),
every episode starting (a) at the default pose, as training does, and (b) from the robot's logged policy starts
(real_robot.start_states). Compare with the same policies' falls on the stand-in (benchmarks/gap_recovery.py).

    python benchmarks/start_states.py --profile strong --logs runs/gap_recovery/strong/seed1/logs \
        --policies sim=runs/go1/<run>/policy.pt oracle=... --name start_states_strong_s1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import save  # noqa: E402
from deploy.commands import ScheduledCommand, load_schedule, load_speed_preset  # noqa: E402
from real_robot.start_states import save_policy_starts  # noqa: E402
from robot_spec import load_robot  # noqa: E402
from robot_spec.policy_io import load_policy  # noqa: E402
from sim_pretrain.env import Go1Env  # noqa: E402
from sim_pretrain.env_config import DynamicsConfig, EnvConfig, InitialStatesConfig  # noqa: E402


@torch.inference_mode()
def fall_rate(policy: Path, profile: str, starts: Path | None, envs: int, episode_s: float, seed: int) -> float:
    cfg = EnvConfig(num_envs=envs, seed=seed, initial_states=InitialStatesConfig(str(starts or ""), share=1.0))
    cfg.dynamics = DynamicsConfig(profile=profile, physics="profile", spread=0.0, added_mass_spread=0.0,
                                  latency_spread_s=0.0)  # fmt: skip
    cfg.randomization.push_velocity = 0.0
    cfg.commands.resample_s = 1e9  # the schedule sets the command
    env, actor = Go1Env(cfg), load_policy(policy, load_robot("go1")).actor
    schedule = ScheduledCommand(load_schedule("walk", load_speed_preset("high")))
    alive, fell = torch.ones(envs, dtype=torch.bool), torch.zeros(envs, dtype=torch.bool)
    env.commands[:] = torch.tensor(schedule.command(0.0), dtype=torch.float32)
    obs = env._observe()
    for k in range(int(episode_s / env.dt)):
        env.commands[:] = torch.tensor(schedule.command(k * env.dt), dtype=torch.float32)
        obs, _, done, extras = env.step(actor(obs["policy"]))
        fell |= alive & done & ~extras["time_outs"]
        alive &= ~done
    return fell.float().mean().item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="strong")
    p.add_argument("--logs", type=Path, required=True, help="the robot's log folder (its policy starts)")
    p.add_argument("--policies", nargs="+", required=True, help="name=policy.pt ...")
    p.add_argument("--envs", type=int, default=32)
    p.add_argument("--episode-s", type=float, default=20.0)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--name", default="start_states")
    args = p.parse_args()

    starts = save_policy_starts([args.logs], Path("/tmp") / f"{args.name}_starts.npz")
    results = {}
    for item in args.policies:
        name, policy = item.split("=", 1)
        t = time.time()
        results[name] = {"default_pose": fall_rate(Path(policy), args.profile, None, args.envs, args.episode_s,
                                                   args.seed),
                         "robot_starts": fall_rate(Path(policy), args.profile, starts, args.envs, args.episode_s,
                                                   args.seed),
                         "policy": policy}  # fmt: skip
        r = results[name]
        print(f"{name:24s} falls from the default pose {r['default_pose']:.2f}, from the robot's starts "
              f"{r['robot_starts']:.2f}  ({time.time() - t:.0f} s)", flush=True)
    save(args.name, {"setting": {k: str(v) for k, v in vars(args).items()}, "results": results})


if __name__ == "__main__":
    main()
