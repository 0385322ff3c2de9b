"""A newcomer's first hour (issue 19): the traps a fresh user met, one test each.

Trips exit non-zero with the monitor and the next step; a bridge latched by the last run does not fail the next
one; a runtime config that does not match the stand-in's pacing is named with its flag; the shipped policy and
the README's walk recipe; NaN logs flagged and cut, not a crash; --set overrides; the smaller CLI items.
"""

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from deploy.record import Phase
from deploy.runtime import BridgeStatus, Odometry
from deploy.safety import Trip
from deploy.session import RunLog
from deploy.trips import BridgeModeError, check_bridge_mode, is_stand_in
from real_robot.collect_cli import main as collect_main
from real_robot.datalog import read_log_folder
from real_robot.logs_cli import format_summary, summarize
from real_robot.loopback import LoopbackRobot, free_udp_port
from robot_spec.exit_codes import ExitCode
from robot_spec.policy_io import load_policy
from loaded_host import STARTUP_S
from test_collect import runtime_record

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "policies" / "go1_walk"
MODULES = {"real_robot": "real_robot.cli", "deploy": "deploy.cli"}  # the console scripts, run by this Python


def needs_sdk():
    pytest.importorskip("unitree_legged_sdk.robot_interface", reason="the bridge needs the Unitree SDK")


# --------------------------------------------------------------------------------------------- the shipped policy
def test_the_shipped_policy_fits_the_robot_and_matches_its_record(spec):
    source = yaml.safe_load((SHIPPED / "source.yaml").read_text())
    policy = load_policy(SHIPPED / "policy.pt", spec)  # refuses another robot, layout or gains
    assert policy.policy_id == source["policy_id"]
    assert sum(p.numel() for p in policy.actor.parameters()) == source["parameters"]
    for name, digest in source["sha256"].items():
        assert hashlib.sha256((SHIPPED / name).read_bytes()).hexdigest() == digest, name
    assert source["seed"] == 0 and source["preset"] == "quick" and "--seed 0" in source["command"]
    import onnx

    model = onnx.load(SHIPPED / "policy.onnx")
    onnx.checker.check_model(model)
    contract = json.loads({p.key: p.value for p in model.metadata_props}["contract.json"])
    assert contract["joint_names"] == policy.contract["joint_names"]


def test_the_shipped_robust_policy_matches_its_record_and_can_be_fine_tuned(spec):
    """policies/go1_robust: the files its source.yaml names, and a checkpoint that fits its run config (what the
    pipeline's --policy, sim_ppo and the oracle continue from)."""
    from sim_pretrain.train import latest_checkpoint, read_checkpoint
    from sim_pretrain.train_config import TrainConfig
    from robot_spec.config import load_config

    robust = REPO / "policies" / "go1_robust"
    source = yaml.safe_load((robust / "source.yaml").read_text())
    policy = load_policy(robust / "policy.pt", spec)
    assert policy.policy_id == source["policy_id"]
    for name, digest in source["sha256"].items():
        assert hashlib.sha256((robust / name).read_bytes()).hexdigest() == digest, name
    checkpoint = latest_checkpoint(robust)
    cfg = load_config(TrainConfig, robust / "config.yaml")
    assert checkpoint.name == "model_199.pt" and read_checkpoint(checkpoint)["iter"] == 199
    r = cfg.env.randomization
    assert r.backlash > 0 and r.com_displacement > 0 and cfg.env.terrain.enabled and cfg.env.stand_up.share > 0
    assert cfg.actor.hidden_dims == [256, 128, 64]  # the quick preset's networks, which the actor above has


def readme_recipe() -> list[str]:
    """The command lines of the README's walk recipe (the bash block after `<!-- walk-recipe -->`)."""
    text = (REPO / "README.md").read_text()
    block = text.split("<!-- walk-recipe -->", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.strip().splitlines()]


def test_the_readme_walk_recipe_walks_the_shipped_policy_on_the_stand_in(tmp_path):
    """The recipe's lines as written, each given private ports and LCM channels (tests may run side by side)."""
    needs_sdk()
    lines = readme_recipe()
    assert len(lines) == 5 and lines[-1] == "kill %1 %2"
    (tmp_path / "policies").symlink_to(REPO / "policies")  # a fresh clone's layout; data_logs/ lands in tmp_path
    board, sdk, prefix = free_udp_port(), free_udp_port(), f"walk{os.getpid()}_"
    private = {
        "sim-robot": ["--port", str(board)], "bridge": ["--robot-port", str(board), "--local-port", str(sdk)],
        "run": [], "logs": None,
    }  # fmt: skip
    background, results = [], []
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        for line in lines[:-1]:
            words = shlex.split(line.rstrip("&"))
            program, command = Path(words[0]).name, words[1]
            argv = [sys.executable, "-m", MODULES[program], *words[1:]]
            if private[command] is not None:
                argv += [*private[command], "--channel-prefix", prefix]
            if line.endswith("&"):
                background.append(subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.DEVNULL))  # fmt: skip
            else:
                results.append(subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                                              timeout=300))  # fmt: skip
    finally:
        for process in background:  # `kill %1 %2`
            process.terminate()
        for process in background:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    deploy, logs = results
    assert deploy.returncode == ExitCode.OK, deploy.stderr[-2000:]
    assert logs.returncode == ExitCode.OK and ": OK" in logs.stdout and "policy steps" in logs.stdout
    (folder,) = (tmp_path / "data_logs").iterdir()
    (episode,) = read_log_folder(folder).episodes
    walking = episode.records["phase"] == Phase.POLICY
    x = episode.records["odom_position"][walking, 0]
    assert episode.outcome == "timeout" and walking.sum() >= 300  # 8 s of the walk schedule, no trip, no fall
    assert x[-1] - x[0] > 1.0  # 4 s at 0.5 m/s forward in it
    assert np.abs(episode.records["rpy"][walking, :2]).max() < 0.5


# --------------------------------------------------------------------------------------------- trips on the wire
@pytest.fixture(scope="module")
def robot():
    needs_sdk()
    with LoopbackRobot(profile="none", fast=True, startup_timeout_s=STARTUP_S) as robot:
        yield robot


def deploy_run(robot, *extra, duration: float = 5.0) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "deploy.cli", "run", "--policy", str(SHIPPED / "policy.pt"), "--speed", "low",
            "--commands", "schedule:stand", "--duration", str(duration), "--lcm-url", robot.lcm_url,
            "--channel-prefix", robot.prefix, *extra]  # fmt: skip
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)


def test_deploy_runs_twice_in_a_row_and_a_trip_exits_3_naming_the_monitor_and_the_next_step(robot, tmp_path):
    for run in ("first", "second"):  # the first run's end latches the bridge's watchdog
        robot.reset()
        done = deploy_run(robot, "--runtime-config", "runtime_fast", "--log-dir", str(tmp_path / run))
        assert done.returncode == ExitCode.OK, done.stderr[-2000:]
        (episode,) = read_log_folder(tmp_path / run).episodes
        assert episode.outcome == "timeout", episode.reason
    assert "re-armed it (the stand-in robot)" in done.stdout

    robot.reset()
    robot.sim_control("fault", fault="sensor_nan", motor=2)
    try:
        tripped = deploy_run(robot, "--runtime-config", "runtime_fast", "--no-log", duration=1.0)
    finally:
        robot.sim_control("clear_faults")
    assert tripped.returncode == ExitCode.SAFETY_TRIP
    last = tripped.stderr.strip().splitlines()[-1]
    assert "safety trip: non_finite" in last and "Next:" in last and "deploy arm" in last


def test_a_runtime_config_that_does_not_match_the_stand_ins_pacing_is_named_with_its_flag(robot, tmp_path, capsys):
    robot.reset()
    done = deploy_run(robot, "--no-log")  # real-time runtime against the fast stand-in
    assert done.returncode == ExitCode.BAD_INPUT and "--runtime-config runtime_fast" in done.stderr
    argv = ["--policy", str(SHIPPED / "policy.pt"), "--episodes", "2", "--out", str(tmp_path / "log"),
            "--lcm-url", robot.lcm_url, "--channel-prefix", robot.prefix]  # fmt: skip
    assert collect_main(argv) == ExitCode.BAD_INPUT
    assert "--runtime-config runtime_fast" in capsys.readouterr().err


def test_a_real_robots_latched_bridge_is_explained_and_not_rearmed_unasked(capsys):
    from deploy.cli import start_on_bridge

    class Io:
        def __init__(self, status):
            self.status = status

        def bridge_status(self):
            return self.status

        def poll(self, _timeout_s):
            raise AssertionError("the status was there")

    class Runtime:
        def __init__(self, status, realtime=True):
            self.io, self.cfg = Io(status), Namespace(realtime=realtime)

    robot_bridge = BridgeStatus(True, "watchdog: no pd_target for 61 ms", 0, follow=False, robot_ip="192.168.123.10")
    assert not is_stand_in(robot_bridge) and is_stand_in(BridgeStatus(True, "", 0, False, "127.0.0.1"))
    args = Namespace(arm_bridge=False, lcm_url="udpm://239.255.76.67:7667?ttl=0", channel_prefix="never_")
    assert start_on_bridge(args, Runtime(robot_bridge)) is False
    err = capsys.readouterr().err
    assert "latched from an earlier trip (watchdog" in err and "deploy arm --target bridge" in err
    assert "--arm-bridge" in err
    with pytest.raises(BridgeModeError, match="runtime_fast"):
        check_bridge_mode(BridgeStatus(False, "", 0, follow=True, robot_ip="127.0.0.1"), realtime=True)
    with pytest.raises(BridgeModeError, match="--runtime-config runtime "):
        check_bridge_mode(BridgeStatus(False, "", 0, follow=False, robot_ip="127.0.0.1"), realtime=False)
    check_bridge_mode(BridgeStatus(False, "", 0), realtime=True)  # an older bridge says nothing: no verdict


# --------------------------------------------------------------------------------------------- NaN in a log
def write_log(spec, folder: Path) -> None:
    """Two episodes of 2 soft-start, 5 policy and 1 damping records; the first ends on a NaN-sensor trip whose
    record holds NaN joint angles (as a real one does)."""
    step = 0
    with RunLog(folder, spec, {"policy_id": "p"}) as log:
        for trip in (Trip("non_finite", 0, "non-finite values in q"), Trip("timeout", 0, "limit")):
            for phase in [Phase.SOFT_START] * 2 + [Phase.POLICY] * 5 + [Phase.DAMPING]:
                record = runtime_record(spec, step, phase, trip if phase == Phase.DAMPING else None)
                record["odometry"] = Odometry(np.array([0.01 * step, 0, 0.3]), np.array([1.0, 0, 0, 0]),
                                              np.array([0.5, 0, 0]), np.zeros(3))  # fmt: skip
                if phase == Phase.DAMPING and trip.reason == "non_finite":
                    record["state"].q[:] = np.nan
                log.on_step(record)
                step += 1


def test_a_log_with_a_nan_trip_is_flagged_and_cut_at_the_trip_not_a_crash(spec, tmp_path):
    from uni_o4.log_dataset import LogDataConfig, NonFiniteRecordsWarning, dataset_from_log_folder

    write_log(spec, tmp_path / "log")
    nan_file = read_log_folder(tmp_path / "log").episodes[0].source
    summary = summarize(tmp_path / "log")
    assert summary["policy_steps"] == 10 and summary["records"] == 16  # as collect counts / as written
    (flagged,) = summary["non_finite"]
    assert flagged["file"] == nan_file and flagged["non_finite_records"] == 1 and flagged["non_finite_fields"] == ["q"]
    text = format_summary(summary)
    assert "1 episode(s) with NaN/Inf readings" in text.splitlines()[0] and f"NaN/Inf in {nan_file}" in text
    with pytest.warns(NonFiniteRecordsWarning, match=re.escape(str(tmp_path / "log" / nan_file))):
        data, report = dataset_from_log_folder(tmp_path / "log", spec, LogDataConfig())
    assert report.transitions == 4 + 5 and torch.isfinite(data.rewards).all()  # cut before the NaN record


# --------------------------------------------------------------------------------------------- --set overrides
def test_train_takes_a_preset_file_and_set_values_and_resume_keeps_them_and_the_history(tmp_path, capsys):
    from sim_pretrain.cli import main

    preset = REPO / "configs" / "train" / "go1_tiny.yaml"
    args = ["train", "--preset", str(preset), "--runs", str(tmp_path), "--iterations", "3",
            "--set", "env.episode_length_s=0.1", "ppo.learning_rate=5e-4"]  # fmt: skip
    assert main(args) == 0
    (run,) = (tmp_path / "go1").iterdir()
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert run.name.endswith("_go1_tiny") and config["env"]["episode_length_s"] == 0.1
    assert config["ppo"]["learning_rate"] == 5e-4
    assert json.loads((run / "training_history.json").read_text())["iteration"] == [0, 1, 2]
    assert main(["train", "--resume", str(run), "--iterations", "5"]) == 0
    history = json.loads((run / "training_history.json").read_text())
    assert history["iteration"] == [0, 1, 2, 3, 4] and history["wall_s"] == sorted(history["wall_s"])
    assert yaml.safe_load((run / "config.yaml").read_text())["env"]["episode_length_s"] == 0.1
    capsys.readouterr()
    assert main(["train", "--preset", "tiny", "--set", "ppo.learning_rat=1"]) == ExitCode.BAD_INPUT
    assert "unknown key(s) ['learning_rat']" in capsys.readouterr().err
    assert main(["train", "--preset", "tiny", "--set", "ppo.learning_rate"]) == ExitCode.BAD_INPUT
    assert "expected KEY.PATH=VALUE" in capsys.readouterr().err


def test_finetune_set_values_reach_the_method_config_and_a_bad_key_is_refused(spec, tmp_path, capsys):
    from uni_o4.cli import main
    from uni_o4.method import OfflineJob
    from uni_o4.registry import make_method

    job = OfflineJob("uni_o4", "uni_o4_tiny", [], spec, tmp_path, overrides={"improvement": {"ope_horizon": 7}})
    assert make_method("uni_o4").config(job).improvement.ope_horizon == 7
    write_log(spec, tmp_path / "log")
    argv = ["finetune", "--offline", str(tmp_path / "log"), "--preset", "uni_o4_tiny", "--out", str(tmp_path / "o"),
            "--set", "improvement.bogus=1"]  # fmt: skip
    assert main(argv) == ExitCode.BAD_INPUT
    assert "unknown key(s) ['bogus']" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- smaller items
def test_real_robot_says_unknown_command_and_help_survives_a_closed_pipe():
    run = [sys.executable, "-m", "real_robot.cli"]
    bogus = subprocess.run([*run, "bogus"], capture_output=True, text=True, cwd=REPO)
    assert bogus.returncode == ExitCode.BAD_INPUT and "unknown command 'bogus'" in bogus.stderr
    piped = subprocess.run(f"{shlex.join(run)} --help | head -1", shell=True, capture_output=True, text=True,
                           cwd=REPO)  # fmt: skip
    assert piped.stdout.startswith("usage: real_robot") and "Traceback" not in piped.stderr
    logs_help = subprocess.run([*run, "logs", "--help"], capture_output=True, text=True, cwd=REPO)
    assert logs_help.returncode == 0 and logs_help.stdout.startswith("usage: real_robot logs")


def option_help(text: str, option: str) -> str:
    """The help of `option` in an argparse --help text (up to the next option)."""
    return re.split(r"\n  -", text.split(f"  {option}", 1)[1], maxsplit=1)[0]


@pytest.mark.parametrize("command, options", [
    ("train", ["--preset", "--seed", "--num-envs", "--iterations"]),
    ("eval", ["--robot", "--seed", "--device", "--preset"]),
])  # fmt: skip
def test_help_states_the_defaults(command, options, capsys):
    from sim_pretrain.cli import main

    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    for option in options:
        assert "default" in option_help(text, option), option


def test_eval_records_its_preset_and_seed_and_sets_mujoco_gl_before_mujoco_loads(tmp_path):
    from sim_pretrain.cli import main

    small = ["envs_per_command=1", "episode_s=0.5", "settle_s=0.1", "commands=[[0.5, 0.0, 0.0]]"]
    assert main(["eval", "--policy", str(SHIPPED / "policy.pt"), "--out", str(tmp_path), "--seed", "3",
                 "--set", *small]) == 0  # fmt: skip
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["preset"].endswith("eval/default.yaml") and metrics["seed"] == 3 and metrics["set"] == small
    code = ("import os, sys; os.environ.pop('MUJOCO_GL', None); from sim_pretrain.cli import main; "
            "assert 'mujoco' not in sys.modules; main(['eval', '--policy', 'missing.pt', '--gait', '0', '0', '0']); "
            "print(os.environ.get('MUJOCO_GL'), 'mujoco' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert out.stdout.split() == ["egl", "True"], out.stderr[-2000:]  # set, then mujoco was loaded


def test_the_deploy_status_line_shows_measured_velocity_and_tilt(spec):
    from deploy.cli import StatusLine

    record = runtime_record(spec, 10, Phase.POLICY)
    record["odometry"] = Odometry(np.zeros(3), np.array([1.0, 0, 0, 0]), np.array([0.42, -0.1, 0]), np.zeros(3))
    record["state"].rpy[:] = [0.1, -0.2, 0.0]
    text = StatusLine.motion(record)
    assert "cmd (+0.50, +0.00, +0.00)" in text and "v (+0.42, -0.10)" in text and "tilt 11.5°" in text
    record["odometry"] = Odometry.missing()
    assert "v n/a (no odometry)" in StatusLine.motion(record)


def test_a_cached_offline_stage_says_so(tmp_path, capsys):
    from uni_o4.offline import OfflineConfig, Stage1

    stage = Stage1(None, OfflineConfig(), tmp_path)
    trained = []
    for _ in range(2):
        stage.cached("critics", "k1", lambda ctx: trained.append(1) or {"w": 1}, lambda a: a, lambda saved: saved)
    assert len(trained) == 1 and "critics: cached" in capsys.readouterr().out


def test_collect_and_online_exit_codes_tell_a_shortfall_an_abort_and_a_trip(monkeypatch, tmp_path, capsys):
    import real_robot.collect_cli as collect_cli
    import uni_o4.cli as uni_o4_cli
    import uni_o4.finetune as finetune
    from deploy.session import EpisodeStartError

    never_started = EpisodeStartError("the robot tripped at the start of 5 episodes in a row, the last on safety "
                                      "trip: stale_state (...). Next: ...", Trip("stale_state", 0, "..."))  # fmt: skip

    def cannot_start(*_args):
        raise never_started

    argv = ["--policy", str(SHIPPED / "policy.pt"), "--steps", "100"]
    monkeypatch.setattr(collect_cli, "collect", cannot_start)
    assert collect_main(argv) == ExitCode.SHORTFALL and "stale_state" in capsys.readouterr().err
    monkeypatch.setattr(collect_cli, "collect", lambda *_: Namespace(cut_short=True, steps=40, episodes=2))  # Ctrl-C
    assert collect_main(argv) == ExitCode.ABORTED and "stopped by the operator" in capsys.readouterr().err
    monkeypatch.setattr(collect_cli, "collect", lambda *_: Namespace(cut_short=False, steps=100, episodes=5))
    assert collect_main(argv) == ExitCode.OK
    monkeypatch.setattr(finetune, "finetune_online", cannot_start)
    online = ["finetune", "--online", "--policy", str(tmp_path), "--out", str(tmp_path / "o")]
    assert uni_o4_cli.main(online) == ExitCode.SAFETY_TRIP and "stale_state" in capsys.readouterr().err


def test_the_commands_the_readme_says_take_device_do(capsys):
    from deploy.cli import main as deploy_main
    from sim_pretrain.cli import main as sim_main
    from uni_o4.cli import main as uni_o4_main

    readme = (REPO / "README.md").read_text()
    assert "Every command takes `--device`" not in readme  # sim-robot, bridge, logs, calibrate have no policy
    claim = re.search(r"The commands that run or train a policy \((.*?)\)\s+take `--device`", readme, re.S)
    assert claim and claim.group(1).count("`") == 8
    for main, argv in [(sim_main, ["train"]), (sim_main, ["finetune"]), (sim_main, ["eval"]), (deploy_main, ["run"]),
                       (collect_main, []), (uni_o4_main, ["finetune"]), (uni_o4_main, ["pipeline"])]:  # fmt: skip
        with pytest.raises(SystemExit):
            main([*argv, "--help"])
        assert "--device" in capsys.readouterr().out, argv
