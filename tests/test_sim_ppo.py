"""sim_ppo's decisions (the gate that trusts a calibration only as far as it fits held-out logs, the online
acceptance) and the pipeline's gap-recovered arithmetic."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from sim_pretrain.env_config import DynamicsConfig
from uni_o4 import sim_ppo
from uni_o4.pipeline import ORACLE_STAGE, gap_recovered, with_gap_recovered
from uni_o4.sim_ppo import SimGateConfig, SimPPOConfig, accept


def calibration(before: float, after: float) -> dict:
    return {"fit_error_rms": {"held_out": {"loss_before": before, "loss_after": after}}}


def candidates(*policies: str, profile: str = "p.yaml") -> list:
    return [sim_ppo.Candidate(policy, Path(profile), 0) for policy in policies]


def sim_metrics(tracking: float, falls: float, spread: float = 0.0, yaw: float = 0.1) -> dict:
    """Simulator metrics of 56 episodes whose xy tracking errors average `tracking`, alternately ± `spread`."""
    episodes = tracking + spread * np.resize([1.0, -1.0], 56)
    return {"mean_tracking_error": tracking, "mean_yaw_error": yaw, "fall_rate": falls, "mean_return": 1.0,
            "per_episode": {"tracking_error_xy": episodes.tolist(), "tracking_error_yaw": [yaw] * 56}}


@pytest.fixture
def fake_sim(monkeypatch):
    scores = {}
    monkeypatch.setattr(sim_ppo, "evaluate_in", lambda policy, *_args, **_kw: scores[policy])
    return scores


def test_gate_passes_a_better_candidate_in_a_simulator_that_fits(fake_sim):
    fake_sim.update(candidate=sim_metrics(0.10, 0.0), incumbent=sim_metrics(0.20, 0.0))
    decision = sim_ppo.gate(candidates("candidate"), "incumbent", calibration(2.0, 1.0), "s.npz", SimGateConfig())[0]
    assert decision["passed"] and decision["held_out_fit_gain"] == pytest.approx(0.5)


def test_gate_refuses_when_the_calibration_does_not_explain_held_out_logs(fake_sim):
    fake_sim.update(candidate=sim_metrics(0.10, 0.0), incumbent=sim_metrics(0.20, 0.0))
    decision = sim_ppo.gate(candidates("candidate"), "incumbent", calibration(2.0, 1.95), "s.npz", SimGateConfig())[0]
    assert not decision["passed"] and "not trusted" in decision["reasons"][0]


def test_gate_evaluates_the_incumbent_once_for_all_candidates(monkeypatch):
    scores = {"a": sim_metrics(0.10, 0.0), "b": sim_metrics(0.30, 0.0), "incumbent": sim_metrics(0.20, 0.0)}
    evaluated = []
    monkeypatch.setattr(sim_ppo, "evaluate_in", lambda policy, *_a, **_k: evaluated.append(policy) or scores[policy])
    decisions = sim_ppo.gate(candidates("a", "b"), "incumbent", calibration(2.0, 1.0), "s.npz", SimGateConfig())
    assert [d["passed"] for d in decisions] == [True, False]
    assert sorted(evaluated) == ["a", "b", "incumbent"]
    assert all(d["sim"]["incumbent"]["mean_tracking_error"] == 0.20 for d in decisions)


@pytest.mark.parametrize("candidate, reason", [(sim_metrics(0.25, 0.0), "tracking"), (sim_metrics(0.1, 0.2), "falls"),
                                               (sim_metrics(0.15, 0.1, yaw=0.2), "xy + yaw")])  # xy bought with yaw
def test_gate_refuses_worse_tracking_or_more_falls(fake_sim, candidate, reason):
    fake_sim.update(candidate=candidate, incumbent=sim_metrics(0.20, 0.1))
    decision = sim_ppo.gate(candidates("candidate"), "incumbent", calibration(2.0, 1.0), "s.npz", SimGateConfig())[0]
    assert not decision["passed"] and any(reason in r for r in decision["reasons"])


def test_gate_refuses_a_gain_within_the_simulators_episode_noise(fake_sim):
    """The same mean gain passes when every episode agrees and is refused when episodes scatter around it by far
    more than the gain (the bound over paired episodes crosses zero); confidence 0 is the mean rule alone."""
    fake_sim.update(incumbent=sim_metrics(0.20, 0.0), steady=sim_metrics(0.19, 0.0),
                    noisy=sim_metrics(0.19, 0.0, spread=0.15))
    steady, noisy = sim_ppo.gate(candidates("steady", "noisy"), "incumbent", calibration(2.0, 1.0), "s.npz",
                                 SimGateConfig(confidence=0.9))  # fmt: skip
    assert steady["passed"] and not noisy["passed"] and "within its noise" in noisy["reasons"][0]
    mean_only = sim_ppo.gate(candidates("noisy"), "incumbent", calibration(2.0, 1.0), "s.npz",
                             SimGateConfig(confidence=0.0))[0]  # fmt: skip
    assert mean_only["passed"]


def test_online_acceptance_needs_no_more_incidents_and_better_tracking_or_fewer_falls_and_more_return():
    base = {"tracking_error_xy": 0.2, "tracking_error_yaw": 0.1, "fall_rate": 0.0, "trip_rate": 0.0, "mean_return": 10.0}
    assert accept({**base, "tracking_error_xy": 0.15}, base)[0]
    assert accept({**base, "tracking_error_yaw": 0.05}, base)[0]
    # tracking is the body's whole motion: xy bought with more yaw-rate error is no gain
    assert not accept({**base, "tracking_error_xy": 0.15, "tracking_error_yaw": 0.2}, base)[0]
    assert not accept({**base, "tracking_error_xy": 0.25}, base)[0]
    assert not accept({**base, "tracking_error_xy": 0.15, "fall_rate": 0.1}, base)[0]
    assert not accept({**base, "tracking_error_xy": 0.15, "trip_rate": 0.1}, base)[0]
    falling = {**base, "fall_rate": 0.9, "mean_return": 5.0}  # tracks well over the few steps it walks
    assert accept({**base, "tracking_error_xy": 0.25, "fall_rate": 0.1, "mean_return": 14.0}, falling)[0]
    assert not accept({**base, "tracking_error_xy": 0.25, "fall_rate": 0.1, "mean_return": 4.0}, falling)[0]
    # a safety stop ends an episode like a fall: one stop where the incumbent fell most of the time is no reason
    assert accept({**base, "tracking_error_xy": 0.15, "trip_rate": 0.125, "mean_return": 20.0}, falling)[0]
    assert not accept({**base, "tracking_error_xy": 0.15, "fall_rate": 0.5, "trip_rate": 0.5}, falling)[0]


def test_config_refuses_nonsense():
    with pytest.raises(ValueError):
        SimPPOConfig(iterations=0)
    with pytest.raises(ValueError):
        SimPPOConfig(dynamics=DynamicsConfig(spread=1.5))
    with pytest.raises(ValueError, match="tracking_yaw"):  # a misspelt term, refused before anything runs
        SimPPOConfig(reward_scales={"tracking_yaw": 1.0})
    assert SimPPOConfig(reward_scales={"tracking_ang_vel": 1.0}).reward_scales == {"tracking_ang_vel": 1.0}


def test_gap_recovered_is_the_share_of_the_sim_to_oracle_margin():
    assert gap_recovered(0.15, sim=0.25, oracle=0.05, lower_is_better=True) == pytest.approx(0.5)
    assert gap_recovered(0.15, sim=0.25, oracle=0.30, lower_is_better=True) is None  # the oracle tracks worse
    assert gap_recovered(9.0, sim=8.2, oracle=8.0) is None  # an oracle below the sim policy is no ceiling
    assert gap_recovered(30.0, sim=10.0, oracle=20.0) == pytest.approx(2.0)  # beyond the oracle
    assert gap_recovered(0.2, sim=0.25, oracle=0.25) is None  # nothing to recover


def test_table_rows_carry_gap_recovered_on_the_gapped_profile_only():
    def row(stage, profile, tracking, ret):
        return {"stage": stage, "profile": profile, "tracking_error_xy": tracking, "mean_return": ret}

    rows = with_gap_recovered([row("sim policy, no gap", "none", 0.07, 27.0), row("sim policy", "strong", 0.26, 9.0),
                               row(ORACLE_STAGE, "strong", 0.16, 19.0), row("after offline", "strong", 0.21, 14.0)])
    assert rows[0]["gap_tracking"] is None
    assert rows[1]["gap_tracking"] == pytest.approx(0.0) and rows[2]["gap_tracking"] == pytest.approx(1.0)
    assert rows[3]["gap_tracking"] == pytest.approx(0.5) and rows[3]["gap_return"] == pytest.approx(0.5)
    # and of the gap to the nominal model (0.26 -> 0.07, 9 -> 27)
    assert rows[3]["nominal_gap_tracking"] == pytest.approx(0.05 / 0.19) and rows[0]["nominal_gap_tracking"] is None
    assert rows[2]["nominal_gap_return"] == pytest.approx(10 / 18)
    assert rows[3]["nominal_gap_yaw"] is None  # these rows have no yaw figure (tables from before it): no share
    yaw = with_gap_recovered([{**r, "tracking_error_yaw": y} for r, y in zip(rows, (0.07, 0.16, 0.10, 0.13))])
    assert yaw[3]["nominal_gap_yaw"] == pytest.approx(1 / 3) and yaw[3]["gap_yaw"] == pytest.approx(0.5)


def test_gate_judges_each_candidate_in_the_simulator_it_was_trained_in(monkeypatch):
    # In fit 0's simulator the incumbent tracks at 0.20, in fit 1's at 0.10: b (0.15) beats it only in fit 0's
    scores = {("a", "fit0"): sim_metrics(0.15, 0.0), ("incumbent", "fit0"): sim_metrics(0.20, 0.0),
              ("b", "fit1"): sim_metrics(0.15, 0.0), ("incumbent", "fit1"): sim_metrics(0.10, 0.0)}  # fmt: skip
    evaluated = []

    def evaluate_in(policy, profile, *_a, **_k):
        evaluated.append((policy, profile.stem))
        return scores[(policy, profile.stem)]

    monkeypatch.setattr(sim_ppo, "evaluate_in", evaluate_in)
    runs = [*candidates("a", profile="fit0.yaml"), *candidates("b", profile="fit1.yaml")]
    assert [d["passed"] for d in sim_ppo.gate(runs, "incumbent", calibration(2.0, 1.0), "s.npz", SimGateConfig())] \
        == [True, False]  # fmt: skip
    assert sorted(evaluated) == [("a", "fit0"), ("b", "fit1"), ("incumbent", "fit0"), ("incumbent", "fit1")]


def test_candidates_take_the_calibration_fits_in_turn(monkeypatch, tmp_path):
    trained = []
    monkeypatch.setattr(sim_ppo, "tune", lambda init, profile, starts, its, run, cfg, device, seed: trained.append(
        (profile.name, run.name, seed)) or run / "policy.pt")  # fmt: skip
    report = {"fits": [{"profile": "c_fit0.yaml", "settings": {"search": {"seed": 4}}},
                       {"profile": "c_fit1.yaml", "settings": {"search": {"seed": 5}}}]}  # fmt: skip
    cfg = sim_ppo.load_sim_ppo_config("sim_ppo_quick", {"candidates": 3, "seed": 2})
    runs = sim_ppo.train_candidates(Path("init.pt"), tmp_path / "c.yaml", report, Path("s.npz"), 5, tmp_path, cfg,
                                    "cpu")  # fmt: skip
    assert trained == [("c_fit0.yaml", "ppo", 2), ("c_fit1.yaml", "ppo1", 3), ("c_fit0.yaml", "ppo2", 4)]
    assert [r.search_seed for r in runs] == [4, 5, 4]
    one = {"settings": {"search": {"seed": 7}}}  # a single fit: its profile is the calibration's
    assert sim_ppo.simulators(tmp_path / "c.yaml", one) == [(tmp_path / "c.yaml", 7)]
    with pytest.raises(ValueError, match="each fit's simulator"):
        sim_ppo.load_sim_ppo_config("sim_ppo_quick", {"candidates": 1, "calibration": {"fits": 2}})


def test_candidates_take_the_reward_variants_after_the_fits(monkeypatch, tmp_path):
    trained = []
    monkeypatch.setattr(sim_ppo, "tune", lambda init, profile, starts, its, run, cfg, device, seed: trained.append(
        (profile.name, cfg.reward_scales)) or run / "policy.pt")  # fmt: skip
    report = {"fits": [{"profile": f"c_fit{i}.yaml", "settings": {"search": {"seed": i}}} for i in range(2)]}
    cfg = sim_ppo.load_sim_ppo_config("sim_ppo_quick", {"candidates": 4, "reward_scales": {"torques": -1e-4},
                                                        "reward_variants": [{}, {"tracking_ang_vel": 1.0}]})
    runs = sim_ppo.train_candidates(Path("init.pt"), tmp_path / "c.yaml", report, Path("s.npz"), 5, tmp_path, cfg,
                                    "cpu")  # fmt: skip
    base, yaw = {"torques": -1e-4}, {"torques": -1e-4, "tracking_ang_vel": 1.0}
    assert trained == [("c_fit0.yaml", base), ("c_fit1.yaml", base), ("c_fit0.yaml", yaw), ("c_fit1.yaml", yaw)]
    assert [r.reward_scales for r in runs] == [base, base, yaw, yaw] and cfg.reward_scales == base
    with pytest.raises(ValueError, match="tracking_yaw"):
        sim_ppo.load_sim_ppo_config("sim_ppo_quick", {"reward_variants": [{}, {"tracking_yaw": 1.0}]})


def test_the_robot_picks_the_safest_then_best_tracking_accepted_candidate_or_keeps_the_incumbent():
    base = {"tracking_error_xy": 0.2, "tracking_error_yaw": 0.1, "fall_rate": 0.5, "trip_rate": 0.0, "mean_return": 10.0,
            "episodes": 8}
    scores = {"incumbent": base,
              "falls_more": {**base, "tracking_error_xy": 0.1, "fall_rate": 0.75},
              "better": {**base, "tracking_error_xy": 0.15, "fall_rate": 0.25, "mean_return": 12.0},
              "best": {**base, "tracking_error_xy": 0.18, "fall_rate": 0.0, "mean_return": 15.0},
              "stops": {**base, "tracking_error_xy": 0.1, "fall_rate": 0.0, "trip_rate": 0.25, "mean_return": 20.0}}  # fmt: skip
    seen = []

    def score(who, policy, stop_after=None):
        seen.append((who, stop_after))
        return scores[policy]

    picked, records = sim_ppo.pick_on_robot(["falls_more", "better", "stops", "best"], "incumbent", score)
    assert picked == "best" and [r["accepted"] for r in records] == [False, True, True, True]
    # one folder each; a candidate's trial may end as soon as it has ended more episodes early than the incumbent's 4
    assert seen == [("current", None), ("candidate", 4), ("candidate1", 4), ("candidate2", 4), ("candidate3", 4)]
    # among equally safe ones, the better tracker, whatever the return
    scores["tracks"] = {**scores["best"], "tracking_error_xy": 0.16, "mean_return": 14.0}
    assert sim_ppo.pick_on_robot(["best", "tracks"], "incumbent", score)[0] == "tracks"
    scores["turns_off"] = {**scores["tracks"], "tracking_error_xy": 0.15, "tracking_error_yaw": 0.13}  # xy for yaw
    assert sim_ppo.pick_on_robot(["turns_off", "tracks"], "incumbent", score)[0] == "tracks"
    assert sim_ppo.pick_on_robot(["falls_more"], "incumbent", score)[0] == "incumbent"


def test_a_stall_is_a_second_of_still_legs_under_a_command_to_move():
    from uni_o4.robot_eval import stalled_seconds

    rng = np.random.default_rng(0)
    walk = 0.8 + 0.1 * np.sin(np.arange(150)[:, None] * 0.8 + np.arange(12))  # a gait spreads the angles ~0.07
    still = 0.8 + 0.005 * rng.standard_normal((150, 12))
    backward_turn, stand = np.tile([-0.3, 0.0, -0.5], (150, 1)), np.zeros((150, 3))
    assert stalled_seconds(backward_turn, still, 50) == 3
    assert stalled_seconds(backward_turn, walk, 50) == 0
    assert stalled_seconds(stand, still, 50) == 0  # standing when asked to stand is no stall
    half = np.concatenate([stand[:25], backward_turn[:125]])  # a window only counts when every command moves
    assert stalled_seconds(half, still, 50) == 2


def test_the_robots_check_refuses_a_candidate_that_stalls_clearly_more_than_the_incumbent():
    base = {"tracking_error_xy": 0.14, "tracking_error_yaw": 0.13, "fall_rate": 0.0, "trip_rate": 0.0,
            "mean_return": 22.0, "stalled_s": 0.7}
    freezes = {**base, "tracking_error_xy": 0.13, "tracking_error_yaw": 0.12, "stalled_s": 3.7}  # better on average
    accepted, reasons = accept(freezes, base)
    assert not accepted and "stalled" in reasons[0]
    assert accept({**freezes, "stalled_s": 1.5}, base)[0]  # within the margin: a second here and there
    assert accept(freezes, {**base, "stalled_s": 3.0})[0]  # no more than the incumbent's, give or take


def test_a_cached_evaluation_is_reused_only_for_the_policy_it_evaluated(tmp_path, monkeypatch):
    """The robot's check names its folders by position (candidate, candidate1, ...): when the gate passes another
    set on a rerun, a folder may hold another policy's evaluation, which must not be read as this one's."""
    from uni_o4 import robot_eval

    runs = []
    monkeypatch.setattr(robot_eval, "evaluate_on_stand_in", lambda policy, *_a, **_k: runs.append(policy) or {})
    monkeypatch.setattr(robot_eval, "log_metrics", lambda folder, spec: {"fall_rate": 0.25})  # its logs, measured
    out = tmp_path / "check" / "candidate"
    out.mkdir(parents=True)
    (out / "metrics.json").write_text(json.dumps({"policy": str(tmp_path / "a.pt"), "fall_rate": 0.5}))
    # not run again; measured again from its logs (a metric defined since applies), and the file follows
    assert robot_eval.evaluation_of(tmp_path / "a.pt", "strong", out, None)["fall_rate"] == 0.25 and not runs
    assert json.loads((out / "metrics.json").read_text())["fall_rate"] == 0.25
    robot_eval.evaluation_of(tmp_path / "b.pt", "strong", out, None)
    assert runs == [tmp_path / "b.pt"] and not out.exists()  # set aside beside itself, re-evaluated


def test_a_cached_evaluation_follows_the_policy_by_its_bytes_not_its_path(tmp_path, monkeypatch):
    """A run folder whose policy came from a clone since moved (or deleted) keeps its evaluations: the metrics name
    the policy file's digest; a different file at the same place is evaluated again."""
    from uni_o4 import robot_eval

    runs = []
    monkeypatch.setattr(robot_eval, "collect_on_stand_in",
                        lambda policy, _p, out, *_a, **_k: runs.append(policy) or Path(out).mkdir())
    monkeypatch.setattr(robot_eval, "log_metrics", lambda folder, spec: {"episodes": 4})
    old, moved = tmp_path / "clone_a" / "policy.pt", tmp_path / "policy.pt"
    other, out = tmp_path / "b.pt", tmp_path / "ev"
    old.parent.mkdir()
    for path, data in ((old, b"weights"), (moved, b"weights"), (other, b"other weights")):
        path.write_bytes(data)
    cfg, go1 = robot_eval.RobotEvalConfig(episodes=4), SimpleNamespace(name="go1")
    robot_eval.evaluation_of(old, "strong", out, go1, cfg)
    assert runs == [old]
    old.unlink()  # the clone it came from is gone
    robot_eval.evaluation_of(moved, "strong", out, go1, cfg)
    assert runs == [old]  # reused: the same bytes
    robot_eval.evaluation_of(other, "strong", out, go1, cfg)
    assert runs == [old, other]


def test_a_cached_evaluation_is_reused_only_with_the_settings_it_was_run_with(tmp_path, monkeypatch):
    """Asking for 24 episodes where 4 were evaluated (or for another robot) runs the evaluation again; the same
    settings reuse it, and a file from before metrics named their settings counts by its episodes."""
    from uni_o4 import robot_eval

    runs = []
    monkeypatch.setattr(robot_eval, "collect_on_stand_in",
                        lambda policy, _profile, out, *_a, **_k: runs.append(policy) or Path(out).mkdir())
    monkeypatch.setattr(robot_eval, "log_metrics", lambda folder, spec: {"episodes": 4})
    out, policy, go1 = tmp_path / "eval", tmp_path / "a.pt", SimpleNamespace(name="go1")
    out.mkdir()
    (out / "metrics.json").write_text(json.dumps({"policy": str(policy), "episodes": 4}))  # an older file
    four = robot_eval.RobotEvalConfig(episodes=4, robot_seed=1)
    robot_eval.evaluation_of(policy, "strong", out, go1, four)
    assert not runs and json.loads((out / "metrics.json").read_text())["evaluation"]["robot_seed"] == 1
    robot_eval.evaluation_of(policy, "strong", out, go1, four)
    assert not runs
    robot_eval.evaluation_of(policy, "strong", out, go1, robot_eval.RobotEvalConfig(episodes=24, robot_seed=1))
    assert runs == [policy]
    robot_eval.evaluation_of(policy, "strong", out, go1, robot_eval.RobotEvalConfig(episodes=24, robot_seed=2))
    assert runs == [policy, policy]


def test_fine_tuning_randomises_what_no_log_identifies_over_the_runs_own_randomisation(monkeypatch, tmp_path):
    """The presets carry the unidentified effects; `tune` hands them to finetune_in_sim, which sets them over the
    pretraining run's randomisation and keeps the rest of it (the robust run's CoM and backlash)."""
    import sim_pretrain.train as train_module
    from robot_spec.policy_io import shipped_policy

    trained = {}

    def fake_train(cfg, run_dir, device, init):
        trained.update(cfg=cfg, init=init)
        return run_dir / "policy.pt"

    monkeypatch.setattr(train_module, "train", fake_train)
    cfg = sim_ppo.load_sim_ppo_config("sim_ppo_quick")
    assert cfg.unidentified == sim_ppo.UnidentifiedEffects(joint_strength=0.15, accurate_contact_share=0.5)
    sim_ppo.tune(shipped_policy("go1"), tmp_path / "calibrated.yaml", tmp_path / "starts.npz", 3,
                 tmp_path / "ppo", cfg, "cpu")  # fmt: skip
    r = trained["cfg"].env.randomization
    assert (r.joint_strength, r.accurate_contact_share, r.com_displacement, r.backlash) == (0.15, 0.5, 0.05, 0.03)
    assert trained["cfg"].iterations == 3 and trained["init"].name == "model_199.pt"
    assert trained["cfg"].env.rewards.scales["tracking_ang_vel"] == 0.5  # the presets keep the run's reward
    off = sim_ppo.load_sim_ppo_config("sim_ppo_quick", {"unidentified": {"joint_strength": 0.0, "accurate_contact_share": 0.0},
                                                        "reward_scales": {"tracking_ang_vel": 2.0}})
    sim_ppo.tune(shipped_policy("go1"), tmp_path / "calibrated.yaml", tmp_path / "starts.npz", 3,
                 tmp_path / "ppo_off", off, "cpu")  # fmt: skip
    assert (trained["cfg"].env.randomization.joint_strength, trained["cfg"].env.randomization.accurate_contact_share) == (0, 0)
    # reward scales set over the run's: the one named changes, the rest stay
    scales = trained["cfg"].env.rewards.scales
    assert scales["tracking_ang_vel"] == 2.0 and scales["tracking_lin_vel"] == 1.0


@pytest.mark.parametrize("start", ["current", "sim_policy"])
def test_an_online_round_trains_from_the_deployed_policy_or_afresh_from_the_sim_policy(monkeypatch, tmp_path, start):
    from uni_o4 import robot_eval

    offline = tmp_path / "offline"
    offline.mkdir()
    (offline / "report.json").write_text(json.dumps({"init": "sim.pt", "search_seeds": {"cand.pt": 1}}))
    trained = []
    monkeypatch.setattr(robot_eval, "collect_on_stand_in", lambda policy, profile, out, **_k: Path(out).mkdir(
        parents=True))  # fmt: skip
    monkeypatch.setattr(sim_ppo, "calibrate_from", lambda logs, folder, cfg, fits, seed: (folder / "c.yaml", {}))
    monkeypatch.setattr(sim_ppo, "robot_starts", lambda logs, folder: folder / "starts.npz")
    monkeypatch.setattr(sim_ppo, "tune", lambda start_from, profile, starts, its, run, cfg, device, seed=None:
                        trained.append((str(start_from), its, seed)) or run / "policy.pt")  # fmt: skip
    monkeypatch.setattr(sim_ppo, "judge_on_robot", lambda name, cands, current, *_a: {
        "stage": name, "picked": str(current), "accepted": False, "candidates": []})  # fmt: skip
    monkeypatch.setattr(sim_ppo, "policy_steps", lambda folder: 0)
    monkeypatch.setattr(sim_ppo, "install", lambda policy, out: out / "deploy" / "policy.pt")
    cfg = sim_ppo.load_sim_ppo_config("sim_ppo_quick", {"seed": 3, "online": {"rounds": 2, "start": start}})
    result = sim_ppo.finetune_online(offline, [tmp_path / "logs"], "strong", tmp_path / "online", cfg,
                                     start=(Path("cand.pt"), []))  # fmt: skip
    its = cfg.online.iterations
    if start == "current":  # the deployed policy continues, with the run's PPO seed
        assert trained == [("cand.pt", its, None), ("cand.pt", its, None)]
    else:  # afresh from the sim policy, each round with a PPO seed no offline candidate had
        assert trained == [("sim.pt", its, 3 + cfg.candidates), ("sim.pt", its, 3 + cfg.candidates + 1)]
    assert result["from"] == "cand.pt"  # nothing accepted: the offline pick stays
