"""Uni-O4 training speed, ours against the Uni-O4 authors' reference code, on the same data in the same run.

Our stages run in-process; the reference runs as a long-lived subprocess in its own venv through a driver
script that imports only its update modules and times one stage per request. Both sides see the same
synthetic data (benchmarks/uni_o4_speed.py's: 45-d policy obs, 12-d actions, 20 extra critic measurements)
and the sizes of the chosen preset, with the behaviour members built from scratch (`init: bc`, 3×256 like
the reference) rather than from the 256-128-64 sim actor. For every stage the two sides alternate short
bursts (`--steps` calls; AM-Q one evaluation) for `--rounds` rounds: each side keeps its best burst, and
the median of the per-round ratios is reported too, so bursty load from other processes hurts both alike.

The reference code and its driver are never part of this repo: they live in a scratch folder (default
/work/bench-ref: venv/, uni_o4_ref_driver.py, uni-o4/ with the reference checkout).

    python benchmarks/uni_o4_vs_reference.py [--steps 10] [--rounds 8] [--threads 2] [--ref-venv DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import save  # noqa: E402
from benchmarks.uni_o4_speed import ACTION_DIM, CRITIC_DIM, OBS_DIM, rate  # noqa: E402
from robot_spec.config import named_config  # noqa: E402
from uni_o4.critics import Critics, CriticTrainer  # noqa: E402
from uni_o4.dataset import OfflineDataset  # noqa: E402
from uni_o4.dynamics import DynamicsTrainer, EnsembleDynamics, holdout_split  # noqa: E402
from uni_o4.offline import OfflineConfig, load_offline_config, make_evaluator  # noqa: E402
from uni_o4.stage1 import BehaviourTrainer, build_behaviour_policy  # noqa: E402
from uni_o4.stage2 import PolicyImprover  # noqa: E402
from uni_o4.synthetic import synthetic_dataset  # noqa: E402

REF_DIR = Path("/work/bench-ref")
STAGES = ("behaviour", "critics", "dynamics", "stage2_policy", "amq")  # the driver's stage names too
MATCHED = {"behaviour": {"init": "bc"}}  # the reference has no warm start from a deployable actor
NOT_MATCHED = [
    "behaviour: ours 4 batched members, each its own 512-row batch, ELU, KL-margin diversity term; reference 4 "
    "separate nets + optimisers looped over one shared 512-row batch, ReLU + tanh head, 'heuristic' log-prob "
    "term, and a deepcopy of the whole ensemble every step",
    "critics: reference IQL_Q_V (double Q 2×1024, V 3×512, batch 512) with target_update_freq 1 to match our "
    "every-step Polyak update (its default is 2); Q/V inputs 65-d on both sides",
    "dynamics: reference EnsembleDynamics.learn, one 7×(4×200) step of 256 rows per member (numpy inputs "
    "converted per step, loss.item() per step); ours the same model size from torch tensors",
    "stage 2: reference AdaptiveBPPO.joint_train (4 members looped, advantage per member from current double Q "
    "and V, clip_grad_norm per member, .item() per member); its policies read the first 45 dims of the 65-d state",
    "AM-Q: reference ope_dynamics_eval (numpy model rollouts, one member at a time, 512 states × H 20, no "
    "termination function); ours all members batched in torch",
]


def matched_sizes(cfg: OfflineConfig, discount: float) -> dict:
    """What the reference driver needs to build its networks at our sizes (its MLPs are width × depth)."""
    b, c, d, p = cfg.behaviour, cfg.critics, cfg.dynamics, cfg.improvement
    for name, dims in (("behaviour.hidden_dims", b.hidden_dims), ("critics.q_hidden_dims", c.q_hidden_dims),
                       ("critics.v_hidden_dims", c.v_hidden_dims)):  # fmt: skip
        if len(set(dims)) != 1:
            raise ValueError(f"{name} {dims}: the reference's MLPs need one width for every hidden layer")
    if c.kind != "iql" or c.num_q != 2:
        raise ValueError("the reference comparison times IQL twin Q critics (critics.kind iql, num_q 2)")
    return {
        "discount": discount,
        "behaviour": {"num_members": b.num_members, "hidden_dim": b.hidden_dims[0], "depth": len(b.hidden_dims),
                      "lr": b.lr, "batch_size": b.batch_size, "alpha": b.diversity_coef},
        "critics": {"q_hidden_dim": c.q_hidden_dims[0], "q_depth": len(c.q_hidden_dims),
                    "v_hidden_dim": c.v_hidden_dims[0], "v_depth": len(c.v_hidden_dims), "q_lr": c.q_lr,
                    "v_lr": c.v_lr, "batch_size": c.batch_size, "expectile": c.expectile, "polyak": c.polyak,
                    "target_update_freq": 1},
        "dynamics": {"hidden_dims": d.hidden_dims, "num_members": d.num_members, "num_elites": d.num_elites,
                     "weight_decay": d.weight_decay, "lr": d.lr, "batch_size": d.batch_size,
                     "logvar_bound_coef": d.logvar_bound_coef},
        "improvement": {"lr": p.lr, "clip_ratio": p.clip_ratio, "entropy_coef": p.entropy_coef,
                        "batch_size": p.batch_size, "ope_states": p.ope_states, "ope_horizon": p.ope_horizon,
                        "eval_every": p.eval_every},
    }  # fmt: skip


def save_reference_data(data: OfflineDataset, path: Path) -> None:
    """The arrays the reference's replay buffer holds, float32, in its conventions (not_done = no end of episode)."""
    f32 = lambda t: t.detach().cpu().numpy().astype(np.float32)  # noqa: E731
    next_actions = torch.cat([data.actions[1:], data.actions[-1:]])  # the reference's actions[1:]
    np.savez(
        path, obs_dim=data.obs_dim, obs=f32(data.obs), next_obs=f32(data.next_obs), state=f32(data.state),
        next_state=f32(data.next_state), actions=f32(data.actions), next_actions=f32(next_actions),
        rewards=f32(data.rewards), not_done=1.0 - f32(data.terminals | data.timeouts), returns=f32(data.returns),
    )  # fmt: skip


def our_stages(cfg: OfflineConfig, data: OfflineDataset) -> dict[str, Callable[[], object]]:
    """One step of every timed stage (AM-Q: one evaluation), built as uni_o4_speed.measure builds them."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    behaviour = BehaviourTrainer(build_behaviour_policy(cfg.behaviour, data, None), data, cfg.behaviour, g)
    critics = Critics(data.state_dim, data.action_dim, cfg.critics)
    critics.set_normalization(*data.state_stats())
    critic_trainer = CriticTrainer(critics, data, cfg.critics, g)
    train, holdout = holdout_split(data, cfg.dynamics.holdout_fraction, 0)
    dynamics = EnsembleDynamics(data.state_dim, data.action_dim, cfg.dynamics)
    dynamics_trainer = DynamicsTrainer(dynamics, train, holdout, cfg.dynamics, g)
    d = cfg.dynamics

    def dynamics_step() -> None:
        loss = dynamics_trainer.loss(train.sample_indices((d.num_members, d.batch_size), g))
        dynamics_trainer.optimizer.zero_grad()
        loss.backward()
        dynamics_trainer.optimizer.step()

    evaluator = make_evaluator(data, dynamics, critics, cfg.improvement, 0)
    improver = PolicyImprover(behaviour.policy, critics, data, evaluator, cfg.improvement, g)
    return {
        "behaviour": behaviour.step, "critics": critic_trainer.step, "dynamics": dynamics_step,
        "stage2_policy": lambda: improver.step(0),  # step 0: no AM-Q inside
        "amq": lambda: evaluator.scores(improver.policy),
    }  # fmt: skip


class ReferenceSide:
    """The reference driver as a subprocess: `rate(stage, calls, warmup)` asks it to time one burst."""

    def __init__(self, python: Path, driver: Path, workdir: Path, threads: int):
        cmd = [str(python), str(driver), "--data", str(workdir / "data.npz"), "--sizes", str(workdir / "sizes.json"),
               "--threads", str(threads)]  # fmt: skip
        self.log = (workdir / "reference.log").open("w")
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env=env)  # fmt: skip
        self.log_path = workdir / "reference.log"
        self.info = self._answer()

    def _answer(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            tail = self.log_path.read_text()[-3000:]
            raise RuntimeError(f"reference driver stopped (exit {self.proc.returncode}):\n{tail}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"reference driver: {answer['error']}")
        return answer

    def rate(self, stage: str, calls: int, warmup: int) -> float:
        self.proc.stdin.write(f"{stage} {calls} {warmup}\n")
        self.proc.stdin.flush()
        return self._answer()["per_s"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.log.close()


def alternate(ours: dict, reference: ReferenceSide, rounds: int, steps: int) -> dict[str, dict[str, list[float]]]:
    """Per stage and round, a burst of ours then one of the reference's; every burst's rate."""
    samples = {stage: {"ours": [], "reference": []} for stage in STAGES}
    for step in ours.values():  # warm-up, untimed (the driver warmed its side up when it built it)
        step()
    with tqdm(total=rounds * len(STAGES), desc="bursts (ours, reference)") as bar:
        for _ in range(rounds):
            for stage in STAGES:
                calls, warmup = (1, 0) if stage == "amq" else (steps, 1)  # an AM-Q evaluation takes seconds
                samples[stage]["ours"].append(rate(ours[stage], calls, warmup))
                samples[stage]["reference"].append(reference.rate(stage, calls, warmup))
                bar.update()
    return samples


def table(samples: dict, eval_every: int) -> list[dict]:
    """Best burst of each side, the median per-round ratio, and stage 2 with AM-Q amortised over eval_every steps."""
    rows = []
    for stage in STAGES:
        ours, ref = samples[stage]["ours"], samples[stage]["reference"]
        paired = statistics.median(o / r for o, r in zip(ours, ref))
        rows.append({"stage": stage, "ours": max(ours), "reference": max(ref), "median_round_ratio": paired})
    best = {row["stage"]: row for row in rows}
    amortised = {side: 1.0 / (1.0 / best["stage2_policy"][side] + 1.0 / (best["amq"][side] * eval_every))
                 for side in ("ours", "reference")}  # fmt: skip
    rows.append({"stage": "stage2_with_amq_amortised", **amortised, "median_round_ratio": None})
    for row in rows:
        row["ratio_ours_over_reference"] = row["ours"] / row["reference"]
    return rows


def check_reference(ref_venv: Path, driver: Path) -> str | None:
    """None when the reference side is ready, else what is missing and how to make it."""
    python = ref_venv / "bin" / "python"
    if not python.is_file():
        return (f"no reference venv at {ref_venv} (pass --ref-venv). Create it outside this repo:\n"
                f"  python3.11 -m venv {ref_venv} && {python} -m pip install torch==2.13.0 numpy tqdm termcolor "
                f"tensorboardX\nand put the driver and the Uni-O4 checkout beside it (see --ref-driver).")  # fmt: skip
    if not driver.is_file():
        return (f"no reference driver at {driver} (pass --ref-driver); it and the Uni-O4 checkout (uni-o4/ beside "
                f"it) live outside this repo by design")  # fmt: skip
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="gradient steps per timed burst (AM-Q: 1 evaluation)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, both sides")
    parser.add_argument("--transitions", type=int, default=20_000, help="synthetic dataset size")
    parser.add_argument("--rounds", type=int, default=8, help="bursts per stage and side, alternating")
    parser.add_argument("--preset", default="uni_o4", help="configs/finetune/<preset>.yaml (our sizes)")
    parser.add_argument("--ref-venv", type=Path, default=REF_DIR / "venv", help="the reference side's venv")
    parser.add_argument("--ref-driver", type=Path, default=REF_DIR / "uni_o4_ref_driver.py", help="its driver")
    args = parser.parse_args(argv)
    if min(args.steps, args.threads, args.rounds) < 1 or args.transitions < 1000:
        parser.error("--steps, --threads and --rounds must be ≥ 1, --transitions ≥ 1000")
    problem = check_reference(args.ref_venv, args.ref_driver)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2

    torch.set_num_threads(args.threads)
    cfg = load_offline_config(named_config("finetune", args.preset), MATCHED)
    # uni_o4_speed.measure's data, so both benchmarks time the same problem.
    data = synthetic_dataset(OBS_DIM, ACTION_DIM, episodes=args.transitions // 500, length=500, critic_dim=CRITIC_DIM)
    sizes = matched_sizes(cfg, data.discount)
    ours = our_stages(cfg, data)
    with tempfile.TemporaryDirectory(prefix="uni_o4_ref_") as tmp:
        workdir = Path(tmp)
        save_reference_data(data, workdir / "data.npz")
        (workdir / "sizes.json").write_text(json.dumps(sizes))
        reference = ReferenceSide(args.ref_venv / "bin" / "python", args.ref_driver, workdir, args.threads)
        try:
            samples = alternate(ours, reference, args.rounds, args.steps)
        finally:
            reference.close()

    rows = table(samples, cfg.improvement.eval_every)
    print(f"{'stage (steps/s; amq: evals/s)':30s} {'ours':>8s} {'reference':>10s} {'best/best':>10s} {'median':>8s}")
    for row in rows:
        median = "" if row["median_round_ratio"] is None else f"{row['median_round_ratio']:7.2f}x"
        print(f"{row['stage']:30s} {row['ours']:8.2f} {row['reference']:10.2f} "
              f"{row['ratio_ours_over_reference']:9.2f}x {median:>8s}")  # fmt: skip
    save("uni_o4_vs_reference", {
        "threads": args.threads, "steps_per_burst": args.steps, "rounds": args.rounds, "preset": args.preset,
        "overrides": MATCHED, "transitions": len(data), "reference": "github.com/Lei-Kun/Uni-O4",
        "reference_commit": reference.info.get("reference_commit"), "sizes": sizes, "table": rows,
        "bursts_per_s": samples, "not_matched": NOT_MATCHED,
    })  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
