"""sim_ppo's decisions (the gate that trusts a calibration only as far as it fits held-out logs, the online
acceptance) and the pipeline's gap-recovered arithmetic."""

import json

import numpy as np
import pytest

from sim_pretrain.env_config import DynamicsConfig
from uni_o4 import sim_ppo
from uni_o4.pipeline import ORACLE_STAGE, gap_recovered, with_gap_recovered
from uni_o4.sim_ppo import SimGateConfig, SimPPOConfig, accept


def calibration(before: float, after: float) -> dict:
    return {"fit_error_rms": {"held_out": {"loss_before": before, "loss_after": after}}}


def sim_metrics(tracking: float, falls: float, spread: float = 0.0) -> dict:
    """Simulator metrics of 56 episodes whose tracking errors average `tracking`, alternately ± `spread`."""
    episodes = tracking + spread * np.resize([1.0, -1.0], 56)
    return {"mean_tracking_error": tracking, "fall_rate": falls, "mean_return": 1.0,
            "per_episode": {"tracking_error_xy": episodes.tolist()}}


@pytest.fixture
def fake_sim(monkeypatch):
    scores = {}
    monkeypatch.setattr(sim_ppo, "evaluate_in", lambda policy, *_args, **_kw: scores[policy])
    return scores


def test_gate_passes_a_better_candidate_in_a_simulator_that_fits(fake_sim):
    fake_sim.update(candidate=sim_metrics(0.10, 0.0), incumbent=sim_metrics(0.20, 0.0))
    decision = sim_ppo.gate(["candidate"], "incumbent", "p.yaml", calibration(2.0, 1.0), "s.npz", SimGateConfig())[0]
    assert decision["passed"] and decision["held_out_fit_gain"] == pytest.approx(0.5)


def test_gate_refuses_when_the_calibration_does_not_explain_held_out_logs(fake_sim):
    fake_sim.update(candidate=sim_metrics(0.10, 0.0), incumbent=sim_metrics(0.20, 0.0))
    decision = sim_ppo.gate(["candidate"], "incumbent", "p.yaml", calibration(2.0, 1.95), "s.npz", SimGateConfig())[0]
    assert not decision["passed"] and "not trusted" in decision["reasons"][0]


def test_gate_evaluates_the_incumbent_once_for_all_candidates(monkeypatch):
    scores = {"a": sim_metrics(0.10, 0.0), "b": sim_metrics(0.30, 0.0), "incumbent": sim_metrics(0.20, 0.0)}
    evaluated = []
    monkeypatch.setattr(sim_ppo, "evaluate_in", lambda policy, *_a, **_k: evaluated.append(policy) or scores[policy])
    decisions = sim_ppo.gate(["a", "b"], "incumbent", "p.yaml", calibration(2.0, 1.0), "s.npz", SimGateConfig())
    assert [d["passed"] for d in decisions] == [True, False]
    assert sorted(evaluated) == ["a", "b", "incumbent"]
    assert all(d["sim"]["incumbent"]["mean_tracking_error"] == 0.20 for d in decisions)


@pytest.mark.parametrize("candidate, reason", [(sim_metrics(0.25, 0.0), "tracking"), (sim_metrics(0.1, 0.2), "falls")])
def test_gate_refuses_worse_tracking_or_more_falls(fake_sim, candidate, reason):
    fake_sim.update(candidate=candidate, incumbent=sim_metrics(0.20, 0.1))
    decision = sim_ppo.gate(["candidate"], "incumbent", "p.yaml", calibration(2.0, 1.0), "s.npz", SimGateConfig())[0]
    assert not decision["passed"] and any(reason in r for r in decision["reasons"])


def test_gate_refuses_a_gain_within_the_simulators_episode_noise(fake_sim):
    """The same mean gain passes when every episode agrees and is refused when episodes scatter around it by far
    more than the gain (the bound over paired episodes crosses zero); confidence 0 is the mean rule alone."""
    fake_sim.update(incumbent=sim_metrics(0.20, 0.0), steady=sim_metrics(0.19, 0.0),
                    noisy=sim_metrics(0.19, 0.0, spread=0.15))
    steady, noisy = sim_ppo.gate(["steady", "noisy"], "incumbent", "p.yaml", calibration(2.0, 1.0), "s.npz",
                                 SimGateConfig(confidence=0.9))  # fmt: skip
    assert steady["passed"] and not noisy["passed"] and "within its noise" in noisy["reasons"][0]
    mean_only = sim_ppo.gate(["noisy"], "incumbent", "p.yaml", calibration(2.0, 1.0), "s.npz",
                             SimGateConfig(confidence=0.0))[0]  # fmt: skip
    assert mean_only["passed"]


def test_online_acceptance_needs_no_more_incidents_and_better_tracking_or_fewer_falls_and_more_return():
    base = {"tracking_error_xy": 0.2, "fall_rate": 0.0, "trip_rate": 0.0, "mean_return": 10.0}
    assert accept({**base, "tracking_error_xy": 0.15}, base)[0]
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


def test_training_randomises_over_what_the_calibration_fits_disagree_on():
    wide = DynamicsConfig(spread=0.3, added_mass_spread=1.5, latency_spread_s=0.004)
    report = {"identified": {"added_mass": 2.0, "kp": 0.8, "latency": 0.006, "friction": 1.0},
              "range": {"added_mass": [-0.5, 3.4], "kp": [0.4, 0.85], "latency": [0.004, 0.008],
                        "friction": [0.95, 1.05]}}  # fmt: skip
    covered = sim_ppo.covering(wide, report)
    assert covered.added_mass_spread == pytest.approx(2.5)  # 2.0 - 2.5 reaches the lowest fit
    assert covered.spread == pytest.approx(0.5)  # kp 0.8 x (1 - 0.5) reaches 0.4
    assert covered.latency_spread_s == pytest.approx(0.004)  # the floor already covers ±2 ms
    assert sim_ppo.covering(wide, {"identified": {}}) == wide  # one fit: the configured spreads


def test_training_draws_each_figure_over_what_the_logs_cannot_tell_apart():
    wide = DynamicsConfig(spread=0.3, added_mass_spread=1.5, latency_spread_s=0.004)
    report = {"identified": {"friction": 0.3, "added_mass": -0.9, "kp": 0.6, "kd": 1.5, "frictionloss": 3.5,
                             "latency": 0.004},
              "plausible": {"friction": [0.3, 1.05], "added_mass": [-1.0, -0.9]},
              "flat_over": {"friction": [0.28, 0.32], "kd": [0.7, 2.1], "frictionloss": [2.0, 5.0], "kp": [0.6, 0.6],
                            "latency": [0.0, 0.011]}}  # fmt: skip
    ranges = sim_ppo.plausible_ranges(wide, report).ranges
    assert ranges["friction"] == pytest.approx([0.21, 1.05])  # the spread below the fit, the plausible span above
    assert ranges["added_mass"] == pytest.approx([-2.4, 0.6])  # a narrow span: the spread around the fit
    assert ranges["kd_factor"] == pytest.approx([0.7, 2.1]) and ranges["kp_factor"] == pytest.approx([0.42, 0.78])
    assert ranges["joint_frictionloss_factor"] == [2.0, 5.0] and ranges["latency_s"] == pytest.approx([0.0, 0.011])
    several = {"identified": {"friction": 0.5}, "fits": [{"plausible": {"friction": [0.3, 0.55]}},
                                                         {"plausible": {"friction": [0.5, 1.3]}}]}  # fmt: skip
    assert sim_ppo.plausible_ranges(wide, several).ranges == {"friction": pytest.approx([0.3, 1.3])}
    assert sim_ppo.plausible_ranges(wide, {"identified": {"friction": 0.3}}) == wide  # no spans reported
    strength = {"identified": {"kp": 0.6, "strength": 0.9}, "flat_over": {"kp": [0.5, 0.7]}}
    assert sim_ppo.plausible_ranges(wide, strength) == wide  # Kp's product with strength: left to the spreads


def test_the_robot_picks_the_safest_accepted_candidate_or_keeps_the_incumbent():
    base = {"tracking_error_xy": 0.2, "fall_rate": 0.5, "trip_rate": 0.0, "mean_return": 10.0, "episodes": 8}
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
    assert sim_ppo.pick_on_robot(["falls_more"], "incumbent", score)[0] == "incumbent"


def test_a_cached_evaluation_is_reused_only_for_the_policy_it_evaluated(tmp_path, monkeypatch):
    """The robot's check names its folders by position (candidate, candidate1, ...): when the gate passes another
    set on a rerun, a folder may hold another policy's evaluation, which must not be read as this one's."""
    from uni_o4 import robot_eval

    runs = []
    monkeypatch.setattr(robot_eval, "evaluate_on_stand_in", lambda policy, *_a, **_k: runs.append(policy) or {})
    out = tmp_path / "check" / "candidate"
    out.mkdir(parents=True)
    (out / "metrics.json").write_text(json.dumps({"policy": str(tmp_path / "a.pt"), "fall_rate": 0.5}))
    assert robot_eval.evaluation_of(tmp_path / "a.pt", "strong", out, None)["fall_rate"] == 0.5 and not runs
    robot_eval.evaluation_of(tmp_path / "b.pt", "strong", out, None)
    assert runs == [tmp_path / "b.pt"] and not out.exists()  # set aside beside itself, re-evaluated


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
    assert cfg.unidentified == sim_ppo.UnidentifiedEffects(joint_strength=0.15, elliptic_share=0.5)
    sim_ppo.tune(shipped_policy("go1"), tmp_path / "calibrated.yaml", {}, tmp_path / "starts.npz", 3,
                 tmp_path / "ppo", cfg, "cpu")  # fmt: skip
    r = trained["cfg"].env.randomization
    assert (r.joint_strength, r.elliptic_share, r.com_displacement, r.backlash) == (0.15, 0.5, 0.05, 0.03)
    assert trained["cfg"].iterations == 3 and trained["init"].name == "model_199.pt"
    off = sim_ppo.load_sim_ppo_config("sim_ppo_quick", {"unidentified": {"joint_strength": 0.0, "elliptic_share": 0.0}})
    sim_ppo.tune(shipped_policy("go1"), tmp_path / "calibrated.yaml", {}, tmp_path / "starts.npz", 3,
                 tmp_path / "ppo_off", off, "cpu")  # fmt: skip
    assert (trained["cfg"].env.randomization.joint_strength, trained["cfg"].env.randomization.elliptic_share) == (0, 0)
