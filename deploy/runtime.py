"""The 50 Hz policy runtime: wait for state → SOFT START → POLICY → DAMPING (latched until re-armed).

A soft start may also hold: ramp to the default pose and stand there until released (the robot stands while
online fine-tuning computes an update between rollouts).

`Controller` is one control step without I/O: measurements → observation → policy → safety → PD target.
`Runtime` paces it by the robot's clock (a step every control period of `joint_state.robot_tick_us`), which
equals real time on a real robot and lets the stand-in's fast mode run faster than real time. The I/O
(`RobotIO`: LCM in deploy/lcm_io.py, a fake in tests) is injected.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch

from deploy.commands import CommandSource, RemoteConfig, RemoteSticks
from deploy.record import Phase
from deploy.safety import SafetyInput, SafetyMonitor, Trip
from real_robot.clock import now_us
from robot_spec.config import check_fields, load_config, named_config
from robot_spec.policy_io import LoadedPolicy, PreallocatedActor
from robot_spec.policy_map import ActionMap, RobotObservation
from robot_spec.spec import RobotSpec

MAX_POLL_S = 0.05  # the loop waits for state in slices this long at most, re-judging robot time after each


@dataclass(frozen=True)
class RuntimeConfig:
    soft_start_s: float = 3.0  # ramp the PD target from the measured pose to the default pose
    stand_s: float = 1.0  # then hold the default pose before the policy takes over
    first_state_timeout_s: float = 5.0  # wall time to wait for the bridge's first joint and body state
    realtime: bool = True  # robot time runs at wall speed (a real robot); false for the stand-in's fast mode
    late_state_grace: float = 0.5  # periods past due without a new state: step on the old one (monitors judge)
    host_stall_allowance_s: float = 0.0  # fast mode only: wall time without state that is not yet robot time
    stop_damping_s: float = 0.5  # on a stop request (Ctrl-C), publish damping this long before exiting
    torch_threads: int = 1  # while the runtime lives (its policy is a small MLP); given back on close
    remote: RemoteConfig = field(default_factory=RemoteConfig)
    keyboard_step_fraction: float = 0.1  # of the speed range per key press

    def __post_init__(self) -> None:
        # A negative soft start skips it, a NaN timeout or grace waits or spins for ever: refused at load.
        check_fields(self, "soft_start_s stand_s host_stall_allowance_s", 0.0, 60.0)
        check_fields(self, "first_state_timeout_s", 0.0, 600.0, low_open=True)
        check_fields(self, "late_state_grace", 0.0, 50.0)
        check_fields(self, "stop_damping_s", 0.0, 10.0)
        check_fields(self, "torch_threads", 1, 1024, integer=True)
        check_fields(self, "keyboard_step_fraction", 0.0, 1.0, low_open=True)


def load_runtime_config(name_or_path: str = "runtime", overrides: dict | None = None) -> RuntimeConfig:
    """configs/deploy/<name>.yaml (runtime, runtime_fast), or a YAML file."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") or path.is_file()):
        path = named_config("deploy", name_or_path)
    return load_config(RuntimeConfig, path, overrides)


@dataclass
class RobotState:
    """The newest measurements from the bridge (simulator joint order, body-frame IMU)."""

    robot_tick_us: int  # robot clock of the newest joint state
    body_tick_us: int  # robot clock of the newest body state
    stamp_us: int  # sender's monotonic time of the newest joint state
    received_s: float  # host monotonic time (s) this tick first arrived
    repeats: int  # joint states received since, repeating this tick (a frozen board)
    tick_step_us: int  # the board's state period: the smallest tick increment seen (0 until known)
    q: np.ndarray
    dq: np.ndarray
    tau_est: np.ndarray
    quaternion: np.ndarray  # w, x, y, z
    rpy: np.ndarray
    gyro: np.ndarray
    accelerometer: np.ndarray
    foot_force: np.ndarray

    @classmethod
    def standing_still(cls, pose: np.ndarray) -> RobotState:
        """A robot at rest in `pose`, level, at tick 0 (for benchmarks and tests of the controller alone)."""
        n = len(pose)
        return cls(robot_tick_us=0, body_tick_us=0, stamp_us=0, received_s=0.0, repeats=0, tick_step_us=2000,
                   q=np.array(pose, dtype=np.float64), dq=np.zeros(n), tau_est=np.zeros(n),
                   quaternion=np.array([1.0, 0, 0, 0]), rpy=np.zeros(3), gyro=np.zeros(3),
                   accelerometer=np.array([0, 0, 9.81]), foot_force=np.zeros(4))  # fmt: skip


@dataclass
class Odometry:
    position: np.ndarray  # world frame
    quaternion: np.ndarray  # w, x, y, z
    lin_vel: np.ndarray  # body frame
    ang_vel: np.ndarray  # body frame

    @classmethod
    def missing(cls) -> Odometry:
        """No odometry source: logged as NaN, never as a made-up zero."""
        return cls(np.full(3, np.nan), np.full(4, np.nan), np.full(3, np.nan), np.full(3, np.nan))


@dataclass
class PdTarget:
    q_des: np.ndarray
    dq_des: np.ndarray
    kp: np.ndarray
    kd: np.ndarray
    tau_ff: np.ndarray


@dataclass
class StepContext:
    """What the loop knows about a step besides the state."""

    time_us: int  # robot time of this control step
    state_age_us: float  # robot time since the newest state was measured
    step_interval_s: float | None  # since the previous step (wall time in real-time mode, else robot time)
    remote: RemoteSticks | None = None
    bridge_trip: str | None = None  # the bridge reports a latched trip: our targets are not being executed


@dataclass(frozen=True)
class BridgeStatus:
    tripped: bool
    reason: str
    stamp_us: int  # the bridge's monotonic clock when it published
    follow: bool | None = None  # paced by robot time (bridge --follow, the stand-in's --fast); None: not told
    robot_ip: str = ""  # the board's address (loopback: the stand-in robot)


class RobotIO(Protocol):
    """What the runtime needs from the robot side (LCM in deploy/lcm_io.py)."""

    state: RobotState | None

    def poll(self, timeout_s: float) -> None: ...  # handle incoming messages for at most timeout_s

    def odometry_at(self, stamp_us: float) -> Odometry | None: ...  # the newest stamped at or before stamp_us

    def remote(self) -> RemoteSticks | None: ...

    def bridge_status(self) -> BridgeStatus | None: ...

    def take_arm_request(self) -> bool: ...  # an operator asked to re-arm since the last call

    # Answers that state. `target` is the controller's buffer, valid during the call only: encode or copy it.
    def publish_target(self, target: PdTarget, sequence: int, robot_tick_us: int) -> None: ...

    def publish_status(self, trip: Trip | None, trip_count: int) -> None: ...


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's thread count `count` inside, the previous one again after."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------------ one step
# Online fine-tuning acts with an exploring behaviour instead of the deterministic policy:
# (observation (1, obs_dim), last action (n,)) -> action (n,). The monitors check its actions like any other.
Behaviour = Callable[[torch.Tensor, np.ndarray], np.ndarray]


class Controller:
    """One control step, no I/O: the phase machine, the observation, the policy, the monitors, the PD target.

    `act` is the state→command path: it writes into buffers made once (no array is allocated per step with the
    project's own policies), and its target is valid until the next call. `record` copies the step for logging,
    after the target is out; `step` is both.
    """

    def __init__(self, spec: RobotSpec, policy: LoadedPolicy, safety: SafetyMonitor, commands: CommandSource,
                 cfg: RuntimeConfig, behaviour: Behaviour | None = None):  # fmt: skip
        self.spec, self.safety, self.commands, self.cfg = spec, safety, commands, cfg
        n, ctrl = spec.num_joints, spec.control
        self.dt = ctrl.policy_dt
        self.observation = RobotObservation(spec)
        self.obs_tensor = torch.from_numpy(self.observation.obs).unsqueeze(0)  # the policy's input: same memory
        self.action_map = ActionMap.from_spec(spec)
        self.gains = (np.full(n, ctrl.kp), np.full(n, ctrl.kd))
        self.damping_gains = (np.zeros(n), np.full(n, safety.cfg.damping_kd))
        self.zeros = np.zeros(n)
        self.sdk_q_lower = spec.per_joint(spec.limits.sdk_position_lower)
        self.sdk_q_upper = spec.per_joint(spec.limits.sdk_position_upper)
        self.use(policy, commands, behaviour)
        self.phase = Phase.SOFT_START
        self.phase_start_us: int | None = None  # robot time the phase began (set by its first step)
        self.ramp_from = spec.default_pose.copy()
        self.holding = False  # the soft start stands until released instead of handing over to the policy
        self.last_pd_q_des: np.ndarray | None = None  # of the last target that was not damping
        # The step in flight, each in its own buffer (see `act`).
        self.command, self.last_action, self.proposed = np.zeros(3), np.zeros(n), np.zeros(n)
        self.target = PdTarget(np.zeros(n), self.zeros, *self.gains, self.zeros)
        self.board_target = PdTarget(np.zeros(n), self.zeros, *self.gains, self.zeros)
        self.has_target = False  # a target has been computed (the board runs one)
        self.scratch = np.zeros(n)
        self.action_low, self.action_high = np.full(n, -ctrl.action_clip), np.full(n, ctrl.action_clip)  # np.clip's
        self.acting, self.trip, self.context = False, None, None

    def soft_start(self, q: np.ndarray, hold: bool = False) -> None:
        """(Re)start: ramp from the measured pose `q` to the default pose, then stand, then the policy. `hold`
        (the robot is up, just out of the policy phase): ramp from the last PD target instead, so the legs keep
        their support, and stand until the next soft start."""
        self.phase, self.phase_start_us, self.holding = Phase.SOFT_START, None, hold
        default = self.spec.default_pose  # a non-finite reading must never reach a target (the monitors trip on it)
        start = self.last_pd_q_des if hold and self.last_pd_q_des is not None else q
        self.ramp_from = np.where(np.isfinite(start), start, default)

    def rearm(self, q: np.ndarray, hold: bool = False) -> Trip | None:
        cleared = self.safety.rearm()
        self.soft_start(q, hold)
        return cleared

    def use(self, policy: LoadedPolicy, commands: CommandSource, behaviour: Behaviour | None) -> None:
        """Act with another policy, command source and behaviour from the next policy phase on."""
        self.policy, self.commands, self.behaviour = policy, commands, behaviour
        self.device = next(policy.actor.parameters()).device
        fast = behaviour is None and PreallocatedActor.supports(policy.actor)
        self.fast_actor = PreallocatedActor(policy.actor) if fast else None
        self.actor_output = self.fast_actor.output[0].numpy() if fast else None  # the same memory

    @property
    def standing(self) -> bool:
        """Holding the default pose (not damping, not walking)."""
        return self.holding and self.phase == Phase.SOFT_START and not self.safety.tripped

    def step(self, state: RobotState, ctx: StepContext) -> tuple[PdTarget, dict]:
        """The PD target for this step and everything about it (for logging), both the caller's to keep."""
        self.act(state, ctx)
        record = self.record()
        return record["target"], record

    def act(self, state: RobotState, ctx: StepContext) -> PdTarget:
        """The PD target for this step: this controller's buffer, valid until the next call."""
        if self.phase_start_us is None:
            self.phase_start_us = ctx.time_us
        if self.phase == Phase.SOFT_START and not self.holding and \
                self._phase_s(ctx) >= self.cfg.soft_start_s + self.cfg.stand_s:  # fmt: skip
            self._enter_policy(ctx.time_us)
        self.acting = self.phase == Phase.POLICY
        if self.acting:
            np.copyto(self.command, self.commands.command(self._phase_s(ctx), ctx.remote))
            obs = self.observation.build(state.quaternion, state.gyro, self.command, state.q, state.dq,
                                         self.last_action)  # fmt: skip
            self._act(obs)
        check = SafetyInput(
            q=state.q, dq=state.dq, tau_est=state.tau_est, quaternion=state.quaternion, rpy=state.rpy,
            state_age_us=ctx.state_age_us, step_interval_s=ctx.step_interval_s, bridge_trip=ctx.bridge_trip,
            target=self._board_target(), obs=self.observation.obs if self.acting else None,
            action=self.proposed if self.acting else None, last_action=self.last_action if self.acting else None,
        )  # fmt: skip
        self.trip, self.context = self.safety.check(check, ctx.time_us), ctx
        if self.trip is not None:
            self.phase = Phase.DAMPING
        self._target(self._phase_s(ctx))
        if self.phase == Phase.POLICY:
            np.copyto(self.last_action, self.proposed)
        return self.target

    def record(self) -> dict:
        """The last step as logged: copies, the caller's to keep (take them after the target is out)."""
        walking, acting, t = self.phase == Phase.POLICY, self.acting, self.target
        return {
            "phase": int(self.phase), "command": self.command.copy() if acting else np.zeros(3),
            "obs": self.observation.obs.copy() if acting else np.zeros(self.spec.observation.dim, np.float32),
            "action": self.proposed.copy() if walking else self.zeros.copy(),
            "proposed_action": self.proposed.copy() if acting else self.zeros.copy(),
            "target": PdTarget(t.q_des.copy(), t.dq_des.copy(), t.kp.copy(), t.kd.copy(), t.tau_ff.copy()),
            "trip": self.trip, "trip_count": self.safety.trip_count, "context": self.context,
        }  # fmt: skip

    def _phase_s(self, ctx: StepContext) -> float:
        """Robot time since the current phase began."""
        return (ctx.time_us - self.phase_start_us) / 1e6

    def _enter_policy(self, time_us: int) -> None:
        self.phase, self.phase_start_us = Phase.POLICY, time_us
        self.observation.reset()
        self.last_action.fill(0.0)

    def _act(self, obs: np.ndarray) -> None:
        """The policy's action for `obs`, clipped as the simulator clips, into `self.proposed`."""
        with torch.inference_mode():
            if self.fast_actor is not None:
                self.fast_actor(self.obs_tensor)
                action = self.actor_output
            elif self.behaviour is not None:  # it may keep what it is given: copies
                action = self.behaviour(torch.from_numpy(obs.copy()).unsqueeze(0), self.last_action.copy())
            else:
                action = self.policy.actor(self.obs_tensor.clone().to(self.device))[0].cpu().numpy()
        np.copyto(self.proposed, action)  # to float64
        np.minimum(np.maximum(self.proposed, self.action_low, out=self.proposed), self.action_high, out=self.proposed)

    def _board_target(self) -> PdTarget | None:
        """The last target as the board runs it (q_des within the SDK's position clamp); None before the first."""
        if not self.has_target:
            return None
        t, board = self.target, self.board_target
        np.minimum(np.maximum(t.q_des, self.sdk_q_lower, out=board.q_des), self.sdk_q_upper, out=board.q_des)
        board.kp, board.kd = t.kp, t.kd
        return board

    def _target(self, phase_s: float) -> None:
        """This step's PD target into `self.target`."""
        default, target = self.spec.default_pose, self.target
        self.has_target = True
        if self.phase == Phase.DAMPING:  # q_des is unused at Kp 0, but must stay finite for the bridge
            np.copyto(target.q_des, default)
            target.kp, target.kd = self.damping_gains
            return
        target.kp, target.kd = self.gains
        if self.phase == Phase.SOFT_START:
            alpha = min(1.0, phase_s / self.cfg.soft_start_s) if self.cfg.soft_start_s > 0 else 1.0
            np.multiply(self.ramp_from, 1.0 - alpha, out=target.q_des)
            np.multiply(default, alpha, out=self.scratch)
            np.add(target.q_des, self.scratch, out=target.q_des)
        else:
            self.action_map.targets(self.proposed, out=target.q_des)
        if self.last_pd_q_des is None:
            self.last_pd_q_des = target.q_des.copy()
        else:
            np.copyto(self.last_pd_q_des, target.q_des)


# ------------------------------------------------------------------------------------------------ the loop
class Runtime:
    """Paces the controller by the robot clock over a `RobotIO`; `step()` is one control period.

    Robot time "now" is the newest state's tick, extrapolated while no newer tick arrives: by the state
    messages that repeat the tick (a frozen board still sends, so time visibly passes) and by wall time,
    which on a real robot is robot time. In the stand-in's fast mode wall time says nothing about robot time
    (the lockstep simply pauses while the host is busy), so it only counts after `host_stall_allowance_s`.
    A step runs when the joint and body states of the next period's tick have both arrived (never on an IMU
    reading older than the joint angles beside it), or when robot time is `late_state_grace` periods past it
    without them: then the controller runs on the old state and the stale-state monitor judges it.
    """

    def __init__(self, controller: Controller, io: RobotIO, cfg: RuntimeConfig,
                 on_step: Callable[[dict], None] | None = None):  # fmt: skip
        self.controller, self.io, self.cfg, self.on_step = controller, io, cfg, on_step
        self.period_us = int(round(controller.dt * 1e6))
        self.grace_us = cfg.late_state_grace * self.period_us
        self.step_count = 0
        self.next_tick: int | None = None
        self.prev_tick = 0
        self.prev_wall = 0.0
        self.stop_reason: str | None = None
        self.rearm_requested = False
        self.rearm_hold = False  # the requested re-arm holds the default pose (Controller.soft_start)
        self.armed_at_us = math.inf  # bridge reports count from our first target on (see `step`)
        self.threads = contextlib.ExitStack()  # the runtime's torch threads, until `close`
        self.threads.enter_context(torch_threads(cfg.torch_threads))

    def close(self) -> None:
        """Give torch its thread count back: work after the runtime in this process (a pipeline's training
        stages) would otherwise run on the runtime's one thread."""
        self.threads.close()

    # -- lifecycle
    def wait_for_state(self) -> RobotState:
        """Block until the bridge has sent joint and body state; a clear error if it never does."""
        deadline = time.monotonic() + self.cfg.first_state_timeout_s
        while self.io.state is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"no joint_state/body_state within {self.cfg.first_state_timeout_s:.1f} s: is the bridge running, "
                    "on the same LCM URL and channel prefix?"
                )
            self.io.poll(min(remaining, 0.05))
        state = self.io.state
        self.controller.soft_start(state.q)
        self.next_tick = self.prev_tick = state.robot_tick_us
        self.prev_wall = time.monotonic()
        return state

    def request_stop(self, reason: str = "operator_stop") -> None:
        """Damping from the next step on (latched with `reason`), then `run` returns; safe in a signal handler."""
        self.stop_reason = self.stop_reason or reason

    def request_rearm(self, hold: bool = False) -> None:
        self.rearm_requested, self.rearm_hold = True, hold

    def latch(self, reason: str, detail: str = "") -> None:
        """Damping from the next step on, latched with `reason` like a safety trip (ends an episode, a run)."""
        self.controller.safety.trip_now(reason, self.next_tick or 0, detail)

    def run(self, duration_s: float | None = None, max_steps: int | None = None,
            until: Callable[[dict], bool] | None = None) -> dict | None:  # fmt: skip
        """Step until `duration_s` of robot time, `max_steps`, `until(record)` or a stop request; the last record."""
        if self.next_tick is None:
            self.wait_for_state()
        limit = max_steps if duration_s is None else int(round(duration_s * 1e6 / self.period_us))
        record, start = None, self.step_count
        while limit is None or self.step_count - start < limit:
            if self.stop_reason is not None:
                return self._stop()
            record = self.step()
            if until is not None and until(record):
                break
        return record

    def _stop(self) -> dict | None:
        self.latch(self.stop_reason, "stop requested")
        record = None
        for _ in range(max(1, int(round(self.cfg.stop_damping_s * 1e6 / self.period_us)))):
            record = self.step()
        return record

    # -- robot time
    def robot_now_us(self, state: RobotState, wall: float) -> float:
        """The newest tick plus the robot time known to have passed since it (see the class notes)."""
        by_messages = state.repeats * state.tick_step_us
        allowance = 0.0 if self.cfg.realtime else self.cfg.host_stall_allowance_s
        by_wall = (wall - state.received_s - allowance) * 1e6
        return state.robot_tick_us + max(by_messages, by_wall, 0.0)

    def _wait_for_next_period(self) -> float:
        """Block until the next step is due; robot time now. States that arrived while the host was busy are
        handled first: after a stall the step sees the newest state, and the overrun monitor, not the stale-state
        one, reports the stall."""
        self.io.poll(0.0)
        while True:
            state, wall = self.io.state, time.monotonic()
            now = self.robot_now_us(state, wall)
            if min(state.robot_tick_us, state.body_tick_us) >= self.next_tick or now >= self.next_tick + self.grace_us:
                return now
            self.io.poll(min((self.next_tick + self.grace_us - now) / 1e6, MAX_POLL_S))

    # -- one control period
    def step(self) -> dict:
        """Wait for the next period of robot time, run the controller, publish, call `on_step`; the record."""
        now = self._wait_for_next_period()
        wall, state = time.monotonic(), self.io.state
        rearmed = (self.io.take_arm_request() or self.rearm_requested) and self.controller.safety.tripped
        if rearmed:
            self.controller.rearm(state.q, self.rearm_hold)
            self.armed_at_us = math.inf  # the bridge re-arms on our next target: its older reports are moot
        self.rearm_requested = False
        target = self.controller.act(state, self._context(state, now, wall))
        self.io.publish_target(target, self.step_count, state.robot_tick_us)
        publish_us = now_us()
        # The target is out: from here on nothing is on the state→command path.
        if self.armed_at_us == math.inf:  # the bridge's reports count once it has surely seen this target
            self.armed_at_us = publish_us + 2 * self.period_us
        record = self.controller.record()
        self.io.publish_status(record["trip"], record["trip_count"])
        record.update(
            step=self.step_count, robot_tick_us=self.next_tick, timestamp_us=int(wall * 1e6), publish_us=publish_us,
            state=state, odometry=self._odometry(state),
        )  # fmt: skip
        self._advance(state, wall)
        if self.on_step is not None:
            self.on_step(record)
        return record

    def _odometry(self, state: RobotState) -> Odometry:
        """The odometry of the state's time, never a newer one that arrived by its shorter path (a log row must
        not mix times). It is stamped with the clock the bridge uses in the mode: the host's in real time (as
        the state's stamp), robot time in the stand-in's fast mode (as the state's tick)."""
        clock_us = state.stamp_us if self.cfg.realtime else state.robot_tick_us
        return self.io.odometry_at(clock_us) or Odometry.missing()

    def _context(self, state: RobotState, now_us: float, wall: float) -> StepContext:
        if self.step_count == 0:
            interval = None
        elif self.cfg.realtime:
            interval = wall - self.prev_wall
        else:
            interval = (state.robot_tick_us - self.prev_tick) / 1e6
        bridge = self.io.bridge_status()
        bridge_trip = bridge.reason if bridge and bridge.tripped and bridge.stamp_us > self.armed_at_us else None
        age_us = max(0.0, now_us - min(state.robot_tick_us, state.body_tick_us))
        return StepContext(self.next_tick, age_us, interval, self.io.remote(), bridge_trip)

    def _advance(self, state: RobotState, wall: float) -> None:
        self.step_count += 1
        self.prev_wall, self.prev_tick = wall, state.robot_tick_us
        self.next_tick += self.period_us
        if state.robot_tick_us >= self.next_tick:  # fell a whole period behind the robot: skip, don't burst
            self.next_tick = state.robot_tick_us + self.period_us
