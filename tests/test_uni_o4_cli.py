"""The uni_o4 command line: clear answers to wrong input, nothing written where nothing could be done."""

import pytest
import torch

from robot_spec.policy_io import load_policy, save_policy
from uni_o4.baselines import SafeActionSet
from uni_o4.cli import main
from uni_o4.registry import load_baseline_config, make_algorithm
from uni_o4.synthetic import synthetic_dataset


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["finetune", "--offline", "{tmp}/missing"], "log folder not found"),
     (["finetune", "--offline", "{tmp}/empty"], "no log episodes"),
     (["finetune", "--online"], "--online needs --policy"),
     (["finetune", "--online", "--policy", "{tmp}/empty"], "--online needs --policy"),
     (["finetune", "--offline", "{tmp}/empty", "--preset", "nope"], "unknown finetune 'nope'"),
     (["pipeline", "--collect-steps", "0"], "must be positive"),
     (["pipeline", "--robot", "go2"], "unknown robots 'go2'; known: go1"),
     (["pipeline", "--pretrain-preset", "nope"], "pipeline: error: unknown train 'go1_nope'; known: go1_quick, go1_tiny"),
     (["pipeline", "--policy", "{tmp}/p.pt", "--pretrain-preset", "quick"], "start from a policy or pretrain one")],
)  # fmt: skip
def test_bad_input_is_answered_clearly(tmp_path, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv + ["--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err


def test_the_pipeline_starts_from_the_shipped_robust_policy_or_says_it_has_none(tmp_path, capsys, monkeypatch):
    from robot_spec import policy_io

    assert policy_io.shipped_policy("go1") == policy_io.SHIPPED_POLICIES / "go1_robust" / "policy.pt"
    monkeypatch.setattr(policy_io, "SHIPPED_POLICIES", tmp_path / "none")
    assert main(["pipeline", "--out", str(tmp_path / "out")]) == 2
    assert "no shipped robust policy for go1" in capsys.readouterr().err


def test_a_policy_for_another_layout_is_refused(tmp_path, capsys, spec):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a policy")
    (tmp_path / "logs").mkdir()
    assert main(["finetune", "--offline", str(tmp_path / "logs"), "--init", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "not a policy file" in capsys.readouterr().err


def test_calql_policy_deploys_in_the_common_format_inside_its_bounds(spec, tmp_path):
    """Cal-QL's tanh-squashed actor is saved and loaded like any policy and acts inside the safe box."""
    safe = SafeActionSet.for_robot("go1")
    cfg = load_baseline_config("calql", overrides={"actor_hidden_dims": [16], "critic_hidden_dims": [16]})
    obs_dim = spec.observation.dim
    data = synthetic_dataset(obs_dim, spec.num_joints, episodes=2, length=16, discount=cfg.discount)
    algo = make_algorithm("calql", cfg, data, safe)
    with torch.no_grad():
        algo.policy.gaussian.mean_net.layers[-1].bias.uniform_(-50.0, 50.0)  # far outside: the squash must bound it
    exported = algo.export_actor()
    save_policy(exported, spec, tmp_path / "calql.pt")
    loaded = load_policy(tmp_path / "calql.pt", spec)
    obs = torch.randn(8, obs_dim)
    actions = loaded(obs)
    assert torch.allclose(actions, exported(obs), atol=1e-5)
    assert torch.all(actions <= safe.high + 1e-5) and torch.all(actions >= safe.low - 1e-5)
    assert (actions - safe.high).abs().min() < 1e-3 or (actions - safe.low).abs().min() < 1e-3  # it saturates
