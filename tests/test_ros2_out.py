"""ROS 2 out: `deploy run --ros2-out` drives the stand-in robot (fast mode, through the real SDK bridge) while
this test subscribes to every topic it publishes, then checks the messages against the session's log: one
/joint_states, /imu and /odom message per logged step (so 50 Hz in robot time) with the logged values, and
/diagnostics every second of robot time and on every change of the safety state, saying what the log says.
"""

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

from deploy.record import Phase
from real_robot.datalog import read_log_folder
from real_robot.loopback import LoopbackRobot
from robot_spec.policy_io import ActorMLP, save_policy
from loaded_host import STARTUP_S

STEP_US = 20_000  # the Go1's 50 Hz control period in robot time
TOPICS = ("/joint_states", "/imu", "/odom", "/diagnostics")


@pytest.fixture(scope="module")
def robot():
    pytest.importorskip("unitree_legged_sdk.robot_interface", reason="the bridge needs the Unitree SDK")
    with LoopbackRobot(profile="none", fast=True, startup_timeout_s=STARTUP_S) as robot:
        yield robot


@pytest.fixture()
def ros_domain(monkeypatch):
    """A ROS 2 domain of this process's (concurrent runs on one host stay apart); discovery as deploy sets it."""
    pytest.importorskip("rclpy", reason="the ros2 extra (CPython 3.11 on x86_64)")
    pytest.importorskip("sensor_msgs.msg", reason="the ros2 extra's message packages")
    monkeypatch.setenv("ROS_DOMAIN_ID", str(1 + (os.getpid() + 50) % 100))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


def standing_policy(spec, path):
    """A policy whose every action is 0: the robot holds the default pose."""
    actor = ActorMLP(spec.observation.dim, spec.num_joints, [32])
    with torch.no_grad():
        actor.mlp[-1].weight.zero_()
        actor.mlp[-1].bias.zero_()
    save_policy(actor, spec, path, {"source": "test"})
    return path


class StateSubscriber:
    """A node of its own (a monitoring tool) keeping every message of TOPICS, in arrival order."""

    def __init__(self):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from nav_msgs.msg import Odometry
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import Imu, JointState

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("test_monitor", context=self.context)
        self.messages = {topic: [] for topic in TOPICS}
        for topic, cls in zip(TOPICS, (JointState, Imu, Odometry, DiagnosticArray)):
            self.node.create_subscription(cls, topic, self.messages[topic].append, 1000)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()
        self.thread.join(timeout=2.0)


def stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def match(messages, timestamps_us) -> list[int | None]:
    """For each logged step, the index of the message stamped with its time (host monotonic -> Unix time, the
    same offset in every process of this host), or None."""
    stamps = np.array([stamp_ns(m) for m in messages], dtype=np.int64)
    offset_ns = time.time_ns() - time.monotonic_ns()
    found = []
    for t in timestamps_us:
        i = int(np.argmin(np.abs(stamps - (int(t) * 1000 + offset_ns))))
        found.append(i if abs(stamps[i] - (int(t) * 1000 + offset_ns)) < 100_000 else None)  # 0.1 ms
    return found


def wait_for_the_last_step(monitor: StateSubscriber, timestamps_us, timeout_s: float = 30.0) -> None:
    """Until every state topic has delivered the last logged step's message, then until nothing more arrives for
    half a second (the last /diagnostics): what was in flight when deploy exited can take a while to reach this
    subscriber on a starved host. A message that never comes still fails the checks, after `timeout_s`."""
    deadline, last = time.monotonic() + timeout_s, timestamps_us[-1:]

    def heard_the_last_step(topic: str) -> bool:
        messages = list(monitor.messages[topic])
        return len(last) == 0 or (bool(messages) and match(messages, last)[0] is not None)

    while not all(map(heard_the_last_step, ("/joint_states", "/imu", "/odom"))) and time.monotonic() < deadline:
        time.sleep(0.1)
    heard = -1
    while heard != sum(map(len, monitor.messages.values())) and time.monotonic() < deadline:
        heard = sum(map(len, monitor.messages.values()))
        time.sleep(0.5)


def diagnostics_values(msg) -> dict:
    status = msg.status[0]
    return {"level": status.level[0], "message": status.message, **{kv.key: kv.value for kv in status.values}}


def test_deploy_publishes_the_state_at_the_step_rate_with_the_logged_values(spec, robot, ros_domain, tmp_path):
    policy = standing_policy(spec, tmp_path / "zero.pt")
    for attempt in range(3):  # a host busy enough to trip a monitor in the first steps leaves too little to check
        monitor, log_dir = StateSubscriber(), tmp_path / f"log{attempt}"
        robot.reset()
        robot.arm("bridge")  # a watchdog trip latched before this session must not end it at once
        try:
            deploy = subprocess.run(
                [sys.executable, "-m", "deploy.cli", "run", "--policy", str(policy), "--speed", "low", "--commands",
                 "schedule:stand", "--runtime-config", "runtime_fast", "--lcm-url", robot.lcm_url, "--channel-prefix",
                 robot.prefix, "--duration", "10", "--log-dir", str(log_dir), "--ros2-out"],
                capture_output=True, text=True, timeout=600,  # a starved host is slow, not wrong
            )  # fmt: skip
            # 0, or the exit code of a safety trip (a busy host): never bad input or a crash
            assert deploy.returncode != 2 and "Traceback" not in deploy.stderr, deploy.stderr[-2000:]
            (episode,) = read_log_folder(log_dir).episodes
            wait_for_the_last_step(monitor, episode.records["timestamp_us"])
        finally:
            monitor.close()
        if len(episode.records["step"]) >= 100:
            break
    log = episode.records
    assert len(log["step"]) >= 100, episode.reason
    # the stand-in has odometry: every step has its /odom, but the first, whose state may arrive before the first
    # odometry message does (two channels; seen once in CI)
    assert np.isfinite(log["odom_position"][1:]).all()

    # One message per logged step on each state topic, in order, with the logged values. The first steps may
    # go out before discovery has matched this subscriber (volatile QoS, as for any sensor topic): on a quiet
    # host that took up to ~4 s of robot time, hence 10 s runs.
    ticks = log["robot_tick_us"]
    assert np.median(np.diff(ticks)) == STEP_US  # a step per 20 ms of robot time (one may be skipped on a busy host)
    for topic in ("/joint_states", "/imu", "/odom"):
        messages = monitor.messages[topic]
        found = match(messages, log["timestamp_us"])
        first = next((i for i, m in enumerate(found) if m is not None), len(found))
        assert len(found) - first >= 100, f"{topic}: heard {len(found) - first} of {len(found)} steps"
        assert found[first:] == list(range(found[first], found[first] + len(found) - first)), topic
        span_s = (ticks[-1] - ticks[first]) / 1e6
        steps_per_s = (len(ticks) - first - 1) / span_s  # 50 Hz but for periods a busy host skipped
        assert (len(found) - first - 1) / span_s == pytest.approx(steps_per_s) and steps_per_s > 40, topic
        mine = [messages[m] for m in found[first:]]
        steps = slice(first, None)
        if topic == "/joint_states":
            assert all(m.name == spec.joint_names for m in mine)
            np.testing.assert_allclose([m.position for m in mine], log["q"][steps], atol=1e-6)
            np.testing.assert_allclose([m.velocity for m in mine], log["dq"][steps], atol=1e-5)
            np.testing.assert_allclose([m.effort for m in mine], log["tau_est"][steps], atol=1e-5)
        elif topic == "/imu":
            quaternion = [[m.orientation.w, m.orientation.x, m.orientation.y, m.orientation.z] for m in mine]
            np.testing.assert_allclose(quaternion, log["quaternion"][steps], atol=1e-6)
            gyro = [[m.angular_velocity.x, m.angular_velocity.y, m.angular_velocity.z] for m in mine]
            np.testing.assert_allclose(gyro, log["gyro"][steps], atol=1e-6)
        else:
            assert {(m.header.frame_id, m.child_frame_id) for m in mine} == {("odom", "base")}
            position = [[m.pose.pose.position.x, m.pose.pose.position.y, m.pose.pose.position.z] for m in mine]
            np.testing.assert_allclose(position, log["odom_position"][steps], atol=1e-6)
            velocity = [[m.twist.twist.linear.x, m.twist.twist.linear.y, m.twist.twist.linear.z] for m in mine]
            np.testing.assert_allclose(velocity, log["odom_lin_vel"][steps], atol=1e-6)

    # /diagnostics: every second of robot time and on each change of the safety state, as logged.
    diagnostics = [diagnostics_values(m) for m in monitor.messages["/diagnostics"]]
    by_step = {int(s): i for i, s in enumerate(log["step"])}
    logged = [d for d in diagnostics if int(d["step"]) in by_step]
    assert len(logged) >= 5  # 5.5 s of robot time: 0, 1, 2, 3, 4 (policy), 4, 5 s, the stop
    for d in logged:
        i = by_step[int(d["step"])]
        assert d["phase"] == Phase(int(log["phase"][i])).name.lower()
        assert (d["tripped"] == "true") == bool(log["tripped"][i])
        assert float(d["robot_time_s"]) == pytest.approx(ticks[i] / 1e6)
    longest_step_us, period_us = int(np.diff(ticks).max()), 1_000_000
    for before, after in zip(diagnostics, diagnostics[1:]):
        # integer microseconds: 6.02 - 4.02 s in floats is 1.999..., which is one period, not two
        interval_us = round((float(after["robot_time_s"]) - float(before["robot_time_s"])) * 1e6)
        changed = (before["phase"], before["tripped"]) != (after["phase"], after["tripped"])
        # whole periods: one sent before discovery matched us (or dropped by a starved host) is not heard, and
        # each period ends on the first step after it, up to a step late
        periods = max(1, interval_us // period_us)
        on_time = periods * period_us <= interval_us < periods * (period_us + longest_step_us)
        assert interval_us <= period_us if changed else on_time, (interval_us, longest_step_us, before, after)
    assert diagnostics[0]["level"] == 0 and diagnostics[0]["message"] == "ok"
    end = next(d for d in logged if d["tripped"] == "true")  # the episode's last record: the trip or the stop
    stopped = episode.outcome == "timeout"
    assert end["level"] == (1 if stopped else 2) and end["message"] == f"{'stopped' if stopped else 'tripped'}: " \
        f"{episode.reason}"  # fmt: skip
