"""The policy file format: contract written, checked, and mismatches refused."""

import dataclasses

import pytest
import torch

from robot_spec import PolicyMismatchError
from robot_spec.observation import ObservationLayout
from robot_spec.policy_io import ActorMLP, load_policy, save_policy


def test_round_trip_keeps_outputs_and_contract(spec, tmp_path):
    actor = ActorMLP(spec.observation.dim, spec.num_joints, [16])
    actor.obs_mean.fill_(0.3)
    contract = save_policy(actor, spec, tmp_path / "p.pt", {"run": "t"})
    loaded = load_policy(tmp_path / "p.pt", spec)
    obs = torch.randn(4, spec.observation.dim)
    torch.testing.assert_close(loaded(obs), actor(obs).detach())
    assert loaded.contract == contract and len(loaded.policy_id) == 16
    assert (tmp_path / "p.onnx").stat().st_size > 0


def test_policy_with_another_observation_layout_is_refused(spec, tmp_path):
    terms = spec.observation.terms[:-1]  # trained without last_action
    other = dataclasses.replace(spec, observation=ObservationLayout(terms, 1, spec.observation.clip))
    save_policy(ActorMLP(other.observation.dim, 12, [16]), other, tmp_path / "other.pt")
    with pytest.raises(PolicyMismatchError, match="observation"):
        load_policy(tmp_path / "other.pt", spec)


def test_not_a_policy_file_is_answered_clearly(spec, tmp_path):
    with pytest.raises(FileNotFoundError, match="policy file not found"):
        load_policy(tmp_path / "none.pt", spec)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a policy")
    with pytest.raises(ValueError, match="not a policy file"):
        load_policy(junk, spec)
