"""Ensemble members trained together (stacked weights, one batched matmul per layer, one Adam over the stack) learn
exactly what each would learn alone: one training step of the stack equals each member's own step, gradients and
updated weights. Stacking is what makes the stages fast (benchmarks/uni_o4_speed.py), so it must change nothing."""

import pytest
import torch

from robot_spec.policy_io import ActorMLP
from uni_o4.dynamics import DynamicsConfig, DynamicsTrainer, EnsembleDynamics, holdout_split
from uni_o4.networks import copy_member
from uni_o4.stage1 import BehaviourConfig, BehaviourTrainer, build_behaviour_policy
from uni_o4.synthetic import synthetic_dataset

OBS, ACT, M = 6, 2, 3


@pytest.fixture(scope="module")
def data():
    torch.manual_seed(0)
    actor = ActorMLP(OBS, ACT, [16, 16], "elu").eval()
    return synthetic_dataset(OBS, ACT, episodes=6, length=40, seed=0, actor=actor, critic_dim=2, discount=0.9)


def _step(module, optimizer, loss) -> dict[str, torch.Tensor]:
    """One optimizer step; returns the gradients it applied (copies)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in module.named_parameters()}
    optimizer.step()
    return grads


def _assert_member_equals(stacked: dict, alone: dict, member: int) -> None:
    for name, value in alone.items():  # alone: one member, leading dim 1
        torch.testing.assert_close(stacked[name][member : member + 1], value, rtol=1e-5, atol=1e-6, msg=name)


def _behaviour(data, members: int) -> BehaviourTrainer:
    # no diversity term: it couples members on purpose (each is pushed away from the others)
    cfg = BehaviourConfig(num_members=members, init="bc", hidden_dims=[32, 32], diversity_coef=0.0, lr=3e-3)
    torch.manual_seed(0)
    return BehaviourTrainer(build_behaviour_policy(cfg, data, None), data, cfg, torch.Generator().manual_seed(1))


def test_behaviour_step_of_the_stack_equals_each_members_own_step(data):
    stacked = _behaviour(data, M)
    alone = []
    for i in range(M):  # each member as a one-member ensemble with its own optimizer, same weights
        trainer = _behaviour(data, 1)
        copy_member(trainer.policy, stacked.policy, 0, src_member=i)
        alone.append(trainer)
    for k in range(2):  # the second step checks Adam's moments too
        indices = data.sample_indices((M, 64), torch.Generator().manual_seed(k))
        grads = _step(stacked.policy, stacked.optimizer, stacked.losses(indices)["loss"])
        for i, trainer in enumerate(alone):
            own = _step(trainer.policy, trainer.optimizer, trainer.losses(indices[i : i + 1])["loss"])
            _assert_member_equals(grads, own, i)
    for i, trainer in enumerate(alone):
        _assert_member_equals(dict(stacked.policy.named_parameters()), dict(trainer.policy.named_parameters()), i)


def _dynamics(data, members: int) -> DynamicsTrainer:
    cfg = DynamicsConfig(num_members=members, num_elites=1, hidden_dims=[32, 32], lr=3e-3,
                         weight_decay=[1e-4, 2e-4, 3e-4], batch_size=64)  # fmt: skip
    torch.manual_seed(0)
    train, holdout = holdout_split(data, 0.2, seed=0)
    model = EnsembleDynamics(data.state_dim, data.action_dim, cfg)
    return DynamicsTrainer(model, train, holdout, cfg, torch.Generator().manual_seed(0))


def test_dynamics_step_of_the_stack_equals_each_members_own_step(data):
    stacked = _dynamics(data, M)
    alone = []
    for i in range(M):
        trainer = _dynamics(data, 1)
        copy_member(trainer.model, stacked.model, 0, src_member=i)
        alone.append(trainer)
    for k in range(2):
        indices = torch.randint(stacked.num_train, (M, 64), generator=torch.Generator().manual_seed(k))
        grads = _step(stacked.model, stacked.optimizer, stacked.loss(indices))
        for i, trainer in enumerate(alone):
            _assert_member_equals(grads, _step(trainer.model, trainer.optimizer, trainer.loss(indices[i : i + 1])), i)
    for i, trainer in enumerate(alone):
        _assert_member_equals(dict(stacked.model.named_parameters()), dict(trainer.model.named_parameters()), i)
