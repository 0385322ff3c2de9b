"""Thin LCM plumbing shared by the bridge, the stand-in robot, deploy and the collector.

- `open_lcm(url)`: an `lcm.LCM`, refusing any URL that could put traffic on the network. Only `memq://`
  (in-process) and `udpm://...?ttl=0` (multicast that never leaves the host) are accepted.
- `CHANNELS`: channel name -> message type (real_robot/lcm_types/go1.lcm), the one list of channels.
  `Channels.with_prefix(p)` (alias `channel_names(p)`) gives every channel name with a prefix, so tests and
  parallel runs on one host do not hear each other: `channel_names("t1_").pd_target == "t1_pd_target"`.
- `now_us()`: CLOCK_MONOTONIC in microseconds, the `timestamp_us` of every message.
- `LcmNode`: typed subscriptions in the caller's thread. A message that does not decode (wrong type, short,
  garbage) is counted in `node.malformed[name]` and dropped; the handler never raises for it. The newest
  message of each channel and its receive time are kept in `node.latest[name]`. There is no hidden thread:
  the control loops that use this are single-threaded on purpose (no handler racing the loop), and they call
  `node.handle(timeout_s)` where they would otherwise sleep.

    node = LcmNode(url, prefix)
    node.subscribe("joint_state")
    node.subscribe("safety_status", lambda msg, received_us: print(msg.reason))
    node.handle(0.02)                         # wait up to 20 ms, then dispatch everything waiting
    state = node.latest.get("joint_state")    # Received(msg, received_us) or None
    node.publish("pd_target", pd_target_t())
"""

from __future__ import annotations

import os
import re
import select
import socket
import struct
from collections import Counter
from dataclasses import dataclass, fields
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import lcm

from real_robot.arming import arm_request, load_secret
from real_robot.clock import now_us
from real_robot.lcm_types.go1lcm import (
    arm_request_t,
    body_state_t,
    joint_state_t,
    odometry_t,
    pd_target_t,
    remote_command_t,
    safety_status_t,
    sim_control_t,
)

DEFAULT_LCM_URL = "udpm://239.255.76.67:7667?ttl=0"

CHANNELS: dict[str, type] = {
    "joint_state": joint_state_t,
    "body_state": body_state_t,
    "remote_command": remote_command_t,
    "pd_target": pd_target_t,
    "odometry": odometry_t,
    "safety_status": safety_status_t,
    "sim_control": sim_control_t,
    "arm_request": arm_request_t,
}
ARM_TARGETS = ("bridge", "deploy", "all")

# LCM treats a subscribed channel as a regular expression: keep prefixes to characters that match themselves.
_PREFIX = re.compile(r"[A-Za-z0-9_\-]*")
_DECODE_ERRORS = (ValueError, struct.error)  # generated decode(): bad fingerprint / too few bytes
_DRAIN_LIMIT = 10_000  # messages dispatched per handle() call at most, so a flood cannot hold the caller forever
_MAX_WAIT_S = 3600.0  # handle() waits at most this long: select() overflows on huge timeouts, refuses NaN


def check_url(url: str | None) -> str:
    """The URL to use (None/empty -> DEFAULT_LCM_URL); ValueError unless it keeps traffic on this host."""
    url = url or DEFAULT_LCM_URL
    parts = urlsplit(url)
    if parts.scheme == "memq":
        return url
    if parts.scheme != "udpm":
        raise ValueError(f"LCM URL {url!r}: only memq:// or udpm://...?ttl=0 are allowed (traffic stays on this host)")
    ttl = parse_qs(parts.query).get("ttl")
    if ttl is None:
        raise ValueError(f"LCM URL {url!r} has no ttl: add ?ttl=0 so multicast never leaves this host")
    if ttl != ["0"]:
        raise ValueError(f"LCM URL {url!r}: ttl must be 0 (got {','.join(ttl)}) so multicast never leaves this host")
    return url


def open_lcm(url: str | None = None) -> lcm.LCM:
    """An LCM instance on `url` (default DEFAULT_LCM_URL), after `check_url`, its udpm sockets on loopback."""
    url = check_url(url)
    before = _open_fds()
    try:
        lc = lcm.LCM(url)
        if urlsplit(url).scheme == "udpm":
            lc.fileno()  # udpm opens its receive socket (and tests its route) lazily: open it now, to confine it
    except RuntimeError as err:
        raise ValueError(f"LCM URL {url!r}: LCM could not start ({err})") from err
    if urlsplit(url).scheme == "udpm":
        group = urlsplit(url).hostname
        for fd in sorted(_open_fds() - before):
            _confine_to_loopback(fd, group)
    return lc


# LCM's udpm has no option for the interface: it joins its group and sends on whatever interface the route to the
# group names (on most hosts the LAN's). So the sockets it has just opened are moved to loopback with ordinary
# socket options: sends leave by `lo` (IP_MULTICAST_IF), the group is joined on `lo` only, the receive socket
# hears only its own memberships (IP_MULTICAST_ALL off) and only packets that arrived on `lo` (SO_BINDTODEVICE).
# (On hosts without /proc/self/fd nothing is moved and traffic stays on the host by ttl=0 alone.)
_IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)  # linux/in.h
_LOOPBACK = socket.inet_aton("127.0.0.1")


def _open_fds() -> set[int]:
    try:
        return {int(name) for name in os.listdir("/proc/self/fd")}
    except OSError:
        return set()


def _confine_to_loopback(fd: int, group: str) -> None:
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:  # not a socket (LCM's notify pipe)
        return
    with sock:
        if sock.family != socket.AF_INET or sock.type != socket.SOCK_DGRAM:
            return
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, _LOOPBACK)
        if sock.getsockname()[0] == group:  # the receive socket
            sock.setsockopt(socket.IPPROTO_IP, _IP_MULTICAST_ALL, 0)
            membership = socket.inet_aton(group) + socket.inet_aton("0.0.0.0")
            try:
                while True:  # LCM joined on the routed interface (possibly more than once): leave it
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_DROP_MEMBERSHIP, membership)
            except OSError:
                pass
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(group) + _LOOPBACK)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"lo")
        except PermissionError:  # kernels before 5.7 need CAP_NET_RAW; the membership alone keeps it on lo
            pass


@dataclass(frozen=True)
class Channels:
    """The name of every channel, with the run's prefix. Fields match the keys of CHANNELS."""

    joint_state: str = "joint_state"
    body_state: str = "body_state"
    remote_command: str = "remote_command"
    pd_target: str = "pd_target"
    odometry: str = "odometry"
    safety_status: str = "safety_status"
    sim_control: str = "sim_control"
    arm_request: str = "arm_request"

    @classmethod
    def with_prefix(cls, prefix: str = "") -> Channels:
        if not _PREFIX.fullmatch(prefix):
            raise ValueError(f"channel prefix {prefix!r}: use letters, digits, '_' and '-' only")
        return cls(**{f.name: prefix + f.name for f in fields(cls)})

    def of(self, name: str) -> str:
        if name not in CHANNELS:
            raise ValueError(f"unknown LCM channel {name!r}; known: {', '.join(CHANNELS)}")
        return getattr(self, name)


channel_names = Channels.with_prefix


@dataclass(frozen=True)
class Received:
    msg: Any
    received_us: int  # now_us() when the message was dispatched


class LcmNode:
    """Typed publish/subscribe on one LCM instance, pumped by the caller with `handle()`."""

    def __init__(self, url: str | None = None, prefix: str = ""):
        self.lc = open_lcm(url)
        self.channels = Channels.with_prefix(prefix)
        self.latest: dict[str, Received] = {}
        self.received: Counter[str] = Counter()
        self.malformed: Counter[str] = Counter()
        self._subscriptions: list[lcm.LCMSubscription] = []

    def subscribe(self, name: str, callback: Callable[[Any, int], None] | None = None) -> None:
        """Decode `name`'s messages into `latest[name]`, then call `callback(msg, received_us)` if given."""
        channel, msg_type = self.channels.of(name), CHANNELS[name]

        def on_message(_channel: str, data: bytes) -> None:
            received_us = now_us()
            try:
                msg = msg_type.decode(data)
            except _DECODE_ERRORS:
                self.malformed[name] += 1
                return
            self.received[name] += 1
            self.latest[name] = Received(msg, received_us)
            if callback is not None:
                callback(msg, received_us)

        self._subscriptions.append(self.lc.subscribe(channel, on_message))

    def handle(self, timeout_s: float = 0.0) -> int:
        """Wait up to `timeout_s` for a message, then dispatch every message already waiting; returns how many."""
        timeout_s = min(timeout_s, _MAX_WAIT_S) if timeout_s > 0 else 0.0  # NaN and negatives: no wait
        ready, _, _ = select.select([self.lc.fileno()], [], [], timeout_s)
        dispatched = 0
        while ready and dispatched < _DRAIN_LIMIT and self.lc.handle_timeout(0) > 0:
            dispatched += 1
        return dispatched

    def publish(self, name: str, msg: Any) -> None:
        channel, msg_type = self.channels.of(name), CHANNELS[name]
        if not isinstance(msg, msg_type):
            raise TypeError(f"channel {name!r} carries {msg_type.__name__}, got {type(msg).__name__}")
        self.lc.publish(channel, msg.encode())

    def close(self) -> None:
        for subscription in self._subscriptions:
            self.lc.unsubscribe(subscription)
        self._subscriptions = []

    def __enter__(self) -> LcmNode:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def publish_arm_request(url: str | None, prefix: str = "", target: str = "all", source: str = "operator") -> None:
    """Ask the bridge and/or deploy (`target`) to re-arm after a latched safety trip, signed with this user's
    secret (real_robot.arming; ArmingError if it cannot be read). The bridge keeps its session."""
    if target not in ARM_TARGETS:
        raise ValueError(f"arm target {target!r}: use one of {', '.join(ARM_TARGETS)}")
    LcmNode(url, prefix).publish("arm_request", arm_request(load_secret(), now_us(), target, source))
