"""O3F: optimistic action selection on top of IQL (Mark et al., 2022, "Fine-tuning offline policies with
optimistic action selection").

Learning is unchanged IQL, with a Q ensemble of `num_q` heads (V's target is the min over all of them).
Acting is optimistic: `num_candidates` actions are drawn around the policy mean (the mean itself is one of
them), each is projected into the robot's safe set (joint-limit box and the action-rate limit around the
last action), scored by the ensemble as mean + λ·std over the heads, and the best is executed. Projection
happens before scoring, so the action that wins is exactly the one that runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from robot_spec.config import ConfigError
from uni_o4.baselines.common import as_batch, critic_input
from uni_o4.baselines.iql import IQL, IQLConfig


@dataclass
class O3FConfig(IQLConfig):
    num_q: int = 4  # ensemble heads; their spread is the uncertainty that optimism rewards
    num_candidates: int = 32
    optimism: float = 1.0  # λ in mean + λ·std
    candidate_std_scale: float = 1.0  # candidates ~ N(mean, (scale·policy std)²)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_candidates < 1 or self.candidate_std_scale < 0:
            raise ConfigError("num_candidates must be ≥ 1 and candidate_std_scale ≥ 0")


class O3F(IQL):
    config_type = O3FConfig
    cfg: O3FConfig

    @torch.no_grad()
    def candidates(self, obs: torch.Tensor, last_action: torch.Tensor | None = None) -> torch.Tensor:
        """(N, B, A) safe candidates around the policy mean; candidate 0 is the (projected) mean."""
        mean, std = (x[0] for x in self.policy(obs))
        noise = self._noise((self.cfg.num_candidates, *mean.shape))
        noise[0] = 0.0
        return self.safe_set.project(mean + self.cfg.candidate_std_scale * std * noise, last_action)

    @torch.no_grad()
    def scores(self, state: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Optimistic value mean + λ·std over the Q heads, (N, B)."""
        n, b = candidates.shape[:2]
        states = state.expand(n, b, state.shape[-1]).reshape(n * b, -1)
        q = self.q(states, candidates.reshape(n * b, -1)).view(-1, n, b)
        return q.mean(0) + self.cfg.optimism * q.std(0)

    @torch.no_grad()
    def select_action(
        self, obs: torch.Tensor, last_action: torch.Tensor | None = None, critic_obs: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The best-scoring safe candidate per observation; obs (B, obs_dim) or (obs_dim,).

        `critic_obs`: the extra measurements the critic was trained with, if any (the policy never sees them).
        """
        obs, single = as_batch(obs.to(self.device))
        if last_action is not None:
            last_action = as_batch(last_action.to(self.device))[0]
        if critic_obs is not None:
            critic_obs = as_batch(critic_obs.to(self.device))[0]
        candidates = self.candidates(obs, last_action)
        best = self.scores(critic_input(obs, critic_obs, self.state_dim), candidates).argmax(0)  # (B,)
        actions = candidates[best, torch.arange(len(obs), device=self.device)]
        return actions[0] if single else actions

    def act(
        self, obs: torch.Tensor, deterministic: bool = False, last_action: torch.Tensor | None = None,
        critic_obs: torch.Tensor | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """Deterministic: the policy mean (projected); otherwise the optimistic choice."""
        if deterministic:
            return super().act(obs, True, last_action)
        return self.select_action(obs, last_action, critic_obs)
