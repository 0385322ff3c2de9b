"""Deploy control loop: policy inference time, the controller's receive→publish time, state→command latency and
loop jitter at 50 Hz, real time, with the ROS 2 state publisher on (as `deploy run --ros2-out`).

- inference: one `policy.actor(obs)` under torch.inference_mode with 1 thread (the runtime's setting), one
  controller `act` (observation, policy, every safety monitor, PD target: the state→command path) and one whole
  `step` (act + the record's copies), on a fake state; and the memory the state→command path keeps (tracemalloc
  over steps after a warm-up: growth and peak above the start);
- receive→publish (the controller's own time): from the step's joint_state arriving in the runtime (dispatched
  from the LCM socket) to its pd_target published; state→command: from the bridge stamping that joint_state (its
  timestamp_us, the host's monotonic clock) to the same publish, through LCM, on the stand-in robot in real time
  (`real_robot sim-robot` + `real_robot bridge` subprocesses);
- jitter: |wall interval between control steps − 20 ms|.
Targets (#21): receive→publish p99 < 1 ms, jitter p99 < 0.5 ms, zero memory growth (judged as under a byte a
step: numpy's small-block caches move a few bytes; an array kept per step would be ~100 B a step).

    python benchmarks/control_loop.py [--policy policy.pt] [--seconds 20] [--profile none] [--no-ros2] [--fast]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import save  # noqa: E402
from deploy.commands import ScheduledCommand, load_schedule, load_speed_preset  # noqa: E402
from deploy.runtime import Controller, Phase, RobotState, Runtime, StepContext, load_runtime_config  # noqa: E402
from deploy.safety import SafetyMonitor, load_safety_config  # noqa: E402
from robot_spec import load_robot  # noqa: E402
from robot_spec.policy_io import ActorMLP, load_policy, save_policy  # noqa: E402

TARGETS_MS = {"inference": 0.5, "receive_to_publish_p99": 1.0, "jitter_p99": 0.5}
DEFAULT_POLICY = Path("/work/policies/policy.pt")


def percentiles_ms(values_s) -> dict:
    values = 1e3 * np.asarray(values_s)
    p50, p99 = np.percentile(values, [50, 99])
    return {"p50": float(p50), "p99": float(p99), "max": float(values.max()), "n": int(len(values))}


def make_controller(spec, policy_path: Path, cfg) -> Controller:
    policy = load_policy(policy_path, spec)
    commands = ScheduledCommand(load_schedule("walk", load_speed_preset("high")))
    return Controller(spec, policy, SafetyMonitor(spec, load_safety_config(spec.name)), commands, cfg)


def bench_inference(spec, policy_path: Path, calls: int) -> dict:
    """Back to back ("hot"), and once per control period with the process asleep in between, as in the loop
    ("cold": on these shared VMs a core that slept 20 ms runs the same code several times slower)."""
    torch.set_num_threads(1)
    cfg = load_runtime_config("runtime", {"soft_start_s": 0.0, "stand_s": 0.0})  # straight to the policy
    controller = make_controller(spec, policy_path, cfg)
    obs = torch.zeros(1, spec.observation.dim)
    state = RobotState.standing_still(spec.default_pose)
    times = {name + cold: [] for name in ("policy", "controller_act", "controller_step") for cold in ("", "_cold")}
    for i in range(calls + 100 + calls // 10):  # 100 warm-up calls, then hot, then a tenth as many cold
        cold = "_cold" * (i >= calls + 100)
        if cold:
            time.sleep(spec.control.policy_dt)
        start = time.perf_counter()
        with torch.inference_mode():
            controller.policy.actor(obs)
        middle = time.perf_counter()
        target = controller.act(state, StepContext(i * 20_000, 0.0, 0.02))
        acted = time.perf_counter()
        controller.record()
        end = time.perf_counter()
        state.q = target.q_des.copy()  # a perfect robot: the next step asks no torque the fake state lacks
        if i >= 100:
            times["policy" + cold].append(middle - start)
            times["controller_act" + cold].append(acted - middle)
            times["controller_step" + cold].append(end - middle)
    assert controller.phase == Phase.POLICY, controller.safety.trip
    return {f"{name}_ms": percentiles_ms(values) for name, values in times.items()} | {
        "act_memory": act_memory(controller, state, steps=calls)}


def act_memory(controller: Controller, state: RobotState, steps: int) -> dict:
    """Bytes the state→command path (`Controller.act`) keeps after `steps` steps (growth) and holds at most at
    once above the start (peak), under tracemalloc, after the warm-up above and as many traced steps (numpy's
    small-block caches fill in the first traced steps)."""

    def run(first: int) -> None:
        for i in range(first, first + steps):
            target = controller.act(state, StepContext(i * 20_000, 0.0, 0.02))
            np.copyto(state.q, target.q_des)  # the perfect robot above

    tracemalloc.start()
    run(10_000)
    tracemalloc.reset_peak()
    start = tracemalloc.get_traced_memory()[0]
    run(10_000 + steps)
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert controller.phase == Phase.POLICY, controller.safety.trip
    return {"steps": steps, "growth_bytes": current - start, "peak_above_start_bytes": peak - start}


def bench_loop(spec, policy_path: Path, seconds: float, profile: str, ros2_out: bool, fast: bool = False) -> dict:
    from real_robot.loopback import LoopbackRobot

    mode = {"profile": profile, "fast": fast, "ros2_out": ros2_out}
    cfg = "runtime_fast" if fast else "runtime"
    if not ros2_out:
        with LoopbackRobot(profile=profile, fast=fast) as robot:
            return {**mode, **measure_loop(spec, policy_path, robot, seconds, cfg=cfg)}
    from deploy.ros2 import Ros2StatePublisher

    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))  # a domain of its own
    with Ros2StatePublisher(spec) as publisher, LoopbackRobot(profile=profile, fast=fast) as robot:
        result = measure_loop(spec, policy_path, robot, seconds, also_on_step=publisher.on_step, cfg=cfg)
        time.sleep(0.5)  # the queue drains
        return {**mode, **result, "ros2_published": dict(publisher.published), "ros2_dropped": publisher.dropped}


def measure_loop(spec, policy_path: Path, robot, seconds: float, also_on_step=None, io=None,
                 cfg: str = "runtime") -> dict:  # fmt: skip
    """The runtime (`cfg`: configs/deploy/<cfg>.yaml) on a running loopback `robot` for `seconds` of robot time;
    `also_on_step(record)` is called after each step's own bookkeeping (a ROS 2 publisher, say). `io`: the robot
    side (default: LCM to `robot`)."""
    from deploy.lcm_io import LcmRobotIO

    cfg = load_runtime_config(cfg)
    io = io or LcmRobotIO(robot.lcm_url, robot.prefix)
    records = []

    def on_step(record: dict) -> None:
        records.append(record)
        if also_on_step is not None:
            also_on_step(record)

    robot.reset()
    robot.arm("bridge")
    runtime = Runtime(make_controller(spec, policy_path, cfg), io, cfg, on_step=on_step)
    runtime.wait_for_state()
    runtime.run(duration_s=seconds)
    io.close()
    runtime.close()
    fresh = [r for r in records if r["state"].repeats == 0 and r["state"].robot_tick_us >= r["robot_tick_us"]]
    latency = [(r["publish_us"] - r["state"].stamp_us) / 1e6 for r in fresh]
    own = [(r["publish_us"] - 1e6 * r["state"].received_s) / 1e6 for r in fresh]  # the controller's own time
    delivery = [(r["timestamp_us"] - r["state"].stamp_us) / 1e6 for r in fresh]  # LCM + waking up
    compute = [(r["publish_us"] - r["timestamp_us"]) / 1e6 for r in fresh]  # controller step + publishing
    intervals = np.diff([r["timestamp_us"] for r in records]) / 1e6
    period = spec.control.policy_dt
    trips = [r["trip"].reason for r in records if r["trip"] is not None]
    return {
        "seconds": seconds, "steps": len(records), "late_or_stale_steps": len(records) - len(fresh),
        "phases": {p.name.lower(): sum(r["phase"] == p for r in records) for p in Phase},
        "first_trip": trips[0] if trips else None,
        "receive_to_publish_ms": percentiles_ms(own), "state_to_command_ms": percentiles_ms(latency),
        "of_which_delivery_ms": percentiles_ms(delivery), "of_which_compute_ms": percentiles_ms(compute),
        "jitter_ms": percentiles_ms(np.abs(intervals - period)),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", type=Path, help=f"policy file (default: {DEFAULT_POLICY} if present, else "
                        "a freshly initialised 256-128-64 MLP)")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=20.0, help="real-time loop duration on the stand-in")
    parser.add_argument("--profile", default="none", help="stand-in reality-gap profile (default: none, it stands)")
    parser.add_argument("--calls", type=int, default=2000, help="inference calls timed")
    parser.add_argument("--no-ros2", action="store_true", help="without the ROS 2 state publisher")
    parser.add_argument("--fast", action="store_true", help="the stand-in in lockstep (sim-robot --fast, bridge "
                        "--follow): a busy host pauses the robot instead of tripping it; receive->publish is still "
                        "the controller's own time, state->command and jitter are not real-time figures")  # fmt: skip
    parser.add_argument("--name", default="control_loop", help="result file name (results/<name>.json)")
    args = parser.parse_args()
    spec = load_robot("go1")
    with tempfile.TemporaryDirectory() as tmp:
        policy_path = args.policy or (DEFAULT_POLICY if DEFAULT_POLICY.is_file() else None)
        if policy_path is None:
            policy_path = Path(tmp) / "policy.pt"
            save_policy(ActorMLP(spec.observation.dim, spec.num_joints, [256, 128, 64]), spec, policy_path)
        inference = bench_inference(spec, policy_path, args.calls)
        for name in ("policy", "controller_act", "controller_step"):
            for cold in ("", "_cold"):
                ms = inference[f"{name}{cold}_ms"]
                print(f"{name + cold:21s} p50 {ms['p50']:.3f} ms  p99 {ms['p99']:.3f} ms")
        memory = inference["act_memory"]
        print(f"act memory over {memory['steps']} steps: growth {memory['growth_bytes']} B, peak above the start "
              f"{memory['peak_above_start_bytes']} B")  # fmt: skip
        loop = bench_loop(spec, policy_path, args.seconds, args.profile, ros2_out=not args.no_ros2, fast=args.fast)
    own, lat, jit = loop["receive_to_publish_ms"], loop["state_to_command_ms"], loop["jitter_ms"]
    print(f"receive->publish   p50 {own['p50']:.3f} ms  p99 {own['p99']:.3f} ms  max {own['max']:.3f} ms")
    print(f"state->command     p50 {lat['p50']:.3f} ms  p99 {lat['p99']:.3f} ms  max {lat['max']:.3f} ms")
    for part in ("delivery", "compute"):
        ms = loop[f"of_which_{part}_ms"]
        print(f"  of which {part:8s} p50 {ms['p50']:.3f} ms  p99 {ms['p99']:.3f} ms")
    print(f"loop jitter        p50 {jit['p50']:.3f} ms  p99 {jit['p99']:.3f} ms  max {jit['max']:.3f} ms")
    print(f"{loop['steps']} steps, phases {loop['phases']}, late/stale steps {loop['late_or_stale_steps']}, "
          f"first trip {loop['first_trip']}, ROS 2 out {loop['ros2_out']}"
          + (f" (published {loop['ros2_published']}, dropped {loop['ros2_dropped']})" if loop["ros2_out"] else ""))
    met = {
        "inference": inference["policy_ms"]["p50"] < TARGETS_MS["inference"],
        "receive_to_publish_p99": own["p99"] < TARGETS_MS["receive_to_publish_p99"],
        "jitter_p99": jit["p99"] < TARGETS_MS["jitter_p99"],
        "memory_growth": memory["growth_bytes"] < memory["steps"],  # < 1 B a step: nothing kept per step
    }
    print("targets met: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in met.items()))
    save(args.name, {"policy": str(policy_path), "targets_ms": TARGETS_MS, "met": met, "inference": inference,
                     "loop": loop})  # fmt: skip


if __name__ == "__main__":
    main()
