"""The robot session: the policy runtime on the robot, episode after episode, logged (`Session`, `Collector`,
`RunLog`), configured by typed configs (`SessionConfig`: the robot and its connection; `CollectConfig`: one
collection). `real_robot collect`, `deploy run`, online fine-tuning and robot evaluation call it as functions.

The same runtime as `deploy run` (deploy/runtime.py: soft start, policy, safety monitors, damping) writes
loss-proof logs with real_robot.datalog, one `StepRecord` per 50 Hz control step (deploy/record.py). An episode
starts with a soft start and ends on a safety trip (outcome "safety_trip"), a fall (the roll/pitch monitor:
"fall"), its time limit ("timeout", the robot is then put in damping) or Ctrl-C ("operator_stop"); its last
record is the first damping step, which measured what the last action did. Against the stand-in robot the
collector then resets it (sim_control "reset") and re-arms the bridge and the runtime; on a real robot
(`operator_reset`) it keeps damping and waits for the operator to put the robot down and press Enter.
On the stand-in (fast mode) a collection repeats exactly from its seeds: each reset lands at a robot tick fixed
relative to the lockstep and restarts the sensor noise with a stream of (seed, episode).
"""

from __future__ import annotations

import select
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from deploy.commands import ScheduledCommand, load_schedule, load_speed_preset, resolve_schedule_path
from deploy.lcm_io import LcmRobotIO
from deploy.record import (SCHEMA_VERSION, SCHEMA_VERSION_KEY, TERMINAL_OUTCOMES, Phase, StepRecord, episode_outcome,
                           record_schema)
from deploy.runtime import Behaviour, Controller, Runtime, load_runtime_config
from deploy.safety import SafetyMonitor, Trip, load_safety_config
from deploy.trips import check_bridge_mode, trip_line
from real_robot.datalog import LogWriter
from real_robot.lcm_bus import DEFAULT_LCM_URL, LcmNode, now_us
from real_robot.lcm_types.go1lcm import sim_control_t
from robot_spec.config import check_number, to_dict
from robot_spec.policy_io import LoadedPolicy, load_policy
from robot_spec.spec import RobotSpec, load_robot

MAX_ACTION_NOISE = 0.5  # action units (× action scale = rad): beyond this the "policy" is mostly noise
NOISE_STREAMS_PER_SEED = 100_000  # the stand-in's sensor noise streams: one per (seed, episode)
CONTROL_SWITCH_INTERVAL_S = 0.001  # Session.keep_control: how long another thread may hold the interpreter
MAX_FAILED_STARTS = 5  # resets in a row whose re-arm tripped at once: the robot cannot start, stop the collection
REPEATED_TRIPS = 3  # a monitor that has ended this many episodes, and at least half of them, is tripping repeatedly


# --------------------------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class SessionConfig:
    """The robot and the connection to it, fixed for a session's life."""

    robot: str = "go1"  # robot spec in configs/robots/
    lcm_url: str = DEFAULT_LCM_URL
    channel_prefix: str = ""  # prefix of every LCM channel name
    runtime_config: str = "runtime"  # configs/deploy/<name>.yaml or a YAML file (runtime_fast: stand-in --fast)
    operator_reset: bool = False  # a real robot: between episodes keep damping and wait for Enter
    reset_settle_s: float = 1.0  # robot time in damping after a stand-in reset
    device: str = "cpu"  # torch device of the policy

    def __post_init__(self) -> None:
        check_number("--reset-settle-s", self.reset_settle_s, 0.0, 60.0)


@dataclass(frozen=True)
class CollectConfig:
    """One collection: the policy, the command schedule, how much, where to, the seeds. Neither `steps` nor
    `episodes`: until a stop request (Ctrl-C)."""

    policy: Path  # policy file written by save_policy
    steps: int | None = None  # stop after this many policy steps (transitions) are logged
    episodes: int | None = None  # or after this many episodes
    episode_s: float = 20.0  # time limit of an episode's policy phase (robot time)
    schedule: str = "walk"  # a YAML file, or the name of configs/deploy/schedule_<name>.yaml
    speed: str = "high"  # speed preset the schedule must stay within
    out: Path | None = None  # log folder (default: data_logs/collect_<date-time>)
    action_noise: float = 0.0  # std of Gaussian noise added to the policy's actions (action units)
    seed: int = 0  # of the action noise and of each episode's sensor noise on the stand-in
    stand_in_profile: str | None = None  # the stand-in's reality-gap profile, recorded in the log meta
    # End the collection once more episodes than this ended before their time limit (a fall or a safety stop): a
    # robot check that can no longer pass stops putting the robot through a policy that falls. None: never.
    stop_after_ended_early: int | None = None

    def __post_init__(self) -> None:
        if self.steps is not None and self.episodes is not None:
            raise ValueError("give steps or episodes, not both")
        for name in ("steps", "episodes"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"--{name} must be positive, got {value}")
        check_number("--episode-s", self.episode_s, 0.0, 3600.0, low_open=True)
        check_number("--seed", self.seed, 0, integer=True)
        if not 0 <= self.action_noise <= MAX_ACTION_NOISE:
            raise ValueError(f"--action-noise must be in [0, {MAX_ACTION_NOISE}], got {self.action_noise}")


def collect(cfg: SessionConfig, collection: CollectConfig, behaviour: Behaviour | None = None,
            extra_meta: dict | None = None) -> Collector:  # fmt: skip
    """One collection in a session of its own; `behaviour` (online fine-tuning) acts instead of the policy's
    mean, and `extra_meta` (its description) joins the log meta. Every episode logged stays in the log folder
    whatever is raised (TimeoutError: no robot; EpisodeStartError)."""
    with Session(cfg, collection) as session:
        return session.collect(collection, behaviour, extra_meta)


# --------------------------------------------------------------------------------------------- logging
def run_meta(spec: RobotSpec, policy: LoadedPolicy, runtime_cfg, safety_cfg, **extra) -> dict:
    """What every episode header records about the run: the policy's identity and contract, the configs."""
    return {
        "policy_id": policy.policy_id, "policy_path": str(policy.path), "policy_contract": policy.contract,
        "robot": spec.name, "runtime_config": to_dict(runtime_cfg), "safety_config": to_dict(safety_cfg),
        SCHEMA_VERSION_KEY: SCHEMA_VERSION, **extra,
    }  # fmt: skip


class RunLog:
    """Runtime records → log episodes. An episode opens at a soft start and closes with its first damping
    record; damping steps between episodes are not logged. Use as the runtime's `on_step`."""

    def __init__(self, folder: str | Path, spec: RobotSpec, meta: dict, episode_info: Callable[[], dict] = dict):
        self.writer = LogWriter(folder, record_schema(spec), meta)
        self.episode_info = episode_info
        self.open = False
        self.policy_steps = 0  # in the open episode
        self.outcomes: dict[str, int] = {}
        self.trips: dict[str, int] = {}  # episodes ended by a safety trip, by monitor

    def on_step(self, record: dict) -> str | None:
        """Log the record; the episode's outcome if this record ended it."""
        trip = record["trip"]
        if not self.open:
            if trip is not None:
                return None
            self.writer.start_episode({"first_step": record["step"], **self.episode_info()})
            self.open, self.policy_steps = True, 0
        self.writer.append(StepRecord.from_runtime(record).row())
        self.policy_steps += record["phase"] == Phase.POLICY
        if trip is None:
            return None
        outcome = episode_outcome(trip.reason)
        counts = {"policy_steps": self.policy_steps, "run_safety_trips": record["trip_count"]}
        self.writer.end_episode(outcome, f"{trip.reason}: {trip.detail}", counts)
        self.open = False
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        if outcome == "safety_trip":
            self.trips[trip.reason] = self.trips.get(trip.reason, 0) + 1
        return outcome

    def close(self) -> None:
        """An episode still open stays without a footer: it reads back as "interrupted"."""
        self.writer.close()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def repeated_trip_advice(trips: dict[str, int], episodes: int) -> str | None:
    """What to tell the operator when a safety monitor keeps ending episodes (`trips`: episodes ended, by monitor,
    of `episodes`): which monitor, how often, and what a careful operator does. Never loosens a monitor."""
    repeated = {name: count for name, count in trips.items() if count >= REPEATED_TRIPS and 2 * count >= episodes}
    if not repeated:
        return None
    which = ", ".join(f"{name} ended {count} of {episodes} episodes" for name, count in sorted(repeated.items()))
    return (
        f"collect: a safety monitor trips repeatedly: {which} (`real_robot logs <folder>` lists each trip with "
        "its values). The monitors stay as configured. Check the robot (motors, cables, temperatures, battery) and "
        "the trip details; to keep collecting meanwhile, restart at the low speed preset (--speed low) or collect "
        "standing-only data (--schedule stand); change configs/safety/ only once the cause is understood."
    )


# --------------------------------------------------------------------------------------------- collecting
class EpisodeStartError(RuntimeError):
    """Episode after episode, the robot tripped as soon as it was re-armed (Collector.run gives up)."""

    def __init__(self, message: str, trip: Trip | None = None):
        super().__init__(message)
        self.trip = trip  # the last start's


class Collector:
    """Drives the runtime episode after episode: logs, ends episodes at their time limit, resets, re-arms."""

    def __init__(self, runtime: Runtime, log: RunLog, reset_robot: Callable[[int], None], episode_steps: int,
                 max_steps: int | None = None, max_episodes: int | None = None,
                 max_ended_early: int | None = None):  # fmt: skip
        self.runtime, self.log, self.reset_robot = runtime, log, reset_robot
        self.episode_steps, self.max_steps, self.max_episodes = episode_steps, max_steps, max_episodes
        self.max_ended_early = max_ended_early  # episodes ended by a fall or a safety stop: more, and it stops
        self.steps = self.episodes = self.episode_policy_steps = self.ended_early = 0
        self.episode_over = False
        self.last_outcome: str | None = None
        self.advised = False  # the operator has been told a monitor trips repeatedly
        total = max_steps if max_steps is not None else max_episodes
        self.bar = tqdm(total=total, unit=" steps" if max_steps is not None else " episodes", desc="collect")
        runtime.on_step = self.on_step

    @property
    def done(self) -> bool:
        return (self.max_steps is not None and self.steps >= self.max_steps) or (
            self.max_episodes is not None and self.episodes >= self.max_episodes
        ) or (self.max_ended_early is not None and self.ended_early > self.max_ended_early)

    @property
    def cut_short(self) -> bool:
        """An amount was asked and the run ended before it: only a stop request (Ctrl-C) does that."""
        return (self.max_steps is not None or self.max_episodes is not None) and not self.done

    def on_step(self, record: dict) -> None:
        outcome = self.log.on_step(record)
        if record["phase"] == Phase.POLICY and record["trip"] is None:  # a policy step: one transition of data
            self.steps += 1
            self.episode_policy_steps += 1
            if self.max_steps is not None:
                self.bar.update()
            if self.episode_policy_steps >= self.episode_steps or self.done:
                self.runtime.latch("timeout", f"episode time limit ({self.episode_policy_steps} policy steps)")
        if outcome is not None:
            self.episodes += 1
            self.ended_early += outcome in TERMINAL_OUTCOMES
            self.episode_over, self.last_outcome = True, outcome
            advice = None if self.advised else repeated_trip_advice(self.log.trips, self.episodes)
            if advice:  # said once as it starts, and again at the end
                tqdm.write(advice)
                self.advised = True
            if self.max_episodes is not None:
                self.bar.update()
        if outcome is not None or record["step"] % 50 == 0:
            self.show_progress()

    def start_failed(self, record: dict) -> bool:
        """The runtime is tripped although no episode began: the re-arm after the reset tripped at once (say,
        stale state after a host stall). Nothing would ever re-arm it, so the collector resets again."""
        return not self.episode_over and not self.log.open and record["trip"] is not None \
            and not self.runtime.rearm_requested  # fmt: skip

    def show_progress(self) -> None:
        rate = self.steps / max(self.bar.format_dict["elapsed"], 1e-9)
        outcomes = ", ".join(f"{name} {count}" for name, count in sorted(self.log.outcomes.items()))
        self.bar.set_postfix_str(f"{self.steps} policy steps ({rate:.0f}/s), {self.episodes} episodes: {outcomes}")

    def run(self, stand_after: bool = False) -> None:
        """Collect until the step or episode target, or a stop request (Ctrl-C). Every episode, the first too,
        starts from a reset robot. At the end the robot damps, or with `stand_after` (online fine-tuning: it
        stands while the update computes) it ramps back to the default pose and holds it, if the last episode
        ended upright at its time limit."""
        if self.runtime.next_tick is None:
            self.runtime.wait_for_state()
        failed_starts = 0
        while not self.done and self.runtime.stop_reason is None:
            self.reset_robot(self.episodes)
            self.episode_over, self.episode_policy_steps = False, 0
            record = self.runtime.run(until=lambda r: self.episode_over or self.start_failed(r))
            if record is None or not self.start_failed(record):
                failed_starts = 0
                continue
            failed_starts += 1
            trip = record["trip"]
            tqdm.write(f"collect: the episode did not start ({trip.reason}: {trip.detail}); resetting again")
            if failed_starts >= MAX_FAILED_STARTS:
                self.bar.close()
                raise EpisodeStartError(f"the robot tripped at the start of {failed_starts} episodes in a row, "
                                        f"the last on {trip_line(trip)}", trip)  # fmt: skip
        self.bar.close()
        self.runtime.on_step = None  # steps from here on belong to no episode
        if stand_after and self.last_outcome == "timeout" and self.runtime.stop_reason is None:
            self.runtime.request_rearm(hold=True)
        else:
            self.runtime.latch("collection_over", "the collection is over")


def stand_in_reset(runtime: Runtime, node: LcmNode, settle_s: float,
                   seed: Callable[[], int]) -> Callable[[int], None]:  # fmt: skip
    """The stand-in robot to its start pose (lying, motors off) with the sensor noise stream of (`seed()`, episode),
    then re-arm the bridge and the runtime.

    The reset is scheduled two policy periods after the state of our last step: in lockstep (bridge --follow)
    the robot holds one period after it until our next target, which we publish after the request, so the
    request is always there in time and lands on the same tick relative to our steps in every run.
    """

    def reset(episode: int) -> None:
        runtime.latch("reset", "resetting the stand-in")
        runtime.run(max_steps=2)  # damping; the first steps of a run establish the lockstep
        msg = sim_control_t()
        msg.timestamp_us, msg.action, msg.motor = now_us(), "reset", -1
        msg.at_robot_us = runtime.prev_tick + 2 * runtime.period_us
        msg.seed = 1 + seed() * NOISE_STREAMS_PER_SEED + episode % NOISE_STREAMS_PER_SEED
        node.publish("sim_control", msg)
        runtime.run(duration_s=settle_s)  # damping while the reset lands and the robot settles
        check_pacing(runtime)
        rearm(runtime)

    return reset


def operator_reset(runtime: Runtime, node: LcmNode) -> Callable[[int], None]:
    """A real robot: keep damping until the operator has put the robot down and pressed Enter, then re-arm."""

    def reset(_episode: int) -> None:
        standing = runtime.controller.standing
        if standing:
            tqdm.write("the robot stands: press Enter to start the next episode from here; Ctrl-C stops")
        else:
            runtime.latch("reset", "waiting for the operator")
            tqdm.write("put the robot down (lying, motors damping), then press Enter to soft-start it; Ctrl-C stops")
        while runtime.stop_reason is None and not select.select([sys.stdin], [], [], 0.0)[0]:
            runtime.step()
        if runtime.stop_reason is None:
            sys.stdin.readline()
            check_pacing(runtime)
            if standing and runtime.controller.standing:  # from the stance: a soft start that hands over
                runtime.controller.soft_start(runtime.io.state.q)
            else:
                rearm(runtime)

    return reset


def check_pacing(runtime: Runtime) -> None:
    """Before an episode starts: BridgeModeError (naming the flag) if the bridge paces by another clock than the
    runtime (the stand-in's --fast against `runtime`, or the reverse). Its status came during the damping steps."""
    check_bridge_mode(runtime.io.bridge_status(), runtime.cfg.realtime)


def rearm(runtime: Runtime) -> None:
    """Re-arm the bridge (it re-arms on our next target) and the runtime (a soft start from where the robot is)."""
    runtime.io.arm_bridge("bridge", "collect")  # signed, with our session token
    runtime.request_rearm()


def noisy_policy(actor: torch.nn.Module, std: float, seed: int, device: str = "cpu") -> Behaviour:
    """The policy mean plus N(0, std²) per joint: a known, seeded behaviour policy for offline fine-tuning."""
    noise = torch.Generator().manual_seed(seed)

    @torch.inference_mode()
    def act(obs: torch.Tensor, _last_action: np.ndarray) -> np.ndarray:
        mean = actor(obs.to(device))[0].cpu()
        return (mean + std * torch.randn(mean.shape, generator=noise, dtype=mean.dtype)).double().numpy()

    return act



class Session:
    """The runtime on the robot for one collection or several in a row (online fine-tuning). The first
    collection's policy and schedule arm the controller; every `collect` brings its own. Between collections
    that end standing, the robot holds the default pose while the control loop runs in a thread
    (`keep_control`) and the caller does other work; closing leaves it damping."""

    def __init__(self, cfg: SessionConfig, first: CollectConfig):
        self.config = cfg
        self.spec = spec = load_robot(cfg.robot)
        self.cfg, self.safety_cfg = load_runtime_config(cfg.runtime_config), load_safety_config(cfg.robot)
        policy = load_policy(first.policy, spec, device=cfg.device)  # refuses another robot or observation layout
        commands = ScheduledCommand(load_schedule(first.schedule, load_speed_preset(first.speed)))
        self.io = LcmRobotIO(cfg.lcm_url, cfg.channel_prefix)
        self.node = LcmNode(cfg.lcm_url, cfg.channel_prefix)
        self.controller = Controller(spec, policy, SafetyMonitor(spec, self.safety_cfg), commands, self.cfg)
        self.runtime = Runtime(self.controller, self.io, self.cfg)
        self.seed = first.seed  # the current collection's: its stand-in resets draw their noise streams from it
        self.reset = operator_reset(self.runtime, self.node) if cfg.operator_reset else \
            stand_in_reset(self.runtime, self.node, cfg.reset_settle_s, lambda: self.seed)  # fmt: skip
        self.keeper: threading.Thread | None = None  # keep_control's thread
        self.release_control = threading.Event()
        self.switch_interval = sys.getswitchinterval()
        self.previous_sigint = signal.signal(signal.SIGINT, lambda *_: self.runtime.request_stop("operator_stop"))

    def collect(self, run: CollectConfig, behaviour: Behaviour | None = None, extra_meta: dict | None = None,
                stand_after: bool = False) -> Collector:  # fmt: skip
        """One collection (see `collect`); with `stand_after` the robot then stands (Collector.run) and the
        control loop goes on (`keep_control`). Everything slow (loading, opening the log) happens before the
        control loop comes back to this thread."""
        spec, device = self.spec, self.config.device
        policy = load_policy(run.policy, spec, device=device)
        preset = load_speed_preset(run.speed)
        schedule = load_schedule(run.schedule, preset)
        folder = run.out or Path("data_logs") / f"collect_{time.strftime('%Y%m%d-%H%M%S')}"
        if behaviour is None and run.action_noise > 0:
            behaviour = noisy_policy(policy.actor, run.action_noise, run.seed, device)
            extra_meta = {"action_noise_std": run.action_noise, "noise_seed": run.seed, **(extra_meta or {})}
        meta = run_meta(
            spec, policy, self.cfg, self.safety_cfg, command_schedule=to_dict(schedule), speed_preset=to_dict(preset),
            schedule_file=str(resolve_schedule_path(run.schedule)), stand_in_profile=run.stand_in_profile,
            reset="operator" if self.config.operator_reset else "stand-in", lcm_url=self.config.lcm_url,
            channel_prefix=self.config.channel_prefix, behaviour="policy mean" if behaviour is None else "exploring",
            **(extra_meta or {}),
        )  # fmt: skip
        episode_steps = int(round(run.episode_s * spec.control.policy_hz))
        print(f"collect: policy {policy.policy_id}, schedule {run.schedule}, logging to {folder}")
        with RunLog(folder, spec, meta, lambda: {"schedule": run.schedule}) as log:
            self.take_control()
            self.controller.use(policy, ScheduledCommand(schedule), behaviour)
            self.seed = run.seed
            collector = Collector(self.runtime, log, self.reset, episode_steps, run.steps, run.episodes,
                                  run.stop_after_ended_early)  # fmt: skip
            collector.run(stand_after)
        if stand_after:
            self.keep_control()
        outcomes = ", ".join(f"{name} {count}" for name, count in sorted(log.outcomes.items()))
        print(f"collect: {collector.episodes} episodes ({outcomes}), {collector.steps} policy steps -> {folder}")
        if advice := repeated_trip_advice(log.trips, collector.episodes):
            print(advice)
        return collector

    @property
    def standing(self) -> bool:
        return self.controller.standing or (self.runtime.rearm_requested and self.runtime.rearm_hold)

    @property
    def stopped(self) -> bool:
        """An operator asked to stop (Ctrl-C): the robot is damping and stays so."""
        return self.runtime.stop_reason is not None

    def keep_control(self) -> None:
        """Keep the control loop going in a thread until the next `collect` or `close`: the robot holds its
        stance (a collection that ended standing) or keeps damping, never a policy step, while the caller does
        other work (online fine-tuning: measure the rollout, update, checkpoint). A stop request (Ctrl-C) turns
        the stance into damping. Fast mode is paced at real time, so the stand-in and the bridge leave the CPU
        to that work."""
        if self.keeper is not None or self.runtime.next_tick is None:
            return
        self.release_control.clear()
        self.switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(CONTROL_SWITCH_INTERVAL_S)  # the control thread gets the interpreter back quickly
        self.keeper = threading.Thread(target=self._control_loop, name="keep_control", daemon=True)
        self.keeper.start()

    def _control_loop(self) -> None:
        while not self.release_control.is_set():
            if self.runtime.stop_reason is not None:
                self.runtime.latch(self.runtime.stop_reason, "stop requested")
            self.runtime.step()
            if not self.cfg.realtime:
                time.sleep(self.controller.dt)

    def take_control(self) -> None:
        """Back to the caller's thread (it finishes its current step first)."""
        if self.keeper is None:
            return
        self.release_control.set()
        self.keeper.join()
        self.keeper = None
        sys.setswitchinterval(self.switch_interval)

    def close(self) -> None:
        """Damping, then let go of LCM and the Ctrl-C handler."""
        try:
            self.take_control()
            if self.runtime.next_tick is not None:
                self.runtime.request_stop("operator_stop")
                self.runtime.run()
        finally:
            signal.signal(signal.SIGINT, self.previous_sigint)
            self.io.close()
            self.node.close()
            self.runtime.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()
