"""uni_o4.dataset: returns-to-go at terminals vs timeouts, validation, episode split, sampling, persistence."""

import numpy as np
import pytest
import torch

from uni_o4.dataset import OfflineDataset


def _data(n_episodes=4, length=10, terminal_last=False, reward=1.0, critic_dim=0, discount=0.9):
    n = n_episodes * length
    rng = np.random.default_rng(0)
    terminals = np.zeros(n)
    if terminal_last:
        terminals[length - 1] = 1.0  # the first episode ends in a fall
    extra = {}
    if critic_dim:
        extra = {"critic_obs": rng.normal(size=(n, critic_dim)), "next_critic_obs": rng.normal(size=(n, critic_dim))}
    return OfflineDataset.from_arrays(
        obs=rng.normal(size=(n, 5)), actions=rng.normal(size=(n, 2)), rewards=np.full(n, reward),
        next_obs=rng.normal(size=(n, 5)), terminals=terminals, episode_ids=np.repeat(np.arange(n_episodes), length),
        discount=discount, **extra,
    )  # fmt: skip


def test_returns_stop_at_terminal_and_continue_at_timeout():
    data = _data(n_episodes=2, length=10, terminal_last=True, reward=1.0, discount=0.9)
    g = data.returns.double()
    # Fall: G_t = sum_{k=0}^{9-t} 0.9^k, so 1 at the last step.
    expected_fall = torch.tensor([(1 - 0.9 ** (10 - t)) / 0.1 for t in range(10)], dtype=torch.float64)
    torch.testing.assert_close(g[:10], expected_fall, rtol=1e-5, atol=1e-5)
    # Timeout with a steady reward of 1: the future is estimated as 1 forever, G = 1 / (1 − γ) everywhere.
    torch.testing.assert_close(g[10:], torch.full((10,), 10.0, dtype=torch.float64), rtol=1e-5, atol=1e-5)
    assert data.terminals[:10].tolist() == [False] * 9 + [True]
    assert data.timeouts.tolist() == [False] * 19 + [True]  # the unflagged last step is a timeout


def test_episodes_split_at_flags_without_ids():
    n = 6
    data = OfflineDataset.from_arrays(
        np.zeros((n, 3)), np.zeros((n, 1)), np.arange(n), np.zeros((n, 3)),
        terminals=[0, 1, 0, 0, 0, 0], timeouts=[0, 0, 0, 1, 0, 0], discount=0.5,
    )  # fmt: skip
    assert data.episode_ids.tolist() == [0, 0, 1, 1, 2, 2]
    assert data.returns[1].item() == 1.0  # terminal: no future


@pytest.mark.parametrize(
    "change, message",
    [
        ({"terminals": [1, 0, 0, 0]}, "terminal flag inside an episode"),
        ({"episode_ids": [0, 1, 0, 0]}, "contiguous"),
        ({"rewards": [0, 0, 0]}, "rewards has 3 rows"),
        ({"obs": [[np.nan]] * 4}, "NaN"),
        ({"critic_obs": np.zeros((4, 2))}, "both critic_obs"),
    ],
)
def test_bad_arrays_are_refused(change, message):
    args = dict(obs=np.zeros((4, 1)), actions=np.zeros((4, 1)), rewards=np.zeros(4), next_obs=np.zeros((4, 1)),
                terminals=np.zeros(4), episode_ids=[0, 0, 0, 0])  # fmt: skip
    args.update(change)
    with pytest.raises(ValueError, match=message):
        OfflineDataset.from_arrays(**args)


def test_split_by_episode_keeps_episodes_whole_and_is_seeded():
    data = _data(n_episodes=10, length=5)
    train, val = data.split_by_episode(0.3, seed=1)
    assert len(train) + len(val) == len(data) and val.num_episodes == 3
    assert not set(train.episode_ids.tolist()) & set(val.episode_ids.tolist())
    assert torch.equal(val.episode_ids, data.split_by_episode(0.3, seed=1)[1].episode_ids)
    with pytest.raises(ValueError, match="at least 2 episodes"):
        _data(n_episodes=1).split_by_episode(0.2)


def test_sampling_stats_and_critic_state():
    data = _data(critic_dim=3)
    assert data.state_dim == 8 and data.state.shape == (40, 8)
    batch = data.sample((4, 16), torch.Generator().manual_seed(0))
    assert batch.obs.shape == (4, 16, 5) and batch.state.shape == (4, 16, 8) and batch.next_state.shape == (4, 16, 8)
    again = data.sample((4, 16), torch.Generator().manual_seed(0))
    assert torch.equal(batch.obs, again.obs)
    mean, std = data.obs_stats()
    torch.testing.assert_close(mean, data.obs.mean(0))
    constant = OfflineDataset.from_arrays(np.ones((3, 2)), np.zeros((3, 1)), np.zeros(3), np.ones((3, 2)), np.zeros(3))
    assert (constant.obs_stats(min_std=0.01)[1] == 0.01).all()


def test_save_load_roundtrip_and_content_hash(tmp_path):
    data = _data(critic_dim=2)
    data.save(tmp_path / "d.pt")
    loaded = OfflineDataset.load(tmp_path / "d.pt")
    assert loaded.content_hash() == data.content_hash()
    assert torch.equal(loaded.next_critic_obs, data.next_critic_obs)
    other = _data(critic_dim=2, reward=2.0)
    assert other.content_hash() != data.content_hash()
