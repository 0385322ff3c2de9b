"""Hardening (issue 18): crafted files run no code, bad numbers are refused with one line, crafted ticks are harmless."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from robot_spec.checkpoint import CheckpointError
from robot_spec.config import CONFIG_DIR


# --------------------------------------------------------------------------------------------- crafted pickles
class _Payload:
    """Unpickling this calls os.system: a weights_only=False load would create the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def crafted(tmp_path):
    """write(path) puts a crafted pickle at path; the marker must never appear."""
    marker = tmp_path / "code_ran"

    def write(path: Path, **plain) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({**plain, "x": _Payload(marker)}, path)
        return path

    yield write
    assert not marker.exists(), "code from a crafted file ran"


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


def test_the_crafted_payload_would_run_code_if_unpickled(tmp_path):
    # The fixture is a real attack: an unsafe load does create the marker (so the other tests can fail).
    marker = tmp_path / "code_ran"
    torch.save({"x": _Payload(marker)}, tmp_path / "evil.pt")
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


def test_artifact_cache_and_stage_checkpoints_refuse_crafted_files(tmp_path, crafted):
    from uni_o4.artifacts import ArtifactStore, run_resumable

    store = ArtifactStore(tmp_path / "cache")
    crafted(store.path("critics", "abc"))
    with pytest.raises(CheckpointError, match="critics-abc.pt"):
        store.load("critics", "abc")
    checkpoint = crafted(store.checkpoint_path("critics", "abc"))
    with pytest.raises(CheckpointError):
        run_resumable("stage", 3, lambda step: None, {}, checkpoint, progress=False)


def test_cached_artefacts_still_load(tmp_path):
    from uni_o4.artifacts import ArtifactStore, GeneratorState, run_resumable

    store = ArtifactStore(tmp_path)
    store.save("a", "k", {"w": torch.ones(2), "meta": {"n": 3, "name": "x", "xs": [1.5, None]}})
    assert store.load("a", "k")["meta"] == {"n": 3, "name": "x", "xs": [1.5, None]}
    net, gen = torch.nn.Linear(2, 2), torch.Generator().manual_seed(1)
    opt = torch.optim.Adam(net.parameters())
    state = {"net": net, "opt": opt, "gen": GeneratorState(gen)}
    ckpt = tmp_path / "run.ckpt"
    run_resumable("s", 2, lambda step: None, state, ckpt, checkpoint_every=1, progress=False)
    assert run_resumable("s", 2, lambda step: None, state, ckpt, progress=False) == 2


def test_offline_result_refuses_a_crafted_file(tmp_path, crafted):
    from uni_o4.offline import OfflineResult

    crafted(tmp_path / "offline_result.pt")
    with pytest.raises(CheckpointError, match="offline_result.pt"):
        OfflineResult.load(tmp_path)


def test_online_checkpoint_refuses_a_crafted_file(tmp_path, crafted):
    from uni_o4.online import OnlineRun

    class Learner:
        def state_dict(self):
            return {}

    crafted(tmp_path / "checkpoint.pt")
    run = OnlineRun(Learner(), None, None, None, tmp_path, None)
    with pytest.raises(CheckpointError, match="checkpoint.pt"):
        run.resume()


@pytest.mark.parametrize("algo, filename", [("uni_o4", "offline_result.pt"), ("iql", "algorithm.pt")])
def test_online_finetune_refuses_a_crafted_offline_result_with_one_line(tmp_path, crafted, capsys, algo, filename):
    from uni_o4.cli import main

    result = tmp_path / "offline"
    result.mkdir()
    (result / "finetune.json").write_text(json.dumps({"algo": algo, "data": []}))
    (result / "gate.json").write_text(json.dumps({"passed": True}))
    shutil.copy(CONFIG_DIR / "finetune" / "uni_o4_tiny.yaml", result / "offline_config.yaml")
    crafted(result / filename)
    args = ["finetune", "--online", "--policy", str(result), "--stand-in", "strong", "--out", str(tmp_path / "o")]
    assert main(args) == 2
    assert filename in _one_line_error(capsys)


def test_offline_dataset_file_refuses_a_crafted_file(tmp_path, crafted):
    from uni_o4.dataset import OfflineDataset

    crafted(tmp_path / "data.pt")
    with pytest.raises(CheckpointError):
        OfflineDataset.load(tmp_path / "data.pt")


def test_sim_pretrain_resume_refuses_a_crafted_checkpoint_and_writes_nothing(tmp_path, crafted, capsys):
    from sim_pretrain.cli import main
    from sim_pretrain.train import actor_from_checkpoint

    checkpoint = crafted(tmp_path / "run" / "model_1.pt", actor_state_dict={}, critic_state_dict={}, iter=1)
    args = ["train", "--preset", "tiny", "--resume", str(checkpoint), "--runs", str(tmp_path / "runs")]
    assert main(args) == 2
    assert "model_1.pt" in _one_line_error(capsys)
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["model_1.pt"]  # no config.yaml written there
    with pytest.raises(CheckpointError):
        actor_from_checkpoint(checkpoint, None)


def test_sim_pretrain_resume_refuses_a_plain_file_that_is_no_checkpoint(tmp_path, capsys):
    from sim_pretrain.cli import main

    checkpoint = tmp_path / "model_1.pt"
    torch.save({"hello": torch.zeros(1)}, checkpoint)
    assert main(["train", "--preset", "tiny", "--resume", str(checkpoint)]) == 2
    assert "not an rsl_rl checkpoint" in _one_line_error(capsys)
    checkpoint.write_bytes(b"not a checkpoint at all")
    assert main(["train", "--preset", "tiny", "--resume", str(checkpoint)]) == 2
    assert "model_1.pt" in _one_line_error(capsys)


# --------------------------------------------------------------------------------------------- numbers validated
def _runtime_yaml(tmp_path, **changes) -> Path:
    import yaml

    data = yaml.safe_load((CONFIG_DIR / "deploy" / "runtime.yaml").read_text())
    path = tmp_path / "runtime.yaml"
    path.write_text(yaml.safe_dump({**data, **changes}))
    return path


@pytest.mark.parametrize("field, value", [
    ("soft_start_s", -5.0), ("first_state_timeout_s", float("nan")), ("late_state_grace", float("nan")),
    ("first_state_timeout_s", 0.0), ("stop_damping_s", float("inf")), ("torch_threads", 0),
    ("keyboard_step_fraction", -0.1),
])  # fmt: skip
def test_runtime_config_refuses_bad_numbers_naming_the_field(tmp_path, field, value):
    from deploy.runtime import load_runtime_config
    from robot_spec.config import ConfigError

    path = _runtime_yaml(tmp_path, **{field: value})
    with pytest.raises(ConfigError, match=f"runtime.yaml: RuntimeConfig.{field} = ") as err:
        load_runtime_config(str(path))
    assert "\n" not in str(err.value)


def test_runtime_config_accepts_the_shipped_and_edge_values(tmp_path):
    from deploy.runtime import RuntimeConfig, load_runtime_config

    load_runtime_config("runtime"), load_runtime_config("runtime_fast")
    RuntimeConfig(soft_start_s=0.0, stand_s=0.0)  # straight to the policy (benchmarks/control_loop.py)
    with pytest.raises(ValueError, match="remote"):
        load_runtime_config(str(_runtime_yaml(tmp_path, remote={"deadzone": 0.05, "timeout_s": float("nan")})))


def test_a_nan_speed_in_a_command_schedule_is_refused(tmp_path):
    import yaml

    from deploy.commands import load_schedule, load_speed_preset
    from robot_spec.config import ConfigError

    path = tmp_path / "schedule.yaml"
    path.write_text(yaml.safe_dump({"segments": [{"duration_s": 2.0, "vx": float("nan")}]}))
    with pytest.raises(ConfigError, match=r"segments\[0\]: Segment.vx = nan"):
        load_schedule(str(path), load_speed_preset("high"))
    path.write_text(yaml.safe_dump({"segments": [{"duration_s": float("inf"), "vx": 0.5}]}))
    with pytest.raises(ConfigError, match="Segment.duration_s = inf"):
        load_schedule(str(path), load_speed_preset("high"))


@pytest.mark.parametrize("preset, section, key", [
    ("uni_o4_tiny", "critics", "steps"), ("uni_o4_tiny", "behaviour", "batch_size"),
    ("uni_o4_tiny", "improvement", "steps"), ("uni_o4_tiny", "dynamics", "batch_size"),
    ("iql_quick", None, "offline_steps"), ("calql_quick", None, "batch_size"), ("o3f_quick", None, "batch_size"),
    ("online_quick", "ppo", "minibatch_size"), ("online_quick", None, "offpolicy_steps"),
])  # fmt: skip
def test_fine_tuning_presets_refuse_negative_steps_and_batch_sizes(preset, section, key):
    from robot_spec.config import ConfigError, load_config
    from uni_o4.offline import OfflineConfig
    from uni_o4.online import OnlineConfig
    from uni_o4.registry import load_baseline_config

    path = CONFIG_DIR / "finetune" / f"{preset}.yaml"
    change = {section: {key: -5}} if section else {key: -5}
    with pytest.raises(ConfigError, match=f"{key} = -5"):
        if preset.startswith("online"):
            load_config(OnlineConfig, path, change)
        elif preset.startswith("uni_o4"):
            load_config(OfflineConfig, path, change)
        else:
            load_baseline_config(preset.split("_")[0], path, change)


def test_sim_pretrain_train_refuses_negative_iterations_with_one_line(tmp_path, capsys):
    from sim_pretrain.cli import main

    assert main(["train", "--preset", "tiny", "--iterations", "-1", "--runs", str(tmp_path)]) == 2
    assert "--iterations = -1" in _one_line_error(capsys)
    assert not any(tmp_path.iterdir())  # nothing trained or exported


@pytest.mark.parametrize("command", [
    ["deploy", "run", "--policy", "p.pt", "--speed", "low", "--duration", "nan"],
    ["deploy", "run", "--policy", "p.pt", "--speed", "low", "--duration", "inf"],
    ["sim-robot", "--profile", "none", "--port", "0", "--lcm-url", "memq://", "--duration", "nan"],
    ["bridge", "--lcm-url", "memq://", "--duration", "nan"],
    ["collect", "--policy", "p.pt", "--episode-s", "inf"],
    ["collect", "--policy", "p.pt", "--reset-settle-s", "nan"],
])  # fmt: skip
def test_numeric_flags_refuse_nan_and_inf_with_exit_2_and_one_line(command, capsys):
    from deploy.cli import main as deploy_main
    from real_robot.cli import main as real_robot_main

    main = deploy_main if command[0] == "deploy" else real_robot_main
    assert main(command[1:] if command[0] == "deploy" else command) == 2
    flag = next(a for a in command if a in ("--duration", "--episode-s", "--reset-settle-s"))
    assert flag in _one_line_error(capsys)

