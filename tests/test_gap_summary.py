"""benchmarks/gap_summary.py reads pipeline run folders as well as gap_recovery results."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.gap_summary import seeds_by_profile, summarise  # noqa: E402
from uni_o4.pipeline import eval_folder_name  # noqa: E402


def fake_run(folder: Path, seed: int, tracking: dict[str, float]) -> Path:
    folder.mkdir()
    (folder / "pipeline_request.json").write_text(json.dumps({"profile": "strong", "seed": seed}))
    (folder / "pipeline.json").write_text(json.dumps([{"stage": stage} for stage in tracking]))
    for stage, t in tracking.items():
        per_episode = [{"tracking_error_xy": t + 0.001 * k, "tracking_error_yaw": 2 * t, "return": 20.0 - 10 * t,
                        "policy_steps": 1000, "outcome": "timeout"} for k in range(4)]  # fmt: skip
        (folder / "eval" / eval_folder_name(stage)).mkdir(parents=True)
        (folder / "eval" / eval_folder_name(stage) / "metrics.json").write_text(json.dumps({"per_episode": per_episode}))
    return folder


def test_pipeline_runs_give_the_share_of_the_nominal_gap_each_stage_closes(tmp_path, monkeypatch):
    # each evaluation measured from its folder (here its per-episode figures stand in for its logs)
    monkeypatch.setattr("uni_o4.robot_eval.log_metrics",
                        lambda folder, spec: json.loads((folder / "metrics.json").read_text()))  # fmt: skip
    stages = {"sim policy, no gap": 0.10, "sim policy": 0.14, "after offline": 0.13, "after online": 0.11}
    runs = [fake_run(tmp_path / f"s{k}", k, stages) for k in range(2)]
    grouped = seeds_by_profile(runs)
    assert list(grouped) == ["strong"] and len(grouped["strong"]) == 2
    rows = summarise(grouped["strong"], resamples=200)
    assert abs(rows["after online"]["nominal_gap_tracking"]["value"] - 0.75) < 0.02
    assert abs(rows["after offline"]["nominal_gap_tracking"]["value"] - 0.25) < 0.02
    assert abs(rows["after online"]["nominal_gap_yaw"]["value"] - 0.75) < 0.02
    assert "gap_tracking" not in rows["after online"]  # no oracle row in these runs


def test_a_row_the_pipeline_reused_is_read_from_the_folder_of_the_stage_it_repeats(tmp_path, monkeypatch):
    monkeypatch.setattr("uni_o4.robot_eval.log_metrics",
                        lambda folder, spec: json.loads((folder / "metrics.json").read_text()))  # fmt: skip
    run = fake_run(tmp_path / "s0", 0, {"sim policy, no gap": 0.10, "sim policy": 0.14, "after offline": 0.12})
    rows = [{"stage": s, "eval": eval_folder_name(s)} for s in ("sim policy, no gap", "sim policy", "after offline")]
    rows.append({"stage": "after online", "eval": eval_folder_name("after offline")})  # reused: no folder of its own
    (run / "pipeline.json").write_text(json.dumps(rows))
    summary = summarise(seeds_by_profile([run])["strong"], resamples=200)
    assert summary["after online"]["tracking"] == summary["after offline"]["tracking"]
    assert summary["sim policy"]["tracking"] != summary["sim policy, no gap"]["tracking"]
