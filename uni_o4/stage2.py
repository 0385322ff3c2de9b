"""Uni-O4 stage 2: multi-step policy improvement with offline policy evaluation (AM-Q).

Each member π_i improves against its own frozen behaviour copy π_old_i: PPO's clipped surrogate with
ratio π_i(a|s)/π_old_i(a|s) on dataset states, actions drawn from π_old_i, and the advantage Q(s,a) − V(s)
normalised per member and batch. Every `eval_every` steps AM-Q scores every member; a member that beats
its best score so far becomes its new π_old_i (the "multi-step" part). π_old therefore always holds each
member's best-scoring weights, and the best member at the end is the one with the highest best score.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from robot_spec.config import check_fields
from uni_o4.artifacts import GeneratorState, TrainContext
from uni_o4.critics import Critics
from uni_o4.dataset import OfflineDataset
from uni_o4.networks import GaussianPolicyEnsemble, clip_grad_norm_per_member_, copy_member, fused_adam
from uni_o4.ope import AmqEvaluator


@dataclass
class ImprovementConfig:
    steps: int = 10_000
    lr: float = 1.0e-4
    lr_decay: bool = True  # linear to zero over `steps`
    clip_ratio: float = 0.25
    max_grad_norm: float = 0.5  # per member
    batch_size: int = 512
    entropy_coef: float = 0.0
    eval_every: int = 100
    ope_states: int = 512
    ope_horizon: int = 20
    ope_max_tilt: float = 1.0  # rad; a model rollout tilted more than this counts as a fall (0 = never)

    def __post_init__(self) -> None:
        check_fields(self, "steps", 0, integer=True)
        check_fields(self, "batch_size eval_every ope_states ope_horizon", 1, integer=True)
        check_fields(self, "lr clip_ratio max_grad_norm", 0.0, low_open=True)
        check_fields(self, "entropy_coef ope_max_tilt", 0.0)


@dataclass
class ImprovementHistory:
    """Every AM-Q evaluation and every π_old replacement; checkpointed and returned."""

    initial_scores: list[float] = field(default_factory=list)  # the members as stage 2 found them
    best_scores: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    scores: list[list[float]] = field(default_factory=list)  # scores[k][i]: member i at eval_steps[k]
    replacements: list[dict] = field(default_factory=list)  # {"step", "member", "score", "previous"}

    def state_dict(self) -> dict:
        return copy.deepcopy(vars(self))

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(copy.deepcopy(state))

    @property
    def best_member(self) -> int:
        return max(range(len(self.best_scores)), key=self.best_scores.__getitem__)


def ppo_surrogate_loss(
    policy: GaussianPolicyEnsemble, obs: torch.Tensor, actions: torch.Tensor, old_log_prob: torch.Tensor,
    advantages: torch.Tensor, clip_ratio: float, entropy_coef: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # fmt: skip
    """Clipped surrogate summed over members (each member's gradient is its own); inputs (M, B, ·)."""
    dist = policy.distribution(obs)
    ratio = torch.exp(dist.log_prob(actions).sum(-1) - old_log_prob)
    surrogate = torch.min(ratio * advantages, ratio.clamp(1.0 - clip_ratio, 1.0 + clip_ratio) * advantages)
    entropy = dist.entropy().sum(-1)
    loss = -(surrogate.mean(-1) + entropy_coef * entropy.mean(-1)).sum()
    clipped = ((ratio - 1.0).abs() > clip_ratio).float().mean()
    return loss, {"surrogate": surrogate.mean().detach(), "entropy": entropy.mean().detach(), "clip_fraction": clipped}


class PolicyImprover:
    def __init__(
        self, policy: GaussianPolicyEnsemble, critics: Critics, data: OfflineDataset, evaluator: AmqEvaluator,
        cfg: ImprovementConfig, generator: torch.Generator,
    ):  # fmt: skip
        self.policy, self.critics, self.data, self.evaluator, self.cfg = policy, critics, data, evaluator, cfg
        self.generator = generator
        self.old_policy = copy.deepcopy(policy).requires_grad_(False)
        self.optimizer = fused_adam(policy.parameters(), cfg.lr)
        initial = evaluator.scores(policy).tolist()
        self.history = ImprovementHistory(initial_scores=initial, best_scores=list(initial))

    @torch.no_grad()
    def behaviour_sample(self, batch_obs: torch.Tensor, batch_state: torch.Tensor):
        """Actions from each π_old_i, their log-probabilities and normalised advantages, each (M, B[, A])."""
        mean, std = self.old_policy(batch_obs)
        noise = torch.randn(mean.shape, generator=self.generator, device=self.generator.device).to(mean.device)
        actions = mean + std * noise
        old_log_prob = torch.distributions.Normal(mean, std).log_prob(actions).sum(-1)
        advantage = self.critics.advantage(batch_state, actions)  # (M, B): member i's actions on the same states
        advantage = (advantage - advantage.mean(1, keepdim=True)) / (advantage.std(1, keepdim=True) + 1e-8)
        return actions, old_log_prob, advantage

    def step(self, step: int) -> dict[str, torch.Tensor]:
        """One gradient step (learning rate decayed linearly); an AM-Q evaluation every `eval_every` steps."""
        cfg = self.cfg
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr * (1.0 - step / cfg.steps) if cfg.lr_decay else cfg.lr
        batch = self.data.batch(self.data.sample_indices(cfg.batch_size, self.generator))
        actions, old_log_prob, advantage = self.behaviour_sample(batch.obs, batch.state)
        loss, info = ppo_surrogate_loss(
            self.policy, batch.obs, actions, old_log_prob, advantage, cfg.clip_ratio, cfg.entropy_coef
        )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        info["grad_norm"] = clip_grad_norm_per_member_(list(self.policy.parameters()), cfg.max_grad_norm).mean()
        self.optimizer.step()
        done = step + 1
        if done % cfg.eval_every == 0 or done == cfg.steps:
            self.evaluate(done)
        return {"loss": loss.detach(), **info}

    def evaluate(self, step: int) -> list[float]:
        """Score every member; a member better than its best so far becomes its own new behaviour copy."""
        scores = self.evaluator.scores(self.policy).tolist()
        h = self.history
        h.eval_steps.append(step)
        h.scores.append(scores)
        for i, score in enumerate(scores):
            if score > h.best_scores[i]:
                h.replacements.append({"step": step, "member": i, "score": score, "previous": h.best_scores[i]})
                h.best_scores[i] = score
                copy_member(self.old_policy, self.policy, i)
        return scores

    def state(self) -> dict:
        return {"policy": self.policy, "old_policy": self.old_policy, "optimizer": self.optimizer,
                "history": self.history, "generator": GeneratorState(self.generator)}  # fmt: skip


def improve_policies(
    policy: GaussianPolicyEnsemble, critics: Critics, data: OfflineDataset, evaluator: AmqEvaluator,
    cfg: ImprovementConfig, seed: int, ctx: TrainContext,
) -> tuple[GaussianPolicyEnsemble, ImprovementHistory]:  # fmt: skip
    """Run stage 2 on a copy of `policy`; returns each member's best-scoring weights (π_old) and the history."""
    generator = torch.Generator().manual_seed(seed + 3)
    improver = PolicyImprover(copy.deepcopy(policy), critics, data, evaluator, cfg, generator)

    def step(i: int) -> None:
        info = improver.step(i)
        if (i + 1) % ctx.log_every == 0:
            ctx.log("improvement", info, i + 1)
        if improver.history.eval_steps and improver.history.eval_steps[-1] == i + 1:
            scores = improver.history.scores[-1]
            ctx.log("improvement/amq", {f"member_{k}": s for k, s in enumerate(scores)}, i + 1)

    ctx.run("stage 2: policy improvement", cfg.steps, step, improver.state())
    return improver.old_policy, improver.history
