"""Uni-O4 stages on tiny synthetic data: losses fall, the diversity term acts, AM-Q and π_old replacement."""

import copy

import pytest
import torch

from robot_spec.policy_io import ActorMLP
from uni_o4.critics import CriticConfig, Critics, CriticTrainer
from uni_o4.dynamics import DynamicsConfig, DynamicsTrainer, EnsembleDynamics, holdout_split
from uni_o4.networks import GaussianPolicyEnsemble, gaussian_kl
from uni_o4.ope import AmqEvaluator, tilt_terminal
from uni_o4.stage1 import BehaviourConfig, BehaviourTrainer, build_behaviour_policy, diversity_penalty
from uni_o4.stage2 import ImprovementConfig, PolicyImprover
from uni_o4.synthetic import BEST_ACTION, synthetic_dataset

OBS, ACT = 6, 2


@pytest.fixture(scope="module")
def actor():
    torch.manual_seed(0)
    return ActorMLP(OBS, ACT, [16, 16], "elu").eval()


@pytest.fixture(scope="module")
def data(actor):
    return synthetic_dataset(OBS, ACT, episodes=6, length=40, seed=0, actor=actor, critic_dim=2, discount=0.9)


def _behaviour(data, actor, **kw):
    cfg = BehaviourConfig(**{"num_members": 3, "steps": 0, "lr": 3e-3, "batch_size": 64, **kw})
    torch.manual_seed(0)
    return BehaviourTrainer(build_behaviour_policy(cfg, data, actor), data, cfg, torch.Generator().manual_seed(1))


def _mean_nll(trainer, data):
    with torch.no_grad():
        return -trainer.policy.log_prob(data.obs, data.actions).mean().item()


@pytest.mark.parametrize("init", ["policy", "bc"])
def test_behaviour_likelihood_rises(data, actor, init):
    trainer = _behaviour(data, actor, init=init, hidden_dims=[32, 32], init_std=0.1)  # true noise: 0.3
    before = _mean_nll(trainer, data)
    for _ in range(150):
        trainer.step()
    assert _mean_nll(trainer, data) < before - 0.2


def _closest_kl(policy, obs):
    with torch.no_grad():
        mean, std = policy(obs)
        kl = gaussian_kl(mean[:, None], std[:, None], mean[None], std[None]).mean(-1)
        return (kl + torch.diag(torch.full((len(kl),), float("inf")))).min(1).values


def test_diversity_term_reaches_the_weights_and_spreads_members(data, actor):
    """Same seeds, same data: with the term the members end up further apart than without it."""
    trained = {}
    for coef in (0.0, 5.0):
        trainer = _behaviour(data, actor, diversity_coef=coef, diversity_margin=2.0)
        for _ in range(60):
            trainer.step()
        trained[coef] = trainer.policy
    without, with_term = trained[0.0], trained[5.0]
    assert any(not torch.equal(a, b) for a, b in zip(without.parameters(), with_term.parameters()))
    assert _closest_kl(with_term, data.obs).min() > 2 * _closest_kl(without, data.obs).min()

    # The gradient of the penalty itself is non-zero on every member once they differ.
    policy = copy.deepcopy(without)
    policy.zero_grad()
    diversity_penalty(policy, data.obs[:32], margin=10.0).sum().backward()
    grads = policy.mean_net.layers[0].weight.grad
    assert (grads.flatten(1).norm(dim=1) > 0).all()


@pytest.mark.parametrize("kind", ["iql", "sarsa"])
def test_critic_losses_fall(data, kind):
    cfg = CriticConfig(kind=kind, q_hidden_dims=[64, 64], v_hidden_dims=[64, 64], batch_size=128, q_lr=1e-3,
                       v_lr=1e-3, polyak=0.05)  # fmt: skip
    torch.manual_seed(0)
    critics = Critics(data.state_dim, data.action_dim, cfg)
    critics.set_normalization(*data.state_stats())
    trainer = CriticTrainer(critics, data, cfg, torch.Generator().manual_seed(0))
    everything = torch.arange(len(data))

    def errors():
        with torch.no_grad():
            return trainer.losses(everything)["q_loss"].item(), (critics.v(data.state) - data.returns).abs().mean()

    first_q, first_v = errors()
    for _ in range(300):
        trainer.step()
    last_q, last_v = errors()
    assert last_q < 0.5 * first_q  # TD error of Q
    assert last_v < 0.5 * first_v  # V near the returns the data earned (IQL: a high expectile of them)
    # Q ranks actions by the known reward: the best action beats the behaviour's actions.
    best = torch.full_like(data.actions, BEST_ACTION)
    assert critics.advantage(data.state, best).mean() > critics.advantage(data.state, data.actions).mean()
    # n actions per state at once (stage 2's members) equal one action at a time
    both = torch.stack([best, data.actions])
    expected = torch.stack([critics.advantage(data.state, a) for a in both])
    torch.testing.assert_close(critics.advantage(data.state, both), expected)


@pytest.fixture(scope="module")
def model_data(actor):
    """More transitions for the dynamics model (it trains in epochs)."""
    return synthetic_dataset(OBS, ACT, episodes=10, length=60, seed=1, actor=actor, critic_dim=2, discount=0.9)


def _dynamics(data, epochs=30, **kw):
    cfg = DynamicsConfig(**{"num_members": 4, "num_elites": 2, "hidden_dims": [32, 32], "lr": 3e-3,
                            "weight_decay": [1e-5, 1e-5, 1e-5], "batch_size": 64, **kw})  # fmt: skip
    torch.manual_seed(0)
    train, holdout = holdout_split(data, 0.2, seed=0)
    trainer = DynamicsTrainer(EnsembleDynamics(data.state_dim, data.action_dim, cfg), train, holdout, cfg,
                              torch.Generator().manual_seed(0))  # fmt: skip
    first = trainer.holdout_error()
    for epoch in range(epochs):
        if trainer.epoch(epoch):
            break
    return trainer, first


def test_dynamics_holdout_error_falls_and_best_members_become_elites(model_data):
    data = model_data
    trainer, first = _dynamics(data)
    model = trainer.finish()
    best = torch.tensor(trainer.progress.best_holdout)
    assert (best < 0.7 * first).all()
    assert set(model.elites.tolist()) == set(best.argsort()[:2].tolist())
    torch.testing.assert_close(trainer.holdout_error(), best)  # each member's best weights are installed
    # A model step moves states the way the data does (better than standing still).
    next_state, reward = model.step(data.state, data.actions, generator=torch.Generator().manual_seed(0))
    assert (next_state - data.next_state).square().mean() < 0.5 * (data.state - data.next_state).square().mean()
    assert (reward - data.rewards).abs().mean() < 0.5 * (data.rewards - data.rewards.mean()).abs().mean()


def test_dynamics_early_stopping_counts_epochs_without_improvement(data):
    trainer, _ = _dynamics(data, epochs=0, patience=2, improvement=0.01)
    assert not trainer._update_snapshots(torch.tensor([1.0, 1.0, 1.0, 1.0]))
    assert not trainer._update_snapshots(torch.tensor([0.995, 0.5, 1.0, 1.0]))  # member 1 improved: reset
    assert trainer.progress.epochs_since_update == 0
    assert not trainer._update_snapshots(torch.tensor([0.995, 0.499, 1.0, 1.0]))  # < 1 %: no improvement
    assert trainer._update_snapshots(torch.tensor([2.0, 2.0, 2.0, 2.0]))  # second epoch without: stop
    assert trainer.progress.best_holdout == [1.0, 0.5, 1.0, 1.0]


class QuadraticCritics:
    """Q(s, a) = −‖a − a*‖²: a known critic, so AM-Q orders policies by construction."""

    @torch.no_grad()
    def q_value(self, state, action):
        return -(action - BEST_ACTION).square().sum(-1)

    @torch.no_grad()
    def advantage(self, state, action):
        return self.q_value(state, action)


def _shift_member(policy, member, delta):
    with torch.no_grad():
        policy.mean_net.layers[-1].bias[member] += delta


def test_amq_scores_rank_members_and_count_falls(data, actor):
    dynamics, _ = _dynamics(data, epochs=2)
    evaluator = AmqEvaluator(dynamics.finish(), QuadraticCritics(), data.state[:32], data.obs_dim, horizon=4)
    policy = GaussianPolicyEnsemble.from_actor(actor, 3)
    _shift_member(policy, 1, BEST_ACTION - actor(data.obs).mean(0))  # member 1 acts closer to a*
    _shift_member(policy, 2, -3.0)  # member 2 far from it
    scores = evaluator.scores(policy)
    assert scores[1] > scores[0] > scores[2]
    torch.testing.assert_close(evaluator.scores(policy), scores)  # common random numbers: repeatable

    # A state judged fallen earns nothing afterwards: with everything fallen, only step 0 counts.
    fallen = AmqEvaluator(evaluator.dynamics, QuadraticCritics(), data.state[:32], data.obs_dim, horizon=4,
                          terminal_fn=lambda s: torch.ones(len(s), dtype=torch.bool))  # fmt: skip
    torch.testing.assert_close(fallen.scores(policy), evaluator_first_step(evaluator, policy) / 4)


def evaluator_first_step(evaluator, policy):
    with torch.no_grad():
        action = policy.act(evaluator.start_states[:, : evaluator.obs_dim])
        return -(action - BEST_ACTION).square().sum(-1).mean(-1)


def test_tilt_terminal_reads_projected_gravity(spec):
    fallen = tilt_terminal(spec.observation, max_tilt=1.0)
    state = torch.zeros(2, spec.observation.dim + 3)
    g = spec.observation.slices()["projected_gravity"]
    state[0, g] = torch.tensor([0.0, 0.0, -1.0])  # upright
    state[1, g] = torch.tensor([0.0, -0.9, -0.3])  # on its side
    assert fallen(state).tolist() == [False, True]


def test_replacement_follows_amq(data, actor):
    """A member made better in the model replaces its π_old; one made worse does not; scores are recorded."""
    dynamics, _ = _dynamics(data, epochs=2)
    evaluator = AmqEvaluator(dynamics.finish(), QuadraticCritics(), data.state[:32], data.obs_dim, horizon=3)
    policy = GaussianPolicyEnsemble.from_actor(actor, 3)
    cfg = ImprovementConfig(steps=10, eval_every=5, batch_size=32)
    improver = PolicyImprover(policy, QuadraticCritics(), data, evaluator, cfg, torch.Generator().manual_seed(0))
    initial = list(improver.history.initial_scores)
    old_before = copy.deepcopy(improver.old_policy)

    _shift_member(improver.policy, 0, BEST_ACTION - actor(data.obs).mean(0))  # better
    _shift_member(improver.policy, 1, -3.0)  # worse
    scores = improver.evaluate(step=5)
    h = improver.history
    assert [r["member"] for r in h.replacements] == [0]
    assert h.replacements[0]["previous"] == initial[0] and h.best_scores[0] == scores[0] > initial[0]
    assert h.best_scores[1:] == initial[1:] and h.initial_scores == initial and h.best_member == 0
    new_bias, old_bias = improver.old_policy.mean_net.layers[-1].bias, old_before.mean_net.layers[-1].bias
    assert torch.equal(new_bias[0], improver.policy.mean_net.layers[-1].bias[0])
    assert torch.equal(new_bias[1], old_bias[1]) and torch.equal(new_bias[2], old_bias[2])


def test_policy_improvement_moves_members_towards_higher_q(data, actor):
    evaluator_dynamics, _ = _dynamics(data, epochs=2)
    evaluator = AmqEvaluator(evaluator_dynamics.finish(), QuadraticCritics(), data.state[:32], data.obs_dim, 3)
    policy = GaussianPolicyEnsemble.from_actor(actor, 2, init_std=0.3)
    cfg = ImprovementConfig(steps=100, lr=3e-3, eval_every=25, batch_size=64)
    improver = PolicyImprover(policy, QuadraticCritics(), data, evaluator, cfg, torch.Generator().manual_seed(0))
    losses = [improver.step(i)["loss"].item() for i in range(cfg.steps)]
    h = improver.history
    assert h.eval_steps == [25, 50, 75, 100] and len(h.scores) == 4
    assert min(h.best_scores) > max(h.initial_scores)  # every member improved in AM-Q
    assert len(h.replacements) >= 2
    assert sum(losses[-10:]) < sum(losses[:10])  # the clipped surrogate grows (its loss falls)
