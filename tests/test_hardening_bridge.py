"""Issue 18, item 2: no stranger drives the motors and no target outside the bounds reaches them. The bridge
applies only the armed session's targets, within the bounds, answering ticks it has sent; arming is signed
with the per-user secret; LCM and DDS sockets stay on loopback. Plus a seeded fuzz of every LCM decode path."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from deploy.lcm_io import LcmRobotIO
from real_robot.arming import BIND, ArmingError, arm_request, load_secret
from real_robot.bridge import Bridge, BridgeCore, load_bridge_config
from real_robot.clock import now_us
from real_robot.lcm_bus import CHANNELS, DEFAULT_LCM_URL, LcmNode
from real_robot.lcm_types.go1lcm import arm_request_t, pd_target_t
from real_robot.loopback import LoopbackRobot
from real_robot.sockets import parse_ss, process_sockets
from loaded_host import STARTUP_S

MS = 1000
SESSION = 777


@pytest.fixture
def cfg():
    return load_bridge_config("go1")


@pytest.fixture
def core(spec, cfg) -> BridgeCore:
    core = BridgeCore(spec, cfg, load_secret())
    core.on_arm_request(arm_request(load_secret(), now_us(), BIND, "test", SESSION), now_us())
    core.observe_tick(1_000 * MS)
    return core


def target(spec, tick=1_000 * MS, session=SESSION, **fields) -> pd_target_t:
    msg = pd_target_t()
    msg.robot_tick_us, msg.session = tick, session
    values = {"q_des": spec.default_pose, "kp": spec.control.kp, "kd": spec.control.kd} | fields
    for name, value in values.items():
        setattr(msg, name, [float(v) for v in np.broadcast_to(value, 12)])
    return msg


def applied(core) -> bool:
    return not core.command(0).damping


# ------------------------------------------------------------------------------------------------ sessions
def test_only_the_armed_session_drives_the_motors(spec, cfg):
    core = BridgeCore(spec, cfg, load_secret())
    core.observe_tick(0)
    core.on_pd_target(target(spec, tick=0, session=0), 0)  # before any arm: nobody's targets
    assert not applied(core) and core.counts["foreign"] == 1
    core.on_arm_request(arm_request(load_secret(), now_us(), BIND, "deploy", SESSION), now_us())
    core.on_pd_target(target(spec, tick=0, session=SESSION + 1), 0)  # a second publisher
    assert not applied(core) and core.counts["foreign"] == 2
    core.on_pd_target(target(spec, tick=0), 0)
    assert applied(core) and core.counts["targets"] == 1


def test_arming_needs_the_secret_and_is_not_replayable(spec, cfg, core, tmp_path):
    unsigned = arm_request_t()
    unsigned.timestamp_us, unsigned.target, unsigned.session = now_us(), BIND, 99
    core.on_arm_request(unsigned, now_us())
    other_secret = tmp_path / "other" / "secret"
    core.on_arm_request(arm_request(load_secret(other_secret), now_us(), BIND, "lan", 99), now_us())
    signed = arm_request(load_secret(), now_us(), BIND, "deploy", 99)
    old = arm_request(load_secret(), now_us() - 10_000_000, BIND, "deploy", 99)  # 10 s old
    core.on_arm_request(old, now_us())
    assert core.session == SESSION and core.counts["arm_refused"] == 3
    core.on_arm_request(signed, now_us())
    assert core.session == 99
    core.on_arm_request(signed, now_us())  # replayed
    assert core.counts["arm_refused"] == 4


def test_the_secret_must_be_private(tmp_path):
    path = tmp_path / "arm_secret"
    assert len(load_secret(path)) == 64 and (path.stat().st_mode & 0o777) == 0o600
    path.chmod(0o644)
    with pytest.raises(ArmingError, match="readable by you only"):
        load_secret(path)


def test_deploy_refuses_unsigned_arm_requests():
    io = LcmRobotIO("memq://", "arm_")
    try:
        unsigned = arm_request_t()
        unsigned.timestamp_us, unsigned.target = now_us(), "deploy"
        io.node.publish("arm_request", unsigned)
        io.poll(0.0)
        assert not io.take_arm_request() and io.refused_arms == 1
        io.node.publish("arm_request", arm_request(io.secret, now_us(), "deploy", "operator"))
        io.poll(0.0)
        assert io.take_arm_request()
    finally:
        io.close()


def test_deploy_binds_the_bridge_before_its_first_target_and_signs_every_target(spec, cfg):
    io = LcmRobotIO("memq://", "bind_")
    core = BridgeCore(spec, cfg, load_secret())
    core.observe_tick(0)
    bridge = Bridge(core, None, io.node, cfg, follow=False)  # no robot: only its LCM handlers are used
    try:
        from deploy.runtime import PdTarget

        zeros = np.zeros(12)
        io.publish_target(PdTarget(spec.default_pose, zeros, zeros + 20, zeros + 0.5, zeros), 0, 0)
        bridge.handle_lcm()
        assert core.session == io.session and core.counts["targets"] == 1 and applied(core)
    finally:
        io.close()


# ------------------------------------------------------------------------------------------------ bounds and ticks
@pytest.mark.parametrize(
    "field, value",
    [("kp", 1e6), ("kd", 50.0), ("q_des", 3.0), ("dq_des", 100.0), ("tau_ff", 1e3)],
)
def test_targets_outside_the_bounds_are_refused_and_a_stream_of_them_trips(spec, cfg, core, field, value):
    core.on_pd_target(target(spec), 0)
    good = core.command(0)
    for k in range(cfg.refusals_to_trip):
        core.on_pd_target(target(spec, **{field: value}), 1 * MS)
        command = core.command(1 * MS)
        assert command.damping if k == cfg.refusals_to_trip - 1 else command is good  # never the bad one
    assert core.counts["refused"] == cfg.refusals_to_trip and core.counts["targets"] == 1
    assert core.watchdog.tripped and "refused pd_target" in core.watchdog.reason


def test_targets_must_answer_a_tick_the_bridge_has_sent_recently(spec, cfg, core):
    newest = 1_000 * MS
    core.on_pd_target(target(spec, tick=newest + 1), 0)  # the future
    core.on_pd_target(target(spec, tick=newest - round(1e3 * cfg.target_max_age_ms) - 1), 0)  # stale
    assert not applied(core) and core.counts["refused"] == 2
    core.on_pd_target(target(spec, tick=newest - 20 * MS), 0)
    assert applied(core)
    core.on_pd_target(target(spec, tick=newest - 40 * MS), 0)  # older than the last one answered
    assert core.counts["refused"] == 3 and core.counts["targets"] == 1


def test_runtime_targets_are_inside_the_bounds(spec, cfg, core):
    """What the runtime sends (soft start from anywhere in the joint range, the policy's clamped targets,
    damping) is never refused: the bounds only stop what no controller of ours sends."""
    from robot_spec.policy_map import ActionMap

    rng = np.random.default_rng(0)
    actions = ActionMap.from_spec(spec)
    tick = 1_000 * MS
    for _ in range(200):
        q = rng.uniform(np.minimum(spec.position_lower, core.q_lower), np.maximum(spec.position_upper, core.q_upper))
        core.on_pd_target(target(spec, tick=tick, q_des=q), 0)
        a = rng.uniform(-spec.control.action_clip, spec.control.action_clip, 12)
        core.on_pd_target(target(spec, tick=tick, q_des=actions.targets(a)), 0)
        core.on_pd_target(target(spec, tick=tick, kp=0.0, kd=load_bridge_config("go1").damping_kd), 0)
    assert core.counts["refused"] == 0 and core.counts["targets"] == 600


# ------------------------------------------------------------------------------------------------ end to end
def test_a_second_publisher_cannot_drive_the_stand_in(spec):
    """Stand-in + bridge subprocesses: a spoofer sends out-of-range targets with guessed tokens and unsigned arms;
    the stand-in keeps lying in damping (its measured torques stay small) and the bridge counts every one."""
    with LoopbackRobot(profile="none", fast=True, startup_timeout_s=STARTUP_S) as robot:
        states = []
        robot.node.subscribe("joint_state", lambda msg, _t: states.append(msg))
        spoofer = LcmNode(robot.lcm_url, robot.prefix)
        for k in range(100):
            unsigned = arm_request_t()
            unsigned.timestamp_us, unsigned.target, unsigned.session = now_us(), "all", k + 1
            spoofer.publish("arm_request", unsigned)
            tick = states[-1].robot_tick_us if states else 0
            spoofer.publish("pd_target", target(spec, tick=tick, session=k + 1, kp=1e6, q_des=3.0))
            spoofer.publish("pd_target", target(spec, tick=tick, session=k + 1, kp=20.0, q_des=spec.default_pose))
            robot.pump(0.01)
        robot.pump(0.2)
        tau = np.abs([s.tau_est for s in states[-200:]])
        assert len(states) > 100 and tau.max() < 5.0, f"the stand-in was driven: |tau| up to {tau.max():.1f} N·m"
        bridge = robot.processes[1]
        bridge.send_signal(signal.SIGINT)
        bridge.wait(timeout=60)
        summary = robot.process_logs()
        counts = {k: int(v) for k, v in re.findall(r"'(\w+)': (\d+)", summary.rsplit("bridge: stopped", 1)[-1])}
        # (UDP on a loaded host may drop a few: the exact count is the in-process fuzz's to check)
        assert counts["targets"] == 0 and counts["foreign"] > 100 and counts["arm_refused"] > 50, summary[-600:]
        spoofer.close()


def test_a_wildly_exploring_collection_has_no_refused_or_foreign_targets(spec, tmp_path):
    """The normal path is untouched by the bounds: collect with a policy whose actions sit at the clip (targets
    at the joint limits, monitors tripping, resets and re-arms) plus action noise; the bridge refused nothing."""
    import torch
    import yaml

    from real_robot.collect_cli import main as collect_main
    from robot_spec.policy_io import ActorMLP, save_policy

    actor = ActorMLP(spec.observation.dim, spec.num_joints, [32])
    torch.nn.init.zeros_(actor.mlp[-1].weight)
    with torch.no_grad():
        actor.mlp[-1].bias.copy_(torch.tensor([10.0, -10.0] * 6))
    save_policy(actor, spec, tmp_path / "policy.pt")
    runtime = yaml.safe_load(open("configs/deploy/runtime_fast.yaml"))
    (tmp_path / "quick.yaml").write_text(yaml.safe_dump({**runtime, "soft_start_s": 0.6, "stand_s": 0.2}))
    with LoopbackRobot(profile="none", fast=True, startup_timeout_s=STARTUP_S) as robot:
        args = ["--policy", str(tmp_path / "policy.pt"), "--runtime-config", str(tmp_path / "quick.yaml"),
                "--out", str(tmp_path / "log"), "--lcm-url", robot.lcm_url, "--channel-prefix", robot.prefix,
                "--stand-in-profile", "none", "--reset-settle-s", "0.3", "--episodes", "2", "--episode-s", "0.6",
                "--action-noise", "0.5"]  # fmt: skip
        assert collect_main(args) == 0
        bridge = robot.processes[1]
        bridge.send_signal(signal.SIGINT)
        bridge.wait(timeout=60)
        summary = robot.process_logs()
    assert "'refused': 0, 'foreign': 0, 'arm_refused': 0" in summary, summary[-600:]
    assert "'targets': 0" not in summary


def test_lcm_and_the_bridge_stay_on_loopback():
    """`real_robot sockets` on a stand-in, a bridge and this process's LCM node: every socket on loopback."""
    with LoopbackRobot(profile="none", fast=True, startup_timeout_s=STARTUP_S) as robot:
        pids = [str(p.pid) for p in robot.processes] + [str(os.getpid())]
        args = [sys.executable, "-m", "real_robot.cli", "sockets"] + [a for pid in pids for a in ("--pid", pid)]
        result = subprocess.run(args, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stdout + result.stderr
        sockets = process_sockets({p.pid for p in robot.processes} | {os.getpid()})
        assert {s.port for s in sockets} >= {"7667"} and all(s.loopback for s in sockets)
        assert any(s.device == "lo" for s in sockets)  # the LCM sockets: tied to lo, not just 0.0.0.0
        assert "host membership lo 239.255.76.67" in result.stdout


def test_the_sockets_check_fails_on_a_socket_bound_beyond_loopback():
    text = (
        'udp UNCONN 0 0 0.0.0.0%lo:46907 0.0.0.0:* users:(("python",pid=7,fd=5))\n'
        'udp UNCONN 0 0 127.0.0.1:39005 0.0.0.0:* users:(("python",pid=7,fd=13))\n'
        'udp UNCONN 0 0 0.0.0.0:7400 0.0.0.0:* users:(("python",pid=7,fd=12))\n'
        'udp UNCONN 0 0 192.0.2.2:39699 0.0.0.0:* users:(("python",pid=7,fd=16))\n'
        'tcp LISTEN 0 5 [::1]:8080 [::]:* users:(("python",pid=7,fd=3))\n'
    )
    verdicts = [s.loopback for s in parse_ss(text)]
    assert verdicts == [True, True, False, False, True]


def test_deploy_ros2_node_binds_only_loopback(monkeypatch):
    pytest.importorskip("rclpy", reason="the ros2 extra (CPython 3.11 on x86_64)")
    from deploy.commands import RemoteConfig, load_speed_preset
    from deploy.ros2 import Ros2Command

    monkeypatch.delenv("ROS_AUTOMATIC_DISCOVERY_RANGE", raising=False)
    monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE", raising=False)
    monkeypatch.setenv("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    before = {(s.port, s.host) for s in process_sockets({os.getpid()})}
    with Ros2Command(load_speed_preset("low"), RemoteConfig(timeout_s=0.3), f"/hardening_{os.getpid()}"):
        time.sleep(0.5)
        dds = [s for s in process_sockets({os.getpid()}) if (s.port, s.host) not in before]
    assert dds and all(s.loopback for s in dds), [str(s) for s in dds]


# ------------------------------------------------------------------------------------------------ fuzz
def test_fuzzed_lcm_messages_neither_crash_nor_actuate(spec, cfg):
    """Seeded: random bytes and mutated valid messages on every channel, into the bridge's and deploy's
    handlers. Nothing raises, every message is counted (decoded or malformed), and no target is applied."""
    rng = np.random.default_rng(18)
    io = LcmRobotIO("memq://", "fuzz_")
    core = BridgeCore(spec, cfg, load_secret())
    core.observe_tick(0)
    bridge = Bridge(core, None, io.node, cfg, follow=False)
    valid = {name: msg_type().encode() for name, msg_type in CHANNELS.items()}
    valid["pd_target"] = target(spec, tick=0, session=5).encode()
    sent = 0
    try:
        for _ in range(3000):
            name = list(CHANNELS)[rng.integers(len(CHANNELS))]
            data = bytearray(valid[name])
            kind = rng.integers(3)
            if kind == 0:
                data = bytearray(rng.bytes(int(rng.integers(0, 700))))
            elif kind == 1:
                for i in rng.integers(0, len(data), size=int(rng.integers(1, 8))):
                    data[i] = int(rng.integers(256))
            else:
                data = data[: int(rng.integers(0, len(data) + 1))] + bytearray(rng.bytes(int(rng.integers(0, 16))))
            io.node.lc.publish(io.node.channels.of(name), bytes(data))
            sent += 1
            bridge.handle_lcm()
        counted = sum(io.node.received.values()) + sum(io.node.malformed.values())
        assert counted >= sent  # the bridge's subscriptions share the node: each message is counted at least once
        assert core.counts["targets"] == 0 and core.command(0).damping and core.session is None
        assert io.node.malformed["pd_target"] > 0 and io.node.received["joint_state"] >= 0
    finally:
        io.close()


def test_fuzzed_sim_control_messages_never_stop_the_stand_in():
    """The stand-in's channel: well-formed sim_control messages with hostile values (NaN, inf, huge ticks, bad
    motors and actions) are applied or refused with a message; the robot keeps stepping."""
    from real_robot.lcm_types.go1lcm import sim_control_t
    from real_robot.sim_robot import StandInRobot

    robot = StandInRobot("none", port=0, fast=True, lcm_url=None)
    rng = np.random.default_rng(18)
    weird = [np.nan, np.inf, -np.inf, 0.0, -1.0, 1e308, 5.0]
    try:
        for _ in range(150):
            msg = sim_control_t()
            msg.action = str(rng.choice(["fault", "clear_faults", "reset", "remote", "push", "bogus", ""]))
            msg.fault = str(rng.choice(["drop_packets", "freeze_state", "sensor_spike", "sensor_nan", "dead_motor", "x"]))
            msg.motor = int(rng.choice([-1, 0, 11, 12, 999, -5, 2**31 - 1]))
            msg.magnitude, msg.duration_s = float(rng.choice(weird)), float(rng.choice(weird))
            msg.sticks = [float(rng.choice(weird)) for _ in range(4)]
            msg.at_robot_us = int(rng.choice([0, 10**6, 2**62, -(2**62), 2**63 - 1]))
            msg.seed = int(rng.choice([0, 1, -1, 2**63 - 1]))
            robot._on_sim_control(msg, 0)
            for _ in range(2):
                robot.step()
    finally:
        robot.close()


def test_fuzzed_log_files_neither_crash_nor_go_uncounted(tmp_path):
    """Seeded: random byte flips, truncations and crafted frames with valid CRCs (a header announcing a 10^12-
    element field, a footer without an outcome) in episode files; the reader raises only DamagedLogError (one
    line: file and offset) or reads the file, and salvage reports every damaged stretch."""
    import json

    from real_robot.datalog import FOOTER, FRAME, HEADER, DamagedLogError, LogWriter, encode_frame, salvage_episode

    schema = {"timestamp_us": ("int64", ()), "step": ("int64", ())}
    with LogWriter(tmp_path / "src", schema) as writer:
        path = writer.start_episode()
        for step in range(40):
            writer.append({"timestamp_us": np.int64(step), "step": np.int64(step)})
    good = path.read_bytes()
    header_end = FRAME.size + FRAME.unpack_from(good, 0)[2]
    header = json.loads(good[FRAME.size:header_end])
    huge = json.dumps({**header, "schema": {"step": ["<i8", [10**12]]}}).encode()
    crafted = [
        encode_frame(HEADER, huge) + good[header_end:],
        good + encode_frame(FOOTER, b"{}"),
        good + encode_frame(FOOTER, b"[1, 2]"),
        encode_frame(HEADER, b"not json") + good[header_end:],
    ]
    rng = np.random.default_rng(18)
    target, outcomes = tmp_path / "episode_000000.g1log", {"read": 0, "damaged": 0}
    for k in range(300):
        if k < len(crafted):
            data = bytearray(crafted[k])
        else:
            data = bytearray(good)
            for i in rng.integers(0, len(data), size=int(rng.integers(1, 6))):
                data[i] = int(rng.integers(256))
            if rng.random() < 0.3:
                data = data[: int(rng.integers(0, len(data)))]
        target.write_bytes(bytes(data))
        try:
            episode, damage = salvage_episode(target)
        except DamagedLogError as err:
            assert "\n" not in str(err) and err.path == target
            outcomes["damaged"] += 1
            continue
        outcomes["read"] += 1
        assert len(episode) <= 40 and all(d.path == target for d in damage)
    assert sum(outcomes.values()) == 300 and min(outcomes.values()) > 0


# ------------------------------------------------------------------------------------------------ one-line errors
@pytest.mark.parametrize(
    "module, argv",
    [
        ("sim_pretrain.cli", ["eval", "--policy", "p.pt", "--device", "bogus"]),
        ("sim_pretrain.cli", ["train", "--device", "bogus"]),
        ("sim_pretrain.cli", ["eval", "--policy", "p.pt", "--out", "{file}"]),
        ("real_robot.collect_cli", ["--policy", "p.pt", "--device", "bogus"]),
        ("real_robot.collect_cli", ["--policy", "p.pt", "--out", "{file}"]),
        ("deploy.cli", ["run", "--policy", "p.pt", "--speed", "low", "--device", "bogus"]),
        ("deploy.cli", ["run", "--policy", "p.pt", "--speed", "low", "--log-dir", "{file}"]),
        ("uni_o4.cli", ["finetune", "--offline", "x", "--device", "bogus"]),
        ("uni_o4.cli", ["finetune", "--offline", "x", "--out", "{file}"]),
    ],
)
def test_bad_devices_and_output_folders_are_one_line_errors(module, argv, tmp_path, capsys):
    import importlib

    afile = tmp_path / "a_file"
    afile.write_text("")
    argv = [a.replace("{file}", str(afile)) for a in argv]
    with pytest.raises(SystemExit) as exit_:
        importlib.import_module(module).main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and ("--device" in err[-1] or "not a folder" in err[-1]), err


def test_a_policy_whose_contract_does_not_fit_its_weights_is_a_one_line_error(spec, tmp_path, capsys):
    import json

    import torch

    from deploy.cli import main as deploy_main
    from robot_spec.policy_io import CONTRACT_FILE, ActorMLP, load_policy, save_policy

    path = tmp_path / "policy.pt"
    save_policy(ActorMLP(spec.observation.dim, spec.num_joints, [32]), spec, path)
    extra = {CONTRACT_FILE: ""}
    scripted = torch.jit.load(str(path), _extra_files=extra)
    contract = json.loads(extra[CONTRACT_FILE])
    contract["architecture"]["hidden_dims"] = [64]
    torch.jit.save(scripted, str(path), _extra_files={CONTRACT_FILE: json.dumps(contract)})
    with pytest.raises(ValueError, match="does not fit the weights"):
        load_policy(path, spec)
    assert deploy_main(["run", "--policy", str(path), "--speed", "low", "--lcm-url", "memq://"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not fit the weights" in err[0]


def test_an_episode_path_that_is_a_folder_or_a_symlink_loop_is_reported_not_raised(tmp_path):
    from real_robot.datalog import DamagedLogError, read_log_folder

    (tmp_path / "episode_000000.g1log").mkdir()
    (tmp_path / "episode_000001.g1log").symlink_to(tmp_path / "episode_000002.g1log")
    (tmp_path / "episode_000002.g1log").symlink_to(tmp_path / "episode_000001.g1log")
    with pytest.raises(DamagedLogError, match="cannot read it"):
        read_log_folder(tmp_path)
    with pytest.warns(UserWarning):
        log = read_log_folder(tmp_path, skip_damaged=True)
    assert not log.episodes and len(log.damaged) == 3
