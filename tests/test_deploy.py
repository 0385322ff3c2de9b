"""deploy: command sources, the observation builder against the simulator's, the controller's phases and the
runtime's pacing over a fake robot; then end to end on the hardware path (the stand-in robot in fast mode, the
real Unitree SDK bridge, LCM): soft start and policy with logging, every monitor tripped by fault injection
with damping on the very step that saw the fault, Ctrl-C, the bridge watchdog when deploy is SIGKILLed, and a
wrong policy refused.
"""

import copy
import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from deploy.cli import main as deploy_main
from deploy.commands import (
    KeyboardCommand,
    RemoteCommand,
    RemoteConfig,
    RemoteSticks,
    ScheduledCommand,
    load_schedule,
    load_speed_preset,
)
from deploy.command_sources import make_command_source
from deploy.lcm_io import LcmRobotIO
from deploy.record import record_schema
from deploy.runtime import BridgeStatus, Controller, Phase, RobotState, Runtime, RuntimeConfig, load_runtime_config
from deploy.safety import SafetyMonitor, load_safety_config
from deploy.session import RunLog, run_meta
from real_robot.datalog import read_log_folder
from real_robot.lcm_bus import now_us
from real_robot.loopback import LoopbackRobot
from robot_spec.config import ConfigError
from robot_spec.observation import ObservationLayout
from robot_spec.policy_io import ActorMLP, load_policy, save_policy
from robot_spec.policy_map import ObservationBuilder
from loaded_host import STARTUP_S

QUICK_START = {"soft_start_s": 0.6, "stand_s": 0.4}  # robot time; the stand-in stands up fine this fast


# ------------------------------------------------------------------------------------------------ commands
def test_high_speed_preset_is_the_training_command_range():
    from sim_pretrain.env_config import CommandConfig

    high, train = load_speed_preset("high"), CommandConfig()
    assert high.ranges() == [train.lin_vel_x, train.lin_vel_y, train.yaw_rate]
    low = load_speed_preset("low")
    assert np.all(low.high <= high.high) and np.all(low.low >= high.low)


def test_remote_sticks_scale_to_the_preset_and_stop_when_stale():
    preset = load_speed_preset("low")
    remote = RemoteCommand(preset, RemoteConfig(deadzone=0.05, timeout_s=0.5))
    full_ahead_left = RemoteSticks(lx=-1.0, ly=1.0, rx=-1.0, ry=0.0, age_s=0.01)
    np.testing.assert_allclose(remote.command(0.0, full_ahead_left), preset.high)
    half_back_right = RemoteSticks(lx=0.5, ly=-0.5, rx=0.5, ry=0.0, age_s=0.01)
    np.testing.assert_allclose(remote.command(0.0, half_back_right), 0.5 * preset.low)
    np.testing.assert_allclose(remote.command(0.0, RemoteSticks(0.02, 0.03, -0.04, 0.0, 0.01)), 0.0)  # deadzone
    np.testing.assert_allclose(remote.command(0.0, RemoteSticks(0.0, 1.0, 0.0, 0.0, age_s=0.6)), 0.0)
    np.testing.assert_allclose(remote.command(0.0, None), 0.0)


def test_schedule_segments_in_time_and_refused_beyond_the_preset(tmp_path):
    high = load_speed_preset("high")
    schedule = load_schedule("walk", high)
    source = ScheduledCommand(schedule)
    first, second = schedule.segments[0], schedule.segments[1]
    np.testing.assert_allclose(source.command(0.5 * first.duration_s, None), first.command)
    np.testing.assert_allclose(source.command(first.duration_s + 0.01, None), second.command)
    assert schedule.repeat
    np.testing.assert_allclose(source.command(schedule.duration_s + 0.01, None), first.command)

    fast = tmp_path / "fast.yaml"
    fast.write_text("segments:\n  - {duration_s: 1.0, vx: 0.9}\n")
    assert load_schedule(str(fast), high).segments[0].vx == 0.9
    with pytest.raises(ConfigError, match="outside the speed preset"):
        load_schedule(str(fast), load_speed_preset("low"))
    with pytest.raises(ConfigError, match="not found"):
        load_schedule(str(tmp_path / "none.yaml"), high)
    once = tmp_path / "once.yaml"
    once.write_text("repeat: false\nsegments:\n  - {duration_s: 1.0, vx: 0.2}\n")
    np.testing.assert_allclose(ScheduledCommand(load_schedule(str(once), high)).command(1.5, None), 0.0)


def test_keyboard_needs_a_terminal_and_steers_by_keys():
    preset = load_speed_preset("low")
    with open(os.devnull) as not_a_tty, pytest.raises(ValueError, match="not a TTY"):
        KeyboardCommand(preset, stream=not_a_tty)
    master, slave = os.openpty()
    with os.fdopen(slave) as tty_in:
        with KeyboardCommand(preset, step_fraction=0.25, stream=tty_in) as keys:
            os.write(master, b"ww" + b"a" + b"e" * 9)
            np.testing.assert_allclose(
                keys.command(0.0), [0.5 * preset.high[0], 0.25 * preset.high[1], preset.low[2]]
            )  # the turn saturates at the preset's end
            os.write(master, b" ")
            np.testing.assert_allclose(keys.command(0.1), 0.0)
    os.close(master)


# ------------------------------------------------------------------------------------------------ observation
def test_observation_equals_the_simulators(spec):
    from sim_pretrain.env import Go1Env
    from sim_pretrain.env_config import EnvConfig, NoiseConfig

    env = Go1Env(EnvConfig(num_envs=2, num_threads=1, noise=NoiseConfig(enabled=False), seed=3))
    builder = ObservationBuilder(spec)
    gen = torch.Generator().manual_seed(0)
    for t in range(5):
        env.step(0.5 * torch.randn(2, 12, generator=gen))
        m = env.measured
        obs = builder.build(
            m["quat"][1].numpy(), m["ang_vel"][1].numpy(), env.commands[1].numpy(), m["joint_pos"][1].numpy(),
            m["joint_vel"][1].numpy(), env.actions[1].numpy(),
        )  # fmt: skip
        torch.testing.assert_close(obs[0], env.get_observations()["policy"][1], atol=1e-5, rtol=1e-5)
    env.close()


# ------------------------------------------------------------------------------------------------ controller + runtime
def save_constant_policy(spec, path, action: float = 0.0):
    """A policy whose every action is `action` (0: the robot holds the default pose)."""
    actor = ActorMLP(spec.observation.dim, spec.num_joints, [32])
    with torch.no_grad():
        actor.mlp[-1].weight.zero_()
        actor.mlp[-1].bias.fill_(action)
    save_policy(actor, spec, path, {"source": "test"})
    return path


class FakeRobot:
    """A kinematic robot: each poll is 2 ms of robot time, joints move part-way to the PD target when Kp > 0."""

    def __init__(self, spec, q0):
        n = spec.num_joints
        self.state = RobotState(
            robot_tick_us=0, body_tick_us=0, stamp_us=0, received_s=time.monotonic(), repeats=0, tick_step_us=2000,
            q=np.array(q0, float), dq=np.zeros(n), tau_est=np.zeros(n),
            quaternion=np.array([1.0, 0, 0, 0]), rpy=np.zeros(3), gyro=np.zeros(3), accelerometer=np.zeros(3),
            foot_force=np.zeros(4),
        )  # fmt: skip
        self.targets, self.statuses = [], []
        self.frozen, self.silent, self.arm = False, False, False
        self.bridge = None
        self.waiting = 0  # board cycles whose states arrived while nobody polled

    def poll(self, timeout_s):
        """The waiting cycles, then one board cycle: a new state, the same state again (frozen), or nothing
        (silent)."""
        for _ in range(self.waiting):
            self.cycle(0.0)
        self.waiting = 0
        self.cycle(timeout_s)

    def cycle(self, timeout_s):
        s, target = self.state, self.targets[-1] if self.targets else None
        if self.silent:
            time.sleep(timeout_s)
            return
        if self.frozen:
            s.repeats += 1
            return
        s.robot_tick_us += 2000
        s.body_tick_us, s.received_s, s.repeats = s.robot_tick_us, time.monotonic(), 0
        if target is not None:
            s.tau_est = target.kp * (target.q_des - s.q) - target.kd * s.dq  # the PD the motors apply
            s.q = s.q + 0.3 * (target.q_des - s.q) * (target.kp > 0)

    def remote(self):
        return None

    def odometry_at(self, stamp_us):
        return None

    def bridge_status(self):
        return self.bridge

    def take_arm_request(self):
        arm, self.arm = self.arm, False
        return arm

    def publish_target(self, target, sequence, robot_tick_us):
        self.targets.append(copy.deepcopy(target))  # the controller's buffer: valid during the call only

    def publish_status(self, trip, trip_count):
        self.statuses.append((trip, trip_count))


@pytest.fixture()
def fake_rig(spec, tmp_path):
    def build(bias=0.0, safety_changes=None, **runtime_changes):
        cfg = RuntimeConfig(**{"soft_start_s": 0.2, "stand_s": 0.1, "realtime": False, **runtime_changes})
        safety = SafetyMonitor(spec, dataclasses.replace(load_safety_config("go1"), **(safety_changes or {})))
        commands = ScheduledCommand(load_schedule("walk", load_speed_preset("high")))
        policy = load_policy(save_constant_policy(spec, tmp_path / "p.pt", bias), spec)
        controller = Controller(spec, policy, safety, commands, cfg)
        lying = spec.default_pose + np.tile([0.0, 0.3, -0.8], 4)
        robot = FakeRobot(spec, lying)
        return Runtime(controller, robot, cfg), robot

    return build


def test_soft_start_ramps_to_the_default_pose_then_the_policy_acts(spec, fake_rig):
    runtime, robot = fake_rig(bias=0.4)
    records = []
    runtime.on_step = records.append
    runtime.run(max_steps=30)
    ramp = int(round(0.2 / spec.control.policy_dt))
    start = robot.targets[0].q_des
    np.testing.assert_allclose(robot.targets[ramp // 2].q_des, 0.5 * (start + spec.default_pose))
    np.testing.assert_allclose(robot.targets[ramp].q_des, spec.default_pose)
    phases = [r["phase"] for r in records]
    assert phases[: ramp + 5] == [Phase.SOFT_START] * (ramp + 5) and phases[-1] == Phase.POLICY
    first_policy = phases.index(Phase.POLICY)
    assert records[first_policy - 1]["robot_tick_us"] == (first_policy - 1) * 20_000  # one step per 20 ms robot time
    # Policy phase: target = default + action_scale × action with the spec's gains.
    target = robot.targets[-1]
    np.testing.assert_allclose(target.q_des, spec.default_pose + spec.control.action_scale * 0.4, atol=1e-6)
    np.testing.assert_allclose(target.kp, spec.control.kp)
    np.testing.assert_allclose(target.kd, spec.control.kd)
    # The observation carries the last executed action (zero at the first policy step).
    last_action = spec.observation.slices()["last_action"]
    np.testing.assert_allclose(records[first_policy]["obs"][last_action], 0.0)
    np.testing.assert_allclose(records[-1]["obs"][last_action], 0.4, rtol=1e-6)
    assert all(status == (None, 0) for status in robot.statuses)


def test_targets_beyond_the_joint_limits_are_clamped_on_the_robot_as_in_the_simulator(spec, fake_rig):
    from sim_pretrain.env import Go1Env
    from sim_pretrain.env_config import EnvConfig

    action = 2.9  # within the action-rate monitor's step; every calf target lands beyond its upper limit
    # The fake robot moves its joints toward a target with zero velocity readings: a 0.7 rad step is what the
    # joint_reading monitor rightly calls a spike, so it is out of this test.
    runtime, robot = fake_rig(bias=action, safety_changes={"max_reading_jump": 10.0})
    runtime.run(max_steps=30)
    assert runtime.controller.phase == Phase.POLICY
    unclamped = spec.default_pose + spec.control.action_scale * action
    calves = slice(2, None, 3)
    assert (unclamped[calves] > spec.position_upper[calves]).all()
    np.testing.assert_allclose(robot.targets[-1].q_des[calves], spec.position_upper[calves])
    np.testing.assert_allclose(np.delete(robot.targets[-1].q_des, np.s_[2::3]), np.delete(unclamped, np.s_[2::3]),
                               atol=1e-6)  # fmt: skip
    env = Go1Env(EnvConfig(num_envs=1, num_threads=1, seed=0))
    env.step(torch.full((1, 12), action))
    np.testing.assert_allclose(env.prev_targets[0], robot.targets[-1].q_des, atol=1e-6)  # the PD target it ran
    env.close()


def test_a_trip_damps_on_the_same_step_latches_and_rearms_into_soft_start(spec, fake_rig):
    runtime, robot = fake_rig()
    runtime.run(max_steps=20)
    robot.state.dq[7] = np.nan
    record = runtime.step()
    kd = load_safety_config("go1").damping_kd
    assert record["phase"] == Phase.DAMPING and record["trip"].reason == "non_finite"
    np.testing.assert_allclose(robot.targets[-1].kp, 0.0)
    np.testing.assert_allclose(robot.targets[-1].kd, kd)
    robot.state.dq[7] = 0.0  # the fault clears, the trip stays latched
    runtime.run(max_steps=3)
    assert robot.targets[-1].kp.max() == 0.0 and robot.statuses[-1][0].reason == "non_finite"
    robot.arm = True
    record = runtime.step()
    assert record["phase"] == Phase.SOFT_START and record["trip"] is None
    np.testing.assert_allclose(robot.targets[-1].q_des, robot.state.q)  # the ramp starts where the robot is


@pytest.mark.parametrize("fault", ["frozen", "silent"])
def test_a_frozen_or_silent_robot_trips_the_stale_state_monitor(spec, fake_rig, fault):
    """Frozen: states keep coming with the same tick (robot time passes by messages); silent: nothing comes
    (robot time passes by the wall clock, as on a real robot). In real time a stall of this host ages the state
    too, so the trip is judged by the state ages the steps saw: on the first step whose state is older than the
    limit, on none before, and within limit / period + 1 steps (each step ages the frozen state by a period)."""
    runtime, robot = running_in_real_time(fake_rig, steps=12)
    setattr(robot, fault, True)
    limit_ms = load_safety_config("go1").stale_state_ms
    records = [runtime.step()]
    while records[-1]["trip"] is None and len(records) < int(limit_ms / 20) + 1:
        records.append(runtime.step())
    assert records[-1]["trip"] is not None and records[-1]["trip"].reason == "stale_state"
    ages_ms = [r["context"].state_age_us / 1e3 for r in records]
    assert ages_ms[-1] > limit_ms and all(age <= limit_ms for age in ages_ms[:-1]), ages_ms
    assert robot.targets[-1].kp.max() == 0.0


def running_in_real_time(fake_rig, steps: int):
    """A real-time fake rig after `steps` untripped steps. A stall of this busy host can age the state (robot time
    passes by the wall clock) or space two steps out enough to trip a monitor before the test's own fault: then
    build it again (a few times; a host that stalls every time fails the test)."""
    for _ in range(5):
        runtime, robot = fake_rig(realtime=True)
        runtime.run(max_steps=steps)
        if runtime.controller.safety.trip is None:
            break
    assert runtime.controller.safety.trip is None, f"the host stalled every attempt: {runtime.controller.safety.trip}"
    return runtime, robot


def test_a_stalled_loop_trips_the_overrun_monitor_in_real_time(spec, fake_rig):
    safety = load_safety_config("go1")
    stall_s = safety.loop_overrun_factor * spec.control.policy_dt + 0.02
    for _ in range(5):
        runtime, robot = running_in_real_time(fake_rig, steps=5)
        time.sleep(stall_s)  # the host stalls the loop while the robot's states keep arriving, unread
        robot.waiting = int(stall_s / 0.002)
        record = runtime.step()  # on the newest state: the stall is an overrun, the robot is not silent
        if record["context"].state_age_us <= 1e3 * safety.stale_state_ms:
            break  # (else this busy host also stalled between the newest state and the step: stale in real time)
    assert record["context"].step_interval_s > stall_s
    assert record["trip"].reason == "loop_overrun" and robot.targets[-1].kp.max() == 0.0


def test_stop_request_damps_then_returns(spec, fake_rig):
    runtime, robot = fake_rig(stop_damping_s=0.1)
    runtime.run(max_steps=5)
    runtime.request_stop()
    last = runtime.run(max_steps=100)
    assert last["trip"].reason == "operator_stop" and runtime.step_count == 5 + 5
    assert robot.targets[-1].kp.max() == 0.0


def test_a_bridge_trip_trips_deploy_but_reports_from_before_a_rearm_do_not(spec, fake_rig):
    runtime, robot = fake_rig()
    runtime.run(max_steps=3)
    # A report stamped before the bridge can have seen our first target says nothing about us ...
    robot.bridge = BridgeStatus(tripped=True, reason="watchdog", stamp_us=runtime.armed_at_us - 1)
    assert runtime.step()["trip"] is None
    # ... a later one does.
    robot.bridge = BridgeStatus(tripped=True, reason="power_protect", stamp_us=runtime.armed_at_us + 1)
    record = runtime.step()
    assert record["trip"].reason == "bridge" and "power_protect" in record["trip"].detail
    robot.arm = True  # the operator re-arms bridge and deploy; the bridge's last report still says tripped
    runtime.run(max_steps=5)
    assert runtime.controller.safety.trip is None and robot.targets[-1].kp.max() > 0
    robot.bridge = BridgeStatus(tripped=False, reason="", stamp_us=runtime.armed_at_us + 1)
    assert runtime.step()["trip"] is None


# ------------------------------------------------------------------------------------------------ command line
def test_a_policy_with_another_observation_layout_is_refused(spec, tmp_path, capsys):
    other = dataclasses.replace(spec, observation=ObservationLayout(spec.observation.terms[:-1], 1))
    save_policy(ActorMLP(other.observation.dim, 12, [8]), other, tmp_path / "other.pt")
    code = deploy_main(["run", "--policy", str(tmp_path / "other.pt"), "--speed", "low", "--no-log"])
    err = capsys.readouterr().err
    assert code == 2 and "does not match robot spec" in err and "observation" in err


# ------------------------------------------------------------------------------------------------ on the wire
@pytest.fixture(scope="module")
def robot():
    pytest.importorskip("unitree_legged_sdk.robot_interface", reason="the bridge needs the Unitree SDK")
    with LoopbackRobot(profile="none", fast=True, startup_timeout_s=STARTUP_S) as robot:
        yield robot


@pytest.fixture(scope="module")
def policy_file(spec, tmp_path_factory):
    return save_constant_policy(spec, tmp_path_factory.mktemp("policy") / "zero.pt")


class LoopbackRig:
    """A runtime on the loopback robot, and every pd_target it published as the bridge received it."""

    def __init__(self, spec, robot, policy_file, on_step=None, commands=None):
        self.robot, self.spec = robot, spec
        self.targets: dict[int, object] = {}  # pd_target by sequence, as the bridge heard them
        self.records: dict[int, dict] = {}  # runtime records by step
        robot.node.subscribe("pd_target", lambda msg, _t: self.targets.__setitem__(msg.sequence, msg))
        robot.reset()  # lying, motors off, no faults
        cfg = load_runtime_config("runtime_fast", QUICK_START)
        self.safety_cfg = load_safety_config("go1")
        commands = commands or ScheduledCommand(load_schedule("stand", load_speed_preset("low")))
        policy = load_policy(policy_file, spec)
        self.controller = Controller(spec, policy, SafetyMonitor(spec, self.safety_cfg), commands, cfg)
        self.io = LcmRobotIO(robot.lcm_url, robot.prefix)
        self.runtime = Runtime(self.controller, self.io, cfg, on_step=self._on_step)
        self.user_on_step = on_step
        self.runtime.wait_for_state()
        self._arm()

    def _arm(self) -> None:
        """Run until the runtime and the bridge are both armed. Between tests no controller runs, so the bridge may
        have latched a watchdog trip, and its status (~10 Hz) can reach the runtime after a few steps."""
        for _ in range(20):
            self.runtime.run(max_steps=10)
            status = self.io.bridge_status()
            if not self.controller.safety.tripped and status is not None and not status.tripped:
                return
            self.robot.arm("all")
        raise AssertionError(f"not armed: {self.controller.safety.trip}, bridge {self.io.bridge_status()}")

    def _on_step(self, record):
        self.records[record["step"]] = record
        self.robot.node.handle(0.0)  # keep the observer's socket drained
        if self.user_on_step is not None:
            self.user_on_step(record)

    def run_to_policy(self, extra_steps: int):
        record = self.runtime.run(max_steps=200, until=lambda r: r["phase"] == Phase.POLICY)
        assert record["phase"] == Phase.POLICY, f"no policy phase: {record['trip']}"
        return self.runtime.run(max_steps=extra_steps)

    def published(self, sequence: int):
        deadline = time.monotonic() + 2.0
        while sequence not in self.targets and time.monotonic() < deadline:
            self.robot.node.handle(0.01)
        return self.targets[sequence]

    def close(self):
        self.io.close()


def test_soft_start_then_policy_with_a_log_the_offline_dataset_reads(spec, robot, policy_file, tmp_path):
    policy = load_policy(policy_file, spec)
    meta = run_meta(spec, policy, load_runtime_config("runtime_fast"), load_safety_config("go1"))
    records = []
    with RunLog(tmp_path / "log", spec, meta) as log:
        rig = LoopbackRig(spec, robot, policy_file, on_step=lambda r: (records.append(r), log.on_step(r)))
        rig.run_to_policy(extra_steps=30)
        rig.runtime.latch("timeout", "test over")
        rig.runtime.step()
        rig.close()

    lying, standing = records[5], [r for r in records if r["phase"] == Phase.SOFT_START][-1]
    default = spec.default_pose
    # From lying far from the default pose to standing at it (Kp 20 holds it with a sag, as measured in the spec).
    assert np.abs(lying["state"].q - default).max() > 1.0 and lying["odometry"].position[2] < 0.1
    assert np.abs(standing["state"].q - default).max() < 0.5
    np.testing.assert_allclose(rig.published(standing["step"]).q_des, default)  # the ramp ended at the default pose
    assert standing["odometry"].position[2] == pytest.approx(spec.standing_height, abs=0.03)
    policy_steps = [r for r in records if r["phase"] == Phase.POLICY]
    for r in policy_steps:  # what the bridge received: default pose (zero action) with the spec's gains
        msg = rig.published(r["step"])
        np.testing.assert_allclose(msg.q_des, default, atol=1e-6)
        np.testing.assert_allclose(msg.kp, spec.control.kp)
        np.testing.assert_allclose(msg.kd, spec.control.kd)

    (episode,) = read_log_folder(tmp_path / "log").episodes
    r = episode.records
    assert set(r) == set(record_schema(spec)) and episode.outcome == "timeout"
    assert episode.meta["policy_id"] == policy.policy_id
    assert (np.diff(r["step"]) == 1).all() and np.median(np.diff(r["robot_tick_us"])) == 20_000
    phases = r["phase"].tolist()
    assert phases == sorted(phases) and phases[-1] == Phase.DAMPING
    assert r["tripped"].tolist() == [0] * (len(phases) - 1) + [1]
    # The logged observation is the one the logged measurements give (rebuilt with the shared builder).
    acting = np.flatnonzero(r["phase"] == Phase.POLICY)
    builder = ObservationBuilder(spec)
    for t in acting:
        last_action = r["action"][t - 1] if t > acting[0] else np.zeros(12)
        obs = builder.build(r["quaternion"][t], r["gyro"][t], r["command"][t], r["q"][t], r["dq"][t], last_action)
        np.testing.assert_allclose(r["obs"][t], obs[0].numpy(), atol=1e-5)
    from uni_o4.log_dataset import LogDataConfig, dataset_from_log_folder

    data, report = dataset_from_log_folder(tmp_path / "log", spec, LogDataConfig())
    assert report.transitions == len(acting) and np.isfinite(data.rewards.numpy()).all()


FAULTS = [  # fault, motor, magnitude -> the monitor that must trip
    ("sensor_nan", 2, 0.0, "non_finite"),
    ("sensor_spike", 2, 1.5, "joint_position"),
    ("dead_motor", 1, 0.0, "motor_response"),
    ("fall", -1, 0.0, "orientation"),
    ("freeze_state", -1, 0.0, "stale_state"),
    ("drop_packets", -1, 0.0, "stale_state"),
]


@pytest.mark.parametrize("fault, motor, magnitude, monitor", FAULTS, ids=[f[0] for f in FAULTS])
def test_fault_trips_its_monitor_and_the_same_step_publishes_damping(spec, robot, policy_file, fault, motor,
                                                                     magnitude, monitor):  # fmt: skip
    rig = LoopbackRig(spec, robot, policy_file)
    try:
        before = rig.run_to_policy(extra_steps=5)
        robot.sim_control("fault", fault=fault, motor=motor, magnitude=magnitude)
        record = rig.runtime.run(max_steps=150, until=lambda r: r["trip"] is not None)
        trip = record["trip"]
        assert trip is not None and trip.reason == monitor, trip
        k = record["step"]
        assert rig.published(k - 1).kp[0] == spec.control.kp  # the step before: still the policy's target
        damping = rig.published(k)
        np.testing.assert_array_equal(damping.kp, 0.0)
        np.testing.assert_array_equal(damping.kd, rig.safety_cfg.damping_kd)
        assert record["phase"] == Phase.DAMPING and before["trip"] is None
        assert rig.runtime.run(max_steps=3)["trip"] == trip  # latched
        if fault in ("sensor_nan", "sensor_spike"):  # the first step that measured the fault tripped
            clean, faulty = rig.records[k - 1]["state"].q[motor], record["state"].q[motor]
            assert abs(clean - spec.default_pose[motor]) < 0.5 and not abs(faulty - clean) < magnitude / 2
    finally:
        robot.sim_control("clear_faults")
        rig.close()


def test_the_operators_remote_steers_through_the_bridge(spec, robot, policy_file):
    preset = load_speed_preset("low")
    rig = LoopbackRig(spec, robot, policy_file, commands=RemoteCommand(preset, load_runtime_config().remote))
    try:
        robot.sim_control("remote", sticks=(-1.0, 0.5, 0.5, 0.0))  # lx left, ly half ahead, rx half right
        record = rig.run_to_policy(extra_steps=10)
        np.testing.assert_allclose(record["command"], [0.5 * preset.high[0], preset.high[1], 0.5 * preset.low[2]],
                                   atol=1e-6)  # fmt: skip
    finally:
        robot.sim_control("remote")
        rig.close()


# ------------------------------------------------------------------------------------------------ ROS 2 commands
class TwistPublisher:
    """A ROS 2 node of its own publishing geometry_msgs/Twist (vx, vy, yaw rate) at 20 Hz: a teleop node."""

    def __init__(self, topic: str):
        import rclpy
        from geometry_msgs.msg import Twist

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("test_teleop", context=self.context)
        self.publisher, self.twist_type = self.node.create_publisher(Twist, topic, 10), Twist
        self.command: tuple[float, float, float] | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.wait(0.05):
            if self.command is not None:
                msg = self.twist_type()
                msg.linear.x, msg.linear.y, msg.angular.z = self.command
                self.publisher.publish(msg)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.node.destroy_node()
        self.context.try_shutdown()


def wait_for(predicate, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def ros2_commands(monkeypatch):
    """`--commands ros2:<topic>` as deploy builds it, and a publisher on that topic; a domain of this process's."""
    pytest.importorskip("rclpy", reason="the ros2 extra (CPython 3.11 on x86_64)")
    monkeypatch.delenv("ROS_AUTOMATIC_DISCOVERY_RANGE", raising=False)
    monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE", raising=False)
    monkeypatch.setenv("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))  # concurrent runs on one host stay apart
    topic = f"/test_cmd_vel_{os.getpid()}"
    commands = make_command_source(f"ros2:{topic}", load_speed_preset("low"), RemoteConfig(timeout_s=0.3))
    publisher = TwistPublisher(topic)
    yield commands, publisher
    publisher.close()
    commands.close()


def test_ros2_twist_is_clipped_to_the_preset_and_a_silent_publisher_stops_the_robot(ros2_commands):
    commands, publisher = ros2_commands
    preset = load_speed_preset("low")
    assert os.environ["FASTDDS_DEFAULT_PROFILES_FILE"].endswith("fastdds_loopback.xml")  # set before rclpy.init
    np.testing.assert_array_equal(commands.command(0.0), 0.0)  # nothing heard yet: stand
    publisher.command = (10.0, -10.0, 0.1)
    assert wait_for(lambda: commands.command(0.0)[0] > 0), "no Twist arrived"
    np.testing.assert_allclose(commands.command(0.0), [preset.high[0], preset.low[1], 0.1])
    publisher.command = (float("nan"), 0.0, 0.0)  # dropped; the last good command stands until it goes stale
    assert wait_for(lambda: commands.dropped >= 2)
    publisher.command = None  # the publisher goes quiet
    assert wait_for(lambda: not commands.command(0.0).any(), timeout_s=2.0)


def test_a_bad_ros2_topic_is_refused_with_a_clear_error():
    pytest.importorskip("rclpy", reason="the ros2 extra (CPython 3.11 on x86_64)")
    for spec in ("ros2:", "ros2:bad topic"):
        with pytest.raises(ValueError, match="is not a ROS 2 topic name"):
            make_command_source(spec, load_speed_preset("low"), RemoteConfig())


def test_a_ros2_twist_steers_through_the_bridge(spec, robot, policy_file, ros2_commands):
    commands, publisher = ros2_commands
    publisher.command = (0.2, 0.1, -0.3)
    assert wait_for(lambda: commands.command(0.0).any()), "no Twist arrived"
    rig = LoopbackRig(spec, robot, policy_file, commands=commands)
    try:
        record = rig.run_to_policy(extra_steps=10)
        np.testing.assert_allclose(record["command"], load_speed_preset("low").clip(np.array([0.2, 0.1, -0.3])))
    finally:
        rig.close()


def start_deploy(robot, policy_file, *extra) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "deploy.cli", "run", "--policy", str(policy_file), "--speed", "low",
         "--commands", "schedule:stand", "--runtime-config", "runtime_fast", "--lcm-url", robot.lcm_url,
         "--channel-prefix", robot.prefix, *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def safety_statuses(robot) -> dict[str, list]:
    """Every safety_status from now on, by source ("bridge", "deploy")."""
    statuses = {"bridge": [], "deploy": []}
    robot.node.subscribe("safety_status", lambda msg, _t: statuses.setdefault(msg.source, []).append(msg))
    return statuses


def wait_until_deploy_drives_the_bridge(robot, deploy, statuses, started_us: int) -> None:
    """Until the deploy process has run half a second with neither it nor the bridge tripped. The bridge may
    still be latched from the last runtime (deploy then trips on that too): re-arm both until they are live. The
    process imports torch and loads the policy first: ~5 s on an idle host, over 20 s on a loaded one."""
    deadline, armed_at = time.monotonic() + 120, 0.0
    while True:
        assert time.monotonic() < deadline and deploy.poll() is None, "deploy never drove the bridge"
        robot.node.handle(0.05)
        bridge, ours = statuses["bridge"], [s for s in statuses["deploy"] if s.timestamp_us > started_us]
        if not bridge or not ours:
            continue
        if bridge[-1].tripped or ours[-1].tripped:
            if time.monotonic() - armed_at > 0.5:
                robot.arm("all")
                armed_at = time.monotonic()
        elif len(ours) > 25 and bridge[-1].timestamp_us > ours[0].timestamp_us:
            return


def test_ctrl_c_damps_then_exits_and_the_default_log_ends_with_operator_stop(robot, policy_file, tmp_path):
    statuses = safety_statuses(robot)
    robot.reset()
    started_us = now_us()
    deploy = start_deploy(robot, policy_file, "--log-dir", str(tmp_path / "log"))
    try:
        wait_until_deploy_drives_the_bridge(robot, deploy, statuses, started_us)
        deploy.send_signal(signal.SIGINT)
        assert deploy.wait(timeout=60) == 0  # damping for stop_damping_s, the log closed: seconds on a loaded host
    finally:
        if deploy.poll() is None:
            deploy.kill()
            deploy.wait()
    robot.node.handle(0.1)
    last = robot.node.latest["pd_target"].msg
    assert max(last.kp) == 0.0 and min(last.kd) > 0  # it left the robot damping
    (episode,) = read_log_folder(tmp_path / "log").episodes
    assert episode.outcome == "operator_stop" and episode.records["tripped"][-1] == 1


def test_the_bridge_watchdog_damps_when_deploy_is_killed(robot, policy_file):
    statuses = safety_statuses(robot)
    robot.reset()
    started_us = now_us()
    deploy = start_deploy(robot, policy_file, "--no-log")
    try:
        wait_until_deploy_drives_the_bridge(robot, deploy, statuses, started_us)
        os.kill(deploy.pid, signal.SIGKILL)
        deploy.wait()
        bridge = statuses["bridge"]
        trips_before = bridge[-1].trip_count
        deadline = time.monotonic() + 30  # the bridge's wait for a late controller (FOLLOW_CONTROLLER_WAIT_S), then the watchdog
        while not bridge[-1].tripped:
            assert time.monotonic() < deadline, "the bridge kept applying the dead process's last target"
            robot.node.handle(0.05)
        assert "no pd_target" in bridge[-1].reason and bridge[-1].trip_count == trips_before + 1
    finally:
        if deploy.poll() is None:
            deploy.kill()
            deploy.wait()


def test_a_killed_run_leaves_no_stand_in_or_bridge_behind(tmp_path):
    pytest.importorskip("unitree_legged_sdk.robot_interface", reason="the bridge needs the Unitree SDK")
    script = tmp_path / "run.py"
    script.write_text(
        "import time\nfrom real_robot.loopback import LoopbackRobot\n"
        f"with LoopbackRobot(profile='none', fast=True, startup_timeout_s={STARTUP_S}) as robot:\n"
        "    print(*[p.pid for p in robot.processes], flush=True)\n    time.sleep(60)\n"
    )
    repo = Path(__file__).resolve().parent.parent
    run = subprocess.Popen([sys.executable, str(script)], cwd=repo, stdout=subprocess.PIPE, text=True)
    children = [int(pid) for pid in run.stdout.readline().split()]
    assert len(children) == 2
    run.kill()  # SIGKILL: no cleanup code of the run's own can help
    run.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in children)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False
