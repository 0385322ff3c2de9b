"""Bridge latency and loop jitter: pd_target published on LCM → LowCmd on the wire, and the LowCmd period.

The real `real_robot bridge` runs as a subprocess (real SDK, udpm ttl=0, a unique channel prefix) against a
bare board emulator in this process: a UDP socket that sends LowState packets at 500 Hz and timestamps every
LowCmd the SDK sends. Each pd_target carries its sequence number in one joint's q_des, so the first LowCmd
holding that value marks its arrival. Expected: latency ≈ uniform over one 2 ms period plus the bridge's work;
period p50 = 2 ms.

    python benchmarks/bridge_latency.py [--seconds 10] [--follow]
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.common import save  # noqa: E402
from real_robot.lcm_bus import DEFAULT_LCM_URL, LcmNode  # noqa: E402
from real_robot.arming import arm_request, load_secret  # noqa: E402
from real_robot.lcm_types.go1lcm import pd_target_t  # noqa: E402
from real_robot.unitree_wire import LowState, WireError, decode_low_cmd, encode_low_state  # noqa: E402
from robot_spec import load_robot  # noqa: E402

STATE_HZ = 500
MARK_JOINT = 0  # simulator joint whose q_des carries the sequence number
SESSION = 1  # the session token this benchmark binds the bridge to (real_robot.arming)
MARK_STEP = 1e-3  # rad per sequence number, inside the hip's SDK clamp for 500 distinct values


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def marked_target(spec, sequence: int, tick_us: int) -> pd_target_t:
    """A target answering the newest state (tick_us), as the runtime's are (bridge --follow paces by it)."""
    msg = pd_target_t()
    msg.timestamp_us, msg.sequence, msg.robot_tick_us = time.monotonic_ns() // 1000, sequence, tick_us
    msg.session = SESSION
    q = spec.default_pose.copy()
    q[MARK_JOINT] = mark_value(sequence)
    msg.q_des, msg.kp, msg.kd = q.tolist(), [spec.control.kp] * 12, [spec.control.kd] * 12
    return msg


def mark_value(sequence: int) -> float:
    return float(np.float32(-0.25 + MARK_STEP * (sequence % 500)))  # float32: as it travels in a LowCmd


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for_bridge(board: socket.socket, bridge: subprocess.Popen) -> None:
    """The bridge sends damping LowCmds from its first cycle on: the first one says it is up."""
    deadline = time.monotonic() + 30
    while not select.select([board], [], [], 0.1)[0]:
        if bridge.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the bridge did not start (exit code {bridge.poll()})")
    board.recv(2048)


def measure(seconds: float, follow: bool) -> dict:
    spec = load_robot("go1")
    board = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    board.bind(("127.0.0.1", 0))
    robot_port, local_port = board.getsockname()[1], free_port()
    prefix = f"bench{os.getpid()}_"
    bridge = subprocess.Popen(
        [sys.executable, "-m", "real_robot.bridge", "--robot-port", str(robot_port), "--local-port", str(local_port),
         "--lcm-url", DEFAULT_LCM_URL, "--channel-prefix", prefix, "--duration", str(seconds + 3)] + (["--follow"] if follow else []),
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    node = LcmNode(DEFAULT_LCM_URL, prefix)
    node.subscribe("safety_status")
    secret = load_secret()
    sdk_slot = spec.sdk_index[MARK_JOINT]
    policy_period_ns = round(spec.control.policy_dt * 1e9)
    state_period_ns = round(1e9 / STATE_HZ)

    cmd_times, latencies_us = [], []
    pending: dict[float, int] = {}  # marked q value -> publish time (ns)
    sequence, tick_us = 0, 0
    wait_for_bridge(board, bridge)
    rng = np.random.default_rng(0)
    cpu_start = cpu_seconds(bridge.pid)
    start = time.monotonic_ns()
    next_state, next_target, end = start, start, start + int(seconds * 1e9)
    with tqdm(total=int(seconds), unit="s", desc="bridge latency") as bar:
        while (now := time.monotonic_ns()) < end:
            if now >= next_state:
                tick_us += state_period_ns // 1000
                board.sendto(encode_low_state(LowState(q=np.zeros(20), tick=tick_us)), ("127.0.0.1", local_port))
                next_state += state_period_ns
            if now >= next_target:
                # A stall here or in the bridge longer than the watchdog's limit trips it (as it should): re-arm
                # before every target so one stall costs one sample, and count the trips.
                node.publish("arm_request", arm_request(secret, now // 1000, "bridge", "bridge_latency", SESSION))
                msg = marked_target(spec, sequence, tick_us - state_period_ns // 1000)  # a state the bridge has
                pending[mark_value(sequence)] = time.monotonic_ns()
                node.publish("pd_target", msg)
                sequence += 1
                # A random phase against the bridge's 2 ms cycle, so the latency samples the whole cycle.
                next_target += policy_period_ns + int(rng.uniform(-0.5, 0.5) * state_period_ns)
            timeout = max(0.0, (min(next_state, next_target) - time.monotonic_ns()) / 1e9)
            if select.select([board], [], [], timeout)[0]:
                data = board.recv(2048)
                arrived = time.monotonic_ns()
                try:
                    cmd = decode_low_cmd(data)
                except WireError:
                    continue
                cmd_times.append(arrived)
                sent = pending.pop(float(np.float32(cmd.q[sdk_slot])), None)
                if sent is not None:
                    latencies_us.append((arrived - sent) / 1e3)
            node.handle(0.0)
            bar.update((now - start) // 1_000_000_000 - bar.n)
    bridge_cpu = (cpu_seconds(bridge.pid) - cpu_start) / seconds
    status = node.latest.get("safety_status")
    bridge.terminate()
    bridge.wait(timeout=10)
    board.close()

    periods_us = np.diff(cmd_times) / 1e3
    pct = lambda a, q: float(np.percentile(a, q)) if len(a) else float("nan")  # noqa: E731
    return {
        "mode": "follow" if follow else "realtime",
        "seconds": seconds,
        "targets_published": sequence,
        "targets_seen_on_wire": len(latencies_us),
        "watchdog_trips": status.msg.trip_count if status else None,
        "latency_us": {"p50": pct(latencies_us, 50), "p99": pct(latencies_us, 99), "max": pct(latencies_us, 100)},
        "lowcmd_packets": len(cmd_times),
        "bridge_cpu_fraction_of_one_core": bridge_cpu,
        "load_avg_1min_at_end": os.getloadavg()[0],
        "period_us": {
            "p1": pct(periods_us, 1), "p50": pct(periods_us, 50), "p99": pct(periods_us, 99), "max": pct(periods_us, 100),
            "std": float(np.std(periods_us)) if len(periods_us) else float("nan"),
            "over_3ms": int(np.sum(periods_us > 3000)),
        },
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement time (default 10 s)")
    parser.add_argument("--follow", action="store_true", help="bridge in --follow mode (steps per LowState)")
    args = parser.parse_args()
    result = measure(args.seconds, args.follow)
    lat, per = result["latency_us"], result["period_us"]
    print(f"{result['mode']}: pd_target -> LowCmd latency p50 {lat['p50']:.0f} µs, p99 {lat['p99']:.0f} µs, max {lat['max']:.0f} µs "
          f"({result['targets_seen_on_wire']}/{result['targets_published']} targets seen, "
          f"{result['watchdog_trips']} watchdog trips)")  # fmt: skip
    print(f"LowCmd period p50 {per['p50']:.0f} µs, p1 {per['p1']:.0f}, p99 {per['p99']:.0f}, max {per['max']:.0f}, "
          f"std {per['std']:.0f} µs, {per['over_3ms']} periods > 3 ms of {result['lowcmd_packets']} packets; "
          f"bridge CPU {100 * result['bridge_cpu_fraction_of_one_core']:.0f}% of a core")  # fmt: skip
    save("bridge_latency" + ("_follow" if args.follow else ""), result)


if __name__ == "__main__":
    main()
