"""Where one control step's time goes, part by part (the profile behind #21's control-loop item).

Records a walk on the in-process stand-in (deploy/in_process.py: board, bridge and runtime in lockstep), then
replays its states through a fresh controller with a timer (perf_counter_ns) around each part: the two state
messages' LCM decode and the state rebuild (deploy/lcm_io.py), the command, the observation, the policy, each
safety monitor, the PD target, the target's encode and publish on LCM (loopback, a prefix of its own), and after
the publish: the record's copies, the log row and its append (real_robot.datalog), the ROS 2 queue put.
`receive->publish` is decode + rebuild + act + publish. By default each step starts after a control period of
sleep, as in the loop (a core that slept runs the same code slower: "cold"); `--hot` runs them back to back.

    python benchmarks/control_step_profile.py [--policy policy.pt] [--steps 400] [--hot]
"""

from __future__ import annotations

import argparse
import collections
import queue
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import save  # noqa: E402
from deploy.commands import ScheduledCommand, load_schedule, load_speed_preset  # noqa: E402
from deploy.in_process import InMemoryBoard, InProcessRobot  # noqa: E402
from deploy.lcm_io import LcmRobotIO  # noqa: E402
from deploy.record import StepRecord, record_schema  # noqa: E402
from deploy.runtime import Controller, Runtime, load_runtime_config  # noqa: E402
from deploy.safety import SafetyMonitor, load_safety_config  # noqa: E402
from real_robot.datalog import LogWriter  # noqa: E402
from real_robot.lcm_bus import DEFAULT_LCM_URL  # noqa: E402
from real_robot.lcm_types.go1lcm import body_state_t, joint_state_t  # noqa: E402
from robot_spec import load_robot  # noqa: E402
from robot_spec.policy_io import load_policy  # noqa: E402

DEFAULT_POLICY = Path(__file__).resolve().parent.parent / "policies" / "go1_walk" / "policy.pt"
SKIP = 50  # first replayed steps left out (soft start, caches)


def make_controller(spec, policy, cfg) -> Controller:
    commands = ScheduledCommand(load_schedule("walk", load_speed_preset("high")))
    return Controller(spec, policy, SafetyMonitor(spec, load_safety_config(spec.name)), commands, cfg)


def record_walk(spec, policy, cfg, steps: int) -> tuple[np.ndarray, list]:
    """Where the soft start ramped from, and `steps` (state, context, robot tick, wall stamp) of a walk."""
    board = InMemoryBoard("none", seed=0)
    io = InProcessRobot(board)
    io.tick(100)
    runtime = Runtime(make_controller(spec, policy, cfg), io, cfg)
    runtime.wait_for_state()
    ramp_from = runtime.controller.ramp_from.copy()
    records = [runtime.step() for _ in range(steps)]
    runtime.close()
    io.close()
    board.close()
    return ramp_from, [(r["state"], r["context"], r["robot_tick_us"], r["timestamp_us"]) for r in records]


class Timers:
    def __init__(self) -> None:
        self.ns: dict[str, list[int]] = collections.defaultdict(list)

    def wrap(self, get, set_, key: str) -> None:
        """Time every call of the callable `get()` under `key`, by replacing it with `set_(timed)`."""
        inner, ns = get(), self.ns[key]

        def timed(*args, **kwargs):
            start = time.perf_counter_ns()
            try:
                return inner(*args, **kwargs)
            finally:
                ns.append(time.perf_counter_ns() - start)

        set_(timed)

    def attribute(self, obj, name: str, key: str) -> None:
        self.wrap(lambda: getattr(obj, name), lambda f: setattr(obj, name, f), key)


def messages(state) -> tuple[bytes, bytes]:
    """The bridge's two LCM messages of a state, encoded."""
    joint, body = joint_state_t(), body_state_t()
    joint.timestamp_us, joint.robot_tick_us = state.stamp_us, state.robot_tick_us
    joint.q, joint.dq, joint.tau_est = state.q.tolist(), state.dq.tolist(), state.tau_est.tolist()
    body.timestamp_us, body.robot_tick_us = state.stamp_us, state.body_tick_us
    body.quaternion, body.rpy, body.gyro = state.quaternion.tolist(), state.rpy.tolist(), state.gyro.tolist()
    body.accelerometer, body.foot_force = state.accelerometer.tolist(), state.foot_force.tolist()
    return joint.encode(), body.encode()


def replay(spec, policy, cfg, ramp_from, steps: list, cold: bool, log_dir: str) -> dict[str, np.ndarray]:
    c = make_controller(spec, policy, cfg)
    c.ramp_from = ramp_from
    t = Timers()
    t.attribute(c.commands, "command", "  command")
    t.attribute(c.observation, "build", "  observation")
    t.attribute(c, "_act", "  policy")
    t.attribute(c.safety, "check", "  safety (all monitors)")
    for name in list(c.safety.monitors):
        t.wrap(lambda n=name: c.safety.monitors[n], lambda f, n=name: c.safety.monitors.__setitem__(n, f),
               f"    {name}")  # fmt: skip
    t.attribute(c, "_board_target", "  board target")
    t.attribute(c, "_target", "  PD target")
    io = LcmRobotIO(DEFAULT_LCM_URL, "profile_step_")  # publishes on loopback; nobody listens
    writer = LogWriter(log_dir, record_schema(spec), {})
    writer.start_episode()
    ros2_queue: queue.Queue = queue.Queue()
    parts = collections.defaultdict(list)
    for i, (state, ctx, tick, stamp) in enumerate(steps):
        if cold:
            time.sleep(spec.control.policy_dt)
        joint_bytes, body_bytes = messages(state)
        t0 = time.perf_counter_ns()
        joint, body = joint_state_t.decode(joint_bytes), body_state_t.decode(body_bytes)
        t1 = time.perf_counter_ns()
        io._on_joint_state(joint, 0)
        io._on_body_state(body, 0)
        t2 = time.perf_counter_ns()
        target = c.act(state, ctx)
        t3 = time.perf_counter_ns()
        io.publish_target(target, i, state.robot_tick_us)
        t4 = time.perf_counter_ns()
        record = c.record()
        record.update(step=i, robot_tick_us=tick, timestamp_us=stamp, publish_us=0, state=state,
                      odometry=io.odometry_at(0) or _missing())  # fmt: skip
        t5 = time.perf_counter_ns()
        row = StepRecord.from_runtime(record).row()
        t6 = time.perf_counter_ns()
        writer.append(row)
        t7 = time.perf_counter_ns()
        ros2_queue.put_nowait(record)
        t8 = time.perf_counter_ns()
        for key, a, b in [("LCM decode (2 messages)", t0, t1), ("state rebuild", t1, t2), ("controller act", t2, t3),
                          ("target encode + publish", t3, t4), ("receive->publish", t0, t4),
                          ("after publish: record copies", t4, t5), ("after publish: log row", t5, t6),
                          ("after publish: log append", t6, t7), ("after publish: ROS 2 queue put", t7, t8)]:
            parts[key].append(b - a)
    writer.close()
    io.close()
    return {key: np.array(ns[SKIP * len(ns) // len(steps) :]) / 1e3 for key, ns in {**parts, **t.ns}.items() if ns}


def _missing():
    from deploy.runtime import Odometry

    return Odometry.missing()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", type=Path, default=DEFAULT_POLICY)
    parser.add_argument("--steps", type=int, default=400, help="control steps recorded and replayed")
    parser.add_argument("--hot", action="store_true", help="steps back to back (default: a period's sleep before each)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the runtime's setting
    spec = load_robot("go1")
    policy = load_policy(args.policy, spec)
    cfg = load_runtime_config("runtime_fast", {"host_stall_allowance_s": 0.0, "soft_start_s": 0.5, "stand_s": 0.2})
    ramp_from, steps = record_walk(spec, policy, cfg, args.steps)
    with tempfile.TemporaryDirectory() as log_dir:
        times = replay(spec, policy, cfg, ramp_from, steps, not args.hot, log_dir)
    print(f"{'part (µs)':34s} {'p50':>8s} {'p99':>8s} {'mean':>8s}   ({'hot' if args.hot else 'cold'}, "
          f"{args.steps - SKIP} steps)")  # fmt: skip
    rows = {}
    for key in times:  # the step's parts in order, then the controller's (indented)
        us = times[key]
        rows[key.strip()] = {"p50": float(np.percentile(us, 50)), "p99": float(np.percentile(us, 99)),
                             "mean": float(us.mean()), "n": int(len(us))}  # fmt: skip
        print(f"{key:34s} {rows[key.strip()]['p50']:8.1f} {rows[key.strip()]['p99']:8.1f} {us.mean():8.1f}")
    save("control_step_profile" + "_hot" * args.hot, {"policy": str(args.policy), "mode": "hot" if args.hot else
                                                       "cold", "parts_us": rows})  # fmt: skip


if __name__ == "__main__":
    main()
