"""Stand-in robot rates: board ticks (and physics steps) per second in fast mode, and real-time pacing jitter.

Fast mode is measured twice: `step()` in-process with a loopback client (the stand-in's own cost per tick), and the
`real_robot sim-robot --fast` process in lockstep with a client in this process (what collection sees).
Real-time mode: the CLI process at 500 Hz; the client timestamps every LowState on arrival, so the period error
includes loopback delivery and this process's wake-up jitter (an upper bound on the board's own).

    python benchmarks/sim_robot_rate.py [--profile strong] [--ticks 3000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import save  # noqa: E402
from real_robot import unitree_wire as wire  # noqa: E402
from real_robot.sim_robot import BOARD_DT, StandInRobot  # noqa: E402
from robot_spec import load_robot  # noqa: E402


def stand_command(robot_spec) -> bytes:
    """Hold the default pose with the spec's gains, as a LowCmd packet."""
    n, c = robot_spec.num_joints, robot_spec.control
    cmd = wire.LowCmd(
        mode=np.full(n, wire.SERVO_MODE),
        q=robot_spec.to_sdk_order(robot_spec.default_pose),
        dq=np.zeros(n),
        kp=np.full(n, c.kp),
        kd=np.full(n, c.kd),
    )
    return wire.encode_low_cmd(cmd)


def client_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    return sock


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_process_rate(profile: str, ticks: int) -> dict:
    with StandInRobot(profile, port=0, fast=True, lcm_url=None) as robot, client_socket() as client:
        packet, address = stand_command(robot.spec), ("127.0.0.1", robot.port)
        start = time.perf_counter()
        for _ in tqdm(range(ticks), desc="in-process ticks", leave=False):
            client.sendto(packet, address)
            robot.step()
            client.recv(2048)
        elapsed = time.perf_counter() - start
        substeps = robot.substeps
    return {
        "ticks_per_s": ticks / elapsed,
        "physics_steps_per_s": ticks * substeps / elapsed,
        "realtime_factor": ticks * BOARD_DT / elapsed,
    }


def start_cli(profile: str, port: int, fast: bool) -> subprocess.Popen:
    args = [sys.executable, "-m", "real_robot.sim_robot", "--profile", profile, "--port", str(port)]
    args += ["--lcm-url", "memq://"] + (["--fast"] if fast else [])
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def first_state(client: socket.socket, packet: bytes, address) -> None:
    """Knock until the board (still starting up) answers."""
    for _ in range(100):
        client.sendto(packet, address)
        try:
            client.recv(2048)
            return
        except TimeoutError:
            continue
    raise RuntimeError("the stand-in did not answer within the start-up window")


def served_fast_rate(profile: str, ticks: int, robot_spec) -> dict:
    port = free_port()
    process = start_cli(profile, port, fast=True)
    try:
        with client_socket() as client:
            client.settimeout(0.2)
            packet, address = stand_command(robot_spec), ("127.0.0.1", port)
            first_state(client, packet, address)
            ticks_seen, timeouts = [], 0
            start = time.perf_counter()
            for _ in tqdm(range(ticks), desc="served fast ticks", leave=False):
                client.sendto(packet, address)
                try:
                    ticks_seen.append(wire.decode_low_state(client.recv(2048)).tick)
                except TimeoutError:  # a lost exchange: the next command restarts the lockstep
                    timeouts += 1
            elapsed = time.perf_counter() - start
    finally:
        process.terminate()
        process.wait(timeout=10)
    robot_s = (ticks_seen[-1] - ticks_seen[0]) * 1e-6 + BOARD_DT
    return {"ticks_per_s": len(ticks_seen) / elapsed, "realtime_factor": robot_s / elapsed, "timeouts": timeouts}


def real_time_jitter(profile: str, seconds: float, robot_spec) -> dict:
    port = free_port()
    process = start_cli(profile, port, fast=False)
    try:
        with client_socket() as client:
            client.settimeout(0.2)
            packet, address = stand_command(robot_spec), ("127.0.0.1", port)
            first_state(client, packet, address)
            arrivals, ticks = [], []
            for _ in tqdm(range(round(seconds / BOARD_DT)), desc="real-time states", leave=False):
                data = client.recv(2048)
                arrivals.append(time.monotonic_ns())
                ticks.append(wire.decode_low_state(data).tick)
    finally:
        process.terminate()
        process.wait(timeout=10)
    periods_ms = np.diff(arrivals) / 1e6
    error_ms = np.abs(periods_ms - BOARD_DT * 1e3)
    wall_s, robot_s = (arrivals[-1] - arrivals[0]) / 1e9, (ticks[-1] - ticks[0]) / 1e6
    return {
        "states": len(arrivals),
        "period_ms_mean": float(periods_ms.mean()),
        "period_error_ms_p50": float(np.percentile(error_ms, 50)),
        "period_error_ms_p99": float(np.percentile(error_ms, 99)),
        "period_error_ms_max": float(error_ms.max()),
        "drift_ms_per_s": 1e3 * (wall_s - robot_s) / wall_s,
        "missing_ticks": int(round(robot_s / BOARD_DT)) + 1 - len(ticks),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="strong", help="reality-gap profile (default: strong)")
    parser.add_argument("--ticks", type=int, default=3000, help="board ticks per fast-mode measurement")
    parser.add_argument("--seconds", type=float, default=5.0, help="real-time mode measurement length")
    args = parser.parse_args(argv)
    spec = load_robot("go1")
    result = {
        "profile": args.profile,
        "fast_in_process": in_process_rate(args.profile, args.ticks),
        "fast_served": served_fast_rate(args.profile, args.ticks, spec),
        "real_time": real_time_jitter(args.profile, args.seconds, spec),
    }
    for name in ("fast_in_process", "fast_served", "real_time"):
        print(f"{name}: " + ", ".join(f"{k} {v:.3g}" for k, v in result[name].items()))
    save("sim_robot_rate", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
