"""The stand-in Go1 under the real Unitree SDK over loopback: protocol, PD, faults, malformed input, pacing."""

from __future__ import annotations

import socket
import threading
import time
import uuid

import mujoco
import numpy as np
import pytest

from real_robot import sim_robot, unitree_wire as wire
from real_robot.lcm_bus import DEFAULT_LCM_URL, LcmNode
from real_robot.lcm_types.go1lcm import sim_control_t
from robot_spec.reality_gap import load_reality_gap
from real_robot.sim_robot import MotorLaw, StandInRobot

try:
    import unitree_legged_sdk.robot_interface as sdk
except ImportError:  # the SDK wheel exists only for CPython 3.11 on x86_64 Linux
    sdk = None
needs_sdk = pytest.mark.skipif(sdk is None, reason="unitree_legged_sdk not importable (wheel: CPython 3.11 x86_64)")

TICKS_PER_S = round(1 / sim_robot.BOARD_DT)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SdkClient:
    """The unmodified SDK as the robot's low-level client, commanding leg joints in simulator order."""

    def __init__(self, robot: StandInRobot):
        self.spec = robot.spec
        self.udp = sdk.UDP(wire.LOWLEVEL, free_udp_port(), "127.0.0.1", robot.port)
        self.cmd = sdk.LowCmd()
        self.udp.InitCmdData(self.cmd)
        self.state = sdk.LowState()

    def send(self, q=None, kp=0.0, kd=0.0, mode=wire.SERVO_MODE) -> None:
        q_sdk = np.full(self.spec.num_joints, wire.POS_STOP_F) if q is None else self.spec.to_sdk_order(np.asarray(q))
        for i in range(self.spec.num_joints):
            m = self.cmd.motorCmd[i]
            m.mode, m.q, m.dq, m.tau, m.Kp, m.Kd = mode, float(q_sdk[i]), 0.0, 0.0, kp, kd
        self.udp.SetSend(self.cmd)
        self.udp.Send()

    def receive(self, polls: int = 50) -> int:
        """Recv() result: 0 when a good LowState came in (the SDK's Recv does not block, so poll briefly)."""
        for _ in range(polls):
            result = self.udp.Recv()
            if result != -1:
                self.udp.GetRecv(self.state)
                return result
            time.sleep(0.0002)
        return -1

    def joint_q(self) -> np.ndarray:
        return self.spec.from_sdk_order(np.array([self.state.motorState[i].q for i in range(self.spec.num_joints)]))

    def close(self) -> None:
        del self.udp


@pytest.fixture
def make_robot():
    robots, clients = [], []

    def make(profile="none", with_client=True, **kwargs):
        kwargs = {"port": 0, "fast": True, "lcm_url": None, **kwargs}
        robot = StandInRobot(load_reality_gap(profile), **kwargs)
        robots.append(robot)
        if not with_client:
            return robot
        clients.append(SdkClient(robot))
        return robot, clients[-1]

    yield make
    for client in clients:
        client.close()
    for robot in robots:
        robot.stop()
        robot.close()


def exchange(robot: StandInRobot, client: SdkClient, ticks: int, **command) -> int:
    """`ticks` lockstep cycles of LowCmd -> board tick -> LowState; returns how many LowStates the SDK accepted."""
    accepted = 0
    for _ in range(ticks):
        client.send(**command)
        robot.step()
        accepted += client.receive() == 0
    return accepted


def stand_up(robot: StandInRobot, client: SdkClient, ramp_s: float = 1.5, hold_s: float = 0.5) -> None:
    """Soft start as deploy does it: ramp the PD target from the measured pose to the default pose."""
    spec, c = robot.spec, robot.spec.control
    exchange(robot, client, 1, q=None, kp=0.0, kd=0.0, mode=0)
    start = client.joint_q()
    ramp = round(ramp_s * TICKS_PER_S)
    for k in range(ramp):
        alpha = (k + 1) / ramp
        exchange(robot, client, 1, q=(1 - alpha) * start + alpha * spec.default_pose, kp=c.kp, kd=c.kd)
    exchange(robot, client, round(hold_s * TICKS_PER_S), q=spec.default_pose, kp=c.kp, kd=c.kd)


def trunk_height(robot: StandInRobot) -> float:
    return float(robot.data.qpos[2])


def rpy(client: SdkClient) -> np.ndarray:
    return np.array(client.state.imu.rpy)


# ------------------------------------------------------------------------------------------- the board's PD


def test_motor_law_honours_stop_values_modes_and_limits():
    profile = load_reality_gap("strong")
    law = MotorLaw.realise(
        servo=np.array([True, True, True, False, True]),
        q=np.array([1.0, np.float32(wire.POS_STOP_F), 1.0, 1.0, np.nan]),
        dq=np.array([np.float32(wire.VEL_STOP_F), 1.0, 0.0, 0.0, 0.0]),
        tau=np.array([0.5, 0.5, 0.0, 5.0, 5.0]),
        kp=np.array([2.0, 2.0, 1e4, 2.0, 2.0]),
        kd=np.array([1.0, 1.0, 0.0, 1.0, 1.0]),
        profile=profile,
    )
    tau = law.torque(q=np.zeros(5), dq=np.zeros(5), limit=np.full(5, 10.0))
    s = profile.motor_strength
    assert tau[0] == pytest.approx(s * (0.5 + 2.0 * profile.kp_factor))  # velocity term off
    assert tau[1] == pytest.approx(s * (0.5 + 1.0 * profile.kd_factor))  # position term off
    assert tau[2] == 10.0  # clipped
    assert tau[3] == 0.0 and tau[4] == 0.0  # motor off; a NaN in the command switches the motor off


def test_unknown_profile_and_bad_fault_are_clear_errors(make_robot):
    with pytest.raises(ValueError, match="known: laggy_weak, mild, none, strong, unmodelled"):
        load_reality_gap("nope")
    robot = make_robot(with_client=False)
    with pytest.raises(ValueError, match="unknown fault"):
        robot.inject_fault("gremlins")
    with pytest.raises(ValueError, match="joint index"):
        robot.inject_fault("dead_motor", motor=12)


# ------------------------------------------------------------------------------------------- protocol


@needs_sdk
def test_sdk_receives_states_only_after_it_has_spoken(make_robot):
    robot, client = make_robot()
    robot.step()
    assert client.receive(polls=5) == -1  # no client address yet: the board stays silent
    assert exchange(robot, client, 3, mode=0) == 3
    s = client.state
    assert s.tick == round(robot.robot_time * 1e6) == 4 * 2000
    assert np.linalg.norm(s.imu.quaternion) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(client.joint_q(), robot.data.qpos[7:], atol=1e-5)  # profile none: exact sensors
    assert s.imu.accelerometer[2] == pytest.approx(9.81, abs=0.3)
    assert all(s.motorState[i].mode == 0 for i in range(12))  # motors off at start
    assert trunk_height(robot) < 0.5 * robot.spec.standing_height  # lying down


@needs_sdk
@pytest.mark.parametrize("profile, min_height_fraction", [("none", 0.93), ("strong", 0.7)])
def test_pd_at_default_pose_stands_the_robot_up(make_robot, profile, min_height_fraction):
    robot, client = make_robot(profile)
    stand_up(robot, client)
    height = trunk_height(robot)
    c = robot.spec.control
    exchange(robot, client, TICKS_PER_S // 2, q=robot.spec.default_pose, kp=c.kp, kd=c.kd)
    print(f"{profile}: standing at {height:.3f} m (spec {robot.spec.standing_height} m)")
    assert min_height_fraction * robot.spec.standing_height < height < 1.1 * robot.spec.standing_height
    assert abs(trunk_height(robot) - height) < 0.01  # and stays up
    assert np.all(np.abs(rpy(client)[:2]) < 0.35)
    assert all(client.state.motorState[i].mode == wire.SERVO_MODE for i in range(12))


@needs_sdk
def test_damping_lets_the_robot_sink_slower_than_motors_off(make_robot):
    robot, client = make_robot("none")
    stand_up(robot, client, ramp_s=1.0, hold_s=0.2)
    standing = np.empty(mujoco.mj_stateSize(robot.model, mujoco.mjtState.mjSTATE_FULLPHYSICS))
    mujoco.mj_getState(robot.model, robot.data, standing, mujoco.mjtState.mjSTATE_FULLPHYSICS)
    heights = {}
    for name, command in {"damping": dict(kp=0.0, kd=3.0), "off": dict(mode=0)}.items():
        mujoco.mj_setState(robot.model, robot.data, standing, mujoco.mjtState.mjSTATE_FULLPHYSICS)
        exchange(robot, client, TICKS_PER_S // 5, q=None, **command)
        heights[name] = trunk_height(robot)
    print(f"after 0.2 s: damping {heights['damping']:.3f} m, motors off {heights['off']:.3f} m")
    assert heights["off"] < heights["damping"] < robot.spec.standing_height - 0.01


@needs_sdk
def test_commands_act_after_the_profile_latency(make_robot):
    robot, client = make_robot("strong")
    latency_ticks = round(robot.profile.actuator_latency_s / sim_robot.BOARD_DT)
    applied = []
    for _ in range(latency_ticks + 2):
        client.send(q=robot.spec.default_pose, kp=20.0, kd=0.5)
        robot.step()
        applied.append(np.abs(robot.applied_torque).max())
    assert latency_ticks > 0 and all(t == 0.0 for t in applied[:latency_ticks]) and applied[latency_ticks] > 0.0


# ------------------------------------------------------------------------------------------- faults on the wire


@needs_sdk
def test_drop_freeze_and_expiry(make_robot):
    robot, client = make_robot()
    exchange(robot, client, 2, mode=0)
    robot.inject_fault("drop_packets", duration_s=0.01)
    assert exchange(robot, client, 5, mode=0) == 0
    assert exchange(robot, client, 2, mode=0) == 2  # expired after 10 ms of robot time
    robot.inject_fault("freeze_state")
    exchange(robot, client, 1, mode=0)
    frozen_tick = client.state.tick
    assert exchange(robot, client, 4, mode=0) == 4 and client.state.tick == frozen_tick
    robot.clear_faults()
    exchange(robot, client, 1, mode=0)
    assert client.state.tick == round(robot.robot_time * 1e6) > frozen_tick


@needs_sdk
def test_sensor_faults(make_robot):
    robot, client = make_robot()
    exchange(robot, client, 1, mode=0)
    gyro = np.array(client.state.imu.gyroscope)
    robot.inject_fault("sensor_spike", motor=4, magnitude=0.5)
    exchange(robot, client, 1, mode=0)
    error = client.joint_q() - robot.data.qpos[7:]
    assert error[4] == pytest.approx(0.5, abs=1e-4) and np.all(np.abs(np.delete(error, 4)) < 1e-4)
    robot.inject_fault("sensor_spike", motor=-1, magnitude=2.0)
    exchange(robot, client, 1, mode=0)
    assert np.all(np.array(client.state.imu.gyroscope) - gyro > 1.5)
    robot.clear_faults()
    robot.inject_fault("sensor_nan", motor=7)
    exchange(robot, client, 1, mode=0)
    q = client.joint_q()
    assert np.isnan(q[7]) and np.all(np.isfinite(np.delete(q, 7)))
    robot.inject_fault("sensor_nan", motor=-1)
    exchange(robot, client, 1, mode=0)
    assert np.all(np.isnan(client.joint_q())) and np.isnan(client.state.imu.quaternion[0])


@needs_sdk
def test_dead_motor_fall_push_reset_and_remote(make_robot):
    robot, client = make_robot()
    spec = robot.spec
    robot.inject_fault("dead_motor", motor=2)
    exchange(robot, client, 3, q=spec.default_pose, kp=20.0, kd=0.5)
    tau_est = spec.from_sdk_order(np.array([client.state.motorState[i].tauEst for i in range(12)]))
    assert tau_est[2] == 0.0 and np.count_nonzero(tau_est) == 11
    robot.clear_faults()

    exchange(robot, client, 2, q=spec.default_pose, kp=20.0, kd=0.5)
    healthy = robot.applied_torque.copy()
    robot.inject_fault("weak_motor", motor=5, magnitude=0.3)
    exchange(robot, client, 1, q=spec.default_pose, kp=20.0, kd=0.5)
    tau_est = spec.from_sdk_order(np.array([client.state.motorState[i].tauEst for i in range(12)]))
    law = robot.active.torque(robot.data.qpos[7:] + robot.bias.q, robot.data.qvel[6:], robot.motors.torque_limit)
    assert abs(healthy[5]) > 0.5 and tau_est[5] == pytest.approx(0.3 * law[5], abs=0.3)
    with pytest.raises(ValueError, match="weak_motor magnitude"):
        robot.inject_fault("weak_motor", motor=5, magnitude=1.5)
    robot.clear_faults()

    robot.set_remote(lx=0.5, ly=-0.25, rx=1.0, ry=-1.0)
    exchange(robot, client, 1, mode=0)
    remote = wire.decode_remote(bytes(client.state.wirelessRemote))
    assert (remote.lx, remote.ly, remote.rx, remote.ry) == (0.5, -0.25, 1.0, -1.0)

    robot.push((0.0, 1.0))
    exchange(robot, client, 1, mode=0)
    assert robot.data.qvel[1] > 0.5

    robot.inject_fault("fall")
    exchange(robot, client, TICKS_PER_S, mode=0)
    assert np.max(np.abs(rpy(client)[:2])) > 1.0  # tipped over, seen in the IMU

    robot.reset()
    exchange(robot, client, 1, mode=0)
    assert np.all(np.abs(rpy(client)[:2]) < 0.1) and trunk_height(robot) < 0.5 * spec.standing_height
    assert client.state.tick == round(robot.robot_time * 1e6)  # the board's clock runs on through a reset


def test_fast_mode_never_idles_while_a_lockstep_bridge_waits_for_its_controller():
    from real_robot.bridge import FOLLOW_CONTROLLER_WAIT_S

    assert sim_robot.FAST_IDLE_TIMEOUT_S > FOLLOW_CONTROLLER_WAIT_S  # an idle tick would make runs irreproducible


def test_a_scheduled_seeded_reset_makes_what_follows_repeat_exactly(make_robot):
    """Two boards that ran different histories measure the same, tick for tick, after the same scheduled reset
    with the same noise stream; another stream measures differently (noise is on: the check is not vacuous)."""

    def after_reset(ticks_before: int, stream: int, late: bool = False) -> list[bytes]:
        robot = make_robot("strong", with_client=False)
        robot.push((0.5, 0.0))  # a different history before the reset
        for _ in range(ticks_before):
            robot.step()
        at_s = robot.robot_time + (-0.004 if late else 0.006)
        robot.reset(seed=stream, at_s=at_s)
        packets = []
        while len(packets) < 30:
            robot.step()
            if robot.robot_time > at_s + 1e-9:
                packets.append(strip_tick(robot.last_packet))
        landed_s = robot.robot_time - robot.ticks_since_reset * sim_robot.BOARD_DT
        assert landed_s == pytest.approx(robot.robot_time - 30 * sim_robot.BOARD_DT if late else at_s)
        assert robot.stats.late_requests == int(late)  # one that came too late acted at once, and is counted
        return packets

    first = after_reset(7, stream=3)
    assert first == after_reset(25, stream=3)
    assert first != after_reset(7, stream=4)
    after_reset(7, stream=3, late=True)


def strip_tick(packet: bytes) -> bytes:
    state = wire.decode_low_state(packet)
    state.tick = 0
    return wire.encode_low_state(state)


# ------------------------------------------------------------------------------------------- malformed input


@needs_sdk
def test_malformed_packets_are_counted_and_ignored(make_robot):
    robot, client = make_robot()
    exchange(robot, client, 1, mode=0)
    rng = np.random.default_rng(0)
    good = wire.encode_low_cmd(wire.LowCmd())
    corrupted = bytearray(good)
    corrupted[30] ^= 0xFF
    junk = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (0, 1, 613, 614, 615, 1500)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        for packet in [*junk, bytes(corrupted), good[:-1]]:
            stranger.sendto(packet, ("127.0.0.1", robot.port))
        robot.step()
    assert robot.stats.malformed_packets == len(junk) + 2
    assert client.receive() == 0  # states still go to the SDK, not to the stranger
    assert exchange(robot, client, 2, mode=0) == 2


# ------------------------------------------------------------------------------------------- serving, LCM, CLI


@needs_sdk
def test_fast_mode_runs_in_lockstep_and_advances_without_a_client(make_robot):
    robot, client = make_robot("strong", fast=True)
    server = threading.Thread(target=robot.serve_forever, daemon=True)
    server.start()
    ticks, start = 300, time.perf_counter()
    received = 0
    for _ in range(ticks):
        client.send(mode=0)
        received += client.receive(polls=1000) == 0
    elapsed = time.perf_counter() - start
    print(f"fast mode: {ticks * sim_robot.BOARD_DT / elapsed:.1f}x real time, {ticks / elapsed:.0f} ticks/s")
    idle_from = robot.stats.ticks
    deadline = time.monotonic() + 3 * sim_robot.FAST_IDLE_TIMEOUT_S
    while robot.stats.ticks == idle_from and time.monotonic() < deadline:
        time.sleep(0.05)
    robot.stop()
    server.join(timeout=2)
    assert not server.is_alive()
    assert received >= 0.9 * ticks and idle_from >= ticks  # a long stall of this busy machine may cost an exchange
    assert robot.stats.ticks > idle_from  # the client went quiet: time still advances


@needs_sdk
def test_fast_mode_runs_no_tick_for_a_resend_of_a_command_answering_an_older_state(make_robot):
    """A lockstep bridge that heard nothing for a while resends its command, naming the state it answers; the
    stand-in had already ticked on the first copy, so the resend must not run a second tick (nor draw a latency):
    otherwise a run on a busy host differs from the same run on an idle one."""
    robot, client = make_robot("strong", fast=True)
    server = threading.Thread(target=robot.serve_forever, daemon=True)
    server.start()
    client.send(mode=0)  # untagged (0): always a tick, as from any client
    assert client.receive(polls=5000) == 0
    answered = client.state.tick
    client.cmd.reserve = wire.answer_tag(answered)
    client.send(mode=0)  # answers the newest state: a tick
    assert client.receive(polls=5000) == 0 and client.state.tick > answered
    ticks = robot.stats.ticks
    client.send(mode=0)  # the same answer again: a resend
    deadline = time.monotonic() + 1.5  # (under FAST_IDLE_TIMEOUT_S, after which the board ticks on its own)
    while robot.stats.resent_commands == 0 and time.monotonic() < deadline:  # the server thread took it in
        time.sleep(0.01)
    assert robot.stats.ticks == ticks and robot.stats.resent_commands == 1
    client.cmd.reserve = wire.answer_tag(client.state.tick)
    client.send(mode=0)  # the next answer: a tick
    assert client.receive(polls=5000) == 0
    assert robot.stats.ticks == ticks + 1 and robot.stats.commands == 3
    robot.stop()
    server.join(timeout=2)


@needs_sdk
def test_real_time_mode_serves_states(make_robot):
    robot, client = make_robot("none", fast=False)
    server = threading.Thread(target=robot.serve_forever, kwargs={"duration_s": 0.2}, daemon=True)
    server.start()
    client.send(mode=0)
    received = sum(client.receive(polls=100) == 0 for _ in range(20))
    server.join(timeout=5)
    assert not server.is_alive() and robot.robot_time == pytest.approx(0.2)
    assert received >= 10


def test_lcm_sim_control_and_odometry(make_robot):
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    robot = make_robot("none", with_client=False, lcm_url=DEFAULT_LCM_URL, channel_prefix=prefix)
    operator = LcmNode(DEFAULT_LCM_URL, prefix)
    odometry = []
    operator.subscribe("odometry", lambda msg, _: odometry.append(msg))
    msg = sim_control_t()
    msg.action, msg.sticks = "remote", [0.25, 0.5, -0.25, -0.5]
    operator.publish("sim_control", msg)
    bad = sim_control_t()
    bad.action = "explode"
    operator.publish("sim_control", bad)
    for _ in range(2 * sim_robot.ODOMETRY_PERIOD_TICKS):
        robot.step()
        time.sleep(0.002)  # let multicast loopback deliver
    for _ in range(3 * sim_robot.ODOMETRY_PERIOD_TICKS):
        robot.step()
    while operator.handle(0.05) > 0:
        pass
    operator.close()
    assert (robot.remote.lx, robot.remote.ly, robot.remote.rx, robot.remote.ry) == (0.25, 0.5, -0.25, -0.5)
    assert len(odometry) == 5  # 100 Hz of robot time
    last = odometry[-1]
    assert last.timestamp_us == round(robot.robot_time * 1e6)  # fast mode: robot time, as the bridge's --follow
    np.testing.assert_allclose(last.position, robot.data.qpos[:3])


def test_cli_rejects_bad_input_and_runs(capsys):
    assert sim_robot.main(["--profile", "nope", "--port", "0", "--lcm-url", "memq://"]) == 2
    assert "known: laggy_weak, mild, none, strong, unmodelled" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sim_robot.main(["--lcm-url", "udpm://239.255.76.67:7667?ttl=1"])
    assert sim_robot.main(["--port", "0", "--channel-prefix", "a.*", "--lcm-url", "memq://"]) == 2
    assert "channel prefix" in capsys.readouterr().err
    # real time: a fast stand-in with no client would idle FAST_IDLE_TIMEOUT_S per tick
    run = ["--profile", "none", "--port", "0", "--duration", "0.05", "--lcm-url", "memq://"]
    assert sim_robot.main(run) == 0
    assert "25 ticks" in capsys.readouterr().out
