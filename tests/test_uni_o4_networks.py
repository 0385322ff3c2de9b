"""uni_o4.networks: batched ensembles equal their members, exact actor init/export, bounded std, linear V head."""

import pytest
import torch

from robot_spec.policy_io import ActorMLP, load_policy, save_policy
from uni_o4.networks import (
    EnsembleMLP,
    GaussianPolicyEnsemble,
    QEnsemble,
    ValueNet,
    copy_member,
    gaussian_kl,
    mlp,
    soft_update,
)


def test_ensemble_forward_equals_each_member():
    torch.manual_seed(0)
    net = EnsembleMLP(4, 7, 3, [16, 16], "elu")
    shared = torch.randn(5, 7)
    own = torch.randn(4, 5, 7)
    out_shared, out_own = net(shared), net(own)
    assert out_shared.shape == out_own.shape == (4, 5, 3)
    for i in range(4):
        member = net.member_mlp(i)
        torch.testing.assert_close(out_shared[i], member(shared))
        torch.testing.assert_close(out_own[i], member(own[i]))


def test_load_member_and_copy_member():
    net, other = EnsembleMLP(3, 4, 2, [8], "relu"), EnsembleMLP(3, 4, 2, [8], "relu")
    plain = mlp(4, 2, [8], "relu")
    net.load_member(1, plain)
    x = torch.randn(6, 4)
    torch.testing.assert_close(net(x)[1], plain(x))
    copy_member(other, net, member=2, src_member=1)
    torch.testing.assert_close(other(x)[2], plain(x))
    assert not torch.allclose(other(x)[0], plain(x))
    with pytest.raises(ValueError, match="linear layers"):
        net.load_member(0, mlp(4, 2, [8, 8]))


def _actor(spec) -> ActorMLP:
    torch.manual_seed(1)
    actor = ActorMLP(spec.observation.dim, spec.num_joints, [32, 16], "elu")
    actor.obs_mean.normal_()
    actor.obs_std.uniform_(0.5, 2.0)
    return actor


def test_policy_starts_exactly_from_actor_and_exports_deployable_member(spec, tmp_path):
    actor = _actor(spec)
    policy = GaussianPolicyEnsemble.from_actor(actor, num_members=4)
    for layer, linear in zip(policy.mean_net.layers, [m for m in actor.mlp if isinstance(m, torch.nn.Linear)]):
        for i in range(4):  # weights are copies, bit for bit
            assert torch.equal(layer.weight[i], linear.weight.T) and torch.equal(layer.bias[i, 0], linear.bias)
    obs = torch.randn(9, spec.observation.dim) * 3
    mean, std = policy(obs)
    torch.testing.assert_close(mean, actor(obs).expand(4, -1, -1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(std, torch.full_like(std, 0.3))

    with torch.no_grad():
        policy.mean_net.layers[-1].bias[2] += 0.5  # member 2 is now different; its export must show it
    path = tmp_path / "policy.pt"
    save_policy(policy.export_member(2), spec, path, {"source": "test"})
    loaded = load_policy(path, spec)
    torch.testing.assert_close(loaded(obs), actor(obs) + 0.5, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("state_dependent", [True, False])
def test_log_std_stays_in_bounds(state_dependent):
    policy = GaussianPolicyEnsemble(2, 5, 3, [8], state_dependent_std=state_dependent, init_std=0.5)
    with torch.no_grad():
        for p in policy.parameters():
            p.mul_(1e4)
    _, std = policy(torch.randn(20, 5) * 100)
    assert (std.log() >= -5.0 - 1e-5).all() and (std.log() <= 1e-5).all()
    with pytest.raises(ValueError, match="init_std"):
        GaussianPolicyEnsemble(2, 5, 3, [8], init_std=2.0)


def test_log_prob_matches_torch_normal():
    policy = GaussianPolicyEnsemble(3, 5, 2, [8])
    obs, act = torch.randn(4, 5), torch.randn(4, 2)
    mean, std = policy(obs)
    expected = torch.distributions.Normal(mean, std).log_prob(act).sum(-1)
    torch.testing.assert_close(policy.log_prob(obs, act), expected)


def test_gaussian_kl_matches_torch():
    p = torch.distributions.Normal(torch.randn(6, 3), torch.rand(6, 3) + 0.1)
    q = torch.distributions.Normal(torch.randn(6, 3), torch.rand(6, 3) + 0.1)
    expected = torch.distributions.kl_divergence(p, q).sum(-1)
    torch.testing.assert_close(gaussian_kl(p.loc, p.scale, q.loc, q.scale), expected)


def test_critics_shapes_normalisation_and_negative_values():
    q = QEnsemble(6, 2, hidden_dims=[16], num_q=2)
    s, a = torch.randn(5, 6), torch.randn(5, 2)
    assert q(s, a).shape == (2, 5) and q.min(s, a).shape == (5,)
    torch.testing.assert_close(q.min(s, a), q(s, a).min(0).values)
    q.normalizer.set_stats(torch.ones(6), torch.full((6,), 2.0))
    torch.testing.assert_close(q.normalizer(s), (s - 1) / 2)

    torch.manual_seed(0)
    v = ValueNet(6, hidden_dims=[16, 16])
    opt = torch.optim.Adam(v.parameters(), lr=1e-2)
    for _ in range(200):  # the linear head reaches negative returns (a ReLU head could not)
        loss = (v(s) + 10.0).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (v(s) < -9.0).all()


def test_soft_update_moves_target_by_tau():
    src, dst = mlp(3, 1, [4]), mlp(3, 1, [4])
    before = [p.clone() for p in dst.parameters()]
    soft_update(dst, src, 0.25)
    for b, d, s in zip(before, dst.parameters(), src.parameters()):
        torch.testing.assert_close(d, 0.75 * b + 0.25 * s)


def test_q_ensemble_many_is_the_q_function_of_every_pair():
    torch.manual_seed(0)
    q = QEnsemble(7, 3, [16, 16], num_q=3)
    q.normalizer.set_stats(torch.randn(7), torch.rand(7) + 0.5)
    state, actions = torch.randn(5, 7), torch.randn(4, 5, 3)
    pairs = q(state.expand(4, 5, 7).reshape(20, 7), actions.reshape(20, 3)).view(3, 4, 5)
    torch.testing.assert_close(q.many(state, actions), pairs)
    grads = [torch.autograd.grad(v.square().sum(), list(q.parameters())) for v in (q.many(state, actions), pairs)]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
