"""A small synthetic control problem for tests and benchmarks (not a robot model).

State s ∈ R^obs_dim evolves as s' = 0.9·s + 0.1·[a, 0…] + noise; reward = 1 − mean((a − a*)²) with a* = 0.5
in every dimension, so the best action is known and a policy improvement is measurable. The behaviour
policy is an actor (e.g. an ActorMLP) plus Gaussian noise; episodes end by timeout, optionally by a
"fall" when |s_0| exceeds `fall_threshold`. Extra critic measurements, if asked for, are 2·s[:critic_dim].
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from uni_o4.dataset import OfflineDataset

BEST_ACTION = 0.5


def synthetic_dataset(
    obs_dim: int = 45, action_dim: int = 12, episodes: int = 8, length: int = 50, seed: int = 0,
    actor: Callable[[torch.Tensor], torch.Tensor] | None = None, action_noise: float = 0.3, critic_dim: int = 0,
    fall_threshold: float | None = None, discount: float = 0.99,
) -> OfflineDataset:  # fmt: skip
    rng = np.random.default_rng(seed)
    columns: dict[str, list] = {k: [] for k in ("obs", "actions", "rewards", "next_obs", "terminals", "episode_ids")}
    for episode in range(episodes):
        s = rng.normal(0.0, 0.5, obs_dim)
        for _ in range(length):
            mean = np.zeros(action_dim) if actor is None else _act(actor, s)
            a = mean + rng.normal(0.0, action_noise, action_dim)
            nxt = 0.9 * s + rng.normal(0.0, 0.01, obs_dim)
            nxt[: min(action_dim, obs_dim)] += 0.1 * a[: min(action_dim, obs_dim)]
            fell = fall_threshold is not None and abs(nxt[0]) > fall_threshold
            for key, value in zip(columns, (s, a, 1.0 - np.mean((a - BEST_ACTION) ** 2), nxt, float(fell), episode)):
                columns[key].append(value)
            s = nxt
            if fell:
                break
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in columns.items()}
    if critic_dim:
        arrays["critic_obs"] = 2.0 * arrays["obs"][:, :critic_dim]
        arrays["next_critic_obs"] = 2.0 * arrays["next_obs"][:, :critic_dim]
    return OfflineDataset.from_arrays(**arrays, discount=discount)


@torch.no_grad()
def _act(actor: Callable[[torch.Tensor], torch.Tensor], s: np.ndarray) -> np.ndarray:
    return actor(torch.as_tensor(s, dtype=torch.float32)[None])[0].double().numpy()
