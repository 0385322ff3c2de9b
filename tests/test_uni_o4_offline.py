"""run_offline end to end (tiny preset): deployable result, artefact cache keyed by config, exact resume."""

import json
import shutil

import pytest
import torch

import uni_o4.offline as offline
from robot_spec.config import named_config
from robot_spec.policy_io import ActorMLP, load_policy, save_policy
from uni_o4.offline import OfflineResult, load_offline_config, run_offline
from uni_o4.synthetic import synthetic_dataset


@pytest.fixture(scope="module")
def actor(spec):
    torch.manual_seed(0)
    actor = ActorMLP(spec.observation.dim, spec.num_joints, [32, 32], "elu")
    actor.obs_std.fill_(0.5)
    return actor.eval()


@pytest.fixture(scope="module")
def data(actor, spec):
    return synthetic_dataset(spec.observation.dim, spec.num_joints, episodes=6, length=40, actor=actor, critic_dim=3)


@pytest.fixture(scope="module")
def cfg():
    return load_offline_config(named_config("finetune", "uni_o4_tiny"))


@pytest.fixture(scope="module")
def first_run(data, actor, cfg, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return out, run_offline(data, actor, cfg, out, obs_layout=None, progress=False)


def test_result_is_deployable_and_scored(first_run, actor, cfg, spec, data):
    out, result = first_run
    m = cfg.behaviour.num_members
    assert len(result.initial_scores) == len(result.final_scores) == m and result.baseline_score is not None
    assert all(f >= i for f, i in zip(result.final_scores, result.initial_scores))  # π_old only ever improves
    assert result.final_score == max(result.final_scores) == result.history.best_scores[result.best_member]
    assert result.history.eval_steps[-1] == cfg.improvement.steps and len(result.history.scores[0]) == m
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_member"] == result.best_member and summary["reference_score"] == result.baseline_score
    # The best member goes out through the one policy file format and comes back unchanged.
    save_policy(result.actor, spec, out / "policy.pt", {"source": "uni_o4 offline"})
    loaded = load_policy(out / "policy.pt", spec)
    torch.testing.assert_close(loaded(data.obs), result.actor(data.obs))
    torch.testing.assert_close(loaded.actor.obs_std, actor.obs_std)  # normalisation kept from the pretrained actor
    # Critics and V read obs ⊕ critic measurements, with the data's normalisation inside.
    assert result.critics.v(data.state).shape == (len(data),)
    torch.testing.assert_close(result.critics.v.normalizer.mean, result.state_mean)
    assert result.final_score > result.reference_score  # the toy problem's known best action is found


def test_saved_result_loads_for_online_finetuning(first_run, data):
    out, result = first_run
    loaded = OfflineResult.load(out)
    assert loaded.summary() == result.summary()
    torch.testing.assert_close(loaded.actor(data.obs), result.actor(data.obs))
    torch.testing.assert_close(loaded.critics.v(data.state), result.critics.v(data.state))
    best = loaded.best_policy()  # mean and std of the best member, alone
    assert best.num_members == 1
    torch.testing.assert_close(
        best.log_prob(data.obs, data.actions)[0], result.policy.log_prob(data.obs, data.actions)[result.best_member]
    )


def test_cache_reuses_only_what_the_config_did_not_change(first_run, data, actor, cfg, monkeypatch):
    out, result = first_run
    calls = []
    for name in ("train_behaviour", "train_critics", "train_dynamics", "improve_policies"):
        original = getattr(offline, name)
        monkeypatch.setattr(offline, name, lambda *a, _n=name, _f=original, **k: calls.append(_n) or _f(*a, **k))
    again = run_offline(data, actor, cfg, out, progress=False)
    assert calls == [] and again.final_scores == result.final_scores

    changed = load_offline_config(named_config("finetune", "uni_o4_tiny"), {"critics": {"steps": 50}})
    rerun = run_offline(data, actor, changed, out, progress=False)
    assert calls == ["train_critics", "improve_policies"]
    assert rerun.keys["behaviour"] == result.keys["behaviour"] and rerun.keys["critics"] != result.keys["critics"]


def test_interrupted_stage_resumes_to_the_same_result(first_run, data, actor, cfg, tmp_path):
    """Stage 2 interrupted mid-way (checkpoints every 20 steps) ends exactly where an uninterrupted run does."""
    _, result = first_run
    cache = tmp_path / "cache"
    cache.mkdir()
    for stage in ("behaviour", "critics", "dynamics"):  # stage 1 as the first run left it
        shutil.copy(first_run[0] / "cache" / f"{stage}-{result.keys[stage]}.pt", cache)

    class Interrupt:
        def add_scalar(self, tag, value, step):
            if tag == "improvement/loss" and step == 70:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_offline(data, actor, cfg, tmp_path, writer=Interrupt(), cache_dir=cache, progress=False)
    assert (cache / f"improvement-{result.keys['improvement']}.ckpt").is_file()
    resumed = run_offline(data, actor, cfg, tmp_path, cache_dir=cache, progress=False)
    assert resumed.history.replacements == result.history.replacements
    assert resumed.final_scores == result.final_scores
    for a, b in zip(resumed.policy.state_dict().values(), result.policy.state_dict().values()):
        assert torch.equal(a, b)
    assert not (cache / f"improvement-{result.keys['improvement']}.ckpt").exists()  # finished: checkpoint gone


def test_a_second_run_from_scratch_gives_identical_outputs(first_run, data, actor, cfg, tmp_path):
    """Deterministic under a fixed torch thread count (conftest: 1): no cache shared, the same bits out."""
    _, result = first_run
    again = run_offline(data, actor, cfg, tmp_path, progress=False)
    assert again.final_scores == result.final_scores and again.baseline_score == result.baseline_score
    assert again.dynamics_report == result.dynamics_report and again.history.scores == result.history.scores
    for mine, theirs in ((again.policy, result.policy), (again.actor, result.actor), (again.critics, result.critics)):
        for (name, a), b in zip(mine.state_dict().items(), theirs.state_dict().values(), strict=True):
            assert torch.equal(a, b), name
