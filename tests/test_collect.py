"""real_robot collect (deploy.session): the record schema, episode boundaries and outcomes, and end to end on the stand-in robot:
episodes logged and read by the offline dataset; a collector killed with SIGKILL leaves logs that still load."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml

from deploy.record import episode_outcome, record_schema
from deploy.runtime import Odometry, PdTarget, Phase, RobotState
from deploy.safety import Trip
from deploy.session import MAX_FAILED_STARTS, Collector, EpisodeStartError, RunLog, noisy_policy
from real_robot.collect_cli import main as collect_main
from real_robot.datalog import read_log_folder, salvage_episode
from real_robot.loopback import LoopbackRobot
from robot_spec.policy_io import ActorMLP, save_policy
from loaded_host import STARTUP_S


def runtime_record(spec, step: int, phase: Phase, trip: Trip | None = None) -> dict:
    """A record as deploy.runtime.Runtime.step hands it out."""
    n = spec.num_joints
    state = RobotState(
        robot_tick_us=20_000 * step, body_tick_us=20_000 * step, stamp_us=step, received_s=0.0, repeats=0,
        tick_step_us=2000, q=spec.default_pose + 0.01 * step, dq=np.zeros(n), tau_est=np.zeros(n),
        quaternion=np.array([1.0, 0, 0, 0]), rpy=np.zeros(3), gyro=np.zeros(3), accelerometer=np.zeros(3),
        foot_force=np.zeros(4),
    )  # fmt: skip
    target = PdTarget(spec.default_pose, np.zeros(n), np.full(n, 20.0), np.full(n, 0.5), np.zeros(n))
    return {
        "step": step, "phase": int(phase), "robot_tick_us": 20_000 * step, "timestamp_us": 1000 + 20_000 * step,
        "state": state, "odometry": Odometry.missing(), "target": target, "trip": trip, "trip_count": 0,
        "command": np.array([0.5, 0.0, 0.0]), "obs": np.full(spec.observation.dim, 0.1, np.float32),
        "action": np.full(n, 0.2),
    }  # fmt: skip


def test_episodes_run_from_a_soft_start_to_the_first_damping_record(spec, tmp_path):
    fall = Trip("orientation", 0, "roll=1.2")
    timeline = [  # (phase, trip): two episodes with damping between them
        *[(Phase.SOFT_START, None)] * 3, *[(Phase.POLICY, None)] * 4, (Phase.DAMPING, fall), (Phase.DAMPING, fall),
        (Phase.DAMPING, Trip("reset", 0, "")),
        *[(Phase.SOFT_START, None)] * 2, *[(Phase.POLICY, None)] * 3, (Phase.DAMPING, Trip("timeout", 0, "limit")),
        *[(Phase.SOFT_START, None)] * 2,  # a third episode, cut short: the process ends here
    ]
    outcomes = []
    with RunLog(tmp_path, spec, {"policy_id": "abc"}, lambda: {"schedule": "walk"}) as log:
        for step, (phase, trip) in enumerate(timeline):
            outcomes.append(log.on_step(runtime_record(spec, step, phase, trip)))
    assert [o for o in outcomes if o] == ["fall", "timeout"]
    first, second, third = read_log_folder(tmp_path).episodes
    assert (first.outcome, second.outcome, third.outcome) == ("fall", "timeout", "interrupted")
    assert first.records["step"].tolist() == list(range(8)) and first.records["tripped"].tolist() == [0] * 7 + [1]
    assert second.records["step"].tolist() == list(range(10, 16))  # damping between episodes is not logged
    assert first.counts["policy_steps"] == 4 and first.reason == "orientation: roll=1.2"
    assert first.meta == {"policy_id": "abc"} and first.info == {"first_step": 0, "schedule": "walk"}
    assert np.isnan(first.records["odom_position"]).all()  # no odometry source: NaN, not zeros
    for name, (dtype, shape) in record_schema(spec).items():
        assert first.records[name].dtype == np.dtype(dtype) and first.records[name].shape[1:] == shape, name


class ScriptedRuntime:
    """Hands Collector the records of a script: after each reset, the phases and trips of one episode start."""

    def __init__(self, spec, starts: list[list[tuple[Phase, Trip | None]]]):
        self.spec, self.starts = spec, starts
        self.next_tick, self.stop_reason, self.rearm_requested, self.on_step = 0, None, False, None
        self.steps, self.latched = 0, []

    def reset(self, _episode: int) -> None:
        self.script = iter(self.starts.pop(0))
        self.rearm_requested = True

    def run(self, until):
        for phase, trip in self.script:
            self.rearm_requested = False  # the first step after a reset consumes the re-arm
            record = runtime_record(self.spec, self.steps, phase, trip)
            self.steps += 1
            self.on_step(record)
            if until(record):
                return record
        raise AssertionError("the collector kept stepping past the script")

    def latch(self, reason: str, detail: str = "") -> None:
        self.latched.append(reason)


def test_an_episode_that_trips_at_its_start_is_reset_again_and_a_robot_that_never_starts_stops_the_run(spec, tmp_path):
    """A re-arm that trips at once (stale state after a host stall) opens no episode: without a fresh reset the
    runtime would damp for ever. The collector resets again; after MAX_FAILED_STARTS in a row it gives up."""
    stale = Trip("stale_state", 0, "newest state is 3071.7 ms old")
    timeout = Trip("timeout", 0, "limit")
    walk = [*[(Phase.SOFT_START, None)] * 2, *[(Phase.POLICY, None)] * 3, (Phase.DAMPING, timeout)]
    runtime = ScriptedRuntime(spec, [[(Phase.DAMPING, stale)], walk])
    with RunLog(tmp_path / "once", spec, {}, dict) as log:
        collector = Collector(runtime, log, runtime.reset, episode_steps=100, max_episodes=1)
        collector.run()
    assert collector.episodes == 1 and log.outcomes == {"timeout": 1} and runtime.starts == []
    (episode,) = read_log_folder(tmp_path / "once").episodes
    assert episode.outcome == "timeout" and episode.counts["policy_steps"] == 3

    runtime = ScriptedRuntime(spec, [[(Phase.DAMPING, stale)]] * MAX_FAILED_STARTS)
    with RunLog(tmp_path / "never", spec, {}, dict) as log:
        collector = Collector(runtime, log, runtime.reset, episode_steps=100, max_episodes=1)
        with pytest.raises(EpisodeStartError, match="stale_state"):
            collector.run()
    assert runtime.starts == [] and collector.episodes == 0


def test_a_collection_told_so_stops_once_more_episodes_than_allowed_end_early(spec, tmp_path):
    """max_ended_early (the robot's check of a candidate): episodes a fall or a safety stop ended count, time limits
    do not; one past the allowance and the collection ends, though more episodes were asked for."""
    soft, walk = [(Phase.SOFT_START, None)] * 2, [(Phase.POLICY, None)] * 3
    timeout, fall = (Phase.DAMPING, Trip("timeout", 0, "limit")), (Phase.DAMPING, Trip("orientation", 0, "roll=1.2"))
    stop = (Phase.DAMPING, Trip("action_rate", 0, "FR_calf |a_t - a_t-1|=3.4 > 3.0"))
    episodes = [[*soft, *walk, fall], [*soft, *walk, timeout], [*soft, *walk, stop], [*soft, *walk, timeout]]
    runtime = ScriptedRuntime(spec, list(episodes))
    with RunLog(tmp_path / "check", spec, {}, dict) as log:
        collector = Collector(runtime, log, runtime.reset, episode_steps=100, max_episodes=8, max_ended_early=1)
        collector.run()
    assert collector.episodes == 3 and log.outcomes == {"fall": 1, "timeout": 1, "safety_trip": 1}
    runtime = ScriptedRuntime(spec, list(episodes))
    with RunLog(tmp_path / "all", spec, {}, dict) as log:
        Collector(runtime, log, runtime.reset, episode_steps=100, max_episodes=4).run()
    assert log.outcomes == {"fall": 1, "timeout": 2, "safety_trip": 1}


def test_outcomes_and_the_schema_the_dataset_reads(spec):
    assert episode_outcome("orientation") == "fall" and episode_outcome("timeout") == "timeout"
    assert episode_outcome("operator_stop") == "operator_stop" and episode_outcome("stale_state") == "safety_trip"
    from uni_o4.log_dataset import CRITIC_FIELDS, RECORD_FIELDS

    schema = record_schema(spec)
    assert set(RECORD_FIELDS) <= set(schema) and {field for field, _ in CRITIC_FIELDS.values()} <= set(schema)
    assert schema["obs"] == ("float32", (spec.observation.dim,))


def test_bad_arguments_and_a_wrong_policy_are_refused(spec, tmp_path, capsys):
    assert collect_main(["--policy", str(tmp_path / "none.pt"), "--episodes", "1"]) == 2
    assert "policy file not found" in capsys.readouterr().err
    assert collect_main(["--policy", "x.pt", "--steps", "0"]) == 2
    assert "--steps must be positive" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        collect_main(["--policy", "x.pt", "--steps", "5", "--episodes", "2"])
    assert collect_main(["--policy", "x.pt", "--steps", "5", "--action-noise", "-0.1"]) == 2
    assert "--action-noise must be in" in capsys.readouterr().err


def test_noisy_policy_is_the_mean_plus_seeded_gaussian_noise(spec):
    actor = ActorMLP(spec.observation.dim, spec.num_joints, [16])
    obs = torch.randn(1, spec.observation.dim)
    mean = actor(obs)[0].detach().double().numpy()
    draws = lambda seed: noisy_policy(actor, 0.2, seed)(obs, None)  # noqa: E731
    act = noisy_policy(actor, 0.2, seed=3)
    noise = np.stack([act(obs, np.zeros(spec.num_joints)) for _ in range(500)]) - mean
    assert abs(noise.mean()) < 0.01 and abs(noise.std() - 0.2) < 0.01
    np.testing.assert_array_equal(draws(3), draws(3))
    assert not np.array_equal(draws(3), draws(4))


# ------------------------------------------------------------------------------------------------ on the wire
@pytest.fixture(scope="module")
def robot():
    pytest.importorskip("unitree_legged_sdk.robot_interface", reason="the bridge needs the Unitree SDK")
    with LoopbackRobot(profile="none", fast=True, startup_timeout_s=STARTUP_S) as robot:
        yield robot


@pytest.fixture(scope="module")
def files(spec, tmp_path_factory):
    folder = tmp_path_factory.mktemp("collect")
    actor = ActorMLP(spec.observation.dim, spec.num_joints, [32])
    torch.nn.init.zeros_(actor.mlp[-1].weight)
    torch.nn.init.zeros_(actor.mlp[-1].bias)
    save_policy(actor, spec, folder / "policy.pt")
    runtime = yaml.safe_load(open("configs/deploy/runtime_fast.yaml"))
    (folder / "quick.yaml").write_text(yaml.safe_dump({**runtime, "soft_start_s": 0.6, "stand_s": 0.4}))
    return folder


def collect_args(robot, files, out, *extra) -> list[str]:
    return ["--policy", str(files / "policy.pt"), "--runtime-config", str(files / "quick.yaml"), "--out", str(out),
            "--lcm-url", robot.lcm_url, "--channel-prefix", robot.prefix, "--stand-in-profile", "none",
            "--reset-settle-s", "0.3", *extra]  # fmt: skip


def test_collect_logs_episodes_the_offline_dataset_reads(spec, robot, files, tmp_path):
    out = tmp_path / "log"
    assert collect_main(collect_args(robot, files, out, "--episodes", "2", "--episode-s", "0.6")) == 0
    episodes = read_log_folder(out).episodes
    assert [e.outcome for e in episodes] == ["timeout", "timeout"]
    for episode in episodes:
        r = episode.records
        assert set(r) == set(record_schema(spec))
        assert r["phase"][0] == Phase.SOFT_START and r["phase"][-1] == Phase.DAMPING and r["tripped"].sum() == 1
        assert (r["phase"] == Phase.POLICY).sum() == round(0.6 * spec.control.policy_hz)
        assert (np.diff(r["step"]) == 1).all() and (np.diff(r["timestamp_us"]) > 0).all()
        assert np.isfinite(r["odom_position"][-10:]).all()  # the stand-in's odometry was logged
        meta = episode.meta
        assert meta["stand_in_profile"] == "none" and meta["policy_contract"]["robot"] == spec.name
        assert meta["command_schedule"]["segments"] and meta["safety_config"]["damping_kd"] > 0
    assert episodes[1].records["step"][0] > episodes[0].records["step"][-1]
    from uni_o4.log_dataset import LogDataConfig, dataset_from_log_folder

    data, report = dataset_from_log_folder(out, spec, LogDataConfig())
    assert report.transitions == 2 * round(0.6 * spec.control.policy_hz) and report.terminals == 0


def test_action_noise_is_executed_logged_and_described(spec, robot, files, tmp_path):
    out = tmp_path / "noisy"
    args = collect_args(robot, files, out, "--episodes", "1", "--episode-s", "0.6", "--action-noise", "0.2")
    assert collect_main(args) == 0
    (episode,) = read_log_folder(out).episodes
    policy_phase = episode.records["phase"] == Phase.POLICY
    actions = episode.records["action"][policy_phase]  # the policy's mean is 0: what was logged is the noise
    assert abs(actions.std() - 0.2) < 0.03 and abs(actions.mean()) < 0.03
    assert episode.meta["action_noise_std"] == 0.2 and episode.meta["behaviour"] == "exploring"


def test_a_collector_killed_mid_episode_leaves_logs_that_load(spec, robot, files, tmp_path):
    out = tmp_path / "log"
    args = collect_args(robot, files, out, "--episodes", "5", "--episode-s", "0.4")
    collector = subprocess.Popen([sys.executable, "-m", "real_robot.collect_cli", *args],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        # the process imports torch and loads the policy first: seconds on an idle host, over 20 s on a loaded one
        deadline, second = time.monotonic() + 120, out / "episode_000001.g1log"
        while not second.is_file() or len(salvage_episode(second)[0]) == 0:  # the second episode has a step
            assert time.monotonic() < deadline and collector.poll() is None, "the collector logged no second episode"
            time.sleep(0.05)
        os.kill(collector.pid, signal.SIGKILL)  # mid-episode: it has logged steps, not yet its last
        collector.wait()
    finally:
        if collector.poll() is None:
            collector.kill()
            collector.wait()
    episodes = read_log_folder(out).episodes
    assert episodes[0].outcome == "timeout" and episodes[-1].outcome == "interrupted"
    assert len(episodes[-1]) > 0 and (np.diff(episodes[-1].records["step"]) == 1).all()
    from uni_o4.log_dataset import LogDataConfig, dataset_from_log_folder

    data, report = dataset_from_log_folder(out, spec, LogDataConfig())
    assert report.outcomes["interrupted"] == 1 and report.transitions >= round(0.4 * spec.control.policy_hz)


def test_a_stand_in_collection_repeats_exactly_from_its_seeds(spec, files, tmp_path):
    """Lockstep, scheduled resets and per-episode noise streams: the same collection twice on a noisy stand-in
    (sensor noise, latency, biases) with exploring actions logs the same numbers, whatever the host's timing."""
    pytest.importorskip("unitree_legged_sdk.robot_interface", reason="the bridge needs the Unitree SDK")

    def run(name: str) -> list[dict]:
        with LoopbackRobot(profile="strong", fast=True, seed=5, startup_timeout_s=STARTUP_S) as robot:
            args = collect_args(robot, files, tmp_path / name, "--episodes", "2", "--episode-s", "1.0",
                                "--action-noise", "0.3", "--seed", "2")  # fmt: skip
            assert collect_main(args) == 0
        return [e.records for e in read_log_folder(tmp_path / name).episodes]

    first, second = run("first"), run("second")
    when = ("timestamp_us", "robot_tick_us", "step")  # when it happened, not what happened
    # Odometry reaches the logger over its own LCM channel, as a tracking camera's would, outside the lockstep:
    # which message is the newest at a step depends on the host's timing (at most a period or two of motion).
    odometry = {key for key in first[0] if key.startswith("odom_")}
    for a, b in zip(first, second, strict=True):
        assert (a["phase"] == Phase.POLICY).sum() == round(1.0 * spec.control.policy_hz)
        for key in set(a) - set(when) - odometry:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        for key in odometry:
            np.testing.assert_allclose(a[key], b[key], atol=0.05, err_msg=key)
    assert not np.array_equal(first[0]["q"], first[1]["q"])  # episodes differ: their noise streams do


def test_a_loopback_robot_whose_port_was_taken_after_the_probe_starts_on_new_ports(monkeypatch):
    """Two runs on one host probing at once can be handed the same free port; the stand-in that loses the bind
    exits, and the loopback starts again on new ports instead of failing the run."""
    import socket

    from real_robot import loopback

    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    ports = [taken.getsockname()[1]]  # the first probe hands out a port another process holds
    real_probe = loopback.free_udp_port
    monkeypatch.setattr(loopback, "free_udp_port", lambda: ports.pop() if ports else real_probe())
    try:
        with LoopbackRobot(profile="none", fast=True, startup_timeout_s=STARTUP_S) as robot:
            assert "joint_state" in robot.node.latest and all(p.poll() is None for p in robot.processes)
    finally:
        taken.close()


def test_a_pipeline_collection_stopped_by_the_operator_is_not_taken_for_a_finished_one(files, tmp_path):
    """Ctrl-C during the main job's collection: it raises instead of fine-tuning on the short log, writes no
    'collected' marker, and the rerun sets the short log aside and collects afresh."""
    pytest.importorskip("unitree_legged_sdk.robot_interface", reason="the bridge needs the Unitree SDK")
    import threading

    from uni_o4.pipeline import PipelineRequest, collect

    folder, request = tmp_path / "data_logs", PipelineRequest(profile="none", collect_steps=5000)
    collecting = threading.Event()

    def stop_once_an_episode_is_logged():  # the session turns SIGINT into an operator stop
        deadline = time.monotonic() + 120
        while not collecting.wait(0.2) and time.monotonic() < deadline:
            if any(folder.glob("episode_*")):
                time.sleep(1.0)
                os.kill(os.getpid(), signal.SIGINT)
                return

    stopper = threading.Thread(target=stop_once_an_episode_is_logged, daemon=True)
    stopper.start()
    try:
        with pytest.raises(KeyboardInterrupt, match="stopped by the operator after"):
            collect(request, files / "policy.pt", folder)
    finally:
        collecting.set()
        stopper.join()
    assert not (folder / "collected.json").exists()
    short = sum(len(e.records["step"]) for e in read_log_folder(folder).episodes)
    assert 0 < short < 5000
