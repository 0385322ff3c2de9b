"""Guarded online fine-tuning on the robot: `uni_o4 finetune --online --policy <offline result>`.

One iteration per update, every step on the robot going through the deploy runtime and its safety monitors
(the robot session of `real_robot collect`, deploy/session.py, with an exploring behaviour instead of the deterministic policy):

1. rollout: whole episodes, logged as loss-proof logs under <out>/rollouts/update_NNN. Updates happen only
   between rollouts, never mid-stride: the robot stands (the runtime holds the default pose, its monitors on)
   while the update computes, or rests in damping if the rollout's last episode ended in a fall or a trip.
2. measure the rollout from its logs (uni_o4.robot_eval): reward per step, falls and safety trips.
3. regression check against the best rollout so far (fewest falls and trips, then most reward per step): worse
   by more than the tolerance, or more falls and trips → roll the learner back to the best checkpoint (policy,
   critic, optimisers), record it, no update.
4. otherwise one update on the rollout (Uni-O4: PPO; IQL/Cal-QL/O3F: gradient steps on offline + online data).
5. checkpoint (atomic) after every iteration; a rerun with the same --out resumes from it.
6. acceptance: the best policy (by its rollout) and the starting policy run deterministically for the same
   episodes in the same conditions; the online one is deployed (out/deploy/policy.pt) only if it is no worse
   on falls + trips and reward per step, else the starting policy stays. Short exploring rollouts are too
   noisy to pick a policy by; this check is what keeps online fine-tuning from deploying a regression.

The learner is the method: `PPOLearner` (Uni-O4 stage 3) or `OffPolicyLearner` (a seed baseline).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from deploy.runtime import Behaviour, torch_threads
from deploy.session import CollectConfig, Session, SessionConfig
from real_robot.datalog import set_aside
from robot_spec.checkpoint import load_checkpoint
from robot_spec.config import ConfigError, check_fields, save_config
from robot_spec.policy_io import ActorMLP, load_policy, save_policy
from robot_spec.spec import RobotSpec
from uni_o4.artifacts import atomic_save
from uni_o4.dataset import OfflineDataset
from uni_o4.log_dataset import LogDataConfig, dataset_from_log_folder
from uni_o4.networks import GaussianPolicyEnsemble, ValueNet
from uni_o4.online_ppo import OnlinePPO, OnlinePPOConfig
from uni_o4.robot_eval import log_metrics, stalls_more


@dataclass
class RegressionConfig:
    tolerance: float = 0.1  # a rollout's reward per step may fall this fraction of |best| below the best
    max_incident_increase: float = 0.0  # falls + trips per episode allowed above the best rollout's

    def __post_init__(self) -> None:
        check_fields(self, "tolerance max_incident_increase", 0.0)


@dataclass
class OnlineConfig:
    updates: int = 10
    episodes_per_rollout: int = 2
    rollout_steps: int | None = None  # instead: a rollout of this many policy steps (its last episode cut short)
    episode_s: float = 20.0
    schedule: str = "walk"  # configs/deploy/schedule_<name>.yaml
    speed: str = "high"
    seed: int = 0
    regression: RegressionConfig = field(default_factory=RegressionConfig)
    ppo: OnlinePPOConfig = field(default_factory=OnlinePPOConfig)  # Uni-O4
    # At the end the best online policy and the starting policy run deterministically this many episodes each,
    # in the same conditions; the online one is deployed only if it is no worse on falls + trips and reward per
    # step, else the starting policy stays (0: no check, the best rollout's policy is deployed).
    acceptance_episodes: int = 4
    offpolicy_steps: int = 1000  # baselines: gradient steps per update
    offpolicy_batch_size: int = 256  # (the share drawn from online data is the algorithm's mix_ratio)
    learner_threads: int = 0  # torch threads for updates; 0: every CPU of this process but one (the control loop's)

    def __post_init__(self) -> None:
        if self.updates < 1 or self.episodes_per_rollout < 1 or self.episode_s <= 0 or self.acceptance_episodes < 0:
            raise ConfigError("online: updates and episodes_per_rollout must be ≥ 1, episode_s > 0, "
                              "acceptance_episodes ≥ 0")  # fmt: skip
        if self.learner_threads < 0:
            raise ConfigError(f"online: learner_threads must be ≥ 0 (0: automatic), got {self.learner_threads}")
        check_fields(self, "episode_s", 0.0, 3600.0, low_open=True)
        check_fields(self, "offpolicy_steps", 0, integer=True)
        check_fields(self, "offpolicy_batch_size", 1, integer=True)
        if self.rollout_steps is not None and self.rollout_steps < 2:
            raise ConfigError(f"online: rollout_steps must be ≥ 2 (one PPO update needs data), "
                              f"got {self.rollout_steps}")  # fmt: skip


class Learner(Protocol):
    def behaviour(self) -> Behaviour: ...

    def update(self, rollouts: Path, latest: OfflineDataset) -> dict[str, float]: ...

    def export_actor(self) -> ActorMLP: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


# --------------------------------------------------------------------------------------------- learners
class PPOLearner:
    """Uni-O4 online: PPO from the offline best member, V from the offline critics, normalisation fixed."""

    def __init__(self, policy: GaussianPolicyEnsemble, value: ValueNet, cfg: OnlinePPOConfig, seed: int):
        self.ppo = OnlinePPO(policy, value, cfg, seed)
        self.noise = torch.Generator().manual_seed(seed + 1)

    def behaviour(self) -> Behaviour:
        def act(obs: torch.Tensor, _last_action: np.ndarray) -> np.ndarray:
            mean, std = self.ppo.policy(obs)
            return (mean + std * torch.randn(mean.shape, generator=self.noise)).reshape(-1).numpy()

        return act

    def update(self, rollouts: Path, latest: OfflineDataset) -> dict[str, float]:
        return self.ppo.update(latest)  # on-policy: only the newest rollout

    def export_actor(self) -> ActorMLP:
        return self.ppo.policy.export_member(0).cpu()

    def state_dict(self) -> dict:
        return {"ppo": self.ppo.state_dict(), "noise": self.noise.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.ppo.load_state_dict(state["ppo"])
        self.noise.set_state(state["noise"])


class OffPolicyLearner:
    """A seed baseline online: act with its (optimistic, for O3F) behaviour, train on offline + online data."""

    def __init__(self, algorithm, offline: OfflineDataset, data_cfg: LogDataConfig, spec: RobotSpec,
                 cfg: OnlineConfig):  # fmt: skip
        self.algorithm, self.offline, self.data_cfg, self.spec, self.cfg = algorithm, offline, data_cfg, spec, cfg
        self.generator = torch.Generator().manual_seed(cfg.seed + 2)
        # the first update's one-time work (compilation) now, before the robot starts, not while it stands
        rows = torch.arange(cfg.offpolicy_batch_size, device=offline.device) % len(offline)
        algorithm.warm_up(offline.batch(rows))

    def behaviour(self) -> Behaviour:
        def act(obs: torch.Tensor, last_action: np.ndarray) -> np.ndarray:
            last = torch.as_tensor(last_action, dtype=torch.float32)
            return self.algorithm.act(obs[0], deterministic=False, last_action=last).cpu().numpy()

        return act

    def update(self, rollouts: Path, latest: OfflineDataset) -> dict[str, float]:
        from uni_o4.baselines import mixed_batch, train

        online, _ = dataset_from_log_folder(rollouts, self.spec, self.data_cfg)  # every rollout so far
        cfg = self.cfg

        def sample():
            mix = self.algorithm.cfg.mix_ratio
            return mixed_batch(self.offline, online, cfg.offpolicy_batch_size, mix, self.generator)

        history = train(self.algorithm, sample, cfg.offpolicy_steps)
        return {k: float(np.mean([h[k] for h in history])) for k in history[-1]}

    def export_actor(self) -> ActorMLP:
        return self.algorithm.export_actor()

    def state_dict(self) -> dict:
        return {"algorithm": self.algorithm.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.algorithm.load_state_dict(state["algorithm"])
        self.generator.set_state(state["generator"])


# --------------------------------------------------------------------------------------------- the loop
class OnlineRobot(Protocol):
    """Where the rollouts run (`StandInRobotLink`, `RobotLink`)."""

    def rollout(self, policy: Path, folder: Path, behaviour: Behaviour | None, meta: dict,
                episodes: int | None) -> None: ...  # fmt: skip
    # behaviour None: the policy file's deterministic actions; episodes None: a rollout's size from the config

    @property
    def standing(self) -> bool: ...  # between rollouts: the robot holds its stance (the last one ended upright)

    def close(self) -> None: ...


def is_regression(metrics: dict, best: dict | None, cfg: RegressionConfig, name: str = "best") -> list[str]:
    """Why this rollout counts as a regression against the `name` one, by default the best so far (empty: it
    does not)."""
    if best is None or incidents(metrics) < incidents(best):  # safer than the best is never a regression
        return []
    reasons = []
    floor = best["reward_per_step"] - cfg.tolerance * abs(best["reward_per_step"])
    if metrics["reward_per_step"] < floor:
        reasons.append(f"reward per step {metrics['reward_per_step']:.4g} < {floor:.4g} "
                       f"({name} {best['reward_per_step']:.4g} − {cfg.tolerance:.0%})")  # fmt: skip
    if incidents(metrics) > incidents(best) + cfg.max_incident_increase:
        reasons.append(f"falls + trips per episode {incidents(metrics):.2f} > {name}'s {incidents(best):.2f}")
    return reasons


def learner_threads(configured: int) -> int:
    """`configured`, or for 0 every CPU this process may run on but one, which is left to the control loop."""
    if configured > 0:
        return configured
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cpus - 1)


def incidents(metrics: dict) -> float:
    return metrics["fall_rate"] + metrics["trip_rate"]


def is_better(metrics: dict, best: dict | None) -> bool:
    """Fewer falls and trips per episode first, then more reward per step: a policy that falls is never the
    best because it happened to earn more before falling."""
    if best is None:
        return True
    return (-incidents(metrics), metrics["reward_per_step"]) >= (-incidents(best), best["reward_per_step"])


@dataclass
class OnlineState:
    """What a checkpoint holds besides the learner: where the loop is and what it has seen."""

    iteration: int = 0
    best: dict | None = None  # the best rollout's metrics
    best_iteration: int = -1
    best_weights: str | None = None  # fingerprint of the best rollout's policy weights
    rolled_back: bool = False  # the last iteration rolled back: this rollout re-measures the best policy
    history: list[dict] = field(default_factory=list)


SUMMARY = ("episodes", "policy_steps", "mean_return", "reward_per_step", "tracking_error_xy", "fall_rate", "trip_rate")


class OnlineRun:
    """The guarded loop over `learner`, in `out` (resumes from out/checkpoint.pt)."""

    def __init__(self, learner: Learner, spec: RobotSpec, data_cfg: LogDataConfig, cfg: OnlineConfig, out: Path,
                 robot: OnlineRobot, writer=None):  # fmt: skip
        self.learner, self.spec, self.data_cfg, self.cfg, self.out = learner, spec, data_cfg, cfg, Path(out)
        self.robot, self.writer = robot, writer
        self.state = OnlineState()
        self.best_learner: dict = copy.deepcopy(learner.state_dict())
        self.checkpoint = self.out / "checkpoint.pt"
        self.rollouts = self.out / "rollouts"

    def run(self) -> OnlineState:
        self.out.mkdir(parents=True, exist_ok=True)
        save_config(self.cfg, self.out / "online_config.yaml")
        self.resume()
        try:
            while self.state.iteration < self.cfg.updates:
                self.iterate()
            self.finish()
        finally:
            self.robot.close()
        return self.state

    def resume(self) -> None:
        if not self.checkpoint.is_file():
            return
        saved = load_checkpoint(self.checkpoint)
        self.learner.load_state_dict(saved["learner"])
        self.best_learner = saved["best_learner"]
        self.state = OnlineState(**saved["state"])
        print(f"online: resuming at update {self.state.iteration} from {self.checkpoint}")

    def iterate(self) -> None:
        it = self.state.iteration
        folder = self.fresh_rollout_folder(it)
        policy_file = self.policy_file(it)
        actor = self.learner.export_actor()
        save_policy(actor, self.spec, policy_file, {"source": "online", "update": it})
        self.robot.rollout(policy_file, folder, self.learner.behaviour(), {"online_update": it}, None)
        metrics = log_metrics(folder, self.spec, self.data_cfg)
        summary = {k: metrics[k] for k in SUMMARY}
        entry = {"update": it, "rollout": str(folder), "policy": str(policy_file), **summary}
        # After a rollback, or while updates leave the policy as it is (a critic warm-up), the rollout
        # re-measures the best policy itself: its figure replaces the old one (which may have been lucky), so
        # noise alone can never stall the loop in rollbacks or undo a warm-up.
        weights = weights_fingerprint(actor)
        remeasure = self.state.rolled_back or weights == self.state.best_weights
        reasons = [] if remeasure else is_regression(metrics, self.state.best, self.cfg.regression)
        self.state.rolled_back = bool(reasons)
        if reasons:
            self.learner.load_state_dict(copy.deepcopy(self.best_learner))
            entry["rollback"] = {"to_update": self.state.best_iteration, "reasons": reasons}
            print(f"online: update {it}: ROLLBACK to the policy of update {self.state.best_iteration}: "
                  f"{'; '.join(reasons)}")  # fmt: skip
        else:
            if remeasure or is_better(metrics, self.state.best):
                self.state.best, self.state.best_iteration, self.state.best_weights = summary, it, weights
                self.best_learner = copy.deepcopy(self.learner.state_dict())
            if metrics["policy_steps"] >= 2:
                entry["robot_during_update"] = "standing" if self.robot.standing else "damping"
                data, _ = dataset_from_log_folder(folder, self.spec, self.data_cfg)
                with torch_threads(learner_threads(self.cfg.learner_threads)):  # the runtime keeps 1 for itself
                    entry["update_stats"] = self.learner.update(self.rollouts, data)
            else:  # every episode tripped before the policy acted: nothing to learn from, nothing changes
                entry["skipped"] = "no policy steps in the rollout"
            print(f"online: update {it}: reward/step {metrics['reward_per_step']:.4g}, falls {metrics['fall_rate']:.2f}, "
                  f"trips {metrics['trip_rate']:.2f}, tracking {metrics['tracking_error_xy']:.3f} m/s")  # fmt: skip
        self.log(entry)
        self.state.history.append(entry)
        self.state.iteration = it + 1
        self.save_checkpoint()

    def fresh_rollout_folder(self, it: int) -> Path:
        """The rollout's log folder; one left by an interrupted attempt is kept (renamed), never overwritten."""
        folder = self.rollouts / f"update_{it:03d}"
        set_aside(folder)
        return folder

    def log(self, entry: dict) -> None:
        if self.writer is None:
            return
        for key in ("reward_per_step", "mean_return", "tracking_error_xy", "fall_rate", "trip_rate"):
            self.writer.add_scalar(f"online/{key}", entry[key], entry["update"])
        self.writer.add_scalar("online/rollback", float("rollback" in entry), entry["update"])
        for key, value in entry.get("update_stats", {}).items():
            self.writer.add_scalar(f"update/{key}", value, entry["update"])

    def save_checkpoint(self) -> None:
        atomic_save({"learner": self.learner.state_dict(), "best_learner": self.best_learner,
                     "state": asdict(self.state)}, self.checkpoint)  # fmt: skip
        (self.out / "online_history.json").write_text(json.dumps(self.state.history, indent=2, default=str))

    def finish(self) -> None:
        """Deploy (out/deploy/policy.pt) the best policy seen, by its rollout, if it passes the acceptance check."""
        best = self.state.best_iteration
        if best < 0:
            return
        # Rollbacks can bring the best back to the starting weights: then there is nothing to accept.
        changed = best > 0 and self.weights(best) != self.weights(0)
        deployed, acceptance = (best if changed else 0), None
        if changed and self.cfg.acceptance_episodes:
            acceptance = self.acceptance(best)
            deployed = best if acceptance["accepted"] else 0
        actor = load_policy(self.policy_file(deployed), self.spec).actor
        save_policy(actor, self.spec, self.out / "deploy" / "policy.pt",
                    {"source": "online", "update": deployed, "best_update": best, "rollout": self.state.best,
                     "changed": changed, "acceptance": acceptance})  # fmt: skip
        if not changed:
            print("online: no change survived the regression checks: the starting policy stays")
        plot_online(self.state.history, self.out / "online_curve.png")

    def policy_file(self, it: int) -> Path:
        return self.out / "policies" / f"update_{it:03d}.pt"

    def weights(self, it: int) -> str:
        return weights_fingerprint(load_policy(self.policy_file(it), self.spec).actor)

    def acceptance(self, best: int) -> dict:
        """The best online policy against the starting one: deterministic, the same episodes and conditions
        (one seed for both), logged like every rollout; out/acceptance.json (a rerun reuses it)."""
        verdict_file = self.out / "acceptance.json"
        if verdict_file.is_file():
            return json.loads(verdict_file.read_text())
        measured = {}
        for name, it in (("start", 0), ("online", best)):
            folder = self.out / "acceptance" / name
            set_aside(folder)
            meta = {"online_update": self.cfg.updates, "acceptance": name}  # the same seed for both on the stand-in
            self.robot.rollout(self.policy_file(it), folder, None, meta, self.cfg.acceptance_episodes)
            measured[name] = log_metrics(folder, self.spec, self.data_cfg)
        reasons = is_regression(measured["online"], measured["start"], RegressionConfig(tolerance=0.0), "start")
        if stalled := stalls_more(measured["online"], measured["start"]):  # a freeze the mean reward can hide
            reasons.append(stalled)
        verdict = {"accepted": not reasons, "reasons": reasons, "online_update": best,
                   **{name: {k: m[k] for k in SUMMARY} for name, m in measured.items()}}  # fmt: skip
        outcome = f"the online policy (update {best}) is deployed" if not reasons else "the starting policy stays"
        print(f"online: acceptance: {outcome}{': ' + '; '.join(reasons) if reasons else ''}")
        verdict_file.write_text(json.dumps(verdict, indent=2))
        return verdict


def weights_fingerprint(actor: torch.nn.Module) -> str:
    weights = b"".join(t.detach().cpu().numpy().tobytes() for t in actor.state_dict().values())
    return hashlib.sha256(weights).hexdigest()


def plot_online(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    updates = [h["update"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, key, label in zip(axes, ("reward_per_step", "tracking_error_xy", "fall_rate"),
                              ("reward per step", "velocity tracking error (m/s)", "falls per episode")):  # fmt: skip
        ax.plot(updates, [h[key] for h in history], marker="o")
        for h in history:
            if "rollback" in h:
                ax.axvline(h["update"], color="tab:red", alpha=0.4)
        ax.set(xlabel="update (rollout before it)", ylabel=label)
    fig.suptitle("online fine-tuning on the robot (red: rollback)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------------------------- building
DEPLOYED = Path("deploy") / "policy.pt"


def gate_passed(result_dir: Path) -> bool:
    gate = result_dir / "gate.json"
    return gate.is_file() and json.loads(gate.read_text())["passed"]


class RobotLink:
    """Rollouts on the robot behind a running bridge (real time), all in one robot session (deploy.session)
    whose control loop never stops: between rollouts the robot stands (or damps after a fall) while the learner
    measures, updates and checkpoints; the operator starts each episode (Enter)."""

    def __init__(self, cfg: OnlineConfig, session: SessionConfig, stand_in_profile: str | None = None):
        self.cfg, self.session_cfg, self.stand_in_profile = cfg, session, stand_in_profile
        self.session: Session | None = None

    def rollout(self, policy: Path, folder: Path, behaviour: Behaviour | None, meta: dict,
                episodes: int | None) -> None:  # fmt: skip
        if self.session is not None and self.session.stopped:
            raise KeyboardInterrupt("stopped by the operator")
        episodes, steps = rollout_size(self.cfg, episodes)
        run = CollectConfig(
            policy, steps=steps, episodes=episodes, episode_s=self.cfg.episode_s, schedule=self.cfg.schedule,
            speed=self.cfg.speed, out=folder, seed=self.noise_seed(meta), stand_in_profile=self.stand_in_profile,
        )  # fmt: skip
        if self.session is None:
            self.session = Session(self.connect(), run)
        self.session.collect(run, behaviour, meta, stand_after=True)
        if self.session.stopped:  # a rollout cut short by the operator is not learnt from
            raise KeyboardInterrupt("stopped by the operator")

    def connect(self) -> SessionConfig:
        """The session's config, once the robot is there (called at the first rollout)."""
        return self.session_cfg

    def noise_seed(self, meta: dict) -> int:
        return self.cfg.seed * 1000 + meta["online_update"]  # fresh sensor and action noise each rollout

    @property
    def standing(self) -> bool:
        return self.session is not None and self.session.standing

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None


class StandInRobotLink(RobotLink):
    """Rollouts on a stand-in robot + bridge on loopback (fast lockstep, real protocol), started at the first
    rollout and kept for the whole run: one robot (seed cfg.seed), reset before every episode."""

    def __init__(self, profile: str, cfg: OnlineConfig, robot: str = "go1"):
        super().__init__(cfg, SessionConfig(robot=robot, runtime_config="runtime_fast"), stand_in_profile=profile)
        self.profile, self.loopback = profile, None
        self.processes = contextlib.ExitStack()

    def connect(self) -> SessionConfig:
        from real_robot.loopback import LoopbackRobot

        robot = LoopbackRobot(profile=self.profile, fast=True, seed=self.cfg.seed, robot=self.session_cfg.robot)
        self.loopback = self.processes.enter_context(robot)
        return replace(self.session_cfg, lcm_url=robot.lcm_url, channel_prefix=robot.prefix)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.processes.close()
            self.loopback = None


def rollout_size(cfg: OnlineConfig, episodes: int | None) -> tuple[int | None, int | None]:
    """(episodes, policy steps) of a rollout: `episodes` when given (the acceptance check), else the config's."""
    if episodes is None and cfg.rollout_steps is not None:
        return None, cfg.rollout_steps
    return episodes or cfg.episodes_per_rollout, None
