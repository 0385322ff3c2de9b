"""The safety monitors on many robots (issue 23): false trips per hour on healthy robots, and how soon each
injected fault is caught.

A seeded grid: healthy stand-in robots (reality-gap profiles drawn from HEALTHY: actuation latency 0-40 ms with
jitter, realised Kp/Kd 0.6-1.5x, motor strength 0.7-1.0 globally and per joint, friction 0.3-1.2, payload
0-3 kg, sensor noise and bias 0-1x strong's, joint friction/damping, the torque-speed line and backlash as
random_profile draws them) x the sim policy and a deliberately poor one (the sim policy's actions plus
N(0, POOR_NOISE^2)) x the walk schedule at the high speed preset. A healthy point runs >= `--seconds` of policy
time (episodes restart after a fall); a fault point is a healthy robot that walks 3-15 s, then gets one fault
(FAULTS) and runs FAULT_WINDOW_S more.

The whole control path runs in this process in lockstep (deploy/in_process.py: the stand-in board, the bridge's
target handling, the real runtime, controller and monitors), ~2x faster than real time on a busy core.
Every monitor runs on every step in shadow: a trip is recorded (once per stretch of steps it keeps tripping)
and the robot goes on, so each monitor is measured on its own, not hidden behind the first that trips.
What happened is judged from the stand-in's ground truth, never from a monitor: a fall is the true trunk
tilting beyond 1 rad (the simulator's termination); a trip on a healthy robot is a false trip unless it is
`orientation` within FALL_EARLY_S of a true fall; a trip within BEFORE_FALL_S before a true fall is counted
apart ("before a fall": that episode would be logged as a trip instead of a fall); a push is a fault only if
the robot then falls (it is healthy time otherwise). Each fault's time-to-trip is from its onset (a fall's from
the true fall); a fault is missed if no monitor trips within FAULT_WINDOW_S.

    python benchmarks/monitor_grid.py --healthy 60 --fault-rounds 3 --seconds 60 [--name monitor_grid]

Results (per point, and the summary per monitor and per fault) go to benchmarks/results/<name>.json, rewritten
after every point, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import RESULTS, save  # noqa: E402
from deploy.commands import ScheduledCommand, load_schedule, load_speed_preset  # noqa: E402
from deploy.in_process import InMemoryBoard, InProcessRobot  # noqa: E402
from deploy.record import Phase  # noqa: E402
from deploy.runtime import Controller, PdTarget, Runtime, load_runtime_config  # noqa: E402
from deploy.safety import MONITORS, SafetyInput, SafetyMonitor, load_safety_config  # noqa: E402
from deploy.session import noisy_policy  # noqa: E402
from robot_spec.policy_io import load_policy  # noqa: E402
from robot_spec.reality_gap import (  # noqa: E402
    RANDOM_RANGES,
    MotorEffects,
    RealityGapProfile,
    SensorNoise,
    load_reality_gap,
)
from robot_spec.spec import load_robot  # noqa: E402

SIM_POLICY = Path("/work/shared_runs/go1/20261205-191808_quick/policy.pt")
POOR_NOISE = 0.3  # action units: the poor policy's extra noise (collection uses 0.15)
HEALTHY = {  # uniform ranges of a healthy robot (issue 23)
    "actuator_latency_s": (0.0, 0.036),  # + jitter up to 4 ms: at most the 40 ms the monitors allow
    "latency_jitter_s": (0.0, 0.004),
    "kp_factor": (0.6, 1.5),
    "kd_factor": (0.6, 1.5),
    "motor_strength": (0.7, 1.0),  # and per joint: each joint's product stays >= 0.7
    "friction": (0.3, 1.2),
    "added_mass": (0.0, 3.0),
    "sensor_scale": (0.0, 1.0),  # x strong's noise and bias
}
EFFECT_PROBABILITY = 0.5  # per-joint strength, the torque-speed line and backlash: each on in half the robots
FAULT_WINDOW_S = 2.0  # robot time after a fault's onset that a monitor may still catch it
FAULT_ONSET_S = (3.0, 15.0)  # policy time of the onset
FALL_EARLY_S = 0.1  # an orientation trip this long before a true fall (IMU bias) is the fall caught
BEFORE_FALL_S = 1.0
AFTER_FALL_S = 0.3  # robot time an episode goes on after a true fall (to see the fall caught)
SETTLE_S = 0.5  # damping after a reset, as collect does
SPIKE = (0.5, 0.04)  # sensor spike: rad on one joint's reading, for s
PUSH_SPEED = (1.0, 3.0)  # m/s, in a random horizontal direction
STATED_S = {  # the time each fault must be caught in (issue 23); fall and push: from the true fall
    "dead_motor": 0.15, "weak_motor": 0.5, "freeze_state": 0.15, "drop_packets": 0.15, "sensor_spike": 0.04,
    "sensor_nan": 0.04, "fall": 0.02, "push": 0.02,
}  # fmt: skip
FAULTS = tuple(STATED_S)


# ------------------------------------------------------------------------------------------------ the grid
@dataclass(frozen=True)
class Point:
    index: int
    seed: int
    policy: str  # "sim" or "poor"
    fault: str | None = None
    joint: int = -1  # the faulty joint (dead/weak motor, spike, NaN)
    onset_s: float = 0.0  # policy time of the fault
    push: tuple[float, float] = (0.0, 0.0)  # m/s


def healthy_profile(seed: int) -> RealityGapProfile:
    """A healthy robot drawn from HEALTHY (plus joint friction/damping, torque-speed and backlash from
    robot_spec.reality_gap.RANDOM_RANGES), on strong's contact model and flat ground."""
    rng = np.random.default_rng([seed, 23])
    draw = {k: float(rng.uniform(*r)) for k, r in HEALTHY.items()}
    joint = {k: float(rng.uniform(*RANDOM_RANGES[k])) for k in ("joint_frictionloss_factor", "joint_damping_factor")}
    coins = rng.random(3) < EFFECT_PROBABILITY
    low = HEALTHY["motor_strength"][0] / draw["motor_strength"]
    per_joint = tuple(float(f) for f in rng.uniform(low, 1.0, 12)) if coins[0] else ()
    no_load = float(rng.uniform(*RANDOM_RANGES["no_load_speed_factor"]))
    backlash = float(rng.uniform(*RANDOM_RANGES["backlash"])) if coins[2] else 0.0
    motors = MotorEffects(strength_per_joint=per_joint, torque_speed=bool(coins[1]),
                          no_load_speed_factor=no_load if coins[1] else 1.0, backlash=backlash,
                          latency_jitter_s=draw.pop("latency_jitter_s"))  # fmt: skip
    strong, scale = load_reality_gap("strong"), draw.pop("sensor_scale")
    return dataclasses.replace(
        strong, name=f"healthy_{seed}", description="monitor_grid healthy robot", **draw, **joint, motors=motors,
        noise=scaled(strong.noise, scale), bias=scaled(strong.bias, scale),
    )  # fmt: skip


def scaled(noise: SensorNoise, scale: float) -> SensorNoise:
    return SensorNoise(**{k: v * scale for k, v in dataclasses.asdict(noise).items()})


def make_grid(healthy: int, fault_rounds: int, seed: int) -> list[Point]:
    """`healthy` healthy points (sim and poor policy in turn) and `fault_rounds` x every fault, the fault points
    spread evenly among the healthy ones (an interrupted run has some of each)."""
    rng = np.random.default_rng([seed, 1])
    kinds = [None] * healthy
    faults = [fault for _ in range(fault_rounds) for fault in FAULTS]
    for k, fault in enumerate(faults):
        kinds.insert(round((k + 0.5) * len(kinds) / len(faults)) if healthy else len(kinds), fault)
    points = []
    for i, fault in enumerate(kinds):
        angle, speed = rng.uniform(0, 2 * np.pi), rng.uniform(*PUSH_SPEED)
        push = (float(speed * np.cos(angle)), float(speed * np.sin(angle))) if fault == "push" else (0.0, 0.0)
        points.append(Point(i, seed + i, ("sim", "poor")[i % 2], fault, int(rng.integers(12)),
                            float(rng.uniform(*FAULT_ONSET_S)), push))  # fmt: skip
    return points


# ------------------------------------------------------------------------------------------------ shadow monitors
class ShadowSafety(SafetyMonitor):
    """Every monitor on every step, none latching: each stretch of steps a monitor trips on is one event. The
    steps' inputs are kept (`inputs`), so other monitors can be judged on the same steps later (`replay`)."""

    def __init__(self, spec, cfg):
        super().__init__(spec, cfg)
        self.events: list[dict] = []
        self.tripping: set[str] = set()
        self.inputs: list[tuple[int, SafetyInput]] = []

    def check(self, x: SafetyInput, time_us: int):
        self.inputs.append((int(time_us), x.copy()))  # x holds the controller's buffers
        for name, monitor in self.monitors.items():
            detail = monitor(x, self.limits)
            if detail is None:
                self.tripping.discard(name)
            elif name not in self.tripping:
                self.tripping.add(name)
                self.events.append({"monitor": name, "time_us": int(time_us), "detail": detail})
        return None  # the robot goes on: nothing latches


VECTORS = ("q", "dq", "tau_est", "quaternion", "rpy", "action", "last_action")
TARGET = ("q_des", "dq_des", "kp", "kd", "tau_ff")


def pack_inputs(inputs: list[tuple[int, SafetyInput]]) -> dict[str, np.ndarray]:
    """An episode's monitor inputs as arrays (the observation only as whether it was finite: all a monitor reads
    of it); None as NaN rows plus a flag."""
    n = 12
    out = {"time_us": np.array([t for t, _ in inputs], dtype=np.int64)}
    xs = [x for _, x in inputs]
    for name in VECTORS:
        out[name] = np.array([np.full(n if name not in ("quaternion", "rpy") else len(getattr(xs[0], name)), np.nan)
                              if getattr(x, name) is None else getattr(x, name) for x in xs])  # fmt: skip
    for name in TARGET:
        out[name] = np.array([np.full(n, np.nan) if x.target is None else getattr(x.target, name) for x in xs])
    out["has_target"] = np.array([x.target is not None for x in xs])
    out["has_action"] = np.array([x.action is not None for x in xs])
    out["obs"] = np.array([np.nan if x.obs is None else float(np.all(np.isfinite(x.obs))) for x in xs])
    out["state_age_us"] = np.array([x.state_age_us for x in xs])
    out["step_interval_s"] = np.array([np.nan if x.step_interval_s is None else x.step_interval_s for x in xs])
    trips = sorted({x.bridge_trip for x in xs if x.bridge_trip})
    out["bridge_trip"] = np.array([trips.index(x.bridge_trip) if x.bridge_trip else -1 for x in xs])
    out["bridge_reasons"] = np.array(trips or [""])
    return out


def unpack_inputs(arrays) -> list[tuple[int, SafetyInput]]:
    reasons = list(arrays["bridge_reasons"])
    rows = []
    for i, t in enumerate(arrays["time_us"]):
        target = PdTarget(*(arrays[name][i] for name in TARGET)) if arrays["has_target"][i] else None
        acting = bool(arrays["has_action"][i])
        obs = arrays["obs"][i]
        rows.append((int(t), SafetyInput(
            q=arrays["q"][i], dq=arrays["dq"][i], tau_est=arrays["tau_est"][i], quaternion=arrays["quaternion"][i],
            rpy=arrays["rpy"][i], state_age_us=float(arrays["state_age_us"][i]),
            step_interval_s=None if np.isnan(arrays["step_interval_s"][i]) else float(arrays["step_interval_s"][i]),
            target=target, bridge_trip=reasons[arrays["bridge_trip"][i]] if arrays["bridge_trip"][i] >= 0 else None,
            obs=None if np.isnan(obs) else np.array([0.0 if obs else np.nan]),
            action=arrays["action"][i] if acting else None, last_action=arrays["last_action"][i] if acting else None,
        )))  # fmt: skip
    return rows


def replay(inputs: list[tuple[int, SafetyInput]], spec, cfg) -> list[dict]:
    """The trip events today's monitors (deploy.safety.MONITORS) give on recorded steps."""
    shadow = ShadowSafety(spec, cfg)
    for time_us, x in inputs:
        shadow.check(x, time_us)
    return shadow.events


# ------------------------------------------------------------------------------------------------ one point
class PointRun:
    """One grid point: episodes on one stand-in robot until its policy time is used (or its fault window)."""

    def __init__(self, point: Point, spec, policy, seconds: float, inputs_dir: Path):
        self.point, self.spec, self.policy, self.seconds = point, spec, policy, seconds
        self.inputs_file = inputs_dir / f"point_{point.index:04d}.npz"
        self.inputs: dict[str, np.ndarray] = {}
        self.robot = InMemoryBoard(healthy_profile(point.seed), seed=point.seed)
        self.io = InProcessRobot(self.robot)
        self.cfg = load_runtime_config("runtime_fast", {"host_stall_allowance_s": 0.0})  # see deploy/in_process.py
        self.safety_cfg = load_safety_config(spec.name)
        self.schedule = load_schedule("walk", load_speed_preset("high"))
        self.episodes: list[dict] = []
        self.policy_s = 0.0
        self.onset_us: int | None = None

    def run(self) -> dict:
        try:
            while not self.done():
                self.episode(len(self.episodes))
        finally:
            self.io.close()
            self.robot.close()
        np.savez_compressed(self.inputs_file, **self.inputs)
        return {"point": dataclasses.asdict(self.point), "profile": dataclasses.asdict(self.robot.profile),
                "policy_s": self.policy_s, "episodes": self.episodes}  # fmt: skip

    def done(self) -> bool:
        if self.point.fault is not None:
            return self.onset_us is not None or len(self.episodes) >= 10  # 10 falls before the onset: give up
        return self.policy_s >= self.seconds

    def episode(self, number: int) -> None:
        io, robot = self.io, self.robot
        robot.reset(seed=number + 1)
        io.new_episode()
        io.tick(round(SETTLE_S / 0.002))
        safety = ShadowSafety(self.spec, self.safety_cfg)
        behaviour = noisy_policy(self.policy.actor, POOR_NOISE, self.point.seed + number) \
            if self.point.policy == "poor" else None  # fmt: skip
        controller = Controller(self.spec, self.policy, safety, ScheduledCommand(self.schedule), self.cfg, behaviour)
        runtime = Runtime(controller, io, self.cfg)
        start_us, policy_start_us, end_us = io.board_us, None, None
        try:
            runtime.wait_for_state()
            while end_us is None or io.truth.time_us < end_us:
                record = runtime.step()
                if record["phase"] == Phase.POLICY and policy_start_us is None:
                    policy_start_us = record["robot_tick_us"]
                policy_s = 0.0 if policy_start_us is None else (record["robot_tick_us"] - policy_start_us) / 1e6
                if end_us is None:
                    end_us = self.end_of_episode(policy_s, record["robot_tick_us"])
        finally:
            runtime.close()
        self.policy_s += policy_s
        self.inputs.update({f"ep{number}_{k}": v for k, v in pack_inputs(safety.inputs).items()})
        self.episodes.append({
            "start_us": start_us, "policy_start_us": policy_start_us, "end_us": io.truth.time_us,
            "fell_us": io.truth.fell_us,
            "onset_us": self.onset_us if self.onset_us and self.onset_us >= start_us else None,
            "policy_s": policy_s, "trips": safety.events,
        })  # fmt: skip

    def end_of_episode(self, policy_s: float, now_us: int) -> int | None:
        """Robot time the episode ends at, once known; injects the point's fault when its time comes."""
        fell = self.io.truth.fell_us
        if fell is not None and (self.onset_us is None or self.point.fault == "push"):
            return fell + round(AFTER_FALL_S * 1e6)
        if self.point.fault is None:
            return now_us if self.policy_s + policy_s >= self.seconds else None
        if self.onset_us is None and policy_s >= self.point.onset_s:
            self.onset_us = self.inject(now_us)
            return self.onset_us + round(FAULT_WINDOW_S * 1e6)
        return None

    def inject(self, now_us: int) -> int:
        """The point's fault, 2-20 ms after this step's state (off the control period's phase); its onset."""
        p, robot = self.point, self.robot
        at_s = now_us / 1e6 + 0.002 * (1 + p.index % 10)
        if p.fault == "push":
            robot.push(p.push, at_s=at_s)
        elif p.fault == "sensor_spike":
            robot.inject_fault("sensor_spike", p.joint, SPIKE[0], SPIKE[1], at_s=at_s)
        elif p.fault == "weak_motor":
            robot.inject_fault("weak_motor", p.joint, 0.3, at_s=at_s)
        elif p.fault in ("dead_motor", "sensor_nan"):
            robot.inject_fault(p.fault, p.joint, at_s=at_s)
        else:
            robot.inject_fault(p.fault, -1, at_s=at_s)
        return round(at_s * 1e6)


# ------------------------------------------------------------------------------------------------ judging
def judge(result: dict) -> dict:
    """Healthy time, false trips and the fault's catch of one point, from the ground truth."""
    fault = result["point"]["fault"]
    healthy_s, false, before_fall, falls, caught = 0.0, [], [], [], None
    for ep in result["episodes"]:
        onset, fell = ep["onset_us"], ep["fell_us"]
        is_fault = onset is not None and (fault != "push" or (fell is not None and fell >= onset))
        healthy_end = min(t for t in (onset if is_fault else None, fell, ep["end_us"]) if t is not None)
        healthy_s += (healthy_end - ep["start_us"]) / 1e6
        if fell is not None and not (is_fault and fell >= onset):
            falls.append(fall_caught(ep["trips"], fell))
        for trip in ep["trips"]:
            t = trip["time_us"]
            if t >= healthy_end:
                continue
            if fell is not None and trip["monitor"] == "orientation" and t >= fell - FALL_EARLY_S * 1e6:
                continue  # the fall, caught (a little early: IMU bias)
            (before_fall if fell is not None and t >= fell - BEFORE_FALL_S * 1e6 else false).append(trip)
        if is_fault:
            caught = fault_caught(fault, ep, onset, fell)
    return {"healthy_s": healthy_s, "false_trips": false, "before_fall": before_fall, "falls": falls,
            "fault": caught}  # fmt: skip


def fall_caught(trips: list[dict], fell_us: int) -> dict:
    """Orientation's trip time after a true fall (None: it never tripped)."""
    early_us = fell_us - FALL_EARLY_S * 1e6
    times = [t["time_us"] for t in trips if t["monitor"] == "orientation" and t["time_us"] >= early_us]
    return {"fell_us": fell_us, "orientation_s": (min(times) - fell_us) / 1e6 if times else None}


def fault_caught(fault: str, ep: dict, onset: int, fell: int | None) -> dict:
    """Each monitor's first trip after the fault (from its onset; a fall and a push from the true fall)."""
    start = fell if fault in ("fall", "push") and fell is not None else onset
    first: dict[str, float] = {}
    for trip in ep["trips"]:
        if trip["time_us"] >= min(start, onset) and trip["monitor"] not in first:
            first[trip["monitor"]] = (trip["time_us"] - start) / 1e6
    best = min(first.items(), key=lambda kv: kv[1]) if first else None
    return {"kind": fault, "first_by_monitor": first, "first": best[0] if best else None,
            "time_s": best[1] if best else None, "stated_s": STATED_S[fault],
            "within": best is not None and best[1] <= STATED_S[fault] + 1e-9}  # fmt: skip


def poisson_upper(count: int, hours: float, confidence: float = 0.95) -> float:
    """The rate (per hour) whose Poisson chance of `count` or fewer events in `hours` is 1 - confidence."""
    def tail(rate: float) -> float:  # P(N <= count) for a mean rate * hours
        mean = rate * hours
        return sum(math.exp(-mean + k * math.log(mean) - math.lgamma(k + 1)) for k in range(count + 1)) if mean else 1.0
    low, high = 0.0, (count + 10) * 10 / hours
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if tail(mid) > 1 - confidence else (low, mid)
    return high


def summarise(results: list[dict]) -> dict:
    judged = [judge(r) for r in results]
    hours = sum(j["healthy_s"] for j in judged) / 3600
    per_monitor = {}
    for name in MONITORS:
        false = [t for j in judged for t in j["false_trips"] if t["monitor"] == name]
        before = [t for j in judged for t in j["before_fall"] if t["monitor"] == name]
        per_monitor[name] = {
            "false_trips": len(false), "per_hour": len(false) / hours if hours else None,
            "per_hour_upper_95": poisson_upper(len(false), hours) if hours else None,
            "trips_before_a_fall": len(before), "examples": [t["detail"] for t in false[:3]],
        }  # fmt: skip
    falls = [f for j in judged for f in j["falls"]]
    faults = {}
    for kind in FAULTS:
        rows = [j["fault"] for j in judged if j["fault"] and j["fault"]["kind"] == kind]
        times = [r["time_s"] for r in rows if r["time_s"] is not None]
        faults[kind] = {
            "injected": len(rows), "caught": len(times), "within_stated": sum(r["within"] for r in rows),
            "stated_s": STATED_S[kind], "time_s_max": max(times) if times else None,
            "time_s_median": float(np.median(times)) if times else None,
            "first_monitors": sorted({r["first"] for r in rows if r["first"]}),
        }  # fmt: skip
    pushes = [r for r in results if r["point"]["fault"] == "push"]
    return {
        "healthy_hours": hours, "points": len(results), "per_monitor": per_monitor,
        "healthy_falls": len(falls),
        "healthy_falls_caught_within_1_step": sum(f["orientation_s"] is not None and f["orientation_s"] <= 0.02
                                                  for f in falls),
        "faults": faults, "pushes_that_fell": sum(1 for j in judged if j["fault"] and j["fault"]["kind"] == "push"),
        "pushes": len(pushes),
    }  # fmt: skip


# ------------------------------------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", type=Path, default=SIM_POLICY, help="the sim policy")
    parser.add_argument("--healthy", type=int, default=60, help="healthy points")
    parser.add_argument("--fault-rounds", type=int, default=3, help="rounds of every fault")
    parser.add_argument("--seconds", type=float, default=60.0, help="policy time per healthy point (robot time)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="monitor_grid", help="results file benchmarks/results/<name>.json")
    parser.add_argument("--inputs", type=Path, default=Path("data_logs/monitor_grid_inputs"),
                        help="folder for every step's monitor inputs (for --replay)")
    parser.add_argument("--resume", action="store_true", help="keep the points <name>.json already holds")
    parser.add_argument("--replay", action="store_true", help="judge today's monitors on the recorded steps of "
                        "<name>.json instead of running robots (the summary is saved as <name>_replay.json)")
    args = parser.parse_args()
    if args.replay:
        return replay_run(args)
    args.inputs.mkdir(parents=True, exist_ok=True)
    spec = load_robot("go1")
    policy = load_policy(args.policy, spec)
    points = make_grid(args.healthy, args.fault_rounds, args.seed)
    results, started = [], time.perf_counter()
    if args.resume and (RESULTS / f"{args.name}.json").is_file():
        results = json.loads((RESULTS / f"{args.name}.json").read_text())["results"]
    for point in points[len(results):]:
        tic = time.perf_counter()
        results.append(PointRun(point, spec, policy, args.seconds, args.inputs).run())
        j = judge(results[-1])
        print(f"point {point.index} {point.policy} {point.fault or 'healthy'}: {time.perf_counter() - tic:.0f} s wall, "
              f"healthy {j['healthy_s']:.0f} s, false {[t['monitor'] for t in j['false_trips']]}, "
              f"fault {j['fault'] and (j['fault']['first'], j['fault']['time_s'])}", flush=True)  # fmt: skip
        save(args.name, {
            "command": " ".join(sys.argv), "complete": len(results) == len(points), "planned_points": len(points),
            "wall_s": time.perf_counter() - started, "args": {k: str(v) for k, v in vars(args).items()},
            "summary": summarise(results), "results": results,
        })  # fmt: skip


def markdown(before: dict, after: dict) -> str:
    """The README's tables: per monitor, false trips on healthy robots; per fault, caught and how soon."""
    hours = before["healthy_hours"]
    lines = [f"| monitor | false trips in {hours:.2f} h of healthy robots, before → after (per hour, 95 % bound) "
             "| trips in the second before a true fall, before → after |", "|---|---|---|"]
    for name in after["per_monitor"]:
        b, a = before["per_monitor"].get(name), after["per_monitor"][name]
        old = f"{b['false_trips']} ({b['per_hour']:.1f}/h, ≤ {b['per_hour_upper_95']:.1f})" if b else "(new)"
        new = f"{a['false_trips']} ({a['per_hour']:.1f}/h, ≤ {a['per_hour_upper_95']:.1f})"
        before_fall = b["trips_before_a_fall"] if b else "-"
        lines.append(f"| {name} | {old} → {new} | {before_fall} → {a['trips_before_a_fall']} |")
    lines += ["", "| fault | stated time | caught (within the stated time) of injected, before → after "
              "| slowest catch, before → after | first monitor(s) after |", "|---|---|---|---|---|"]
    for kind, a in after["faults"].items():
        b = before["faults"][kind]
        slow = [f"{r['time_s_max'] * 1e3:.0f} ms" if r["time_s_max"] is not None else "-" for r in (b, a)]
        caught = [f"{r['caught']} ({r['within_stated']}) of {r['injected']}" for r in (b, a)]
        lines.append(f"| {kind} | {a['stated_s'] * 1e3:.0f} ms | {caught[0]} → {caught[1]} | {slow[0]} → {slow[1]} "
                     f"| {', '.join(a['first_monitors'])} |")
    return "\n".join(lines)


def replay_run(args) -> None:
    """Today's monitors on the steps a grid run recorded: its results with the trips replaced."""
    spec = load_robot("go1")
    cfg = load_safety_config(spec.name)
    run = json.loads((RESULTS / f"{args.name}.json").read_text())
    results = []
    for result in run["results"]:
        arrays = np.load(args.inputs / f"point_{result['point']['index']:04d}.npz")
        for number, episode in enumerate(result["episodes"]):
            fields = {k.split("_", 1)[1]: arrays[k] for k in arrays.files if k.startswith(f"ep{number}_")}
            episode["trips"] = replay(unpack_inputs(fields), spec, cfg)
        results.append(result)
    summary = summarise(results)
    save(f"{args.name}_replay", {"command": " ".join(sys.argv), "of": run["command"], "complete": run["complete"],
                                 "summary": summary, "results": results})  # fmt: skip
    before = summarise(json.loads((RESULTS / f"{args.name}.json").read_text())["results"])  # today's judging
    print(markdown(before, summary))


if __name__ == "__main__":
    main()
