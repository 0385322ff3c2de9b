"""`uni_o4 pipeline` end to end on tiny settings: every stage runs on the stand-in, the table has a row per stage,
the collected logs carry their action noise, and a rerun resumes (skips every stage that is done)."""

import json
from pathlib import Path

import pytest
import yaml

from real_robot.datalog import read_log_folder
from robot_spec.exit_codes import ExitCode
from uni_o4.cli import main

pytest.importorskip("unitree_legged_sdk.robot_interface", reason="the stand-in path needs the Unitree SDK")

STAGES = ["sim policy, no gap", "sim policy", "after offline", "after online"]


def uni_o4_argv(tmp: Path) -> list[str]:
    online = tmp / "online_tiny.yaml"
    online.write_text(yaml.safe_dump({"updates": 2, "episodes_per_rollout": 1, "episode_s": 1.0,
                                      "ppo": {"epochs": 1, "minibatch_size": 32}}))  # fmt: skip
    gate_preset = tmp / "sim_ppo_gate_tiny.yaml"  # the calibrated gate on a tiny budget
    gate_preset.write_text(yaml.safe_dump({"calibration": {"windows": 6, "held_out": 4, "max_evals": 8},
                                           "gate": {"episode_s": 1.0}}))  # fmt: skip
    return ["pipeline", "--algo", "uni_o4", "--pretrain-preset", "tiny", "--collect-steps", "1050",
            "--offline-preset", "uni_o4_tiny", "--online-preset", str(online), "--eval-episodes", "1",
            "--eval-episode-s", "1.0", "--out", str(tmp / "pipeline"), "--oracle-iterations", "1",
            "--gate-preset", str(gate_preset)]  # fmt: skip


@pytest.fixture(scope="module")
def uni_o4_run(tmp_path_factory) -> tuple[list[str], Path]:
    """The whole pipeline with `--algo uni_o4` from pretraining on; its policy and logs serve sim_ppo's run too
    (calibration needs 1000 logged steps, a minute of stand-in time)."""
    argv = uni_o4_argv(tmp_path_factory.mktemp("uni_o4"))
    assert main(argv) == 0
    return argv, Path(argv[argv.index("--out") + 1])


def stop_by_operator(request):
    raise KeyboardInterrupt("stopped by the operator")


def test_the_pipeline_runs_every_stage_and_a_rerun_resumes(uni_o4_run, capsys):
    argv, out = uni_o4_run
    rows = json.loads((out / "pipeline.json").read_text())
    stages = [*STAGES[:2], "oracle (true profile)", *STAGES[2:]]
    assert [r["stage"] for r in rows] == stages
    assert [r["profile"] for r in rows] == ["none", "strong", "strong", "strong", "strong"]
    assert (out / "pipeline.md").read_text().count("\n") == 2 + len(stages) and (out / "pipeline.png").is_file()
    assert (out / "oracle" / "policy.pt").is_file() and rows[2]["gap_tracking"] in (1.0, None)
    request = json.loads((out / "pipeline_request.json").read_text())  # the run's own settings, written first
    assert request["algo"] == "uni_o4" and request["pretrain_preset"] == "tiny" and request["collect_steps"] == 1050
    logs = read_log_folder(out / "data_logs")
    assert sum(len(e.records["step"]) for e in logs.episodes) >= 150
    assert all(e.meta["action_noise_std"] == 0.15 for e in logs.episodes)
    assert (out / "offline" / "gate.json").is_file() and (out / "online" / "deploy" / "policy.pt").is_file()
    gate = json.loads((out / "offline" / "gate.json").read_text())  # judged in the simulator calibrated from the logs
    assert gate["evaluator"] == "calibrated" and (out / "offline" / "calibration" / "calibrated.yaml").is_file()
    assert set(gate["calibrated"]["sim"]) == {"candidate", "incumbent"} and gate["candidate_score"] is not None

    # Ctrl-C in the online stage: no "after online" row, the exit code of a stopped run; the next run resumes
    marker = out / "online" / "deploy" / "policy.pt"
    marker.rename(marker.with_suffix(".kept"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("uni_o4.pipeline.finetune_online", stop_by_operator)
        assert main(argv) == ExitCode.ABORTED
    assert [r["stage"] for r in json.loads((out / "pipeline.json").read_text())] == stages[:-1]
    marker.with_suffix(".kept").rename(marker)

    capsys.readouterr()
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "pretraining done before" in printed and "data collected before" in printed
    assert "oracle done before" in printed
    assert printed.count("done before, skipped") == 2  # offline and online
    assert json.loads((out / "pipeline.json").read_text()) == rows


def test_the_pipeline_runs_sim_ppo_with_an_oracle_and_gap_recovered(uni_o4_run, tmp_path):
    preset = tmp_path / "sim_ppo_tiny.yaml"
    preset.write_text(yaml.safe_dump({
        "iterations": 1, "num_envs": 8, "candidates": 2,
        "calibration": {"windows": 6, "held_out": 4, "max_evals": 8, "fits": 2},  # each fit a simulator
        "gate": {"episode_s": 2.5},
        # a short round: recalibration fits on every log so far, the offline logs too
        "online": {"rounds": 1, "collect_steps": 100, "iterations": 1, "acceptance_episodes": 1, "episode_s": 1.0},
    }))  # fmt: skip
    out, before = tmp_path / "pipeline", uni_o4_run[1]
    (policy,) = (before / "pretrain").glob("**/policy.pt")
    argv = ["pipeline", "--algo", "sim_ppo", "--policy", str(policy), "--data", str(before / "data_logs"),
            "--offline-preset", str(preset), "--oracle-iterations", "1", "--eval-episodes", "1",
            "--eval-episode-s", "1.0", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    rows = json.loads((out / "pipeline.json").read_text())
    assert [r["stage"] for r in rows] == [*STAGES[:2], "oracle (true profile)", *STAGES[2:]]
    assert (out / "offline" / "calibration" / "calibrated.yaml").is_file()
    oracle_cfg = yaml.safe_load((out / "oracle" / "config.yaml").read_text())["env"]
    assert oracle_cfg["randomization"]["accurate_contact_share"] == 0.5  # half on the accurate contact model
    assert oracle_cfg["dynamics"]["profile"] == "strong" and oracle_cfg["dynamics"]["physics"] == "training"
    report = json.loads((out / "offline" / "report.json").read_text())
    assert set(report["gate"]) >= {"passed", "reasons", "held_out_fit_gain", "sim"} and len(report["gates"]) == 2
    assert sorted(report["search_seeds"].values()) == [0, 1]  # a candidate per calibration fit
    assert all((out / "offline" / "calibration" / f"calibrated_fit{k}.yaml").is_file() for k in (0, 1))
    online = json.loads((out / "online" / "online_report.json").read_text())
    assert 1 <= len(online["history"]) <= 2 and online["real_steps"] >= 100  # the offline check (if passed) + 1 round
    # "after offline" is what the offline stage deploys: the robot's pick among what the gate passed, else the start
    checked = online["history"][0] if online["history"][0]["stage"] == "offline_check" else None
    after_offline = next(r for r in rows if r["stage"] == "after offline")
    assert after_offline["policy"] == (checked["picked"] if checked else report["init"])
    assert ("the robot's check" in after_offline["note"]) == (checked is not None)
    # "after online" is the policy the rounds ended with; met before (nothing accepted), its row is not run again
    after_online = next(r for r in rows if r["stage"] == "after online")
    assert after_online["policy"] == online["from"]
    reused = online["from"] == after_offline["policy"]
    assert (out / "eval" / "after_online").exists() != reused
    if reused:  # the row names the folder it was measured in: the stage's it repeats
        assert after_online["tracking_error_xy"] == after_offline["tracking_error_xy"]
        assert after_online["eval"] == after_offline["eval"] == "after_offline"
    assert rows[1]["gap_tracking"] == 0.0 or rows[1]["gap_tracking"] is None  # the sim policy recovers nothing
    assert "gap recovered (tracking)" in (out / "pipeline.md").read_text()
