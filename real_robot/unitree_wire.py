"""Byte-exact codecs for the Go1 low-level UDP packets, as unitree-legged-sdk 3.8 and the robot's board speak them.

The layouts below were found by experiment against the real SDK (`unitree_legged_sdk.robot_interface`) over
127.0.0.1 and are checked against it in tests/test_unitree_wire.py. Everything is little-endian and packed.

    LowState, board -> SDK, 807 bytes        LowCmd, SDK -> board, 614 bytes
    0    head FE EF, levelFlag FF, reserve   0    head FE EF, levelFlag FF, reserve
    4    SN u32[2], version u32[2]           4    SN u32[2], version u32[2]
    20   bandWidth u16                       20   bandWidth u16
    22   imu: quaternion f32[4] (w,x,y,z),   22   motorCmd[20], 27 bytes each: mode u8, q f32, dq f32,
         gyroscope, accelerometer, rpy            tau i16 (x256), Kp u16 (x32), Kd u16 (x16), reserve u32[3]
         f32[3] each, temperature i8         562  bms: off u8, reserve u8[3]
    75   motorState[20], 32 bytes each:      566  wirelessRemote u8[40]
         mode u8, q f32, dq f32, ddq i16,    606  reserve u32
         tauEst i16 (x256), q_raw f32,       610  crc u32 over bytes 0..607
         dq_raw f32, ddq_raw i16,
         temperature i8, reserve u32[2]
    715  bms (24 bytes; SOC at 718)
    739  footForce i16[4], footForceEst i16[4]
    755  tick u32
    759  wirelessRemote u8[40]
    799  reserve u32
    803  crc u32 over bytes 0..799

The SDK sends tau, Kp and Kd as fixed-point integers (value x scale, truncated toward zero) and reads tauEst the
same way; ddq travels as a plain int16. The CRC is Unitree's crc32_core: CRC-32/MPEG-2 (polynomial 0x04C11DB7,
init 0xFFFFFFFF, no reflection, no final xor) fed each little-endian 32-bit word most significant bit first, over
all whole words of the packet but the last. The SDK's Recv() returns 0 for a good LowState, -3 when the CRC does
not match (also for a short packet, whose missing tail fails the CRC), and -1 when nothing arrived or the head is
not FE EF.

The 40 wirelessRemote bytes are Unitree's xRockerBtnDataStruct: head u8[2], btn u16 (bit i = REMOTE_BUTTONS[i]),
lx, rx, ry, L2, ly f32, idle u8[16].

API (stable; the bridge's tests depend on it):
    encode_low_state(LowState) -> bytes        decode_low_state(bytes) -> LowState
    encode_low_cmd(LowCmd) -> bytes            decode_low_cmd(bytes) -> LowCmd
    encode_remote(RemoteState) -> bytes        decode_remote(bytes) -> RemoteState
    crc32_core(bytes) -> int
    WireError (a ValueError) and its kinds PacketSizeError, PacketHeaderError, PacketCRCError.
Per-motor arrays are in SDK motor order (20 slots; the first 12 are the legs FR, FL, RR, RL; encoding also
accepts 12), float64 except the int64 modes. Encoding saturates
values outside a fixed-point field's range (the SDK would wrap them around) and writes NaN there as 0; float
fields carry NaN through unchanged. SN, version and bandWidth are sent as zero and ignored when decoding.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass, field

import numpy as np

NUM_MOTORS = 20
LOW_STATE_SIZE = 807
LOW_CMD_SIZE = 614
HEAD = (0xFE, 0xEF)
LOWLEVEL = 0xFF  # levelFlag of low-level packets
POS_STOP_F = 2.146e9  # a q target this large disables the position term of the motor's PD
VEL_STOP_F = 16000.0  # a dq target this large disables the velocity term
SERVO_MODE = 0x0A  # motor mode: closed-loop FOC; 0x00 is off

TAU_SCALE = 256  # fixed-point scales of the integer fields
KP_SCALE = 32
KD_SCALE = 16

REMOTE_SIZE = 40
REMOTE_BUTTONS = (
    "R1", "L1", "start", "select", "R2", "L2", "F1", "F2",
    "A", "B", "X", "Y", "up", "right", "down", "left",
)  # fmt: skip

_HEADER = [
    ("head", "u1", (2,)),
    ("level_flag", "u1"),
    ("frame_reserve", "u1"),
    ("sn", "<u4", (2,)),
    ("version", "<u4", (2,)),
    ("band_width", "<u2"),
]
_IMU = np.dtype(
    [
        ("quaternion", "<f4", (4,)),
        ("gyroscope", "<f4", (3,)),
        ("accelerometer", "<f4", (3,)),
        ("rpy", "<f4", (3,)),
        ("temperature", "i1"),
    ]
)
_MOTOR_STATE = np.dtype(
    [
        ("mode", "u1"),
        ("q", "<f4"),
        ("dq", "<f4"),
        ("ddq", "<i2"),
        ("tau_est", "<i2"),
        ("q_raw", "<f4"),
        ("dq_raw", "<f4"),
        ("ddq_raw", "<i2"),
        ("temperature", "i1"),
        ("reserve", "<u4", (2,)),
    ]
)
_MOTOR_CMD = np.dtype(
    [
        ("mode", "u1"),
        ("q", "<f4"),
        ("dq", "<f4"),
        ("tau", "<i2"),
        ("kp", "<u2"),
        ("kd", "<u2"),
        ("reserve", "<u4", (3,)),
    ]
)
LOW_STATE_DTYPE = np.dtype(
    _HEADER
    + [
        ("imu", _IMU),
        ("motor_state", _MOTOR_STATE, (NUM_MOTORS,)),
        ("bms", "u1", (24,)),
        ("foot_force", "<i2", (4,)),
        ("foot_force_est", "<i2", (4,)),
        ("tick", "<u4"),
        ("wireless_remote", "u1", (REMOTE_SIZE,)),
        ("reserve", "<u4"),
        ("crc", "<u4"),
    ]
)
LOW_CMD_DTYPE = np.dtype(
    _HEADER
    + [
        ("motor_cmd", _MOTOR_CMD, (NUM_MOTORS,)),
        ("bms", "u1", (4,)),
        ("wireless_remote", "u1", (REMOTE_SIZE,)),
        ("reserve", "<u4"),
        ("crc", "<u4"),
    ]
)
_BMS_SOC_OFFSET = 3  # byte of the battery's state of charge inside the LowState bms block
_REMOTE_DTYPE = np.dtype(
    [
        ("head", "u1", (2,)),
        ("btn", "<u2"),
        ("lx", "<f4"),
        ("rx", "<f4"),
        ("ry", "<f4"),
        ("l2", "<f4"),
        ("ly", "<f4"),
        ("idle", "u1", (16,)),
    ]
)
assert LOW_STATE_DTYPE.itemsize == LOW_STATE_SIZE and LOW_CMD_DTYPE.itemsize == LOW_CMD_SIZE
assert _REMOTE_DTYPE.itemsize == REMOTE_SIZE


class WireError(ValueError):
    """A packet cannot be decoded (or a value cannot be encoded)."""


class PacketSizeError(WireError):
    """The datagram does not have the packet's size."""


class PacketHeaderError(WireError):
    """The head bytes or levelFlag are not those of a low-level packet."""


class PacketCRCError(WireError):
    """The CRC does not match the packet's contents."""


# ---------------------------------------------------------------------------------------------------------- CRC

_BIT_REVERSED = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))


def crc32_core(data: bytes) -> int:
    """Unitree's crc32_core over `data` (a whole number of little-endian 32-bit words).

    It is CRC-32/MPEG-2 over each word's bits from the most significant. zlib's CRC-32 is the same polynomial
    bit-reflected, so we reflect the input (big-endian words, bits reversed in each byte) and the output, and
    undo its final xor: 5 µs per packet instead of milliseconds for a bit loop in Python.
    """
    if len(data) % 4:
        raise WireError(f"crc32_core needs whole 32-bit words, got {len(data)} bytes")
    msb_first = np.frombuffer(data, dtype="<u4").astype(">u4").tobytes()
    reflected = binascii.crc32(msb_first.translate(_BIT_REVERSED)) ^ 0xFFFFFFFF
    return int(f"{reflected:032b}"[::-1], 2)


def _crc_span(size: int) -> int:
    """Bytes the CRC covers: all whole words but the last, as the SDK computes it."""
    return (size // 4 - 1) * 4


def _seal(packet: np.ndarray) -> bytes:
    raw = bytearray(packet.tobytes())
    crc = crc32_core(bytes(raw[: _crc_span(len(raw))]))
    raw[-4:] = crc.to_bytes(4, "little")
    return bytes(raw)


def _open(data: bytes, dtype: np.dtype, name: str) -> np.void:
    """Check size, head, level flag and CRC; return the parsed record."""
    data = bytes(data)
    if len(data) != dtype.itemsize:
        raise PacketSizeError(f"{name}: expected {dtype.itemsize} bytes, got {len(data)}")
    packet = np.frombuffer(data, dtype=dtype)[0]
    if tuple(packet["head"]) != HEAD or packet["level_flag"] != LOWLEVEL:
        raise PacketHeaderError(
            f"{name}: head {bytes(packet['head']).hex()} level {packet['level_flag']:#x}, "
            f"expected {bytes(HEAD).hex()} level {LOWLEVEL:#x}"
        )
    expected = crc32_core(data[: _crc_span(len(data))])
    if int(packet["crc"]) != expected:
        raise PacketCRCError(f"{name}: CRC {int(packet['crc']):#010x}, contents give {expected:#010x}")
    return packet


def _new_packet(dtype: np.dtype) -> np.ndarray:
    packet = np.zeros(1, dtype=dtype)
    packet["head"] = HEAD
    packet["level_flag"] = LOWLEVEL
    return packet


_INT_RANGE = {t: (np.iinfo(t).min, np.iinfo(t).max) for t in ("u1", "i1", "<u2", "<i2")}


def _to_fixed(values, scale: float, dtype: str) -> np.ndarray:
    """value x scale truncated toward zero (as the SDK does), saturated to the integer's range, NaN as 0."""
    scaled = np.trunc(np.asarray(values, dtype=np.float64) * scale)
    return np.clip(np.where(np.isnan(scaled), 0.0, scaled), *_INT_RANGE[dtype]).astype(dtype)


def _motor_array(values, name: str, default: float = 0.0) -> np.ndarray:
    """Per-motor values: 20 SDK slots, or 12 leg motors (the rest get `default`)."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape not in ((NUM_MOTORS,), (12,)):
        raise WireError(f"{name}: expected {NUM_MOTORS} (or 12) motor values, got shape {values.shape}")
    out = np.full(NUM_MOTORS, default)
    out[: len(values)] = values
    return out


def _f64(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def _zeros_motors() -> np.ndarray:
    return np.zeros(NUM_MOTORS)


def _motor_modes() -> np.ndarray:
    return np.zeros(NUM_MOTORS, dtype=np.int64)


# ------------------------------------------------------------------------------------------------ wireless remote


@dataclass
class RemoteState:
    """The operator's remote: sticks in [-1, 1], L2 trigger analogue in [0, 1], 16 button bits."""

    lx: float = 0.0
    ly: float = 0.0
    rx: float = 0.0
    ry: float = 0.0
    l2: float = 0.0
    buttons: int = 0

    def pressed(self, name: str) -> bool:
        return bool(self.buttons >> REMOTE_BUTTONS.index(name) & 1)

    @staticmethod
    def button_bits(*names: str) -> int:
        """Bits of the named buttons, e.g. RemoteState(buttons=RemoteState.button_bits("L2", "A"))."""
        unknown = [n for n in names if n not in REMOTE_BUTTONS]
        if unknown:
            raise WireError(f"unknown remote button(s) {unknown}; known: {', '.join(REMOTE_BUTTONS)}")
        return sum(1 << REMOTE_BUTTONS.index(n) for n in names)


def encode_remote(remote: RemoteState) -> bytes:
    packet = np.zeros(1, dtype=_REMOTE_DTYPE)
    for stick in ("lx", "ly", "rx", "ry", "l2"):
        packet[stick] = getattr(remote, stick)
    packet["btn"] = remote.buttons & 0xFFFF
    return packet.tobytes()


def decode_remote(data: bytes) -> RemoteState:
    data = bytes(data)
    if len(data) != REMOTE_SIZE:
        raise PacketSizeError(f"wirelessRemote: expected {REMOTE_SIZE} bytes, got {len(data)}")
    r = np.frombuffer(data, dtype=_REMOTE_DTYPE)[0]
    return RemoteState(
        lx=float(r["lx"]), ly=float(r["ly"]), rx=float(r["rx"]), ry=float(r["ry"]), l2=float(r["l2"]),
        buttons=int(r["btn"]),
    )  # fmt: skip


# -------------------------------------------------------------------------------------------------------- LowState


@dataclass
class LowState:
    """What the board reports: IMU, 20 motor slots in SDK order, foot forces, tick (µs) and the remote's bytes."""

    quaternion: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0, 0.0]))  # w, x, y, z
    gyroscope: np.ndarray = field(default_factory=lambda: np.zeros(3))  # body frame, rad/s
    accelerometer: np.ndarray = field(default_factory=lambda: np.zeros(3))  # body frame, m/s^2
    rpy: np.ndarray = field(default_factory=lambda: np.zeros(3))
    imu_temperature: int = 0
    motor_mode: np.ndarray = field(default_factory=_motor_modes)
    q: np.ndarray = field(default_factory=_zeros_motors)
    dq: np.ndarray = field(default_factory=_zeros_motors)
    ddq: np.ndarray = field(default_factory=_zeros_motors)  # int16 on the wire: whole rad/s^2
    tau_est: np.ndarray = field(default_factory=_zeros_motors)  # x256 fixed point on the wire
    motor_temperature: np.ndarray = field(default_factory=_zeros_motors)
    foot_force: np.ndarray = field(default_factory=lambda: np.zeros(4))  # SDK foot order FR, FL, RR, RL; int16
    foot_force_est: np.ndarray = field(default_factory=lambda: np.zeros(4))
    tick: int = 0  # µs, wraps at 2^32
    wireless_remote: bytes = bytes(REMOTE_SIZE)
    battery_soc: int = 100  # %


def encode_low_state(state: LowState) -> bytes:
    packet = _new_packet(LOW_STATE_DTYPE)
    imu = packet["imu"]  # field access gives views: writing them fills the packet
    imu["quaternion"] = state.quaternion
    imu["gyroscope"] = state.gyroscope
    imu["accelerometer"] = state.accelerometer
    imu["rpy"] = state.rpy
    imu["temperature"] = _to_fixed(state.imu_temperature, 1, "i1")
    motors = packet["motor_state"][0]
    motors["mode"] = _to_fixed(_motor_array(state.motor_mode, "motor_mode"), 1, "u1")
    motors["q"] = _motor_array(state.q, "q")
    motors["dq"] = _motor_array(state.dq, "dq")
    motors["ddq"] = _to_fixed(_motor_array(state.ddq, "ddq"), 1, "<i2")
    motors["tau_est"] = _to_fixed(_motor_array(state.tau_est, "tau_est"), TAU_SCALE, "<i2")
    motors["temperature"] = _to_fixed(_motor_array(state.motor_temperature, "motor_temperature"), 1, "i1")
    packet["bms"][0, _BMS_SOC_OFFSET] = _to_fixed(state.battery_soc, 1, "u1")
    packet["foot_force"] = _to_fixed(state.foot_force, 1, "<i2")
    packet["foot_force_est"] = _to_fixed(state.foot_force_est, 1, "<i2")
    packet["tick"] = int(state.tick) % 2**32
    packet["wireless_remote"] = _remote_bytes(state.wireless_remote)
    return _seal(packet)


def decode_low_state(data: bytes) -> LowState:
    p = _open(data, LOW_STATE_DTYPE, "LowState")
    imu, motors = p["imu"], p["motor_state"]
    return LowState(
        quaternion=_f64(imu["quaternion"]),
        gyroscope=_f64(imu["gyroscope"]),
        accelerometer=_f64(imu["accelerometer"]),
        rpy=_f64(imu["rpy"]),
        imu_temperature=int(imu["temperature"]),
        motor_mode=motors["mode"].astype(np.int64),
        q=_f64(motors["q"]),
        dq=_f64(motors["dq"]),
        ddq=_f64(motors["ddq"]),
        tau_est=_f64(motors["tau_est"]) / TAU_SCALE,
        motor_temperature=_f64(motors["temperature"]),
        foot_force=_f64(p["foot_force"]),
        foot_force_est=_f64(p["foot_force_est"]),
        tick=int(p["tick"]),
        wireless_remote=bytes(p["wireless_remote"]),
        battery_soc=int(p["bms"][_BMS_SOC_OFFSET]),
    )


def _remote_bytes(data: bytes) -> np.ndarray:
    if len(data) != REMOTE_SIZE:
        raise WireError(f"wireless_remote: expected {REMOTE_SIZE} bytes, got {len(data)}")
    return np.frombuffer(bytes(data), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------------------- LowCmd


@dataclass
class LowCmd:
    """Per-motor command, 20 slots in SDK order: mode (0x0A servo, 0 off), PD targets, gains, feed-forward torque."""

    mode: np.ndarray = field(default_factory=_motor_modes)
    q: np.ndarray = field(default_factory=lambda: np.full(NUM_MOTORS, POS_STOP_F))
    dq: np.ndarray = field(default_factory=lambda: np.full(NUM_MOTORS, VEL_STOP_F))
    tau: np.ndarray = field(default_factory=_zeros_motors)  # x256 fixed point on the wire
    kp: np.ndarray = field(default_factory=_zeros_motors)  # x32 fixed point on the wire
    kd: np.ndarray = field(default_factory=_zeros_motors)  # x16 fixed point on the wire
    wireless_remote: bytes = bytes(REMOTE_SIZE)
    reserve: int = 0  # unused by the board; in lockstep the bridge names the state it answers here (answer_tag)


def answer_tag(tick: int) -> int:
    """Lockstep (bridge --follow, stand-in --fast): the LowCmd reserve word of a command answering the LowState
    with this tick; 0 names none. The stand-in runs a tick only for a command that answers its newest state, so a
    resend (the bridge heard nothing for a while: a busy host, not a lost packet) cannot run a tick twice."""
    return (int(tick) + 1) % 2**32


def encode_low_cmd(cmd: LowCmd) -> bytes:
    packet = _new_packet(LOW_CMD_DTYPE)
    motors = packet["motor_cmd"][0]
    motors["mode"] = _to_fixed(_motor_array(cmd.mode, "mode"), 1, "u1")
    motors["q"] = _motor_array(cmd.q, "q", POS_STOP_F)
    motors["dq"] = _motor_array(cmd.dq, "dq", VEL_STOP_F)
    motors["tau"] = _to_fixed(_motor_array(cmd.tau, "tau"), TAU_SCALE, "<i2")
    motors["kp"] = _to_fixed(_motor_array(cmd.kp, "kp"), KP_SCALE, "<u2")
    motors["kd"] = _to_fixed(_motor_array(cmd.kd, "kd"), KD_SCALE, "<u2")
    packet["wireless_remote"] = _remote_bytes(cmd.wireless_remote)
    packet["reserve"] = int(cmd.reserve) % 2**32
    return _seal(packet)


def decode_low_cmd(data: bytes) -> LowCmd:
    p = _open(data, LOW_CMD_DTYPE, "LowCmd")
    m = p["motor_cmd"]
    return LowCmd(
        mode=m["mode"].astype(np.int64),
        q=_f64(m["q"]),
        dq=_f64(m["dq"]),
        tau=_f64(m["tau"]) / TAU_SCALE,
        kp=_f64(m["kp"]) / KP_SCALE,
        kd=_f64(m["kd"]) / KD_SCALE,
        wireless_remote=bytes(p["wireless_remote"]),
        reserve=int(p["reserve"]),
    )
