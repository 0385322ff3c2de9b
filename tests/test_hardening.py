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


# --------------------------------------------------------------------------------------------- crafted ticks
def _joint_state(tick: int, q):
    from real_robot.lcm_types.go1lcm import joint_state_t

    msg = joint_state_t()
    msg.timestamp_us, msg.robot_tick_us = 0, tick
    msg.q, msg.dq, msg.tau_est = list(q), [0.0] * 12, [0.0] * 12
    return msg


def _body_state(tick: int):
    from real_robot.lcm_types.go1lcm import body_state_t

    msg = body_state_t()
    msg.timestamp_us, msg.robot_tick_us = 0, tick
    msg.quaternion, msg.rpy, msg.gyro, msg.accelerometer = [1.0, 0, 0, 0], [0.0] * 3, [0.0] * 3, [0, 0, 9.81]
    msg.foot_force = [20.0] * 4
    return msg


def _odometry(stamp_us: int):
    from real_robot.lcm_types.go1lcm import odometry_t

    msg = odometry_t()
    msg.timestamp_us, msg.position = stamp_us, [float(stamp_us), 0.0, 0.3]
    msg.quaternion, msg.lin_vel_body, msg.ang_vel_body = [1.0, 0, 0, 0], [0.0] * 3, [0.0] * 3
    return msg


def _crafted_tick_rig(spec, tmp_path, crafted: dict[int, int], odometry_lead_us: int | None = None):
    """The real LcmRobotIO and Runtime, fed a 500 Hz board (one state per poll) plus crafted joint states
    (`crafted[n]`: a tick sent after the n-th genuine state). A wait longer than a second is a stall.
    `odometry_lead_us`: odometry of each state's tick (robot time, as the stand-in's fast mode stamps it), and
    one that far ahead which arrived first by its shorter path."""
    from deploy.commands import ScheduledCommand, load_schedule, load_speed_preset
    from deploy.lcm_io import LcmRobotIO
    from deploy.runtime import Controller, Runtime, RuntimeConfig
    from deploy.safety import SafetyMonitor, load_safety_config
    from robot_spec.policy_io import ActorMLP, load_policy, save_policy

    class Board(LcmRobotIO):
        sent = 0

        def poll(self, timeout_s):
            assert timeout_s <= 1.0, f"the loop waits {timeout_s} s for state: a stall"
            assert self.sent < 5000, "the loop never steps again: a stall"
            tick = 2000 * self.sent
            if odometry_lead_us is not None:
                self._on_odometry(_odometry(tick), 0)
                self._on_odometry(_odometry(tick + odometry_lead_us), 0)
            self._on_joint_state(_joint_state(tick, spec.default_pose), 0)
            self._on_body_state(_body_state(tick), 0)
            if self.sent in crafted:
                self._on_joint_state(_joint_state(crafted[self.sent], spec.default_pose), 0)
            self.sent += 1
            super().poll(0.0)

    actor = ActorMLP(spec.observation.dim, spec.num_joints, [8])
    save_policy(actor, spec, tmp_path / "p.pt", {"source": "test"})
    policy = load_policy(tmp_path / "p.pt", spec)
    cfg = RuntimeConfig(soft_start_s=0.1, stand_s=0.1, realtime=False)
    commands = ScheduledCommand(load_schedule("stand", load_speed_preset("low")))
    controller = Controller(spec, policy, SafetyMonitor(spec, load_safety_config("go1")), commands, cfg)
    io = Board("memq://", "crafted_")
    return Runtime(controller, io, cfg), io


@pytest.mark.parametrize("crafted_tick", [2**62, 10_000_000, 2**63 - 1, -5])
@pytest.mark.parametrize("when", [0, 30])  # the first message deploy hears, or mid-run
def test_a_crafted_tick_neither_crashes_nor_stalls_deploy(spec, tmp_path, crafted_tick, when):
    from deploy.lcm_io import RESYNC_STATES

    runtime, io = _crafted_tick_rig(spec, tmp_path, {when: crafted_tick, when + 1: crafted_tick})
    records = []
    runtime.on_step = records.append
    runtime.run(max_steps=40)
    ticks = [r["robot_tick_us"] for r in records]
    period = runtime.period_us
    assert ticks == list(range(ticks[0], ticks[0] + 40 * period, period))  # paced by the board, no jump
    assert all(r["state"].robot_tick_us < 10**7 for r in records)
    assert 2 <= io.refused_states <= 2 + 2 * RESYNC_STATES  # the crafted ones, and those before a first base
    assert not any(r["trip"] for r in records)
    io.close()


def test_a_real_clock_jump_is_followed_after_a_few_states():
    from deploy.lcm_io import RESYNC_STATES, TickWindow

    window = TickWindow()
    assert [window.accept(t) for t in range(0, 20_000, 2000)] == [False] * (RESYNC_STATES - 1) + [True] * 6
    assert not window.accept(10**7) and not window.accept(2**62)  # one crafted state each: refused
    jumped = [60_000_000 + 2000 * i for i in range(RESYNC_STATES)]
    assert [window.accept(t) for t in jumped] == [False] * (RESYNC_STATES - 1) + [True]  # a restarted board
    assert window.accept(jumped[-1] + 2000) and window.newest == jumped[-1] + 2000


def test_lcm_waits_are_bounded_and_nan_safe():
    from real_robot.lcm_bus import LcmNode

    node = LcmNode("memq://")
    assert node.handle(float("nan")) == 0 and node.handle(-1.0) == 0
    node.close()


# --------------------------------------------------------------------------------------------- damaged logs
def test_a_flipped_byte_keeps_every_record_before_it(tmp_path):
    import numpy as np

    from real_robot.datalog import FRAME, LogWriter, read_log_folder, salvage_episode

    schema = {"timestamp_us": ("int64", ()), "step": ("int64", ())}
    with LogWriter(tmp_path, schema) as writer:
        path = writer.start_episode()
        for step in range(30):
            writer.append({"timestamp_us": np.int64(step), "step": np.int64(step)})
    data = bytearray(path.read_bytes())
    frame = FRAME.size + 16  # one record frame
    last = len(data) - frame
    data[last + FRAME.size + 2] ^= 0x01  # the newest record: no valid frame after it
    path.write_bytes(bytes(data))
    episode, damage = salvage_episode(path)
    assert episode.records["step"].tolist() == list(range(29)) and episode.outcome == "interrupted"
    assert [(d.path, d.offset) for d in damage] == [(path, last)]
    with pytest.warns(UserWarning, match=f"{path.name} at byte offset {last}"):
        assert read_log_folder(tmp_path, skip_damaged=True).num_records == 29
    data[10] ^= 0x01  # the header: without the schema nothing is usable
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="offset 0"):
        log = read_log_folder(tmp_path, skip_damaged=True)
    assert not log.episodes and log.damaged[0].offset == 0


# --------------------------------------------------------------------------------------------- odometry pairing
def test_a_log_row_never_pairs_a_state_with_newer_odometry(spec, tmp_path):
    runtime, io = _crafted_tick_rig(spec, tmp_path, {}, odometry_lead_us=2000)
    records = []
    runtime.on_step = records.append
    runtime.run(max_steps=10)
    assert [r["odometry"].position[0] for r in records] == [r["state"].robot_tick_us for r in records]
    assert io.odometry_at(-1) is None  # none yet at that time: logged as NaN, not as a later one
    io.close()
