"""Stage 3 of Uni-O4: on-policy PPO on robot rollouts, started from the offline result.

The same clipped objective as offline stage 2, now with on-policy advantages (GAE on relabelled rewards), a
clipped value loss, and the critic V initialised from the offline stage. Observation normalisation stays fixed
to the offline statistics (it lives inside the policy and V), so the fine-tuned policy deploys unchanged.
Rollouts arrive as an `OfflineDataset` built from the robot logs, the same path as offline data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from robot_spec.config import check_fields
from uni_o4.dataset import OfflineDataset, episode_last_mask
from uni_o4.networks import GaussianPolicyEnsemble, ValueNet


@dataclass
class OnlinePPOConfig:
    clip: float = 0.05
    value_clip: float = 0.05
    entropy_coef: float = 0.01
    actor_lr: float = 2.0e-5
    critic_lr: float = 2.0e-4
    gamma: float = 0.99
    lam: float = 0.95
    minibatch_size: int = 128
    epochs: int = 10
    max_grad_norm: float = 0.5
    target_kl: float = 0.02  # stop an update once a minibatch's KL from the rollout's policy exceeds it (0: never)
    # The first updates fit V alone: the offline V was fitted to the behaviour data, and advantages from a V that
    # is off by more than the per-step reward differences steer the policy by noise.
    critic_warmup_updates: int = 0

    def __post_init__(self) -> None:
        check_fields(self, "minibatch_size epochs", 1, integer=True)
        check_fields(self, "critic_warmup_updates", 0, integer=True)
        check_fields(self, "clip value_clip actor_lr critic_lr max_grad_norm", 0.0, low_open=True)
        check_fields(self, "gamma lam", 0.0, 1.0)
        check_fields(self, "entropy_coef target_kl", 0.0)


def gae(data: OfflineDataset, values: torch.Tensor, next_values: torch.Tensor, gamma: float, lam: float):
    """(advantages, returns) per transition; the recursion restarts at every episode end.

    A true terminal stops bootstrapping; a timeout or a cut episode bootstraps from V(s').
    """
    not_terminal = 1.0 - data.terminals.float()
    deltas = data.rewards + gamma * next_values * not_terminal - values
    ends = episode_last_mask(data.episode_ids)
    advantages = torch.zeros_like(deltas)
    running = torch.zeros((), device=deltas.device)
    for t in range(len(deltas) - 1, -1, -1):
        running = deltas[t] + gamma * lam * running * (0.0 if ends[t] else 1.0)
        advantages[t] = running
    return advantages, advantages + values


class OnlinePPO:
    """A one-member Gaussian policy and V, updated with clipped PPO on each rollout."""

    def __init__(self, policy: GaussianPolicyEnsemble, value: ValueNet, cfg: OnlinePPOConfig, seed: int = 0):
        if policy.num_members != 1:
            raise ValueError(f"online PPO fine-tunes one policy, got an ensemble of {policy.num_members}")
        self.policy, self.value, self.cfg = policy, value, cfg
        self.actor_opt = torch.optim.Adam(policy.parameters(), lr=cfg.actor_lr)
        self.critic_opt = torch.optim.Adam(value.parameters(), lr=cfg.critic_lr)
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.updates_done = 0

    def update(self, data: OfflineDataset) -> dict[str, float]:
        """One PPO update on one rollout (data in time order, behaviour = the current policy); during the
        critic warm-up, V alone."""
        cfg = self.cfg
        train_policy = self.updates_done >= cfg.critic_warmup_updates
        with torch.no_grad():
            old_log_prob = self.policy.distribution(data.obs).log_prob(data.actions).sum(-1)[0]  # as in _step
            values, next_values = self.value(_state(data, False)), self.value(_state(data, True))
            advantages, returns = gae(data, values, next_values, cfg.gamma, cfg.lam)
            # normalised over the whole rollout (a per-minibatch std is undefined for a 1-row remainder)
            normalised = (advantages - advantages.mean()) / (advantages.std() + 1e-8) if len(data) > 1 else advantages
        stats = {"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "clip_fraction": 0.0, "kl": 0.0}
        batches = 0
        for idx in self._minibatches(len(data), data.obs.device):
            out = self._step(data, idx, old_log_prob, normalised, returns, values, train_policy)
            for k in stats:
                stats[k] += out[k]
            batches += 1
            # A rollout on hardware is small and noisy: the policy stops once it has moved by target_kl from
            # the rollout's policy, however many epochs are left (the critic stops with it).
            if cfg.target_kl and out["kl"] > cfg.target_kl:
                break
        self.updates_done += 1
        stats = {k: v / max(batches, 1) for k, v in stats.items()}
        stats["critic_only"] = float(not train_policy)
        stats["epochs"] = batches / math.ceil(len(data) / cfg.minibatch_size)
        stats["mean_reward"] = float(data.rewards.mean())
        stats["advantage_std"] = float(advantages.std())
        return stats

    def _minibatches(self, n: int, device: torch.device):
        for _ in range(self.cfg.epochs):
            yield from torch.randperm(n, generator=self.generator).to(device).split(self.cfg.minibatch_size)

    def _step(self, data, idx, old_log_prob, advantages, returns, old_values, train_policy=True) -> dict[str, float]:
        cfg = self.cfg
        adv = advantages[idx]
        dist = self.policy.distribution(data.obs[idx])
        log_prob = dist.log_prob(data.actions[idx]).sum(-1)[0]
        log_ratio = log_prob - old_log_prob[idx]
        ratio = log_ratio.exp()
        surrogate = torch.min(ratio * adv, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * adv)
        entropy = dist.entropy().sum(-1).mean()
        policy_loss = -surrogate.mean() - cfg.entropy_coef * entropy
        if train_policy:
            _descend(self.actor_opt, policy_loss, self.policy, cfg.max_grad_norm)

        state = _state(data, False)[idx]
        value = self.value(state)
        clipped = old_values[idx] + (value - old_values[idx]).clamp(-cfg.value_clip, cfg.value_clip)
        value_loss = torch.max((value - returns[idx]).square(), (clipped - returns[idx]).square()).mean()
        _descend(self.critic_opt, value_loss, self.value, cfg.max_grad_norm)
        return {
            "policy_loss": policy_loss.item(),
            "value_loss": value_loss.item(),
            "entropy": entropy.item(),
            "clip_fraction": float(((ratio - 1).abs() > cfg.clip).float().mean()),
            "kl": float((ratio - 1 - log_ratio).detach().mean()),  # KL(π_rollout ‖ π) estimate, ≥ 0
        }

    def state_dict(self) -> dict:
        return {
            "policy": self.policy.state_dict(), "value": self.value.state_dict(),
            "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
            "generator": self.generator.get_state(), "updates_done": self.updates_done,
        }  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.value.load_state_dict(state["value"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.generator.set_state(state["generator"])
        self.updates_done = state.get("updates_done", 0)  # checkpoints from before the warm-up: counted from 0


def _state(data: OfflineDataset, next_: bool) -> torch.Tensor:
    return data.next_state if next_ else data.state


def _descend(optimizer: torch.optim.Optimizer, loss: torch.Tensor, module: nn.Module, max_norm: float) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(module.parameters(), max_norm)
    optimizer.step()
