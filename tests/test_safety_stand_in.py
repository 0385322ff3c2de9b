"""The safety monitors on the stand-in robot (fast mode, the real bridge, LCM) with a robot that is healthy but
not the simulator (configs/reality_gap/laggy_weak.yaml: 30-40 ms actuation latency, realised Kp/Kd 0.6x, motor
strength 0.7, +3 kg, friction 0.4): standing and stepping it trips nothing, and every fault still trips its
monitor, a dead motor within 150 ms (issue 23)."""

import numpy as np
import pytest
import torch
import yaml

from deploy.commands import ScheduledCommand, load_schedule, load_speed_preset
from deploy.in_process import InMemoryBoard, InProcessRobot
from deploy.lcm_io import LcmRobotIO
from real_robot.loopback import LoopbackRobot
from deploy.runtime import Controller, Phase, Runtime, load_runtime_config
from deploy.safety import SafetyMonitor, load_safety_config
from real_robot.lcm_bus import now_us
from real_robot.lcm_types.go1lcm import sim_control_t
from robot_spec.config import named_config, read_yaml
from robot_spec.policy_io import ActorMLP, load_policy, save_policy
from loaded_host import STARTUP_S

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
START = {"soft_start_s": 1.0, "stand_s": 0.5}  # robot time: stands the weak robot up a little faster than deploy
STEPPING_PERIOD_STEPS = 10  # the stepping policy's legs go round once every 10 policy steps (5 Hz)


def save_stepping_policy(spec, path, radius: float = 0.8):
    """A linear policy whose actions go round in a circle through 0 (the first action's last action) every
    STEPPING_PERIOD_STEPS, on every leg's thigh and calf, diagonal legs in step (a trot-like 5 Hz swing of the
    targets by up to 2 x action_scale x radius rad): a_t = c + R (a_(t-1) - c), fed by the observation's last action.
    With 40 ms of latency the motors run 72 degrees behind the newest target."""
    n = spec.num_joints
    start = spec.observation.slices()["last_action"].start  # its scale is 1: the observation holds a_(t-1)
    angle = 2 * np.pi / STEPPING_PERIOD_STEPS
    turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    weight, bias = np.zeros((n, spec.observation.dim)), np.zeros(n)
    for leg, side in enumerate([1.0, -1.0, -1.0, 1.0]):  # FL and RR in step, FR and RL opposite
        pair = [3 * leg + 1, 3 * leg + 2]  # thigh, calf
        centre = side * radius * np.array([1.0, -1.0]) / np.sqrt(2)
        weight[np.ix_(pair, [start + j for j in pair])] = turn
        bias[pair] = (np.eye(2) - turn) @ centre
    actor = ActorMLP(spec.observation.dim, n, [])
    with torch.no_grad():
        actor.mlp[-1].weight.copy_(torch.as_tensor(weight))
        actor.mlp[-1].bias.copy_(torch.as_tensor(bias))
    save_policy(actor, spec, path, {"source": "test: stepping in place"})
    return path


def save_standing_policy(spec, path):
    actor = ActorMLP(spec.observation.dim, spec.num_joints, [])
    with torch.no_grad():
        actor.mlp[-1].weight.zero_()
        actor.mlp[-1].bias.zero_()
    save_policy(actor, spec, path, {"source": "test: standing"})
    return path


def profile_file(folder, base: str, name: str, **changes) -> str:
    """A reality-gap profile file `name` (its stem): profile `base` with `changes`."""
    profile = {**read_yaml(named_config("reality_gap", base)), **changes, "name": name}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(profile))
    return str(path)


@pytest.fixture(scope="module")
def policies(spec, tmp_path_factory):
    folder = tmp_path_factory.mktemp("policies")
    return {"standing": save_standing_policy(spec, folder / "standing.pt"),
            "stepping": save_stepping_policy(spec, folder / "stepping.pt")}  # fmt: skip


@pytest.fixture(scope="module")
def laggy():
    pytest.importorskip("unitree_legged_sdk.robot_interface", reason="the bridge needs the Unitree SDK")
    with LoopbackRobot(profile="laggy_weak", fast=True, startup_timeout_s=STARTUP_S) as robot:
        yield robot


class Rig:
    """The deploy runtime and its monitors on a freshly reset stand-in robot, a policy on the stand schedule."""

    def __init__(self, spec, robot: LoopbackRobot, policy_file):
        self.robot, self.spec = robot, spec
        robot.reset()
        cfg = load_runtime_config("runtime_fast", START)
        policy = load_policy(policy_file, spec)
        commands = ScheduledCommand(load_schedule("stand", load_speed_preset("low")))
        self.safety = SafetyMonitor(spec, load_safety_config("go1"))
        self.controller = Controller(spec, policy, self.safety, commands, cfg)
        self.io = LcmRobotIO(robot.lcm_url, robot.prefix)
        self.runtime = Runtime(self.controller, self.io, cfg, on_step=lambda _r: robot.node.handle(0.0))
        self.runtime.wait_for_state()
        for _ in range(20):  # the bridge may hold a watchdog trip from before this rig: arm both
            self.runtime.run(max_steps=10)
            status = self.io.bridge_status()
            if not self.safety.tripped and status is not None and not status.tripped:
                return
            robot.arm("all")
            self.runtime.request_rearm()
        raise AssertionError(f"not armed: {self.safety.trip}, bridge {self.io.bridge_status()}")

    def run(self, seconds: float, phase: Phase | None = None) -> dict:
        """Run `seconds` of robot time (from the policy phase on, with `phase`), or until a trip; the last record."""
        if phase is not None:
            record = self.runtime.run(duration_s=5.0, until=lambda r: r["phase"] == phase or r["trip"] is not None)
            assert record["phase"] == phase, record["trip"]
        return self.runtime.run(duration_s=seconds, until=lambda r: r["trip"] is not None)

    def fault_at(self, fault: str, motor: int, at_us: int, magnitude: float = 0.0) -> None:
        msg = sim_control_t()
        msg.timestamp_us, msg.action, msg.fault, msg.motor = now_us(), "fault", fault, motor
        msg.magnitude, msg.at_robot_us = magnitude, at_us
        self.robot.node.publish("sim_control", msg)

    def close(self) -> None:
        self.robot.sim_control("clear_faults")
        self.io.close()


@pytest.mark.parametrize("latency_ms", [30, 40])
@pytest.mark.parametrize("policy", ["standing", "stepping"])
def test_a_late_soft_weak_robot_stands_and_steps_without_a_trip(spec, policies, tmp_path, latency_ms, policy):
    name = f"laggy_weak_{latency_ms}ms"
    profile = profile_file(tmp_path, "laggy_weak", name, actuator_latency_s=latency_ms / 1e3)
    with LoopbackRobot(profile=profile, fast=True, startup_timeout_s=STARTUP_S) as robot:
        rig = Rig(spec, robot, policies[policy])
        try:
            record = rig.run(4.0, phase=Phase.POLICY)
        finally:
            rig.close()
    assert record["trip"] is None, record["trip"]
    assert abs(record["state"].rpy[:2]).max() < 0.5  # upright: it stood (or stepped) the whole time


DEAD_MOTOR_DETECTION_S = 0.15


@pytest.mark.parametrize("joint", [0, 2, 8], ids=["FL_hip", "FL_calf", "RL_calf"])
@pytest.mark.parametrize("policy", ["standing", "stepping"])
def test_a_dead_motor_trips_motor_response_within_150_ms(spec, policies, laggy, policy, joint):
    rig = Rig(spec, laggy, policies[policy])
    try:
        record = rig.run(1.0, phase=Phase.POLICY)
        assert record["trip"] is None, record["trip"]
        fault_us = rig.runtime.prev_tick + 2 * rig.runtime.period_us  # lands before our next-but-one step
        rig.fault_at("dead_motor", joint, fault_us)
        trip = rig.run(1.0)["trip"]
    finally:
        rig.close()
    assert trip is not None and trip.reason == "motor_response", trip
    assert spec.joint_names[joint] in trip.detail
    assert (trip.time_us - fault_us) / 1e6 <= DEAD_MOTOR_DETECTION_S, trip


FAULTS = [  # fault, motor, magnitude -> the monitor that must trip
    ("sensor_nan", 2, 0.0, "non_finite"),
    ("freeze_state", -1, 0.0, "stale_state"),
    ("fall", -1, 0.0, "orientation"),
]


@pytest.mark.parametrize("fault, motor, magnitude, monitor", FAULTS, ids=[f[0] for f in FAULTS])
def test_faults_on_the_late_soft_weak_robot_trip_their_monitors(spec, policies, laggy, fault, motor, magnitude,
                                                                monitor):  # fmt: skip
    rig = Rig(spec, laggy, policies["stepping"])
    try:
        rig.run(0.5, phase=Phase.POLICY)
        fault_us = rig.runtime.prev_tick + 2 * rig.runtime.period_us
        rig.fault_at(fault, motor, fault_us, magnitude)
        trip = rig.run(1.0)["trip"]
    finally:
        rig.close()
    assert trip is not None and trip.reason == monitor, trip
    assert (trip.time_us - fault_us) / 1e6 <= 0.15, trip


def test_motors_at_a_third_of_their_strength_trip_motor_response(spec, policies, tmp_path):
    """Every motor at 0.3 of its torque (the stand-in's strength is one figure for all of them): far below the
    weakest healthy motor, it cannot stand the robot up."""
    profile = profile_file(tmp_path, "none", "weak_motors", motor_strength=0.3)
    with LoopbackRobot(profile=profile, fast=True, startup_timeout_s=STARTUP_S) as robot:
        rig = Rig(spec, robot, policies["standing"])
        try:
            record = rig.run(5.0)
        finally:
            rig.close()
    trip = record["trip"]
    assert trip is not None and trip.reason == "motor_response", trip


# ------------------------------------------------------------------------------------------------ in process
# The same stand-in, bridge core and runtime in one process (deploy/in_process.py, as benchmarks/monitor_grid.py
# runs them): no processes to start, robot time independent of this host's load.
class InProcessRig(Rig):
    def __init__(self, spec, profile: str, policy_file, seed: int = 0):
        self.robot, self.spec = InMemoryBoard(profile, seed=seed), spec
        self.io = InProcessRobot(self.robot)
        cfg = load_runtime_config("runtime_fast", {**START, "host_stall_allowance_s": 0.0})
        policy = load_policy(policy_file, spec)
        commands = ScheduledCommand(load_schedule("stand", load_speed_preset("low")))
        self.safety = SafetyMonitor(spec, load_safety_config("go1"))
        self.controller = Controller(spec, policy, self.safety, commands, cfg)
        self.runtime = Runtime(self.controller, self.io, cfg)
        self.runtime.wait_for_state()

    def fault_at(self, fault: str, motor: int, at_us: int, magnitude: float = 0.0) -> None:
        self.robot.inject_fault(fault, motor, magnitude, at_s=at_us / 1e6)

    def close(self) -> None:
        self.io.close()
        self.robot.close()


# A corner of the monitor grid's healthy robots (benchmarks/monitor_grid.py): 36 ms + up to 4 ms of jitter, soft
# Kp with stiff Kd, uneven motors (by kind 0.7-1.0) with the torque-speed line, 3 kg on a slippery floor.
GRID_CORNER = {"actuator_latency_s": 0.036, "kp_factor": 0.6, "kd_factor": 1.5, "motor_strength": 1.0,
               "motors": {"latency_jitter_s": 0.004, "strength_per_joint": [0.7, 1.0, 0.8], "torque_speed": True}}


@pytest.mark.parametrize("policy", ["standing", "stepping"])
def test_a_healthy_robot_at_the_grids_corner_stands_and_steps_without_a_trip(spec, policies, tmp_path, policy):
    profile = profile_file(tmp_path, "laggy_weak", "grid_corner", **GRID_CORNER)
    rig = InProcessRig(spec, profile, policies[policy])
    try:
        record = rig.run(4.0, phase=Phase.POLICY)
    finally:
        rig.close()
    assert record["trip"] is None, record["trip"]
    assert abs(record["state"].rpy[:2]).max() < 0.5


IN_PROCESS_FAULTS = [  # fault, motor, magnitude -> the monitor that must trip, within s
    ("dead_motor", 5, 0.0, "motor_response", 0.15),
    ("sensor_nan", 2, 0.0, "non_finite", 0.04),
    ("freeze_state", -1, 0.0, "stale_state", 0.15),
    ("drop_packets", -1, 0.0, "stale_state", 0.15),
    ("sensor_spike", 2, 0.5, "joint_reading", 0.04),
    ("fall", -1, 0.0, "orientation", 0.04),
]


@pytest.mark.parametrize("fault, motor, magnitude, monitor, within_s", IN_PROCESS_FAULTS,
                         ids=[f[0] for f in IN_PROCESS_FAULTS])  # fmt: skip
def test_faults_on_the_grids_corner_robot_trip_their_monitors(spec, policies, tmp_path, fault, motor, magnitude,
                                                               monitor, within_s):  # fmt: skip
    rig = InProcessRig(spec, profile_file(tmp_path, "laggy_weak", "grid_corner", **GRID_CORNER), policies["stepping"])
    try:
        rig.run(1.0, phase=Phase.POLICY)
        fault_us = rig.runtime.prev_tick + 2 * rig.runtime.period_us
        rig.fault_at(fault, motor, fault_us, magnitude)
        trip = rig.run(1.0)["trip"]
    finally:
        rig.close()
    assert trip is not None and trip.reason == monitor, trip
    assert (trip.time_us - fault_us) / 1e6 <= within_s, trip


WEAK_MOTOR_DETECTION_S = 0.5


def test_one_motor_at_a_third_on_a_stiff_laggy_robot_trips_motor_response(spec, policies, tmp_path):
    """Kp/Kd 1.5x: the weak motor gives about what the weakest healthy motor would, so it is the comparison with
    the robot's other motors that catches it, stepping, within WEAK_MOTOR_DETECTION_S."""
    rig = InProcessRig(spec, profile_file(tmp_path, "laggy_weak", "laggy_stiff", kp_factor=1.5, kd_factor=1.5),
                       policies["stepping"])  # fmt: skip
    try:
        record = rig.run(1.0, phase=Phase.POLICY)
        assert record["trip"] is None, record["trip"]
        fault_us = rig.runtime.prev_tick + 2 * rig.runtime.period_us
        rig.fault_at("weak_motor", 5, fault_us, 0.3)  # FR calf
        trip = rig.run(2.0)["trip"]
    finally:
        rig.close()
    assert trip is not None and trip.reason == "motor_response" and "FR_calf_joint" in trip.detail, trip
    assert (trip.time_us - fault_us) / 1e6 <= WEAK_MOTOR_DETECTION_S, trip
