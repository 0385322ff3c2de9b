"""Online PPO core: GAE at terminals vs timeouts, and an update that moves the policy toward higher reward."""

import torch

from uni_o4.dataset import OfflineDataset
from uni_o4.networks import GaussianPolicyEnsemble, ValueNet
from uni_o4.online_ppo import OnlinePPO, OnlinePPOConfig, gae


def _data(rewards, terminals, episode_ids, obs_dim=3, act_dim=2):
    n = len(rewards)
    return OfflineDataset.from_arrays(
        obs=torch.zeros(n, obs_dim), actions=torch.zeros(n, act_dim), rewards=torch.tensor(rewards),
        next_obs=torch.zeros(n, obs_dim), terminals=torch.tensor(terminals), episode_ids=torch.tensor(episode_ids),
    )


def test_gae_stops_at_terminals_and_bootstraps_at_timeouts():
    # Episode 0: two steps ending in a fall. Episode 1: two steps cut by a timeout.
    data = _data([1.0, 1.0, 1.0, 1.0], [False, True, False, False], [0, 0, 1, 1])
    values = torch.zeros(4)
    next_values = torch.full((4,), 10.0)
    adv, ret = gae(data, values, next_values, gamma=0.5, lam=1.0)
    # Terminal step: 1 (no bootstrap). Step before it: 1 + 0.5·10 − 0 ... then +0.5·(adv of terminal − its δ part).
    assert adv[1] == 1.0
    assert adv[0] == (1.0 + 0.5 * 10.0) + 0.5 * (1.0)
    # Timeout: bootstraps from V(s') = 10.
    assert adv[3] == 1.0 + 0.5 * 10.0
    assert adv[2] == (1.0 + 0.5 * 10.0) + 0.5 * adv[3]
    torch.testing.assert_close(ret, adv + values)


def test_update_moves_the_policy_toward_rewarded_actions():
    torch.manual_seed(0)
    policy = GaussianPolicyEnsemble(1, 3, 2, [16], init_std=0.5)
    value = ValueNet(3, [16])
    ppo = OnlinePPO(policy, value, OnlinePPOConfig(actor_lr=3e-3, critic_lr=3e-3, epochs=4, minibatch_size=64, clip=0.2))
    target = torch.tensor([0.8, -0.5])
    obs = torch.randn(512, 3)
    first_gap = None
    for _ in range(15):
        with torch.no_grad():
            actions = policy.act(obs, deterministic=False)[0]
        rewards = -(actions - target).square().sum(-1)
        data = OfflineDataset.from_arrays(
            obs=obs, actions=actions, rewards=rewards, next_obs=obs, terminals=torch.ones(512, dtype=torch.bool),
            episode_ids=torch.arange(512),
        )
        stats = ppo.update(data)
        gap = float((policy.act(obs)[0].mean(0) - target).norm().detach())
        first_gap = gap if first_gap is None else first_gap
    assert gap < 0.5 * first_gap, (first_gap, gap)
    assert stats["value_loss"] >= 0 and 0 <= stats["clip_fraction"] <= 1


def test_update_stops_once_the_policy_has_moved_by_target_kl():
    def run(target_kl):
        torch.manual_seed(0)
        policy = GaussianPolicyEnsemble(1, 3, 2, [16], init_std=0.5)
        cfg = OnlinePPOConfig(actor_lr=3e-3, epochs=8, minibatch_size=64, clip=0.2, target_kl=target_kl)
        ppo = OnlinePPO(policy, ValueNet(3, [16]), cfg)
        data = one_step_rollout(policy, 512)
        obs, actions = data.obs, data.actions
        before = policy.log_prob(obs, actions)[0].detach()
        stats = ppo.update(data)
        after = policy.log_prob(obs, actions)[0].detach()
        return stats, float((before - after).mean())  # KL(π_rollout ‖ π) on the rollout's own actions

    free, free_kl = run(0.0)
    stopped, stopped_kl = run(0.01)
    assert free["epochs"] == 8 and stopped["epochs"] < 1  # stopped within the first epoch
    assert free_kl > 0.1 and stopped_kl < 0.05  # the minibatch that crossed 0.01 is still taken


def test_critic_warmup_updates_fit_v_alone_then_the_policy_moves():
    torch.manual_seed(0)
    policy, value = GaussianPolicyEnsemble(1, 3, 2, [16], init_std=0.5), ValueNet(3, [16])
    ppo = OnlinePPO(policy, value, OnlinePPOConfig(actor_lr=3e-3, critic_lr=3e-3, epochs=2, minibatch_size=64,
                                                   clip=0.2, target_kl=0.0, critic_warmup_updates=1))  # fmt: skip
    data = one_step_rollout(policy, 256)

    def snapshot(module):
        return [p.detach().clone() for p in module.parameters()]

    policy_before, value_before = snapshot(policy), snapshot(value)
    assert ppo.update(data)["critic_only"] == 1.0
    assert all(torch.equal(a, b) for a, b in zip(policy_before, snapshot(policy)))
    assert not all(torch.equal(a, b) for a, b in zip(value_before, snapshot(value)))
    restored = OnlinePPO(policy, value, ppo.cfg)
    restored.load_state_dict(ppo.state_dict())  # the warm-up count survives a resume
    assert restored.update(data)["critic_only"] == 0.0
    assert not all(torch.equal(a, b) for a, b in zip(policy_before, snapshot(policy)))


def one_step_rollout(policy: GaussianPolicyEnsemble, n: int) -> OfflineDataset:
    """`n` one-step episodes of `policy` on random states, rewarded for actions near 1."""
    obs = torch.randn(n, 3)
    with torch.no_grad():
        actions = policy.act(obs, deterministic=False)[0]
    return OfflineDataset.from_arrays(
        obs=obs, actions=actions, rewards=-(actions - 1.0).square().sum(-1), next_obs=obs,
        terminals=torch.ones(n, dtype=torch.bool), episode_ids=torch.arange(n),
    )  # fmt: skip
