"""The SDK ⇄ LCM bridge: the pure core (watchdog, target checks, order remaps), one I/O cycle with a fake SDK,
and end to end the real SDK on loopback: against a bare board in lockstep, and against the stand-in robot."""

from __future__ import annotations

import math
import socket
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from real_robot.bridge import (
    Bridge,
    BridgeConfig,
    BridgeCore,
    RobotClock,
    SdkLink,
    load_bridge_config,
    main,
    read_state,
    remote_msg,
    run_follow,
    sdk_foot_index,
)
from real_robot.arming import BIND, load_secret
from real_robot.arming import arm_request as signed_arm
from real_robot.clock import now_us
from real_robot.lcm_bus import LcmNode
from real_robot.lcm_types.go1lcm import arm_request_t, pd_target_t
from real_robot.sim_robot import StandInRobot
from real_robot.unitree_wire import (
    POS_STOP_F,
    LowState,
    RemoteState,
    answer_tag,
    decode_low_cmd,
    encode_low_state,
    encode_remote,
)
from real_robot.watchdog import Watchdog, WatchdogStatus
from robot_spec.config import ConfigError

MS = 1000  # µs
TICK_US = 2000  # the board's 500 Hz
SOFT_START_S = 1.5  # the stand-in test's ramp from lying to the default pose


@pytest.fixture
def cfg() -> BridgeConfig:
    return load_bridge_config("go1")


SESSION = 12345  # the session the tests' controller binds the bridge to


def make_core(spec, cfg) -> BridgeCore:
    """A core bound to SESSION that has sent robot tick 0 (the targets below answer it)."""
    core = BridgeCore(spec, cfg, load_secret())
    core.on_arm_request(arm_request(BIND, session=SESSION), now_us())
    core.observe_tick(0)
    return core


@pytest.fixture
def core(spec, cfg) -> BridgeCore:
    return make_core(spec, cfg)


def pd_target(spec, sequence=0, tick=0, session=SESSION, **fields) -> pd_target_t:
    """The default pose with the spec's gains unless `fields` (q_des, kp, ...) say otherwise."""
    msg = pd_target_t()
    msg.sequence, msg.robot_tick_us, msg.session = sequence, tick, session
    values = {"q_des": spec.default_pose, "kp": [spec.control.kp] * 12, "kd": [spec.control.kd] * 12} | fields
    for name, value in values.items():
        setattr(msg, name, [float(v) for v in np.broadcast_to(value, 12)])
    return msg


def arm_request(target="bridge", session=0) -> arm_request_t:
    """Signed with the tests' secret (conftest), stamped now."""
    return signed_arm(load_secret(), now_us(), target, "operator", session)


def bind_session(node: LcmNode) -> None:
    node.publish("arm_request", arm_request(BIND, session=SESSION))


def timeout_us(spec, cfg) -> int:
    return cfg.watchdog_periods * round(1e6 * spec.control.policy_dt)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_damping(command, cfg):
    assert command.damping
    np.testing.assert_array_equal(command.kp, 0.0)
    np.testing.assert_array_equal(command.q, POS_STOP_F)  # position loop off
    np.testing.assert_array_equal(command.dq, 0.0)  # velocity loop on: that is the damping
    np.testing.assert_array_equal(command.kd, cfg.damping_kd)
    np.testing.assert_array_equal(command.tau, 0.0)


# ------------------------------------------------------------------------------------------------ pure core
def test_damping_until_the_first_target_then_the_target_in_sdk_order(spec, cfg, core):
    assert_damping(core.command(0), cfg)
    assert not core.watchdog.tripped  # waiting is not a fault

    q = spec.default_pose + 0.01 * np.arange(12)  # distinct values, inside the SDK clamp
    core.on_pd_target(pd_target(spec, q_des=q), now_us=5 * MS)
    command = core.command(6 * MS)
    assert not command.damping
    np.testing.assert_allclose(command.q, spec.to_sdk_order(q))
    assert command.q[0] == pytest.approx(q[3])  # SDK motor 0 is the FR hip, the simulator's joint 3
    np.testing.assert_array_equal(command.kp, spec.control.kp)


def test_watchdog_trips_after_n_periods_and_latches_until_arm_and_fresh_target(spec, cfg, core):
    limit = timeout_us(spec, cfg)
    core.on_pd_target(pd_target(spec), now_us=0)
    assert not core.command(limit).damping  # exactly N periods old is still fresh
    assert_damping(core.command(limit + 1), cfg)
    status = core.watchdog.status()
    assert status.tripped and status.trip_count == 1 and "no pd_target" in status.reason

    # Fresh targets alone do not clear the latch ...
    core.on_pd_target(pd_target(spec), now_us=limit + 2 * MS)
    assert core.command(limit + 3 * MS).damping
    # ... nor an arm request for someone else, nor an arm request until a target arrives after it.
    core.on_arm_request(now_us=now_us(), msg=arm_request("deploy"))
    core.on_pd_target(pd_target(spec), now_us=limit + 4 * MS)
    assert core.command(limit + 5 * MS).damping
    core.on_arm_request(now_us=now_us(), msg=arm_request("bridge"))
    assert core.command(limit + 6 * MS).damping
    core.on_pd_target(pd_target(spec, sequence=7), now_us=limit + 7 * MS)
    assert not core.command(limit + 8 * MS).damping
    assert core.watchdog.status() == WatchdogStatus(tripped=False, reason="", trip_count=1)


def test_arm_request_for_all_rearms_and_a_new_trip_counts_again(spec, cfg, core):
    core.on_pd_target(pd_target(spec), now_us=0)
    core.on_power_violation(level=cfg.power_level)
    assert core.command(1 * MS).damping and "power_protect" in core.watchdog.reason
    core.on_arm_request(now_us=now_us(), msg=arm_request("all"))
    core.on_pd_target(pd_target(spec), now_us=2 * MS)
    assert not core.command(3 * MS).damping
    assert core.command(3 * MS + timeout_us(spec, cfg) + 1).damping
    assert core.watchdog.trip_count == 2


@pytest.mark.parametrize("field", ["q_des", "dq_des", "kp", "kd", "tau_ff"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_target_is_ignored_and_trips(spec, cfg, core, field, bad):
    core.on_pd_target(pd_target(spec), now_us=0)
    values = np.ones(12)
    values[5] = bad
    core.on_pd_target(pd_target(spec, **{field: values}), now_us=1 * MS)
    assert_damping(core.command(2 * MS), cfg)
    assert core.watchdog.tripped and field in core.watchdog.reason
    assert core.counts["rejected"] == 1 and core.counts["targets"] == 1


def test_negative_gains_are_rejected(spec, cfg, core):
    core.on_pd_target(pd_target(spec, kd=-0.5), now_us=0)
    assert core.command(1 * MS).damping and "negative gains" in core.watchdog.reason


def test_targets_outside_the_sdk_clamp_are_clamped_and_counted_not_tripped(spec, cfg, core):
    q = spec.default_pose.copy()
    q[2] = spec.limits.sdk_position_lower[2] - 0.05  # FL calf below its SDK lower limit, inside the URDF range
    core.on_pd_target(pd_target(spec, q_des=q), now_us=0)
    command = core.command(1 * MS)
    assert not command.damping and not core.watchdog.tripped
    sim_q = spec.from_sdk_order(command.q)
    assert sim_q[2] == pytest.approx(spec.limits.sdk_position_lower[2])
    np.testing.assert_allclose(np.delete(sim_q, 2), np.delete(spec.default_pose, 2))
    assert core.counts["clamped"] == 1 and core.counts["refused"] == 0


def test_watchdog_keeps_the_first_reason_and_rejects_a_bad_timeout():
    dog = Watchdog(timeout_us=10)
    dog.trip("first")
    dog.trip("second")
    assert dog.status() == WatchdogStatus(tripped=True, reason="first", trip_count=1)
    with pytest.raises(ValueError):
        Watchdog(timeout_us=0)


def test_robot_clock_unwraps_the_32_bit_tick():
    clock = RobotClock()
    assert clock.observe(2**32 - 1000) == 2**32 - 1000
    assert clock.observe(500) == 2**32 + 500  # wrapped: 1500 µs later
    assert clock.now_us() == 2**32 + 500


def test_state_is_read_in_simulator_joint_and_foot_order(spec):
    assert sdk_foot_index(spec) == [1, 0, 3, 2]  # GO1_FACTS: feet remap
    motors = [SimpleNamespace(q=float(i), dq=10.0 + i, tauEst=20.0 + i) for i in range(20)]
    remote = RemoteState(lx=0.5, ly=-0.25, rx=0.125, ry=-1.0, buttons=RemoteState.button_bits("L2", "A"))
    imu = SimpleNamespace(quaternion=[1, 0, 0, 0], rpy=[0.1, 0.2, 0.3], gyroscope=[1, 2, 3], accelerometer=[0, 0, 9.8])
    low_state = SimpleNamespace(
        tick=123, motorState=motors, imu=imu, footForce=[10, 11, 12, 13], wirelessRemote=list(encode_remote(remote))
    )
    state = read_state(low_state, spec, sdk_foot_index(spec))
    np.testing.assert_array_equal(state.q, spec.from_sdk_order(np.arange(12.0)))
    assert state.q[0] == 3.0  # FL hip is SDK motor 3
    np.testing.assert_array_equal(state.foot_force, [11, 10, 13, 12])  # FL, FR, RL, RR
    msg = remote_msg(state.remote, now_us=1)
    assert (msg.lx, msg.ly, msg.rx, msg.ry, msg.buttons) == (0.5, -0.25, 0.125, -1.0, remote.buttons)


def test_bad_config_values_are_refused():
    with pytest.raises(ConfigError, match="power_level"):
        load_bridge_config("go1", power_level=11)
    with pytest.raises(ConfigError, match="damping_kd"):
        load_bridge_config("go1", damping_kd=0.0)


# ------------------------------------------------------------------------------------------------ one I/O cycle, fake SDK
class FakeRobot:
    """SdkLink's interface without sockets: no LowState ever arrives; records what would be sent."""

    def __init__(self, power_ok: bool = True):
        self.power_ok, self.power_level, self.sent = power_ok, 9, []

    def receive(self) -> bool:
        return False

    def write(self, command) -> None:
        self.written = command

    def protect(self) -> bool:
        return self.power_ok

    def send(self) -> None:
        self.sent.append(self.written)


@pytest.fixture
def node():
    with LcmNode("memq://", prefix=f"u{threading.get_ident()}_") as node:
        yield node


def test_garbage_on_lcm_is_counted_and_ignored(spec, cfg, node):
    bridge = Bridge(make_core(spec, cfg), FakeRobot(), node, cfg, follow=False)
    node.publish("pd_target", pd_target(spec))
    bridge.control()
    for garbage in (b"", b"\x00" * 7, b"garbage bytes on pd_target", b"\xff" * 600):
        node.lc.publish(node.channels.pd_target, garbage)
        node.lc.publish(node.channels.arm_request, garbage)
    node.lc.publish(node.channels.pd_target, arm_request().encode())  # the wrong type
    node.lc.publish(node.channels.arm_request, pd_target(spec).encode())
    node.lc.publish(node.channels.pd_target, pd_target(spec).encode()[:-9])  # truncated
    assert not bridge.control().damping
    assert node.malformed["pd_target"] == 6 and node.malformed["arm_request"] == 5
    assert not bridge.core.watchdog.tripped


def test_power_violation_sends_damping_in_the_same_cycle_and_reports_it(spec, cfg, node):
    statuses = []
    node.subscribe("safety_status", lambda msg, _: statuses.append(msg))
    robot = FakeRobot(power_ok=False)
    bridge = Bridge(make_core(spec, cfg), robot, node, cfg, follow=False)
    assert bridge.control().damping  # waiting: status published once
    node.publish("pd_target", pd_target(spec))
    assert bridge.control().damping and robot.sent[-1].damping
    bridge.control()  # dispatches the status the last cycle published
    assert [s.tripped for s in statuses] == [False, True]
    assert statuses[-1].source == "bridge" and "power_protect" in statuses[-1].reason and statuses[-1].trip_count == 1


def test_bridge_without_the_sdk_exits_with_a_clear_reason(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "unitree_legged_sdk.robot_interface", None)  # import now fails
    assert main(["--duration", "0.1"]) != 0
    err = capsys.readouterr().err
    assert "unitree_legged_sdk" in err and "CPython 3.11 x86_64" in err


def test_command_line_refuses_bad_input(capsys):
    assert main(["--robot-ip", "robot.local"]) == 2
    assert "--robot-ip" in capsys.readouterr().err
    assert main(["--power-level", "0"]) == 2
    assert "power_level must be 1..10" in capsys.readouterr().err
    assert main(["--lcm-url", "udpm://239.255.76.67:7667?ttl=1"]) == 2
    assert "ttl" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ real SDK on the wire
# The bridge (real SDK, --follow pacing, memq:// LCM) in a thread against a bare board on loopback that answers in
# lockstep: one LowState out, one LowCmd back. Robot time is the LowState tick, so every check is exact in robot
# time and independent of how busy the machine is.
@pytest.fixture(scope="module")
def sdk_module():
    return pytest.importorskip("unitree_legged_sdk.robot_interface")  # the wheel exists for CPython 3.11 x86_64 only


class WireRig:
    """Board socket + bridge thread + LCM node."""

    def __init__(self, spec, sdk_module):
        self.board = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.board.bind(("127.0.0.1", 0))
        self.board.settimeout(5.0)
        self.cfg = load_bridge_config("go1", robot_port=self.board.getsockname()[1], local_port=free_udp_port())
        self.node = LcmNode("memq://", prefix=f"w{id(self)}_")
        self.bridge = Bridge(make_core(spec, self.cfg), SdkLink(sdk_module, self.cfg, 12), self.node, self.cfg, follow=True)
        self.joint_states, self.statuses = [], []
        self.node.subscribe("joint_state", lambda msg, _: self.joint_states.append(msg))
        self.node.subscribe("safety_status", lambda msg, _: self.statuses.append(msg))
        self.tick = 0
        self._stop = threading.Event()
        # The board speaks first here, so no idle sends that would break the lockstep.
        running = lambda: not self._stop.is_set()  # noqa: E731
        # A due target is waited for briefly here (see the late-controller test), so a dying publisher trips soon.
        self._thread = threading.Thread(target=run_follow, args=(self.bridge, running, lambda: None, math.inf, 0.5))
        self._thread.start()

    def step(self, state: LowState | None = None):
        """One board cycle: send a LowState 2 ms of robot time after the last, return the LowCmd it answers."""
        self.tick += TICK_US
        state = state or LowState()
        state.tick = self.tick
        self.board.sendto(encode_low_state(state), ("127.0.0.1", self.cfg.local_port))
        return decode_low_cmd(self.board.recv(2048))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.board.close()
        self.node.close()


@pytest.fixture
def rig(spec, sdk_module):
    rig = WireRig(spec, sdk_module)
    yield rig
    rig.close()


def wire_is_damping(cmd, cfg) -> bool:
    legs = slice(0, 12)
    return (
        np.all(cmd.kp[legs] == 0) and np.all(cmd.q[legs] == np.float32(POS_STOP_F))
        and np.all(cmd.dq[legs] == 0) and np.all(cmd.kd[legs] == cfg.damping_kd)
    )  # fmt: skip


def test_wire_state_arrives_in_simulator_order(spec, rig):
    q_sdk = 0.01 * np.arange(20)
    rig.step(LowState(q=q_sdk))  # the bridge dispatches its own joint_state before it answers
    first = rig.joint_states[0]
    np.testing.assert_allclose(first.q, spec.from_sdk_order(q_sdk[:12]).astype(np.float32), rtol=1e-6)
    assert first.robot_tick_us == TICK_US


def test_wire_damping_first_then_target_then_latched_damping_on_timeout(spec, rig):
    cfg = rig.cfg
    assert wire_is_damping(rig.step(), cfg)  # no target yet

    rig.node.publish("pd_target", pd_target(spec))
    cmd = rig.step()
    assert not wire_is_damping(cmd, cfg)
    np.testing.assert_allclose(cmd.q[:12], spec.to_sdk_order(spec.default_pose), atol=1e-6)
    np.testing.assert_allclose(cmd.kp[:12], spec.control.kp)

    # The publisher dies: the target holds for watchdog_periods policy periods of robot time, then damping.
    limit_cycles = timeout_us(spec, cfg) // TICK_US
    held = 0
    while not wire_is_damping(rig.step(), cfg):
        held += 1
        assert held <= limit_cycles + 1, "watchdog did not trip"
    assert held >= limit_cycles - 1  # (±1 cycle: the target may be stamped with the previous tick)
    rig.step()  # the status published on the trip's cycle is dispatched on the next
    assert rig.statuses[-1].tripped and "no pd_target" in rig.statuses[-1].reason

    # Latched: fresh targets alone keep damping; arm_request then a fresh target re-arms.
    for _ in range(3):
        rig.node.publish("pd_target", pd_target(spec))
        assert wire_is_damping(rig.step(), cfg)
    rig.node.publish("arm_request", arm_request("bridge"))
    rig.step()
    rig.node.publish("pd_target", pd_target(spec))
    assert not wire_is_damping(rig.step(), cfg)
    rig.step()
    assert not rig.statuses[-1].tripped and rig.statuses[-1].trip_count == 1


def test_wire_follow_commands_name_the_state_they_answer(rig):
    # The stand-in runs a tick only for a command answering its newest state, so a resend runs none.
    for _ in range(3):
        cmd = rig.step()
        assert cmd.reserve == answer_tag(rig.tick)


def test_wire_follow_waits_for_a_late_controller_instead_of_moving_robot_time(spec, rig):
    # A host too busy to run the controller must pause the lockstep, not let robot time run into the watchdog.
    rig.step()  # the robot clock starts
    rig.node.publish("pd_target", pd_target(spec))
    published_at = []
    late = threading.Timer(0.3, lambda: (published_at.append(time.monotonic()), rig.node.publish("pd_target", pd_target(spec))))
    late.start()
    answered_at = []
    for _ in range(2 * round(spec.control.policy_dt * 1e6 / TICK_US)):  # two policy periods of robot time
        assert not wire_is_damping(rig.step(), rig.cfg)
        answered_at.append(time.monotonic())
    late.join()
    assert answered_at[-1] >= published_at[0], "robot time ran on without the due target"
    assert not rig.bridge.core.watchdog.tripped


def test_wire_power_protect_violation_trips_to_damping(spec, rig):
    rig.node.publish("pd_target", pd_target(spec))
    assert not wire_is_damping(rig.step(), rig.cfg)
    # Every leg motor at 20 N·m and 10 rad/s: 2.4 kW, far above any PowerProtect level (≈ level × 100 W).
    hot = LowState(tau_est=np.r_[np.full(12, 20.0), np.zeros(8)], dq=np.r_[np.full(12, 10.0), np.zeros(8)])
    for _ in range(20):
        rig.node.publish("pd_target", pd_target(spec))
        if wire_is_damping(rig.step(hot), rig.cfg):
            break
    else:
        pytest.fail("PowerProtect never tripped the bridge")
    assert "power_protect" in rig.bridge.core.watchdog.reason


# ------------------------------------------------------------------------------------------------ with the stand-in robot
# Stand-in (MuJoCo, profile "none": exact sensors, lockstep) and bridge (--follow) each in a thread, LCM memq://.
# A soft-start "policy" runs inside the joint_state handler: one pd_target every policy period of robot time.
class StandInRig:
    def __init__(self, spec, sdk_module):
        self.spec = spec
        self.robot = StandInRobot("none", port=0, fast=True, lcm_url=None)
        self.cfg = load_bridge_config("go1", robot_port=self.robot.port, local_port=free_udp_port())
        self.node = LcmNode("memq://", prefix=f"s{id(self)}_")
        self.bridge = Bridge(make_core(spec, self.cfg), SdkLink(sdk_module, self.cfg, 12), self.node, self.cfg, follow=True)
        self.joint_states = []
        self.publishing = self.garbage = False
        self.ramp_start = None
        self.node.subscribe("joint_state", self._on_joint_state)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self.robot.serve_forever),
            threading.Thread(target=run_follow, args=(self.bridge, lambda: not self._stop.is_set(), lambda: None)),
        ]
        for thread in self._threads:
            thread.start()

    def _on_joint_state(self, state, _received_us) -> None:
        self.joint_states.append(state)
        decimation = round(self.spec.control.policy_dt * 1e6 / TICK_US)
        if not self.publishing or len(self.joint_states) % decimation:
            return
        self.ramp_start = self.ramp_start or state
        ramp = min(1.0, (state.robot_tick_us - self.ramp_start.robot_tick_us) / 1e6 / SOFT_START_S)
        q = (1 - ramp) * np.asarray(self.ramp_start.q) + ramp * self.spec.default_pose
        self.node.publish("pd_target", pd_target(self.spec, tick=state.robot_tick_us, q_des=q))
        if self.garbage:
            self.node.lc.publish(self.node.channels.pd_target, b"\xde\xad" * 50)

    def run_for(self, robot_seconds: float, timeout_s: float = 30.0) -> None:
        end, deadline = self.robot.robot_time + robot_seconds, time.monotonic() + timeout_s
        while self.robot.robot_time < end:
            assert time.monotonic() < deadline, "stand-in and bridge stopped exchanging packets"
            time.sleep(0.01)

    def pause_robot(self) -> None:
        """Stop the stand-in and wait until the bridge has published its last LowState."""
        self.robot.stop()
        self._threads[0].join(timeout=5)
        last_tick, deadline = round(self.robot.robot_time * 1e6), time.monotonic() + 5
        while not (self.joint_states and self.joint_states[-1].robot_tick_us == last_tick):
            assert time.monotonic() < deadline, "the last LowState never reached LCM"
            time.sleep(0.01)

    def trunk_height(self) -> float:
        return float(self.robot.data.qpos[2])

    def close(self) -> None:
        self.robot.stop()
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self.robot.close()
        self.node.close()


@pytest.fixture
def stand_in(spec, sdk_module):
    rig = StandInRig(spec, sdk_module)
    yield rig
    rig.close()


def test_stand_in_joint_states_are_the_robots_truth_in_simulator_order(spec, stand_in):
    stand_in.run_for(0.1)
    stand_in.pause_robot()
    truth = stand_in.robot.data
    last = stand_in.joint_states[-1]
    np.testing.assert_allclose(last.q, truth.qpos[7:].astype(np.float32), atol=1e-6)
    np.testing.assert_allclose(last.dq, truth.qvel[6:].astype(np.float32), atol=1e-6)
    assert last.q[0] > 0 > last.q[3]  # lying, the left hips point out (+), the right ones (-): FL before FR


def test_stand_in_stands_then_watchdog_damps_latched_until_rearmed(spec, stand_in):
    lying = stand_in.trunk_height()
    stand_in.publishing = stand_in.garbage = True  # garbage after every target must change nothing
    stand_in.run_for(SOFT_START_S + 1.0)
    assert abs(stand_in.trunk_height() - spec.standing_height) < 0.03 < spec.standing_height - lying
    assert not stand_in.bridge.core.watchdog.tripped and stand_in.node.malformed["pd_target"] > 50
    # The motor law the stand-in realises from the last LowCmd (simulator order; profile "none": gains as sent).
    applied = stand_in.robot.active
    np.testing.assert_allclose(applied.q_des, spec.default_pose, atol=1e-6)
    np.testing.assert_allclose(applied.kp, spec.control.kp)

    # The target publisher dies: damping (position loop off, velocity loop on towards 0) and the robot sits down.
    stand_in.publishing = False
    stand_in.run_for(0.5)
    status = stand_in.bridge.core.watchdog.status()
    assert status.tripped and status.reason.startswith("watchdog")
    applied = stand_in.robot.active
    assert np.all(applied.kp == 0) and np.all(applied.dq_des == 0) and np.all(applied.tau_ff == 0)
    np.testing.assert_allclose(applied.kd, stand_in.cfg.damping_kd)
    assert stand_in.trunk_height() < spec.standing_height - 0.05

    # Latched: fresh targets alone keep damping; an arm request plus fresh targets apply them again.
    stand_in.ramp_start = None
    stand_in.publishing = True
    stand_in.run_for(0.2)
    assert np.all(stand_in.robot.active.kp == 0)
    stand_in.node.publish("arm_request", arm_request("bridge"))
    stand_in.run_for(0.2)
    assert not stand_in.bridge.core.watchdog.tripped
    np.testing.assert_allclose(stand_in.robot.active.kp, spec.control.kp)


def test_command_line_bridge_runs_against_the_stand_in_and_leaves_it_damping(spec, sdk_module):
    robot = StandInRobot("none", port=0, fast=True, lcm_url=None)
    thread = threading.Thread(target=robot.serve_forever)
    thread.start()
    try:
        args = ["--robot-port", str(robot.port), "--local-port", str(free_udp_port()), "--lcm-url", "memq://",
                "--follow", "--duration", "0.5"]  # fmt: skip
        assert main(args) == 0
    finally:
        robot.stop()
        thread.join(timeout=5)
        robot.close()
    assert robot.stats.commands > 10 and robot.stats.malformed_packets == 0
    assert np.all(robot.active.kp == 0) and np.all(robot.active.kd == load_bridge_config("go1").damping_kd)
