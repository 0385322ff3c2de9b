"""The stance between online rollouts: does the control loop hold the robot while the learner computes?

On the stand-in in real time (`real_robot sim-robot` + `real_robot bridge`, the loop paced by the robot's
clock as on hardware), one short episode of the policy, then the session keeps the control loop going in its
thread (`Session.keep_control`) while this thread runs a learner-like workload: forward/backward/Adam steps of an
MLP the size of the policy and critic, with the runtime's torch threads. Reported: the wall interval between
control steps during the hold (target period 20 ms; the loop-overrun monitor trips at 60 ms), safety trips of
the runtime (a bridge trip shows there too), the stance (largest joint deviation from where the episode ended, body tilt) and
how many workload steps ran.

    python benchmarks/standing_hold.py [--policy policy.pt] [--hold-s 20] [--workload ppo|o3f|o3f_cold|o3f_eager]
                                       [--learner-threads N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import save  # noqa: E402
from deploy.runtime import Phase, torch_threads  # noqa: E402
from deploy.session import CollectConfig, Session, SessionConfig  # noqa: E402
from real_robot.datalog import read_log_folder  # noqa: E402
from real_robot.loopback import LoopbackRobot  # noqa: E402
from robot_spec import load_robot  # noqa: E402
from robot_spec.policy_io import ActorMLP, save_policy  # noqa: E402


class LearnerWorkload:
    """PPO-update-like work: minibatches of 128 through a 512-256-128 MLP, backward, Adam. Built before the
    robot starts, as `uni_o4 finetune --online` builds its learner: the first torch optimizer of a process
    takes about a second of lazy imports, holding the interpreter long enough to stall a control thread."""

    def __init__(self, obs_dim: int, actions: int):
        self.net = torch.nn.Sequential(torch.nn.Linear(obs_dim, 512), torch.nn.ELU(), torch.nn.Linear(512, 256),
                                       torch.nn.ELU(), torch.nn.Linear(256, 128), torch.nn.ELU(),
                                       torch.nn.Linear(128, actions))  # fmt: skip
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=1e-4)
        self.x, self.y = torch.randn(4096, obs_dim), torch.randn(4096, actions)

    def run(self, seconds: float) -> int:
        steps, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            idx = torch.randint(0, len(self.x), (128,))
            loss = (self.net(self.x[idx]) - self.y[idx]).square().mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            steps += 1
        return steps


class OffPolicyWorkload:
    """O3F's updates (configs/finetune/o3f.yaml) on synthetic data, built before the robot starts. Compiled and
    warmed up there, as the online loop does; compiled and "cold", the first update compiles during the hold."""

    def __init__(self, obs_dim: int, actions: int, compile: bool, warm_up: bool = True):
        from uni_o4.baselines import SafeActionSet
        from uni_o4.registry import load_baseline_config, make_algorithm
        from uni_o4.synthetic import synthetic_dataset

        self.data = synthetic_dataset(obs_dim, actions, episodes=20, length=200)
        cfg = load_baseline_config("o3f", overrides={"compile": compile})
        self.algo = make_algorithm("o3f", cfg, self.data, SafeActionSet.for_robot("go1"))
        self.batch_size = cfg.batch_size
        if warm_up:
            self.algo.warm_up(self.data.sample(self.batch_size))

    def run(self, seconds: float) -> int:
        steps, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            self.algo.update(self.data.sample(self.batch_size))
            steps += 1
        return steps


WORKLOADS = {
    "ppo": LearnerWorkload,
    "o3f": lambda obs_dim, actions: OffPolicyWorkload(obs_dim, actions, compile=True),
    "o3f_cold": lambda obs_dim, actions: OffPolicyWorkload(obs_dim, actions, compile=True, warm_up=False),
    "o3f_eager": lambda obs_dim, actions: OffPolicyWorkload(obs_dim, actions, compile=False),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", type=Path, help="policy file (default: a zero-action policy, which stands)")
    p.add_argument("--profile", default="none")
    p.add_argument("--episode-s", type=float, default=2.0)
    p.add_argument("--hold-s", type=float, default=20.0)
    p.add_argument("--workload", choices=sorted(WORKLOADS), default="ppo",
                   help="ppo: PPO-like MLP steps; O3F updates: o3f compiled before the robot starts (as online), "
                        "o3f_cold compiled in the first update, o3f_eager not compiled")
    p.add_argument("--learner-threads", type=int, default=0,
                   help="torch threads of the workload (online: learner_threads); 0: the runtime's")
    args = p.parse_args()
    spec = load_robot("go1")
    learner = WORKLOADS[args.workload](spec.observation.dim, spec.num_joints)
    with tempfile.TemporaryDirectory(prefix="hold_") as tmp, LoopbackRobot(profile=args.profile, fast=False) as robot:
        policy = args.policy
        if policy is None:
            actor = ActorMLP(spec.observation.dim, spec.num_joints, [32])
            torch.nn.init.zeros_(actor.mlp[-1].weight), torch.nn.init.zeros_(actor.mlp[-1].bias)
            policy = Path(tmp) / "standing.pt"
            save_policy(actor, spec, policy)
        log = Path(tmp) / "log"
        run = CollectConfig(policy, episodes=1, episode_s=args.episode_s, schedule="stand", out=log,
                            stand_in_profile=args.profile)  # fmt: skip
        session = Session(SessionConfig(lcm_url=robot.lcm_url, channel_prefix=robot.prefix), run)
        try:
            session.collect(run, stand_after=True)
            records: list[dict] = []
            session.runtime.on_step = records.append
            with torch_threads(args.learner_threads or torch.get_num_threads()):  # as OnlineRun runs updates
                workload_steps = learner.run(args.hold_s)
            session.runtime.on_step = None  # what follows is the closing damping
            standing_at_end = session.standing
            bridge = session.io.bridge_status()
        finally:
            session.close()
        episode = read_log_folder(log).episodes[0].records
    stance = episode["q"][episode["phase"] == Phase.POLICY][-1]
    intervals_ms = np.diff([r["timestamp_us"] for r in records]) / 1e3
    hold = [r for r in records if r["phase"] == Phase.SOFT_START]
    deviation = max(float(np.abs(r["state"].q - stance).max()) for r in hold)
    tilt = max(float(np.abs(r["state"].rpy[:2]).max()) for r in hold)
    trips = sorted({r["trip"].reason for r in records if r["trip"] is not None})
    result = {
        "setting": {**vars(args), "policy": str(args.policy)},
        "control_steps": len(records), "hold_steps": len(hold), "standing_at_end": standing_at_end,
        "step_interval_ms": {"p50": float(np.percentile(intervals_ms, 50)), "p99": float(np.percentile(intervals_ms, 99)),
                             "max": float(intervals_ms.max())},
        "runtime_trips": trips, "bridge_tripped_at_end": bool(bridge and bridge.tripped),
        "max_joint_deviation_from_stance_rad": deviation, "max_tilt_rad": tilt, "workload_steps": workload_steps,
    }  # fmt: skip
    i = result["step_interval_ms"]
    print(f"hold of {args.hold_s:.0f} s under a learner workload ({workload_steps} steps): {len(records)} control "
          f"steps, interval p50 {i['p50']:.1f} ms, p99 {i['p99']:.1f} ms, max {i['max']:.1f} ms; trips {trips or 'none'} "
          f"(bridge tripped at the end: {result['bridge_tripped_at_end']}); stance: joints within {deviation:.3f} rad, tilt {tilt:.3f} rad; "
          f"standing at the end: {standing_at_end}")  # fmt: skip
    threads = f"_{args.learner_threads}threads" if args.learner_threads else ""
    save(("standing_hold" if args.workload == "ppo" else f"standing_hold_{args.workload}") + threads, result)


if __name__ == "__main__":
    main()
