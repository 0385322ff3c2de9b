"""Does publishing the state on ROS 2 (deploy run --ros2-out) slow the control loop? The real-time loop of
benchmarks/control_loop.py on one stand-in robot, in alternating runs without and with the ROS 2 state publisher
(started before the robot's state is subscribed to, as deploy run does; its own ROS domain): state→command
latency, the controller's compute and loop jitter per run, and what was published.

    python benchmarks/ros2_out_loop.py [--seconds 10] [--rounds 3] [--policy policy.pt]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import save  # noqa: E402
from benchmarks.control_loop import DEFAULT_POLICY, measure_loop  # noqa: E402
from robot_spec import load_robot  # noqa: E402
from robot_spec.policy_io import ActorMLP, save_policy  # noqa: E402


def one_run(spec, policy_path: Path, robot, seconds: float, ros2_out: bool) -> dict:
    if not ros2_out:
        return {"ros2_out": False, **measure_loop(spec, policy_path, robot, seconds)}
    from deploy.ros2 import Ros2StatePublisher

    with Ros2StatePublisher(spec) as publisher:
        result = measure_loop(spec, policy_path, robot, seconds, also_on_step=publisher.on_step)
    return {"ros2_out": True, **result, "published": dict(publisher.published), "dropped": publisher.dropped}


def line(run: dict) -> str:
    lat, comp, jit = run["state_to_command_ms"], run["of_which_compute_ms"], run["jitter_ms"]
    return (f"ros2_out {'on ' if run['ros2_out'] else 'off'}  state->command p50 {lat['p50']:.3f} p99 {lat['p99']:.3f}"
            f"  compute p50 {comp['p50']:.3f} p99 {comp['p99']:.3f}  jitter p50 {jit['p50']:.3f} p99 {jit['p99']:.3f}"
            f" max {jit['max']:.1f} ms  steps {run['steps']}  trip {run['first_trip']}"
            + (f"  published {run['published']} dropped {run['dropped']}" if run["ros2_out"] else ""))  # fmt: skip


def main() -> None:
    from real_robot.loopback import LoopbackRobot

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="real-time loop duration of each run")
    parser.add_argument("--rounds", type=int, default=3, help="pairs of runs (without, with)")
    parser.add_argument("--policy", type=Path, help=f"policy file (default: {DEFAULT_POLICY} if present, else a "
                        "freshly initialised 256-128-64 MLP)")  # fmt: skip
    args = parser.parse_args()
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    spec = load_robot("go1")
    runs = []
    startup_s = 600  # a busy host starts the stand-in slowly
    with tempfile.TemporaryDirectory() as tmp, LoopbackRobot("none", fast=False, startup_timeout_s=startup_s) as robot:
        policy_path = args.policy or (DEFAULT_POLICY if DEFAULT_POLICY.is_file() else None)
        if policy_path is None:
            policy_path = Path(tmp) / "policy.pt"
            save_policy(ActorMLP(spec.observation.dim, spec.num_joints, [256, 128, 64]), spec, policy_path)
        for _ in range(args.rounds):
            for ros2_out in (False, True):
                runs.append(one_run(spec, policy_path, robot, args.seconds, ros2_out))
                print(line(runs[-1]), flush=True)
    save("ros2_out_loop", {"policy": str(policy_path), "seconds": args.seconds, "runs": runs})


if __name__ == "__main__":
    main()
