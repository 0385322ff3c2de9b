"""Uni-O4 offline training speed: gradient steps/s of every stage at the full preset's network sizes.

Synthetic data with the robot's shapes (45-d policy obs, 12-d actions, 20 extra critic measurements).
Stages: behaviour ensemble (4 members from a 256-128-64 actor), critics (twin Q 2×1024, V 3×512),
dynamics (7 × 4×200), stage-2 policy step with AM-Q (512 states × H 20) amortised over `eval_every` steps.
Also: the batched 4-member policy forward against a loop over the members.

    python benchmarks/uni_o4_speed.py [--steps 50] [--threads 2] [--transitions 20000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import save  # noqa: E402
from robot_spec.config import named_config  # noqa: E402
from robot_spec.policy_io import ActorMLP  # noqa: E402
from uni_o4.critics import Critics, CriticTrainer  # noqa: E402
from uni_o4.dynamics import DynamicsTrainer, EnsembleDynamics, holdout_split  # noqa: E402
from uni_o4.networks import GaussianPolicyEnsemble  # noqa: E402
from uni_o4.offline import OfflineConfig, load_offline_config, make_evaluator  # noqa: E402
from uni_o4.stage1 import BehaviourTrainer, build_behaviour_policy  # noqa: E402
from uni_o4.stage2 import PolicyImprover  # noqa: E402
from uni_o4.synthetic import synthetic_dataset  # noqa: E402

OBS_DIM, ACTION_DIM, CRITIC_DIM = 45, 12, 20


def rate(step, n: int, warmup: int = 3) -> float:
    """Calls of step() per second."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(n):
        step()
    return n / (time.perf_counter() - start)


def ensemble_forward(policy: GaussianPolicyEnsemble, obs: torch.Tensor, n: int, rounds: int = 5) -> dict:
    """Batched forward(+backward) of all members against a loop over per-member copies, per batch size.

    Variants alternate over `rounds` and the best round counts, so load from other processes hurts both alike.
    """
    members = [policy.mean_net.member_mlp(i) for i in range(policy.num_members)]
    rows = []
    for batch in (1, 64, 512):
        x = policy.normalizer(obs[:batch])
        variants = {
            "forward_batched": lambda: policy.mean_net(x),
            "forward_loop": lambda: [m(x) for m in members],
            "train_batched": lambda: policy.mean_net(x).sum().backward(),
            "train_loop": lambda: sum(m(x).sum() for m in members).backward(),
        }
        best = dict.fromkeys(variants, 0.0)
        for _ in range(rounds):
            for name, fn in variants.items():
                with torch.set_grad_enabled(name.startswith("train")):
                    best[name] = max(best[name], rate(fn, n))
        rows.append({"batch": batch, **{f"{k}_per_s": v for k, v in best.items()}})
    return {"members": policy.num_members, "hidden_dims": policy.architecture["hidden_dims"], "rows": rows}


def measure(cfg: OfflineConfig, steps: int, transitions: int) -> dict:
    torch.manual_seed(0)
    actor = ActorMLP(OBS_DIM, ACTION_DIM, [256, 128, 64], "elu").eval()
    data = synthetic_dataset(OBS_DIM, ACTION_DIM, episodes=transitions // 500, length=500, critic_dim=CRITIC_DIM)
    g = torch.Generator().manual_seed(0)

    behaviour = BehaviourTrainer(build_behaviour_policy(cfg.behaviour, data, actor), data, cfg.behaviour, g)
    critics = Critics(data.state_dim, data.action_dim, cfg.critics)
    critics.set_normalization(*data.state_stats())
    critic_trainer = CriticTrainer(critics, data, cfg.critics, g)
    train, holdout = holdout_split(data, cfg.dynamics.holdout_fraction, 0)
    dynamics = EnsembleDynamics(data.state_dim, data.action_dim, cfg.dynamics)
    dynamics_trainer = DynamicsTrainer(dynamics, train, holdout, cfg.dynamics, g)

    def dynamics_step():
        loss = dynamics_trainer.loss(train.sample_indices((cfg.dynamics.num_members, cfg.dynamics.batch_size), g))
        dynamics_trainer.optimizer.zero_grad()
        loss.backward()
        dynamics_trainer.optimizer.step()

    evaluator = make_evaluator(data, dynamics, critics, cfg.improvement, 0)
    improver = PolicyImprover(behaviour.policy, critics, data, evaluator, cfg.improvement, g)
    eval_every = cfg.improvement.eval_every
    ope_per_s = rate(lambda: evaluator.scores(improver.policy), 3, warmup=1)
    policy_per_s = rate(lambda: improver.step(0), steps)  # step 0: no evaluation inside
    amortised = 1.0 / (1.0 / policy_per_s + 1.0 / (ope_per_s * eval_every))
    return {
        "transitions": len(data),
        "steps_per_s": {
            "behaviour": rate(behaviour.step, steps),
            "critics": rate(critic_trainer.step, steps),
            "dynamics": rate(dynamics_step, steps),
            "stage2_policy_only": policy_per_s,
            "stage2_with_amq_amortised": amortised,
        },
        "amq_evaluations_per_s": ope_per_s,
        "amq_setting": {"states": cfg.improvement.ope_states, "horizon": cfg.improvement.ope_horizon,
                        "eval_every": eval_every},  # fmt: skip
        "policy_ensemble": ensemble_forward(behaviour.policy, data.obs[:512], steps),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50, help="timed gradient steps per stage")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--transitions", type=int, default=20_000, help="synthetic dataset size")
    parser.add_argument("--preset", default="uni_o4", help="configs/finetune/<preset>.yaml")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.threads < 1 or args.transitions < 1000:
        parser.error("--steps and --threads must be ≥ 1, --transitions ≥ 1000")
    torch.set_num_threads(args.threads)
    cfg = load_offline_config(named_config("finetune", args.preset))
    result = measure(cfg, args.steps, args.transitions)
    for name, value in result["steps_per_s"].items():
        print(f"{name:28s} {value:8.1f} steps/s")
    print(f"{'AM-Q evaluation':28s} {result['amq_evaluations_per_s']:8.2f} /s")
    for row in result["policy_ensemble"]["rows"]:
        for kind in ("forward", "train"):
            b, loop = row[f"{kind}_batched_per_s"], row[f"{kind}_loop_per_s"]
            label = f"4-member policy {kind:7s} batch {row['batch']:4d}"
            print(f"{label}: batched {b:8.0f}/s, loop {loop:8.0f}/s ({b / loop:.2f}x)")
    save("uni_o4_speed", {"threads": args.threads, "preset": args.preset, "steps": args.steps, **result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
