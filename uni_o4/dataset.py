"""The offline dataset: transitions as torch tensors, with Monte-Carlo returns-to-go and normalisation stats.

Transitions of one episode are contiguous and in time order. Two kinds of episode end:
- terminal (fall, safety trip): the robot's future is over; bootstrapping stops (value of next state = 0);
- timeout (time limit, operator stop, interruption): the future exists but was not recorded; bootstrapping
  continues. Every episode's last transition is one or the other (a missing flag means timeout).

`obs` is what the policy sees. `critic_obs` (optional) holds extra logged measurements the policy cannot
see (odometry, foot forces, torques); critics and the dynamics model may use `state` = obs ⊕ critic_obs,
the policy never does.

Used by Uni-O4 and by the baselines in uni_o4/baselines/; keep the API stable.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from robot_spec.checkpoint import load_checkpoint

ArrayLike = np.ndarray | torch.Tensor


@dataclass
class Batch:
    """A sampled minibatch; leading shape is the index shape passed to `OfflineDataset.batch` ((B,) or (M, B))."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    terminals: torch.Tensor  # float 0/1: 1 stops bootstrapping
    returns: torch.Tensor  # Monte-Carlo discounted return-to-go
    critic_obs: torch.Tensor | None = None
    next_critic_obs: torch.Tensor | None = None

    @property
    def state(self) -> torch.Tensor:
        """What critics and the dynamics model see: obs ⊕ critic_obs."""
        return self.obs if self.critic_obs is None else torch.cat([self.obs, self.critic_obs], dim=-1)

    @property
    def next_state(self) -> torch.Tensor:
        return self.next_obs if self.next_critic_obs is None else torch.cat([self.next_obs, self.next_critic_obs], -1)


@dataclass
class OfflineDataset:
    obs: torch.Tensor  # (N, obs_dim) float32
    actions: torch.Tensor  # (N, action_dim)
    rewards: torch.Tensor  # (N,)
    next_obs: torch.Tensor  # (N, obs_dim)
    terminals: torch.Tensor  # (N,) bool: true terminal (fall / safety trip)
    timeouts: torch.Tensor  # (N,) bool: episode cut without a terminal
    episode_ids: torch.Tensor  # (N,) int64, contiguous runs
    returns: torch.Tensor  # (N,) Monte-Carlo return-to-go
    discount: float
    critic_obs: torch.Tensor | None = None  # (N, critic_dim)
    next_critic_obs: torch.Tensor | None = None

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_arrays(
        cls, obs: ArrayLike, actions: ArrayLike, rewards: ArrayLike, next_obs: ArrayLike, terminals: ArrayLike,
        timeouts: ArrayLike | None = None, episode_ids: ArrayLike | None = None, critic_obs: ArrayLike | None = None,
        next_critic_obs: ArrayLike | None = None, discount: float = 0.99, device: str | torch.device = "cpu",
    ) -> OfflineDataset:  # fmt: skip
        """Validate arrays (numpy or torch) and compute returns-to-go.

        Without `episode_ids`, episodes are split after every terminal/timeout. The last transition of an
        episode that is not terminal is marked as a timeout. A terminal anywhere else is an error.
        """
        obs, actions, next_obs = _tensor(obs), _tensor(actions), _tensor(next_obs)
        rewards, terminals = _tensor(rewards).reshape(-1), _tensor(terminals).reshape(-1).bool()
        n = len(obs)
        timeouts = torch.zeros(n, dtype=torch.bool) if timeouts is None else _tensor(timeouts).reshape(-1).bool()
        if episode_ids is None:
            ends = (terminals | timeouts).long()
            episode_ids = torch.cat([torch.zeros(1, dtype=torch.long), ends.cumsum(0)[:-1]]) if n else ends
        episode_ids = _tensor(episode_ids, torch.long).reshape(-1)
        critic_obs = None if critic_obs is None else _tensor(critic_obs)
        next_critic_obs = None if next_critic_obs is None else _tensor(next_critic_obs)
        _check_shapes(obs, actions, rewards, next_obs, terminals, timeouts, episode_ids, critic_obs, next_critic_obs)

        last = episode_last_mask(episode_ids)
        if (terminals & ~last).any():
            raise ValueError(f"terminal flag inside an episode at index {int((terminals & ~last).nonzero()[0])}")
        timeouts = (timeouts | last) & ~terminals
        returns = returns_to_go(rewards, terminals, last, discount)
        data = cls(obs, actions, rewards, next_obs, terminals, timeouts, episode_ids, returns, float(discount),
                   critic_obs, next_critic_obs)  # fmt: skip
        return data.to(device)

    # ----------------------------------------------------------------- shape and stats
    def __len__(self) -> int:
        return len(self.obs)

    @property
    def device(self) -> torch.device:
        return self.obs.device

    @property
    def obs_dim(self) -> int:
        return self.obs.shape[1]

    @property
    def action_dim(self) -> int:
        return self.actions.shape[1]

    @property
    def critic_dim(self) -> int:
        return 0 if self.critic_obs is None else self.critic_obs.shape[1]

    @property
    def state_dim(self) -> int:
        """Dimension of `state` = obs ⊕ critic_obs (critic and dynamics input)."""
        return self.obs_dim + self.critic_dim

    @property
    def state(self) -> torch.Tensor:
        return self.obs if self.critic_obs is None else torch.cat([self.obs, self.critic_obs], dim=-1)

    @property
    def next_state(self) -> torch.Tensor:
        return self.next_obs if self.next_critic_obs is None else torch.cat([self.next_obs, self.next_critic_obs], -1)

    @property
    def num_episodes(self) -> int:
        return int(torch.unique(self.episode_ids).numel())

    def obs_stats(self, min_std: float = 1e-2) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of the policy observation; std floored so constant dims (e.g. a fixed command) stay finite."""
        return _stats(self.obs, min_std)

    def state_stats(self, min_std: float = 1e-2) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of `state` (obs ⊕ critic_obs)."""
        return _stats(self.state, min_std)

    # ----------------------------------------------------------------- views
    def to(self, device: str | torch.device) -> OfflineDataset:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        moved = {k: v.to(device) if torch.is_tensor(v) else v for k, v in moved.items()}
        return replace(self, **moved)

    def subset(self, indices: torch.Tensor) -> OfflineDataset:
        """The transitions at `indices` (sorted, so episodes stay contiguous and in order)."""
        idx = torch.as_tensor(indices, device=self.device).sort().values
        picked = {f.name: getattr(self, f.name) for f in fields(self)}
        picked = {k: v[idx] if torch.is_tensor(v) else v for k, v in picked.items()}
        return replace(self, **picked)

    def split_by_episode(self, val_fraction: float, seed: int = 0) -> tuple[OfflineDataset, OfflineDataset]:
        """(train, validation) with whole episodes in each, so validation states are really unseen."""
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        ids = torch.unique(self.episode_ids).cpu().numpy()
        if len(ids) < 2:
            raise ValueError(f"need at least 2 episodes to split by episode, the dataset has {len(ids)}")
        rng = np.random.default_rng(seed)
        n_val = min(len(ids) - 1, max(1, round(val_fraction * len(ids))))
        val_ids = torch.as_tensor(rng.permutation(ids)[:n_val], device=self.device)
        is_val = torch.isin(self.episode_ids, val_ids)
        return self.subset(torch.nonzero(~is_val).flatten()), self.subset(torch.nonzero(is_val).flatten())

    # ----------------------------------------------------------------- sampling
    def sample_indices(self, shape: tuple[int, ...] | int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Uniform indices with replacement; `generator` may live on any device."""
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        device = generator.device if generator is not None else self.device
        return torch.randint(len(self), shape, generator=generator, device=device).to(self.device)

    def batch(self, indices: torch.Tensor) -> Batch:
        take = lambda x: None if x is None else x[indices]  # noqa: E731
        return Batch(
            obs=self.obs[indices], actions=self.actions[indices], rewards=self.rewards[indices],
            next_obs=self.next_obs[indices], terminals=self.terminals[indices].float(), returns=self.returns[indices],
            critic_obs=take(self.critic_obs), next_critic_obs=take(self.next_critic_obs),
        )  # fmt: skip

    def sample(self, batch_size: int | tuple[int, ...], generator: torch.Generator | None = None) -> Batch:
        """A uniform minibatch; batch_size (M, B) gives each ensemble member its own rows."""
        return self.batch(self.sample_indices(batch_size, generator))

    # ----------------------------------------------------------------- persistence
    def content_hash(self) -> str:
        """Hash of every tensor and the discount: the identity of the data for artefact caches."""
        digest = hashlib.sha256(repr(self.discount).encode())
        for f in fields(self):
            value = getattr(self, f.name)
            if torch.is_tensor(value):
                digest.update(f.name.encode())
                digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    def save(self, path: str | Path) -> None:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        torch.save({k: v.cpu() if torch.is_tensor(v) else v for k, v in data.items()}, Path(path))

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> OfflineDataset:
        return cls(**load_checkpoint(path)).to(device)


# --------------------------------------------------------------------------------------------- helpers
def episode_last_mask(episode_ids: torch.Tensor) -> torch.Tensor:
    """True at the last transition of each episode; checks that every episode is one contiguous run."""
    n = len(episode_ids)
    last = torch.ones(n, dtype=torch.bool, device=episode_ids.device)
    if n > 1:
        last[:-1] = episode_ids[1:] != episode_ids[:-1]
    if int(last.sum()) != int(torch.unique(episode_ids).numel()):
        raise ValueError("episode_ids must form contiguous runs (each episode's transitions together, in order)")
    return last


def returns_to_go(rewards: torch.Tensor, terminals: torch.Tensor, last: torch.Tensor, discount: float) -> torch.Tensor:
    """G_t = r_t + γ·G_{t+1} within an episode.

    At a terminal the future is worth 0. At a timeout the unrecorded future is estimated as a steady state:
    the mean reward of the episode's last ≈1/(1−γ) steps, forever (γ·r̄/(1−γ)), so an episode that ends by
    its time limit is not mistaken for one whose future is worthless.
    """
    r = rewards.double().cpu().numpy()
    term, ends = terminals.cpu().numpy(), last.cpu().numpy()
    window = max(1, math.ceil(1.0 / (1.0 - discount))) if discount < 1.0 else 1
    out = np.empty_like(r)
    starts = np.concatenate([[0], np.nonzero(ends)[0][:-1] + 1]) if len(r) else np.zeros(0, dtype=int)
    for start, end in zip(starts, np.nonzero(ends)[0]):
        tail = 0.0
        if not term[end] and discount < 1.0:
            tail = discount * r[max(start, end + 1 - window) : end + 1].mean() / (1.0 - discount)
        g = tail
        for t in range(end, start - 1, -1):
            g = r[t] + (discount * g if t < end else g)
            out[t] = g
    return torch.as_tensor(out, dtype=torch.float32, device=rewards.device)


def _tensor(x: ArrayLike, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.as_tensor(x if torch.is_tensor(x) else np.asarray(x)).to("cpu", dtype)


def _stats(x: torch.Tensor, min_std: float) -> tuple[torch.Tensor, torch.Tensor]:
    if len(x) == 0:
        raise ValueError("cannot compute statistics of an empty dataset")
    return x.mean(0), x.std(0, unbiased=False).clamp(min=min_std)


def _check_shapes(obs, actions, rewards, next_obs, terminals, timeouts, episode_ids, critic_obs, next_critic_obs):
    n = len(obs)
    if n == 0:
        raise ValueError("the dataset has no transitions")
    if obs.dim() != 2 or actions.dim() != 2:
        raise ValueError(f"obs and actions must be 2-D (N, dim), got {tuple(obs.shape)} and {tuple(actions.shape)}")
    named = {"actions": actions, "rewards": rewards, "next_obs": next_obs, "terminals": terminals,
             "timeouts": timeouts, "episode_ids": episode_ids}  # fmt: skip
    for name, value in named.items():
        if len(value) != n:
            raise ValueError(f"{name} has {len(value)} rows, obs has {n}")
    if next_obs.shape != obs.shape:
        raise ValueError(f"next_obs shape {tuple(next_obs.shape)} != obs shape {tuple(obs.shape)}")
    if (critic_obs is None) != (next_critic_obs is None):
        raise ValueError("give both critic_obs and next_critic_obs, or neither")
    if critic_obs is not None and (critic_obs.shape != next_critic_obs.shape or len(critic_obs) != n):
        shapes = f"{tuple(critic_obs.shape)} / {tuple(next_critic_obs.shape)}"
        raise ValueError(f"critic_obs / next_critic_obs shapes {shapes} do not match each other or N={n}")
    for name, value in {"obs": obs, "actions": actions, "rewards": rewards, "next_obs": next_obs,
                        "critic_obs": critic_obs, "next_critic_obs": next_critic_obs}.items():  # fmt: skip
        if value is not None and not torch.isfinite(value).all():
            raise ValueError(f"{name} contains NaN or Inf")
