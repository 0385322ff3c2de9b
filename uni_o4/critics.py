"""Critics for policy improvement: IQL-style twin Q + expectile V, or SARSA twin Q + Monte-Carlo V.

Both estimate the behaviour side of the advantage A(s, a) = Q(s, a) − V(s) that stage 2 maximises, and
both see `state` = policy obs ⊕ extra critic measurements (normalised with the dataset's statistics).
- "iql": V(s) ← expectile_τ of Q_target(s, a) over dataset actions (an in-sample soft max),
  Q(s, a) ← r + γ(1−d)V(s').
- "sarsa": V(s) ← Monte-Carlo return-to-go; Q(s, a) ← r + γ(1−d)Q_target(s', a'), a' the logged next action
  (at a timeout, where no next action was logged, V(s') stands in for it).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from robot_spec.config import ConfigError, check_fields
from uni_o4.artifacts import GeneratorState
from uni_o4.dataset import Batch, OfflineDataset
from uni_o4.networks import QEnsemble, ValueNet, fused_adam, soft_update


@dataclass
class CriticConfig:
    kind: str = "iql"  # "iql" or "sarsa"
    q_hidden_dims: list[int] = field(default_factory=lambda: [1024, 1024])
    v_hidden_dims: list[int] = field(default_factory=lambda: [512, 512, 512])
    num_q: int = 2
    activation: str = "relu"
    steps: int = 20_000
    batch_size: int = 512
    q_lr: float = 3.0e-4
    v_lr: float = 3.0e-4
    expectile: float = 0.7
    polyak: float = 0.005  # target-Q soft update rate
    reward_scale: float = 1.0  # applied to every reward, terminal ones included

    def __post_init__(self) -> None:
        if self.kind not in ("iql", "sarsa"):
            raise ConfigError(f"critics.kind must be 'iql' or 'sarsa', got {self.kind!r}")
        check_fields(self, "num_q batch_size", 1, integer=True)
        check_fields(self, "steps", 0, integer=True)
        check_fields(self, "q_lr v_lr reward_scale", 0.0, low_open=True)
        check_fields(self, "expectile polyak", 0.0, 1.0)


class Critics(nn.Module):
    """Twin Q (+ its Polyak target) and V over `state`; normalisation fixed from the offline data."""

    def __init__(self, state_dim: int, action_dim: int, cfg: CriticConfig):
        super().__init__()
        self.state_dim, self.action_dim, self.cfg = state_dim, action_dim, cfg
        self.q = QEnsemble(state_dim, action_dim, cfg.q_hidden_dims, cfg.num_q, cfg.activation)
        self.v = ValueNet(state_dim, cfg.v_hidden_dims, cfg.activation)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)

    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        for net in (self.q, self.q_target, self.v):
            net.normalizer.set_stats(mean, std)

    @torch.no_grad()
    def q_value(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Pessimistic Q (min over the twins) of the target network, (B,)."""
        return self.q_target.min(state, action)

    @torch.no_grad()
    def advantage(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Q(s, a) − V(s): action (B, A) → (B,), or n actions per state (n, B, A) → (n, B) (V computed once)."""
        many = action.dim() == 3
        q = self.q_target.many(state, action if many else action[None]).min(0).values
        return (q if many else q[0]) - self.v(state)


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """Asymmetric L2: weight τ where diff = target − prediction > 0, 1 − τ elsewhere."""
    weight = torch.where(diff > 0, expectile, 1.0 - expectile)
    return (weight * diff.square()).mean()


def iql_losses(critics: Critics, batch: Batch, discount: float, cfg: CriticConfig) -> dict[str, torch.Tensor]:
    state, next_state = batch.state, batch.next_state
    with torch.no_grad():
        target_q = critics.q_target.min(state, batch.actions)
        next_v = critics.v(next_state)
        q_target = cfg.reward_scale * batch.rewards + discount * (1.0 - batch.terminals) * next_v
    v_loss = expectile_loss(target_q - critics.v(state), cfg.expectile)
    q_loss = (critics.q(state, batch.actions) - q_target).square().mean(-1).sum()
    return {"q_loss": q_loss, "v_loss": v_loss}


def sarsa_losses(
    critics: Critics, batch: Batch, next_actions: torch.Tensor, has_next_action: torch.Tensor, discount: float,
    cfg: CriticConfig,
) -> dict[str, torch.Tensor]:  # fmt: skip
    state, next_state = batch.state, batch.next_state
    with torch.no_grad():
        next_q = torch.where(has_next_action, critics.q_target.min(next_state, next_actions), critics.v(next_state))
        q_target = cfg.reward_scale * batch.rewards + discount * (1.0 - batch.terminals) * next_q
    v_loss = (critics.v(state) - cfg.reward_scale * batch.returns).square().mean()
    q_loss = (critics.q(state, batch.actions) - q_target).square().mean(-1).sum()
    return {"q_loss": q_loss, "v_loss": v_loss}


def next_action_index(data: OfflineDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """For each transition, the index of the logged next action and whether one exists (not at episode ends)."""
    n = len(data)
    index = torch.arange(1, n + 1, device=data.device).clamp(max=n - 1)
    same_episode = torch.zeros(n, dtype=torch.bool, device=data.device)
    same_episode[:-1] = data.episode_ids[1:] == data.episode_ids[:-1]
    return index, same_episode


class CriticTrainer:
    """One gradient step at a time (the loop, checkpoints and caching live in uni_o4.offline)."""

    def __init__(self, critics: Critics, data: OfflineDataset, cfg: CriticConfig, generator: torch.Generator):
        self.critics, self.data, self.cfg, self.generator = critics, data, cfg, generator
        self.q_optimizer = fused_adam(critics.q.parameters(), cfg.q_lr)
        self.v_optimizer = fused_adam(critics.v.parameters(), cfg.v_lr)
        self.next_index, self.has_next = next_action_index(data)

    def losses(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        batch = self.data.batch(indices)
        if self.cfg.kind == "iql":
            return iql_losses(self.critics, batch, self.data.discount, self.cfg)
        next_actions = self.data.actions[self.next_index[indices]]
        return sarsa_losses(self.critics, batch, next_actions, self.has_next[indices], self.data.discount, self.cfg)

    def step(self) -> dict[str, torch.Tensor]:
        """One update of V, Q and the target Q; returns the (detached) losses."""
        losses = self.losses(self.data.sample_indices(self.cfg.batch_size, self.generator))
        for optimizer, loss in ((self.v_optimizer, losses["v_loss"]), (self.q_optimizer, losses["q_loss"])):
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        soft_update(self.critics.q_target, self.critics.q, self.cfg.polyak)
        return {name: value.detach() for name, value in losses.items()}

    def state(self) -> dict:
        """Everything a resumed run needs (for uni_o4.artifacts.run_resumable)."""
        return {"critics": self.critics, "q_optimizer": self.q_optimizer, "v_optimizer": self.v_optimizer,
                "generator": GeneratorState(self.generator)}  # fmt: skip
