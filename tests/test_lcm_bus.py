"""LCM plumbing: URL safety, channel names, typed receive over memq:// and udpm ttl=0, malformed messages."""

from __future__ import annotations

import time
import uuid

import pytest

from real_robot.lcm_bus import (
    CHANNELS,
    DEFAULT_LCM_URL,
    Channels,
    LcmNode,
    channel_names,
    check_url,
    now_us,
    open_lcm,
    publish_arm_request,
)
from real_robot.lcm_types.go1lcm import joint_state_t, pd_target_t, safety_status_t


def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}_"


def pump_until(node: LcmNode, done, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        node.handle(0.05)
    assert done(), "message not received"


def joint_state(value: float) -> joint_state_t:
    msg = joint_state_t()
    msg.timestamp_us, msg.robot_tick_us = now_us(), 42
    msg.q, msg.dq, msg.tau_est = [value] * 12, [2 * value] * 12, [float("nan")] * 12  # NaN is data, not damage
    return msg


HOST_ONLY_URLS = [None, "", DEFAULT_LCM_URL, "memq://", "udpm://239.255.76.67:7668?ttl=0&recv_buf_size=4096"]


@pytest.mark.parametrize("url", HOST_ONLY_URLS)
def test_host_only_urls_are_accepted(url):
    assert check_url(url) == (url or DEFAULT_LCM_URL)


@pytest.mark.parametrize(
    "url, message",
    [
        ("udpm://239.255.76.67:7667?ttl=1", "ttl must be 0"),
        ("udpm://239.255.76.67:7667", "has no ttl"),
        ("udpm://239.255.76.67:7667?ttl=0&ttl=1", "ttl must be 0"),
        ("tcpq://192.168.123.10:7700", "only memq:// or udpm"),
        ("file:///tmp/x.lcmlog", "only memq:// or udpm"),
    ],
)
def test_urls_that_could_leave_the_host_are_refused(url, message):
    with pytest.raises(ValueError, match=message):
        open_lcm(url)
    with pytest.raises(ValueError, match=message):
        LcmNode(url)


def test_channels_name_every_message_type_with_a_prefix():
    assert [f for f in Channels.__dataclass_fields__] == list(CHANNELS)
    names = channel_names("run7_")
    assert names.pd_target == "run7_pd_target" and names.of("odometry") == "run7_odometry"
    assert Channels.with_prefix() == Channels()
    with pytest.raises(ValueError, match="unknown LCM channel 'lidar'"):
        names.of("lidar")
    with pytest.raises(ValueError, match="channel prefix"):
        channel_names("a.b*")  # LCM subscribes by regular expression


@pytest.mark.parametrize("url", ["memq://", DEFAULT_LCM_URL])
def test_typed_publish_and_receive(url):
    with LcmNode(url, unique_prefix()) as node:
        seen = []
        node.subscribe("joint_state", lambda msg, received_us: seen.append((msg, received_us)))
        before = now_us()
        node.publish("joint_state", joint_state(0.5))
        pump_until(node, lambda: seen)
        msg, received_us = seen[0]
        assert list(msg.q) == [0.5] * 12 and list(msg.dq) == [1.0] * 12 and msg.robot_tick_us == 42
        latest = node.latest["joint_state"]
        assert latest.msg is msg and latest.received_us == received_us >= before
        assert node.received["joint_state"] == 1 and not node.malformed
        with pytest.raises(TypeError, match="carries pd_target_t"):
            node.publish("pd_target", joint_state(0.0))


@pytest.mark.parametrize("url", ["memq://", DEFAULT_LCM_URL])
def test_malformed_messages_are_counted_and_ignored(url):
    with LcmNode(url, unique_prefix()) as node:
        node.subscribe("joint_state")
        node.subscribe("safety_status")
        channel = node.channels.joint_state
        node.lc.publish(channel, b"\x00garbage bytes")
        node.lc.publish(channel, joint_state(1.0).encode()[:-5])  # truncated
        node.lc.publish(channel, pd_target_t().encode())  # another type
        node.lc.publish(node.channels.safety_status, b"")
        node.publish("joint_state", joint_state(3.0))  # the handler still works afterwards
        pump_until(node, lambda: node.received["joint_state"] == 1 and node.malformed["safety_status"] == 1)
        assert node.malformed == {"joint_state": 3, "safety_status": 1}
        assert list(node.latest["joint_state"].msg.q) == [3.0] * 12 and "safety_status" not in node.latest


def test_prefixes_isolate_parallel_runs_and_arm_request_reaches_its_target():
    prefix = unique_prefix()
    with LcmNode(DEFAULT_LCM_URL, prefix) as node, LcmNode(DEFAULT_LCM_URL, unique_prefix()) as other:
        node.subscribe("arm_request")
        other.subscribe("arm_request")
        publish_arm_request(DEFAULT_LCM_URL, prefix, target="bridge", source="test")
        pump_until(node, lambda: "arm_request" in node.latest)
        assert node.latest["arm_request"].msg.target == "bridge" and node.latest["arm_request"].msg.source == "test"
        other.handle(0.1)
        assert "arm_request" not in other.latest
    with pytest.raises(ValueError, match="arm target"):
        publish_arm_request("memq://", prefix, target="everyone")


def test_handler_errors_are_not_swallowed():
    """Only decode failures are tolerated: a bug in the caller's callback must surface."""
    with LcmNode("memq://", unique_prefix()) as node:
        node.subscribe("safety_status", lambda msg, _: 1 / 0)
        node.publish("safety_status", safety_status_t())
        with pytest.raises(ZeroDivisionError):
            node.handle(1.0)
