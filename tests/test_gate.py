"""The deployment gate refuses a worse policy and keeps the incumbent as the one to deploy."""

import json

import torch

from robot_spec.policy_io import ActorMLP, LoadedPolicy, save_policy
from sim_pretrain.env_config import EnvConfig
from sim_pretrain.evaluate import EvalConfig, evaluate_policy
from uni_o4.gate import GateConfig, apply, decide


def _collapsing_actor(spec) -> ActorMLP:
    actor = ActorMLP(spec.observation.dim, spec.num_joints, [8])
    with torch.no_grad():  # PD targets far from the pose that holds the trunk up
        actor.mlp[-1].weight.zero_()
        actor.mlp[-1].bias.copy_(torch.tensor([4.0, -4.0, 4.0] * 4))
    return actor


def test_gate_refuses_a_policy_that_falls_in_simulation(spec, tmp_path):
    worse = _collapsing_actor(spec)
    cfg = EvalConfig(commands=[[0.5, 0.0, 0.0]], envs_per_command=2, episode_s=3.0, settle_s=0.5,
                     env=EnvConfig(num_threads=1))
    metrics = evaluate_policy(LoadedPolicy(worse, spec.policy_contract(), "worse", tmp_path), cfg, progress=False)
    assert metrics["fall_rate"] == 1.0

    decision = decide(candidate_score=5.0, incumbent_score=1.0, sim_metrics=metrics, cfg=GateConfig())
    assert not decision.passed and "fall rate 1.000" in decision.reasons[0]

    incumbent, candidate = tmp_path / "incumbent.pt", tmp_path / "candidate.pt"
    save_policy(ActorMLP(spec.observation.dim, 12, [8]), spec, incumbent, {"name": "incumbent"})
    save_policy(worse, spec, candidate, {"name": "candidate"})
    deployed = apply(decision, candidate, incumbent, tmp_path / "out")
    assert deployed.read_bytes() == incumbent.read_bytes()
    assert json.loads((tmp_path / "out" / "gate.json").read_text())["passed"] is False


def test_gate_compares_offline_scores():
    safe = {"fall_rate": 0.0, "mean_tracking_error": 0.1}
    assert decide(1.0, 1.0, safe, GateConfig()).passed
    worse = decide(0.9, 1.0, safe, GateConfig())
    assert not worse.passed and "below the incumbent" in worse.reasons[0]
    assert not decide(2.0, 1.0, None, GateConfig()).passed  # no safety evaluation, no deployment
