"""Does publishing the state on ROS 2 (deploy run --ros2-out) slow the control loop? The real-time loop of
benchmarks/control_loop.py on one stand-in robot, in alternating runs without and with the ROS 2 state publisher
(started before the robot's state is subscribed to, as deploy run does; its own ROS domain): state→command
latency, the controller's compute and loop jitter per run, and what was published.
`--no-robot` measures the same without the stand-in (the loop over an in-process robot that sends a state every
2 ms of wall time): on a host too busy for the stand-in to keep real time, what the publisher adds to the loop.

    python benchmarks/ros2_out_loop.py [--seconds 10] [--rounds 3] [--policy policy.pt] [--no-robot]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import save  # noqa: E402
from benchmarks.control_loop import DEFAULT_POLICY, measure_loop  # noqa: E402
from real_robot.clock import now_us  # noqa: E402
from robot_spec import load_robot  # noqa: E402
from robot_spec.policy_io import ActorMLP, save_policy  # noqa: E402


class PacedRobot:
    """An in-process robot for `measure_loop`: a new state every 2 ms of wall time (the Go1's 500 Hz board), that
    stands still; odometry at the origin. Stands in for LoopbackRobot + LcmRobotIO."""

    lcm_url = prefix = ""

    def __init__(self, spec):
        import numpy as np

        from deploy.runtime import Odometry, RobotState

        n = spec.num_joints
        self.odometry = Odometry(np.zeros(3), np.array([1.0, 0, 0, 0]), np.zeros(3), np.zeros(3))
        self.start = time.monotonic()
        self.state = RobotState(
            robot_tick_us=0, body_tick_us=0, stamp_us=0, received_s=self.start, repeats=0, tick_step_us=2000,
            q=spec.default_pose.copy(), dq=np.zeros(n), tau_est=np.zeros(n), quaternion=np.array([1.0, 0, 0, 0]),
            rpy=np.zeros(3), gyro=np.zeros(3), accelerometer=np.array([0, 0, 9.81]), foot_force=np.zeros(4),
        )  # fmt: skip

    def poll(self, timeout_s: float) -> None:
        import dataclasses

        tick = int((time.monotonic() - self.start) * 1e6) // 2000 * 2000
        if tick <= self.state.robot_tick_us:
            time.sleep(min(timeout_s, (self.state.robot_tick_us + 2000 - tick) / 1e6))
            tick = int((time.monotonic() - self.start) * 1e6) // 2000 * 2000
        if tick > self.state.robot_tick_us:
            self.state = dataclasses.replace(self.state, robot_tick_us=tick, body_tick_us=tick, stamp_us=now_us(),
                                             received_s=time.monotonic())  # fmt: skip

    def odometry_at(self, stamp_us):
        return self.odometry

    def remote(self):
        return None

    def bridge_status(self):
        return None

    def take_arm_request(self) -> bool:
        return False

    def publish_target(self, target, sequence, robot_tick_us) -> None:
        pass

    def publish_status(self, trip, trip_count) -> None:
        pass

    def reset(self) -> None:
        pass

    def arm(self, _target) -> None:
        pass

    def close(self) -> None:
        pass


def one_run(spec, policy_path: Path, robot, seconds: float, ros2_out: bool) -> dict:
    io = robot if isinstance(robot, PacedRobot) else None
    if not ros2_out:
        return {"ros2_out": False, **measure_loop(spec, policy_path, robot, seconds, io=io)}
    from deploy.ros2 import Ros2StatePublisher

    queueing_us = []  # the control thread's CPU time in the publisher's on_step

    def on_step(record: dict) -> None:
        start = time.thread_time_ns()
        publisher.on_step(record)
        queueing_us.append((time.thread_time_ns() - start) / 1e3)

    with Ros2StatePublisher(spec) as publisher:
        result = measure_loop(spec, policy_path, robot, seconds, also_on_step=on_step, io=io)
        time.sleep(0.5)  # the queue drains
        thread_cpu_s = thread_cpu_seconds(publisher._thread.native_id)
    p50, p99 = np.percentile(queueing_us, [50, 99])
    return {"ros2_out": True, **result, "published": dict(publisher.published), "dropped": publisher.dropped,
            "control_thread_queueing_us": {"p50": float(p50), "p99": float(p99)},
            "publisher_thread_cpu_ms_per_step": 1e3 * thread_cpu_s / max(1, len(queueing_us))}  # fmt: skip


def thread_cpu_seconds(native_id: int) -> float:
    """User + system CPU time of one thread of this process (Linux /proc; clock ticks)."""
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def line(run: dict) -> str:
    lat, comp, jit = run["state_to_command_ms"], run["of_which_compute_ms"], run["jitter_ms"]
    return (f"ros2_out {'on ' if run['ros2_out'] else 'off'}  state->command p50 {lat['p50']:.3f} p99 {lat['p99']:.3f}"
            f"  compute p50 {comp['p50']:.3f} p99 {comp['p99']:.3f}  jitter p50 {jit['p50']:.3f} p99 {jit['p99']:.3f}"
            f" max {jit['max']:.1f} ms  steps {run['steps']}  trip {run['first_trip']}"
            + (f"  published {run['published']} dropped {run['dropped']}; control thread queueing "
               f"{run['control_thread_queueing_us']['p50']:.0f} us p50, publisher thread "
               f"{run['publisher_thread_cpu_ms_per_step']:.2f} ms CPU/step" if run["ros2_out"] else ""))  # fmt: skip


def main() -> None:
    from real_robot.loopback import LoopbackRobot

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="real-time loop duration of each run")
    parser.add_argument("--rounds", type=int, default=3, help="pairs of runs (without, with)")
    parser.add_argument("--no-robot", action="store_true", help="an in-process robot instead of the stand-in")
    parser.add_argument("--policy", type=Path, help=f"policy file (default: {DEFAULT_POLICY} if present, else a "
                        "freshly initialised 256-128-64 MLP)")  # fmt: skip
    args = parser.parse_args()
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    spec = load_robot("go1")
    runs = []
    startup_s = 600  # a busy host starts the stand-in slowly
    robot = nullcontext(PacedRobot(spec)) if args.no_robot else \
        LoopbackRobot("none", fast=False, startup_timeout_s=startup_s)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp, robot as robot:
        policy_path = args.policy or (DEFAULT_POLICY if DEFAULT_POLICY.is_file() else None)
        if policy_path is None:
            policy_path = Path(tmp) / "policy.pt"
            save_policy(ActorMLP(spec.observation.dim, spec.num_joints, [256, 128, 64]), spec, policy_path)
        for _ in range(args.rounds):
            for ros2_out in (False, True):
                runs.append(one_run(spec, policy_path, robot, args.seconds, ros2_out))
                print(line(runs[-1]), flush=True)
    name = "ros2_out_loop_no_robot" if args.no_robot else "ros2_out_loop"
    save(name, {"policy": str(policy_path), "seconds": args.seconds, "robot": "in-process" if args.no_robot else
                "stand-in", "runs": runs})  # fmt: skip


if __name__ == "__main__":
    main()
