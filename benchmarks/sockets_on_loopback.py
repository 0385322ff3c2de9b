"""Where a running stand-in, bridge and deploy (with ROS 2 commands) listen: every socket on loopback?

Starts the stand-in and the bridge (real_robot.loopback) and `deploy run --commands ros2:<topic>` against them,
waits until deploy drives the robot, then prints `real_robot sockets` for the three processes (sockets and the
host's memberships of their multicast groups) and saves the listing. Exit 1 if any socket is beyond loopback.

    python benchmarks/sockets_on_loopback.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import save  # noqa: E402
from real_robot.loopback import LoopbackRobot  # noqa: E402
from real_robot.sockets import process_sockets  # noqa: E402
from robot_spec import load_robot  # noqa: E402
from robot_spec.policy_io import ActorMLP, save_policy  # noqa: E402

DDS_DISCOVERY_PORTS = {"7400", "7410", "7411"}  # Fast DDS, domain 0: a ROS 2 node is up once these are bound


def main() -> int:
    spec = load_robot("go1")
    with tempfile.TemporaryDirectory() as tmp, LoopbackRobot(profile="none", fast=True, startup_timeout_s=120) as robot:
        policy = Path(tmp) / "policy.pt"
        save_policy(ActorMLP(spec.observation.dim, spec.num_joints, [32]), spec, policy)
        env = {k: v for k, v in os.environ.items() if k not in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "FASTDDS_DEFAULT_PROFILES_FILE")}
        deploy = subprocess.Popen(
            [sys.executable, "-m", "deploy.cli", "run", "--policy", str(policy), "--speed", "low", "--commands",
             f"ros2:/sockets_check_{os.getpid()}", "--runtime-config", "runtime_fast", "--lcm-url", robot.lcm_url,
             "--channel-prefix", robot.prefix, "--no-log"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while not DDS_DISCOVERY_PORTS & {s.port for s in process_sockets({deploy.pid})}:
                if deploy.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"deploy did not start its ROS 2 node (exit code {deploy.poll()})")
                time.sleep(0.5)
            robot.wait_for("pd_target", 60)  # deploy drives the bridge
            pids = {"stand-in": robot.processes[0].pid, "bridge": robot.processes[1].pid, "deploy": deploy.pid}
            args = [a for pid in pids.values() for a in ("--pid", str(pid))]
            listing = subprocess.run([sys.executable, "-m", "real_robot.cli", "sockets", *args], cwd=ROOT,
                                     capture_output=True, text=True)  # fmt: skip
        finally:
            deploy.terminate()
            deploy.wait(timeout=30)
    print(f"pids: {pids}\n{listing.stdout}{listing.stderr}")
    save("sockets_on_loopback", {"pids": pids, "listing": listing.stdout.splitlines(), "exit_code": listing.returncode})
    return listing.returncode


if __name__ == "__main__":
    sys.exit(main())
