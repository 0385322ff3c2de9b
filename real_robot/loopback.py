"""The stand-in robot and the SDK bridge as subprocesses on 127.0.0.1: the hardware path without hardware.

For tests, benchmarks and demos: `real_robot sim-robot` and `real_robot bridge` on free UDP ports and a
private LCM channel prefix (so parallel runs never hear each other), plus an observer node that sees every
message and can inject faults (sim_control) or re-arm (arm_request).

    with LoopbackRobot(profile="none", fast=True) as robot:
        io = LcmRobotIO(robot.lcm_url, robot.prefix)
        robot.sim_control("fault", fault="sensor_nan", motor=2)
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from real_robot.lcm_bus import DEFAULT_LCM_URL, LcmNode, now_us
from real_robot.arming import arm_request, load_secret
from real_robot.lcm_types.go1lcm import sim_control_t
from real_robot.sim_robot import BOARD_DT

REPO = Path(__file__).resolve().parent.parent
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent() -> None:
    """In the child (Linux): SIGTERM when the process that started it dies, however it dies (kill -9 too), so a
    killed run leaves no stand-in or bridge behind. Elsewhere the children outlive a killed parent."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PORT_TAKEN = "Address already in use"  # in a child's log: its port went to another process after the probe


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LoopbackRobot:
    def __init__(self, profile: str = "none", fast: bool = True, lcm_url: str = DEFAULT_LCM_URL,
                 prefix: str | None = None, startup_timeout_s: float = 30.0, seed: int = 0,
                 robot: str = "go1"):  # fmt: skip
        self.profile, self.fast, self.lcm_url, self.seed, self.robot = profile, fast, lcm_url, seed, robot
        self.prefix = prefix if prefix is not None else f"lb{uuid.uuid4().hex[:8]}_"
        self.startup_timeout_s = startup_timeout_s
        self.processes: list[subprocess.Popen] = []
        self.node: LcmNode | None = None
        self.logs = tempfile.TemporaryDirectory(prefix="loopback_")

    def __enter__(self) -> LoopbackRobot:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()

    def start(self, attempts: int = 3) -> None:
        """Start the stand-in and the bridge; a port taken between its probe and the child's bind (another
        process on this host probing at the same time) gets new ports, up to `attempts` times."""
        self.node = LcmNode(self.lcm_url, self.prefix)
        for name in ("joint_state", "pd_target", "safety_status"):
            self.node.subscribe(name)
        for attempt in range(attempts):
            try:
                return self._start_once()
            except RuntimeError as err:
                if PORT_TAKEN not in str(err) or attempt == attempts - 1:
                    raise
                self._stop_processes()

    def _start_once(self) -> None:
        board_port, sdk_port = free_udp_port(), free_udp_port()
        common = ["--lcm-url", self.lcm_url, "--channel-prefix", self.prefix, "--robot", self.robot]
        robot = ["sim-robot", "--port", str(board_port), "--profile", self.profile, "--seed", str(self.seed), *common]
        bridge = ["bridge", "--robot-port", str(board_port), "--local-port", str(sdk_port), *common]
        if self.fast:
            robot.append("--fast")
            bridge.append("--follow")
        self.processes = [self._spawn("robot", robot), self._spawn("bridge", bridge)]
        self.wait_for("joint_state", self.startup_timeout_s)

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(Path(self.logs.name) / f"{name}.log", "wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        return subprocess.Popen([sys.executable, "-m", "real_robot.cli", *args], cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent)  # fmt: skip

    def wait_for(self, channel: str, timeout_s: float) -> None:
        """Until the observer has received a message on `channel`; a clear error naming the process logs."""
        deadline = time.monotonic() + timeout_s
        while channel not in self.node.latest:
            dead = [p.args for p in self.processes if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"loopback robot: no {channel} after {timeout_s:.0f} s (exited: {dead}); "
                                   f"logs:\n{self.process_logs()}")  # fmt: skip
            self.node.handle(0.05)

    def process_logs(self) -> str:
        logs = sorted(Path(self.logs.name).glob("*.log"))
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}" for log in logs)

    def sim_control(self, action: str, fault: str = "", motor: int = -1, magnitude: float = 0.0,
                    duration_s: float = 0.0, sticks: tuple = (0.0, 0.0, 0.0, 0.0)) -> None:  # fmt: skip
        """Fault injection, reset, push or the emulated remote's sticks (see real_robot/sim_robot.py)."""
        msg = sim_control_t()
        msg.timestamp_us, msg.action, msg.fault, msg.motor = now_us(), action, fault, motor
        msg.magnitude, msg.duration_s, msg.sticks = magnitude, duration_s, [float(v) for v in sticks]
        self.node.publish("sim_control", msg)

    def reset(self, settle_s: float = 0.1, ticks: int = 5) -> None:
        """The stand-in back to its start pose (lying, motors off); returns once the reset has surely landed:
        `settle_s` of wall time for the request to arrive, then `ticks` more board ticks."""
        self.sim_control("reset")
        self.pump(settle_s)
        until_tick = self.node.latest["joint_state"].msg.robot_tick_us + ticks * round(BOARD_DT * 1e6)
        deadline = time.monotonic() + self.startup_timeout_s
        while self.node.latest["joint_state"].msg.robot_tick_us < until_tick:
            if time.monotonic() > deadline:
                raise RuntimeError(f"loopback robot: no board ticks after a reset; logs:\n{self.process_logs()}")
            self.node.handle(0.01)

    def pump(self, seconds: float) -> None:
        """Dispatch the observer's messages for `seconds` of wall time."""
        end = time.monotonic() + seconds
        while (remaining := end - time.monotonic()) > 0:
            self.node.handle(remaining)

    def arm(self, target: str = "all", session: int = 0) -> None:
        """A signed arm_request (real_robot.arming); `session` binds the bridge to that token (0: keeps it)."""
        self.node.publish("arm_request", arm_request(load_secret(), now_us(), target, "loopback", session))

    def stop(self) -> None:
        self._stop_processes()
        if self.node is not None:
            self.node.close()
        self.logs.cleanup()

    def _stop_processes(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)  # both leave cleanly on Ctrl-C (the bridge sends damping)
        for process in self.processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes = []
