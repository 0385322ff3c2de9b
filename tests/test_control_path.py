"""The runtime's state→command path (deploy.runtime.Controller.act, on buffers made once): the same observations,
actions and PD targets bit for bit as the plain torch path it replaced, on states recorded from the stand-in; the
vectorised monitor parts equal the per-target ones; and the path keeps no memory and no array per step."""

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from deploy.commands import ScheduledCommand, load_schedule, load_speed_preset
from deploy.in_process import InMemoryBoard, InProcessRobot
from deploy.record import Phase
from deploy.runtime import Controller, RobotState, Runtime, StepContext, load_runtime_config
from deploy.safety import HealthyTorque, SafetyLimits, SafetyMonitor, healthy_torque, load_safety_config
from deploy.safety import median_of_sorted
from robot_spec.policy_io import ActorMLP, PreallocatedActor, load_policy
from robot_spec.policy_map import ActionMap, ObservationBuilder

REPO = Path(__file__).resolve().parent.parent
CFG_OVERRIDES = {"soft_start_s": 0.3, "stand_s": 0.1, "host_stall_allowance_s": 0.0}


@pytest.fixture(scope="module")
def policy(spec):
    return load_policy(REPO / "policies" / "go1_walk" / "policy.pt", spec)  # the shipped walking policy


def controller(spec, policy) -> Controller:
    cfg = load_runtime_config("runtime_fast", CFG_OVERRIDES)
    commands = ScheduledCommand(load_schedule("walk", load_speed_preset("high")))
    return Controller(spec, policy, SafetyMonitor(spec, load_safety_config(spec.name)), commands, cfg)


@pytest.fixture(scope="module")
def recorded(spec, policy):
    """The stand-in under the runtime for 150 steps (soft start, stand, then the policy): where the soft start
    ramped from, and each step's state and context."""
    board = InMemoryBoard("none", seed=3)
    io = InProcessRobot(board)
    io.tick(50)
    runtime = Runtime(controller(spec, policy), io, load_runtime_config("runtime_fast", CFG_OVERRIDES))
    runtime.wait_for_state()
    ramp_from = runtime.controller.ramp_from.copy()
    steps = [runtime.step() for _ in range(150)]
    runtime.close()
    io.close()
    board.close()
    return ramp_from, [(r["state"], r["context"]) for r in steps]


def reference_targets(spec, policy, ramp_from, records, soft_start_s) -> list[tuple]:
    """The path the controller took before (robot_spec's torch ObservationBuilder, the actor module, np.clip,
    ActionMap.targets allocating): (obs, action, q_des) of every step, from the commands the controller used."""
    builder, action_map = ObservationBuilder(spec), ActionMap.from_spec(spec)
    clip, last_action, out, policy_start = spec.control.action_clip, np.zeros(spec.num_joints), [], None
    for state, ctx, record in records:
        if record["phase"] != Phase.POLICY:
            alpha = min(1.0, (ctx.time_us - records[0][1].time_us) / 1e6 / soft_start_s)
            out.append((None, None, (1.0 - alpha) * ramp_from + alpha * spec.default_pose))
            continue
        if policy_start is None:
            policy_start = ctx.time_us
            builder.reset()
        obs = builder.build(state.quaternion, state.gyro, record["command"], state.q, state.dq, last_action)
        with torch.inference_mode():
            action = np.clip(policy.actor(obs)[0].double().numpy(), -clip, clip)
        out.append((obs[0].numpy(), action, action_map.targets(action)))
        last_action = action
    return out


def test_targets_match_the_reference_path_bit_for_bit(spec, policy, recorded):
    ramp_from, steps = recorded
    c = controller(spec, policy)
    c.ramp_from = ramp_from
    records = [(state, ctx, c.step(state, ctx)[1]) for state, ctx in steps]
    assert [r["phase"] for _, _, r in records].count(Phase.POLICY) >= 100, "the policy should have walked"
    assert all(r["trip"] is None for _, _, r in records)
    reference = reference_targets(spec, policy, ramp_from, records, CFG_OVERRIDES["soft_start_s"])
    for (_, _, record), (obs, action, q_des) in zip(records, reference):
        assert record["target"].q_des.tobytes() == q_des.tobytes()
        if obs is not None:
            assert record["obs"].tobytes() == obs.tobytes()
            assert record["action"].tobytes() == action.tobytes()


def test_preallocated_actor_matches_the_module_with_squashed_outputs(spec):
    torch.manual_seed(1)
    bounds = [[-0.5] * spec.num_joints, [2.0] * spec.num_joints]
    for activation in ("elu", "relu", "tanh", "silu"):
        actor = ActorMLP(spec.observation.dim, spec.num_joints, [32, 16], activation, output_bounds=bounds)
        fast = PreallocatedActor(actor)
        with torch.inference_mode():
            for obs in 3 * torch.randn(50, 1, spec.observation.dim):
                assert torch.equal(fast(obs), actor(obs)), activation


def test_stacked_healthy_torque_equals_the_per_target_one(spec):
    limits = SafetyLimits.from_spec(spec, load_safety_config(spec.name))
    rng, n, kept = np.random.default_rng(0), spec.num_joints, limits.motor_targets
    stack = HealthyTorque(limits, kept)
    for _ in range(50):
        targets = {"q_des": rng.normal(0, 1, (kept, n)), "dq_des": rng.normal(0, 5, (kept, n)),
                   "kp": rng.uniform(0, 80, (kept, n)), "kd": rng.uniform(0, 3, (kept, n)),
                   "tau_ff": rng.normal(0, 5, (kept, n))}  # fmt: skip
        q, dq = rng.normal(0, 1, n), rng.normal(0, 5, n)
        ranges = [healthy_torque(PdTargetRow(targets, i), q, dq, limits) for i in range(kept)]
        low, high = stack.range(targets, q, dq)
        assert low.tobytes() == np.min([r[0] for r in ranges], axis=0).tobytes()
        assert high.tobytes() == np.max([r[1] for r in ranges], axis=0).tobytes()


class PdTargetRow:
    def __init__(self, targets: dict, i: int):
        for name, rows in targets.items():
            setattr(self, name, rows[i])


def test_median_of_sorted_is_numpys_median():
    rng = np.random.default_rng(2)
    for length in (1, 2, 9, 10):
        values = rng.normal(size=(20, length))
        values[3, 0] = np.nan
        expected = np.median(values, axis=1)
        assert median_of_sorted(np.sort(values, axis=1)).tobytes() == expected.tobytes()


def test_state_to_command_path_keeps_nothing_and_allocates_no_arrays(spec, policy):
    """Under tracemalloc, after a warm-up (numpy's small-block caches settle in the first traced steps), 500 steps
    of `act` on a perfect robot (it reaches every target) keep nothing (a few bytes of cache movement at most;
    one array kept per step would be ~50 kB), and never hold more than a few numpy iterator and scalar objects at
    once: a step that made its observation, action or target as new arrays fails (the old path: ~7 kB)."""
    c = controller(spec, policy)
    state = RobotState.standing_still(spec.default_pose)

    def steps(first: int, count: int) -> None:
        for i in range(first, first + count):
            target = c.act(state, StepContext(i * 20_000, 0.0, 0.02))
            np.copyto(state.q, target.q_des)

    steps(0, 300)
    assert c.phase == Phase.POLICY and c.safety.trip is None
    tracemalloc.start()
    try:
        steps(300, 1000)
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        steps(1300, 500)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert c.phase == Phase.POLICY and c.safety.trip is None
    assert current - start < 1024, f"the state→command path kept {current - start} B over 500 steps"
    assert peak - start < 4096, f"the state→command path held {peak - start} B at once"
