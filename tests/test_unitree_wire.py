"""Wire codecs: round trips, malformed input, and agreement with the real Unitree SDK over loopback."""

from __future__ import annotations

import socket
import struct
import time

import numpy as np
import pytest

from real_robot import unitree_wire as wire


def crc32_bitwise(data: bytes) -> int:
    """Unitree's crc32_core transcribed bit by bit: the reference the fast version must match."""
    crc = 0xFFFFFFFF
    for (word,) in struct.iter_unpack("<I", data):
        for bit in range(31, -1, -1):
            top = crc & 0x80000000
            crc = (crc << 1) & 0xFFFFFFFF
            if top:
                crc ^= 0x04C11DB7
            if word >> bit & 1:
                crc ^= 0x04C11DB7
    return crc


def random_state(rng: np.random.Generator) -> wire.LowState:
    quaternion = rng.normal(size=4)
    return wire.LowState(
        quaternion=quaternion / np.linalg.norm(quaternion),
        gyroscope=rng.normal(size=3),
        accelerometer=rng.normal(size=3) * 9.81,
        rpy=rng.uniform(-3, 3, size=3),
        imu_temperature=31,
        motor_mode=np.full(wire.NUM_MOTORS, wire.SERVO_MODE),
        q=rng.uniform(-2, 2, size=wire.NUM_MOTORS),
        dq=rng.normal(size=wire.NUM_MOTORS) * 5,
        ddq=rng.integers(-500, 500, size=wire.NUM_MOTORS).astype(float),
        tau_est=rng.integers(-30 * 256, 30 * 256, size=wire.NUM_MOTORS) / 256,
        motor_temperature=rng.integers(20, 60, size=wire.NUM_MOTORS).astype(float),
        foot_force=rng.integers(0, 300, size=4).astype(float),
        foot_force_est=rng.integers(0, 300, size=4).astype(float),
        tick=int(rng.integers(0, 2**32)),
        wireless_remote=wire.encode_remote(wire.RemoteState(lx=0.5, ly=-0.25, rx=0.125, ry=-1.0, buttons=0x0121)),
        battery_soc=87,
    )


def random_cmd(rng: np.random.Generator) -> wire.LowCmd:
    n = wire.NUM_MOTORS
    return wire.LowCmd(
        mode=np.full(n, wire.SERVO_MODE),
        q=rng.uniform(-2, 2, size=n),
        dq=rng.normal(size=n),
        tau=rng.integers(-20 * wire.TAU_SCALE, 20 * wire.TAU_SCALE, size=n) / wire.TAU_SCALE,
        kp=rng.integers(0, 60 * wire.KP_SCALE, size=n) / wire.KP_SCALE,
        kd=rng.integers(0, 5 * wire.KD_SCALE, size=n) / wire.KD_SCALE,
    )


def assert_states_equal(a: wire.LowState, b: wire.LowState) -> None:
    for name in ("quaternion", "gyroscope", "accelerometer", "rpy", "q", "dq"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-6, atol=1e-6, err_msg=name)
    for name in ("motor_mode", "ddq", "tau_est", "motor_temperature", "foot_force", "foot_force_est"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert (a.imu_temperature, a.tick, a.wireless_remote, a.battery_soc) == (
        b.imu_temperature,
        b.tick,
        b.wireless_remote,
        b.battery_soc,
    )


def test_fast_crc_matches_unitree_bitwise_crc():
    rng = np.random.default_rng(1)
    for n_words in (1, 2, 3, 152, 200):
        data = rng.integers(0, 256, size=4 * n_words, dtype=np.uint8).tobytes()
        assert wire.crc32_core(data) == crc32_bitwise(data)
    with pytest.raises(wire.WireError):
        wire.crc32_core(b"\x00" * 5)


def test_low_state_round_trip():
    state = random_state(np.random.default_rng(2))
    packet = wire.encode_low_state(state)
    assert len(packet) == wire.LOW_STATE_SIZE and packet[:3] == b"\xfe\xef\xff"
    assert_states_equal(wire.decode_low_state(packet), state)


def test_low_cmd_round_trip_and_defaults_disable_the_loops():
    cmd = random_cmd(np.random.default_rng(3))
    decoded = wire.decode_low_cmd(wire.encode_low_cmd(cmd))
    for name in ("mode", "tau", "kp", "kd"):
        np.testing.assert_array_equal(getattr(decoded, name), getattr(cmd, name), err_msg=name)
    np.testing.assert_allclose(decoded.q, cmd.q, rtol=1e-6)
    idle = wire.decode_low_cmd(wire.encode_low_cmd(wire.LowCmd()))
    assert np.all(idle.q >= np.float32(wire.POS_STOP_F)) and np.all(idle.dq >= np.float32(wire.VEL_STOP_F))
    assert np.all(idle.mode == 0)


def test_twelve_leg_values_fill_the_first_slots():
    cmd = wire.LowCmd(mode=np.full(12, wire.SERVO_MODE), q=np.ones(12), kp=np.full(12, 20.0))
    decoded = wire.decode_low_cmd(wire.encode_low_cmd(cmd))
    assert np.all(decoded.kp[:12] == 20.0) and np.all(decoded.kp[12:] == 0.0)
    assert np.all(decoded.q[12:] >= np.float32(wire.POS_STOP_F))
    with pytest.raises(wire.WireError, match="motor values"):
        wire.encode_low_cmd(wire.LowCmd(q=np.zeros(5)))


def test_fixed_point_fields_truncate_saturate_and_zero_nan():
    cmd = wire.LowCmd(tau=np.array([0.01, -0.01, 500.0, np.nan] + [0.0] * 16), kp=np.array([-3.0, 1e6] + [0.0] * 18))
    decoded = wire.decode_low_cmd(wire.encode_low_cmd(cmd))
    assert decoded.tau[:4].tolist() == [2 / 256, -2 / 256, 32767 / 256, 0.0]  # truncated toward zero, as the SDK
    assert decoded.kp[:2].tolist() == [0.0, 65535 / 32]
    state = wire.LowState(q=np.full(20, np.nan), tau_est=np.full(20, np.nan))
    decoded_state = wire.decode_low_state(wire.encode_low_state(state))
    assert np.all(np.isnan(decoded_state.q)) and np.all(decoded_state.tau_est == 0.0)


def test_remote_round_trip_and_buttons():
    buttons = wire.RemoteState.button_bits("L2", "A")
    remote = wire.RemoteState(lx=-1.0, ly=0.5, rx=0.25, ry=-0.75, l2=1.0, buttons=buttons)
    data = wire.encode_remote(remote)
    assert len(data) == wire.REMOTE_SIZE
    assert struct.unpack_from("<H5f", data, 2) == (remote.buttons, -1.0, 0.25, -0.75, 1.0, 0.5)  # btn lx rx ry L2 ly
    decoded = wire.decode_remote(data)
    assert decoded == remote and decoded.pressed("L2") and decoded.pressed("A") and not decoded.pressed("B")
    with pytest.raises(wire.WireError, match="unknown remote button"):
        wire.RemoteState.button_bits("Z")
    with pytest.raises(wire.PacketSizeError):
        wire.decode_remote(data[:-1])


@pytest.mark.parametrize("decode, size", [(wire.decode_low_state, 807), (wire.decode_low_cmd, 614)])
def test_malformed_packets_raise_wire_errors(decode, size):
    good = wire.encode_low_state(wire.LowState()) if size == 807 else wire.encode_low_cmd(wire.LowCmd())
    for bad_size in (b"", good[:-1], good + b"\x00"):
        with pytest.raises(wire.PacketSizeError):
            decode(bad_size)
    flipped = bytearray(good)
    flipped[100] ^= 0x01
    with pytest.raises(wire.PacketCRCError):
        decode(bytes(flipped))
    with pytest.raises(wire.PacketHeaderError):
        decode(b"\x00" + good[1:])
    rng = np.random.default_rng(4)
    for _ in range(50):
        with pytest.raises(wire.WireError):
            decode(rng.integers(0, 256, size=size, dtype=np.uint8).tobytes())


# ----------------------------------------------------------------------------- against the real SDK over loopback

try:
    import unitree_legged_sdk.robot_interface as sdk
except ImportError:  # the SDK wheel exists only for CPython 3.11 on x86_64 Linux
    sdk = None
needs_sdk = pytest.mark.skipif(sdk is None, reason="unitree_legged_sdk not importable (wheel: CPython 3.11 x86_64)")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sdk_link():
    """(SDK UDP object, our board socket, SDK's address) on loopback, as the robot's board would see it."""
    board = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    board.bind(("127.0.0.1", 0))
    board.settimeout(2.0)
    sdk_port = free_udp_port()
    udp = sdk.UDP(wire.LOWLEVEL, sdk_port, "127.0.0.1", board.getsockname()[1])
    yield udp, board, ("127.0.0.1", sdk_port)
    del udp
    board.close()


def sdk_receive(udp, board, address, packet: bytes) -> tuple[int, object]:
    board.sendto(packet, address)
    result = -1
    for _ in range(200):  # the SDK's Recv is non-blocking: poll until the datagram is in
        result = udp.Recv()
        if result != -1:
            break
        time.sleep(0.002)
    state = sdk.LowState()
    udp.GetRecv(state)
    return result, state


@needs_sdk
def test_sdk_low_cmd_bytes_decode_and_match_our_encoder(sdk_link):
    udp, board, _ = sdk_link
    cmd = random_cmd(np.random.default_rng(5))
    cmd.wireless_remote = bytes(range(40))
    sdk_cmd = sdk.LowCmd()
    udp.InitCmdData(sdk_cmd)
    for i in range(wire.NUM_MOTORS):
        m = sdk_cmd.motorCmd[i]
        m.mode, m.q, m.dq, m.tau, m.Kp, m.Kd = int(cmd.mode[i]), cmd.q[i], cmd.dq[i], cmd.tau[i], cmd.kp[i], cmd.kd[i]
    sdk_cmd.wirelessRemote = list(cmd.wireless_remote)
    udp.SetSend(sdk_cmd)
    udp.Send()
    packet, _ = board.recvfrom(2048)
    assert len(packet) == wire.LOW_CMD_SIZE
    decoded = wire.decode_low_cmd(packet)
    for name in ("mode", "tau", "kp", "kd"):
        np.testing.assert_array_equal(getattr(decoded, name), getattr(cmd, name), err_msg=name)
    np.testing.assert_allclose(decoded.q, cmd.q, rtol=1e-6)
    assert decoded.wireless_remote == cmd.wireless_remote
    assert wire.encode_low_cmd(cmd) == packet  # byte for byte, CRC included


@needs_sdk
def test_sdk_accepts_our_low_state(sdk_link):
    state = random_state(np.random.default_rng(6))
    result, got = sdk_receive(*sdk_link, wire.encode_low_state(state))
    assert result == 0
    np.testing.assert_allclose(got.imu.quaternion, state.quaternion, rtol=1e-6)
    np.testing.assert_allclose(got.imu.gyroscope, state.gyroscope, rtol=1e-6)
    np.testing.assert_allclose(got.imu.accelerometer, state.accelerometer, rtol=1e-6)
    np.testing.assert_allclose(got.imu.rpy, state.rpy, rtol=1e-6)
    assert got.imu.temperature == state.imu_temperature
    motors = got.motorState
    np.testing.assert_allclose([motors[i].q for i in range(20)], state.q, rtol=1e-6)
    np.testing.assert_allclose([motors[i].dq for i in range(20)], state.dq, rtol=1e-6)
    assert [motors[i].ddq for i in range(20)] == state.ddq.tolist()
    assert [motors[i].tauEst for i in range(20)] == state.tau_est.tolist()
    assert [motors[i].mode for i in range(20)] == state.motor_mode.tolist()
    assert [motors[i].temperature for i in range(20)] == state.motor_temperature.tolist()
    assert list(got.footForce) == state.foot_force.tolist()
    assert list(got.footForceEst) == state.foot_force_est.tolist()
    assert got.tick == state.tick and got.bms.SOC == state.battery_soc
    assert bytes(got.wirelessRemote) == state.wireless_remote


@needs_sdk
def test_sdk_rejects_a_corrupted_low_state(sdk_link):
    packet = bytearray(wire.encode_low_state(wire.LowState(tick=7)))
    packet[500] ^= 0x10
    result, _ = sdk_receive(*sdk_link, bytes(packet))
    assert result == -3  # the SDK's CRC error
