"""uni_o4.online on the stand-in robot over the real protocol: checkpoint, SIGKILL, resume; rollback on regression."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from deploy.runtime import Phase
from real_robot.datalog import read_log_folder
from robot_spec.config import ConfigError
from robot_spec.policy_io import ActorMLP, load_policy, save_policy
from uni_o4.log_dataset import LogDataConfig
from uni_o4.networks import GaussianPolicyEnsemble, ValueNet
from uni_o4.online import OnlineConfig, OnlineRun, PPOLearner, StandInRobotLink, is_better, is_regression
from uni_o4.online_ppo import OnlinePPOConfig

REPO = Path(__file__).resolve().parent.parent

# A standing policy (zero action = the default pose) with a small exploration std; rollouts of one 2 s episode.
SETUP = """
import sys, torch
from pathlib import Path
from robot_spec import load_robot
from robot_spec.policy_io import ActorMLP
from uni_o4.log_dataset import LogDataConfig
from uni_o4.networks import GaussianPolicyEnsemble, ValueNet
from uni_o4.online import OnlineConfig, OnlineRun, PPOLearner, RegressionConfig, StandInRobotLink
from uni_o4.online_ppo import OnlinePPOConfig

torch.set_num_threads(1)

def standing_learner(spec, seed=0):
    torch.manual_seed(seed)
    actor = ActorMLP(spec.observation.dim, spec.num_joints, [32])
    torch.nn.init.zeros_(actor.mlp[-1].weight), torch.nn.init.zeros_(actor.mlp[-1].bias)
    policy = GaussianPolicyEnsemble.from_actor(actor, 1, init_std=0.05)
    ppo = OnlinePPOConfig(epochs=1, minibatch_size=64)
    return PPOLearner(policy, ValueNet(spec.observation.dim, (32,)), ppo, seed)

def config(updates, tolerance=10.0):
    return OnlineConfig(updates=updates, episodes_per_rollout=1, episode_s=2.0, schedule="stand", acceptance_episodes=1,
                        regression=RegressionConfig(tolerance=tolerance, max_incident_increase=1.0))
"""

RUN = SETUP + """
spec = load_robot("go1")
cfg = config(int(sys.argv[2]))
OnlineRun(standing_learner(spec), spec, LogDataConfig(critic_fields=[]), cfg, Path(sys.argv[1]),
          StandInRobotLink("none", cfg)).run()
"""


def _checkpoint_iteration(out: Path) -> int:
    history = out / "online_history.json"
    return len(json.loads(history.read_text())) if history.is_file() else 0


def test_an_online_run_killed_mid_run_resumes_and_continues(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(RUN)
    out = tmp_path / "online"
    cmd = [sys.executable, str(script), str(out), "3"]
    first = subprocess.Popen(cmd, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 300  # generous: beside two busy loops this whole test took up to ~190 s
    while _checkpoint_iteration(out) < 1:  # the first update is checkpointed
        assert first.poll() is None, first.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.1)
    time.sleep(1.0)  # into the next rollout
    os.killpg(first.pid, signal.SIGKILL)  # the loop, the stand-in and the bridge, all at once
    first.wait()
    done_before = _checkpoint_iteration(out)
    assert 1 <= done_before < 3

    second = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)  # a starved host is slow
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"resuming at update {done_before}" in second.stdout
    history = json.loads((out / "online_history.json").read_text())
    assert [h["update"] for h in history] == [0, 1, 2]
    saved = torch.load(out / "checkpoint.pt", weights_only=False)
    assert saved["state"]["iteration"] == 3
    # every rollout's logs load, the one the kill interrupted included (kept beside, never overwritten)
    folders = sorted((out / "rollouts").iterdir())
    assert {f"update_00{i}" for i in range(3)} <= {f.name for f in folders}
    for folder in folders:
        if "_interrupted_" in folder.name and not any(folder.glob("episode_*.g1log")):
            continue  # killed before its first episode began: nothing was logged, so nothing is lost
        assert len(read_log_folder(folder)) >= 1
    assert (out / "deploy" / "policy.pt").is_file() and (out / "online_curve.png").is_file()


def standing_policy(spec):
    """Its mean is the default pose (a zero action), with a small exploration std."""
    torch.manual_seed(0)
    actor = ActorMLP(spec.observation.dim, spec.num_joints, [32])
    torch.nn.init.zeros_(actor.mlp[-1].weight), torch.nn.init.zeros_(actor.mlp[-1].bias)
    return GaussianPolicyEnsemble.from_actor(actor, 1, init_std=0.05)


class SabotagingLearner(PPOLearner):
    """Its first update drives every joint to an extreme offset: the next rollout must trip or fall."""

    def update(self, rollouts, latest):
        stats = super().update(rollouts, latest)
        if not getattr(self, "sabotaged", False):
            with torch.no_grad():
                self.ppo.policy.mean_net.layers[-1].bias.fill_(3.0)
            self.sabotaged = True
        return stats


def test_a_regressing_policy_is_rolled_back_and_the_rollback_logged(spec, tmp_path):
    policy = standing_policy(spec)
    learner = SabotagingLearner(policy, ValueNet(spec.observation.dim, (32,)), OnlinePPOConfig(epochs=1), 0)
    cfg = OnlineConfig(updates=3, episodes_per_rollout=1, episode_s=2.0, schedule="stand", acceptance_episodes=1)
    run = OnlineRun(learner, spec, LogDataConfig(critic_fields=[]), cfg, tmp_path, StandInRobotLink("none", cfg))
    state = run.run()
    first, second, third = state.history
    assert "rollback" not in first and "rollback" in second and second["rollback"]["to_update"] == 0
    assert second["fall_rate"] + second["trip_rate"] > 0 or second["reward_per_step"] < first["reward_per_step"]
    assert "rollback" not in third  # the restored policy stands again
    assert third["fall_rate"] == 0 and third["trip_rate"] == 0
    history = json.loads((tmp_path / "online_history.json").read_text())
    assert history[1]["rollback"]["reasons"]


def test_a_rollout_can_be_sized_in_policy_steps(spec, tmp_path):
    policy = standing_policy(spec)
    learner = PPOLearner(policy, ValueNet(spec.observation.dim, (32,)), OnlinePPOConfig(epochs=1), 0)
    cfg = OnlineConfig(updates=1, rollout_steps=130, episode_s=2.0, schedule="stand")  # 100 steps per episode
    state = OnlineRun(learner, spec, LogDataConfig(critic_fields=[]), cfg, tmp_path,
                      StandInRobotLink("none", cfg)).run()  # fmt: skip
    assert state.history[0]["policy_steps"] == 130 and state.history[0]["episodes"] == 2


@pytest.mark.parametrize("bad", [{"rollout_steps": 1}, {"updates": 0}, {"episode_s": 0.0}])
def test_an_impossible_online_config_is_refused(bad):
    with pytest.raises(ConfigError):
        OnlineConfig(**bad)


@pytest.mark.parametrize(("online_falls", "accepted"), [(0.0, True), (0.5, False)])
def test_the_best_online_policy_is_deployed_only_if_no_worse_than_the_start(spec, tmp_path, monkeypatch,
                                                                            online_falls, accepted):  # fmt: skip
    actors = {it: ActorMLP(spec.observation.dim, spec.num_joints, [8]) for it in (0, 2)}
    for it, actor in actors.items():
        save_policy(actor, spec, tmp_path / "policies" / f"update_{it:03d}.pt")
    calls = []

    class Robot:
        standing = False

        def rollout(self, policy, folder, behaviour, meta, episodes):
            calls.append((policy.name, behaviour, meta["online_update"], episodes))
            folder.mkdir(parents=True)

    def measured(folder, *_):  # the online policy earns more per step; its falls are the parameter
        falls = online_falls if folder.name == "online" else 0.0
        return {"episodes": 3, "policy_steps": 300, "mean_return": 1.0, "tracking_error_xy": 0.1, "trip_rate": 0.0,
                "reward_per_step": 0.02 if folder.name == "online" else 0.01, "fall_rate": falls}  # fmt: skip

    monkeypatch.setattr("uni_o4.online.log_metrics", measured)
    cfg = OnlineConfig(updates=4, acceptance_episodes=3)
    learner = PPOLearner(GaussianPolicyEnsemble.from_actor(actors[0], 1), ValueNet(spec.observation.dim, (8,)),
                         OnlinePPOConfig(), 0)  # fmt: skip
    run = OnlineRun(learner, spec, LogDataConfig(critic_fields=[]), cfg, tmp_path, Robot())
    run.state.best_iteration, run.state.best = 2, {"reward_per_step": 0.03}
    run.finish()
    # both deterministic (no exploring behaviour), the same episodes and the same seed
    assert calls == [("update_000.pt", None, 4, 3), ("update_002.pt", None, 4, 3)]
    verdict = json.loads((tmp_path / "acceptance.json").read_text())
    assert verdict["accepted"] == accepted and bool(verdict["reasons"]) != accepted
    deployed = load_policy(tmp_path / "deploy" / "policy.pt", spec).actor
    expected = actors[2 if accepted else 0]
    for a, b in zip(deployed.mlp.state_dict().values(), expected.mlp.state_dict().values()):
        torch.testing.assert_close(a, b)
    run.finish()  # a rerun reuses the verdict: no more robot time
    assert len(calls) == 2


@pytest.mark.parametrize(("online_stalls", "accepted"), [(1.5, True), (3.5, False)])
def test_the_online_acceptance_refuses_a_policy_that_stalls_clearly_more_than_the_start(spec, tmp_path, monkeypatch,
                                                                                    online_stalls, accepted):  # fmt: skip
    """More reward per step and no falls, but legs still for seconds while asked to walk: refused beyond the
    margin (robot_eval.STALL_MARGIN_S over the start's stalled seconds), accepted within it."""
    actors = {it: ActorMLP(spec.observation.dim, spec.num_joints, [8]) for it in (0, 2)}
    for it, actor in actors.items():
        save_policy(actor, spec, tmp_path / "policies" / f"update_{it:03d}.pt")

    class Robot:
        standing = False

        def rollout(self, policy, folder, behaviour, meta, episodes):
            folder.mkdir(parents=True)

    def measured(folder, *_):
        online = folder.name == "online"
        return {"episodes": 3, "policy_steps": 300, "mean_return": 1.0, "tracking_error_xy": 0.1, "trip_rate": 0.0,
                "reward_per_step": 0.02 if online else 0.01, "fall_rate": 0.0,
                "stalled_s": online_stalls if online else 1.0}  # fmt: skip

    monkeypatch.setattr("uni_o4.online.log_metrics", measured)
    learner = PPOLearner(GaussianPolicyEnsemble.from_actor(actors[0], 1), ValueNet(spec.observation.dim, (8,)),
                         OnlinePPOConfig(), 0)  # fmt: skip
    run = OnlineRun(learner, spec, LogDataConfig(critic_fields=[]), OnlineConfig(updates=4, acceptance_episodes=3),
                    tmp_path, Robot())  # fmt: skip
    run.state.best_iteration, run.state.best = 2, {"reward_per_step": 0.03}
    run.finish()
    verdict = json.loads((tmp_path / "acceptance.json").read_text())
    assert verdict["accepted"] == accepted
    assert any("stalled 3.5 s per episode" in r for r in verdict["reasons"]) != accepted


def test_the_best_rollout_is_the_safest_then_the_most_rewarding():
    safe, falling = ({"reward_per_step": 0.015, "fall_rate": 0.0, "trip_rate": 0.0},
                     {"reward_per_step": 0.020, "fall_rate": 0.5, "trip_rate": 0.0})  # fmt: skip
    assert is_better(safe, None) and is_better(safe, falling) and not is_better(falling, safe)
    assert is_better({**safe, "reward_per_step": 0.016}, safe) and not is_better({**safe, "reward_per_step": 0.01}, safe)


@pytest.mark.parametrize(
    ("metrics", "regressed"),
    [({"reward_per_step": 0.95, "fall_rate": 0.0, "trip_rate": 0.0}, False),
     ({"reward_per_step": 0.85, "fall_rate": 0.0, "trip_rate": 0.0}, True),
     ({"reward_per_step": 1.20, "fall_rate": 0.5, "trip_rate": 0.0}, True)],
)  # fmt: skip
def test_regression_rule(metrics, regressed):
    best = {"reward_per_step": 1.0, "fall_rate": 0.0, "trip_rate": 0.0}
    assert bool(is_regression(metrics, best, OnlineConfig().regression)) == regressed
    assert is_regression(metrics, None, OnlineConfig().regression) == []


def test_a_rollout_safer_than_the_best_is_no_regression_whatever_its_reward():
    falling_best = {"reward_per_step": 1.0, "fall_rate": 0.5, "trip_rate": 0.0}
    safe_but_slow = {"reward_per_step": 0.5, "fall_rate": 0.0, "trip_rate": 0.0}
    assert is_regression(safe_but_slow, falling_best, OnlineConfig().regression) == []
    assert is_better(safe_but_slow, falling_best)


# O3F explores around a standing actor with a small std: it must keep standing. Cal-QL starts from a random
# actor (its tanh policy cannot start from the pretrained one): its jumps trip the bridge's PowerProtect within a
# few steps, so only the loop and the safe set are checked on the steps it does take.
@pytest.mark.parametrize(("algo", "overrides", "min_steps"), [("o3f", {"init_std": 0.1}, 50), ("calql", {}, 1)])
def test_a_baseline_fine_tunes_online_on_mixed_data_inside_the_safe_set(spec, tmp_path, algo, overrides, min_steps):
    from deploy.safety import load_safety_config
    from robot_spec.policy_io import load_policy, save_policy
    from uni_o4.baselines import SafeActionSet
    from uni_o4.methods import baseline_data_config
    from uni_o4.registry import load_baseline_config, make_algorithm
    from uni_o4.log_dataset import dataset_from_log_folder
    from uni_o4.online import OffPolicyLearner
    from uni_o4.robot_eval import collect_on_stand_in

    torch.manual_seed(0)
    actor = ActorMLP(spec.observation.dim, spec.num_joints, [32])
    torch.nn.init.zeros_(actor.mlp[-1].weight), torch.nn.init.zeros_(actor.mlp[-1].bias)
    save_policy(actor, spec, tmp_path / "standing.pt")
    collect_on_stand_in(tmp_path / "standing.pt", "none", tmp_path / "offline", episodes=1, episode_s=2.0,
                        schedule="stand", action_noise=0.05)  # fmt: skip
    data_cfg = baseline_data_config()
    offline, _ = dataset_from_log_folder(tmp_path / "offline", spec, data_cfg)
    small = {"actor_hidden_dims": [32], "critic_hidden_dims": [32], "batch_size": 32, **overrides}
    safe_set = SafeActionSet.from_spec(spec, load_safety_config(spec.name).max_action_delta)
    init = {"init_actor": actor} if algo == "o3f" else {}
    algorithm = make_algorithm(algo, load_baseline_config(algo, overrides=small), offline, safe_set, **init)
    cfg = OnlineConfig(updates=2, episodes_per_rollout=1, episode_s=2.0, schedule="stand", acceptance_episodes=1,
                       offpolicy_steps=10,
                       offpolicy_batch_size=32)  # fmt: skip
    learner = OffPolicyLearner(algorithm, offline, data_cfg, spec, cfg)
    state = OnlineRun(learner, spec, data_cfg, cfg, tmp_path / "online", StandInRobotLink("none", cfg)).run()

    assert [h["update"] for h in state.history] == [0, 1]
    for entry in state.history:
        if "rollback" not in entry:
            assert entry["update_stats"] and all(map(math.isfinite, entry["update_stats"].values()))
    rolled_out = [load_policy(tmp_path / "online" / "policies" / f"update_00{i}.pt", spec).actor for i in (0, 1)]
    first, second = (dict(actor.named_parameters()) for actor in rolled_out)
    assert any(not torch.equal(first[k], second[k]) for k in first), "the update changed nothing"
    # every action executed on the robot was the exploring behaviour's, inside the safe action set
    for folder in sorted((tmp_path / "online" / "rollouts").iterdir()):
        for episode in read_log_folder(folder).episodes:
            acting = episode.records["phase"] == Phase.POLICY
            actions = torch.as_tensor(episode.records["action"][acting], dtype=torch.float32)
            assert len(actions) >= min_steps and safe_set.contains(actions[1:], actions[:-1], tol=1e-4).all()
            assert episode.meta["behaviour"] == "exploring"


def test_an_off_policy_learner_warms_its_algorithm_up_on_an_online_sized_batch_before_the_robot_starts(spec):
    from uni_o4.online import OffPolicyLearner
    from uni_o4.synthetic import synthetic_dataset

    class Recorder:
        def warm_up(self, batch):
            self.rows = len(batch.obs)

    algorithm, offline = Recorder(), synthetic_dataset(spec.observation.dim, spec.num_joints, episodes=2, length=30)
    OffPolicyLearner(algorithm, offline, LogDataConfig(critic_fields=[]), spec, OnlineConfig(offpolicy_batch_size=96))
    assert algorithm.rows == 96  # the shape its updates will have (more than the 60 rows there are)


def test_an_offline_baseline_from_a_pretrained_actor_continues_online(spec, tmp_path):
    """`finetune --offline --algo o3f --init P` then `--online`: the learner is rebuilt with P's architecture and
    starts from the policy the gate left deployed (the candidate, or P if the gate refused it)."""
    import yaml

    from robot_spec.policy_io import load_policy, save_policy
    from uni_o4.cli import main
    from uni_o4.registry import build_learner
    from uni_o4.robot_eval import collect_on_stand_in

    torch.manual_seed(0)
    actor = ActorMLP(spec.observation.dim, spec.num_joints, [24, 16])
    torch.nn.init.zeros_(actor.mlp[-1].weight), torch.nn.init.zeros_(actor.mlp[-1].bias)
    save_policy(actor, spec, tmp_path / "standing.pt")
    collect_on_stand_in(tmp_path / "standing.pt", "none", tmp_path / "logs", episodes=1, episode_s=2.0,
                        schedule="stand", action_noise=0.05)  # fmt: skip
    preset = yaml.safe_load(open(REPO / "configs" / "finetune" / "o3f_quick.yaml"))
    (tmp_path / "o3f_tiny.yaml").write_text(yaml.safe_dump({**preset, "offline_steps": 20, "batch_size": 32,
                                                            "critic_hidden_dims": [32]}))  # fmt: skip
    out = tmp_path / "offline"
    assert main(["finetune", "--offline", str(tmp_path / "logs"), "--init", str(tmp_path / "standing.pt"),
                 "--algo", "o3f", "--preset", str(tmp_path / "o3f_tiny.yaml"), "--ope-preset", "uni_o4_tiny",
                 "--out", str(out)]) == 0  # fmt: skip

    source = json.loads((out / "finetune.json").read_text())
    learner, _ = build_learner(out, source, spec, OnlineConfig())
    obs = torch.randn(5, spec.observation.dim)
    deployed = load_policy(out / "deploy" / "policy.pt", spec).actor
    torch.testing.assert_close(learner.export_actor()(obs), deployed(obs))


def test_the_robot_stands_while_an_update_computes(spec, tmp_path):
    """Between rollouts the control loop keeps running and holds the default pose while the learner works, on
    its own thread count (the runtime's one thread is for the control loop, and is given back at the end)."""
    import numpy as np

    cfg = OnlineConfig(updates=2, episodes_per_rollout=1, episode_s=1.0, schedule="stand", acceptance_episodes=0,
                       learner_threads=3)  # fmt: skip
    robot = StandInRobotLink("none", cfg)
    seen, learner_threads = [], []

    class SlowLearner(PPOLearner):
        def update(self, rollouts, latest):
            learner_threads.append(torch.get_num_threads())
            session, start = robot.session, robot.session.runtime.step_count
            deadline = time.monotonic() + 10.0  # an update that takes a while: until the loop ran 25 steps (0.5 s
            while session.runtime.step_count - start < 25 and time.monotonic() < deadline:  # at 50 Hz; a loaded
                time.sleep(0.05)  # CI host runs it slower, so wait for the steps rather than for a fixed time)
            state = session.io.state
            seen.append((session.standing, session.runtime.step_count - start,
                         np.abs(state.q - spec.default_pose).max(), np.abs(state.rpy[:2]).max()))  # fmt: skip
            return super().update(rollouts, latest)

    threads_before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        learner = SlowLearner(standing_policy(spec), ValueNet(spec.observation.dim, (32,)), OnlinePPOConfig(epochs=1),
                              0)  # fmt: skip
        state = OnlineRun(learner, spec, LogDataConfig(critic_fields=[]), cfg, tmp_path, robot).run()
        assert learner_threads == [3, 3] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads_before)
    assert [h["robot_during_update"] for h in state.history] == ["standing", "standing"]
    for update, (standing, steps, joint_error, tilt) in enumerate(seen):
        records = read_log_folder(tmp_path / "rollouts" / f"update_{update:03d}").episodes[-1].records
        stance = np.abs(records["q"][records["phase"] == Phase.POLICY][-1] - spec.default_pose).max()
        assert standing and steps >= 25  # the loop ran ...
        assert joint_error < stance + 0.05 and tilt < 0.1  # ... and the robot kept the stance it walked off in
    assert robot.session is None and robot.loopback is None  # closed: damping, processes gone


def test_rollouts_of_an_unchanged_policy_re_measure_it_and_never_roll_back(spec, tmp_path, monkeypatch):
    """During a critic warm-up the policy does not change: a worse rollout is noise, not a regression (a rollback
    would also throw the warm-up away)."""
    rewards = iter([0.02, 0.01, 0.005])
    measured = {"episodes": 2, "policy_steps": 100, "mean_return": 1.0, "tracking_error_xy": 0.1, "trip_rate": 0.0,
                "fall_rate": 0.0}  # fmt: skip
    monkeypatch.setattr("uni_o4.online.log_metrics", lambda *_: {**measured, "reward_per_step": next(rewards)})
    monkeypatch.setattr("uni_o4.online.dataset_from_log_folder", lambda *_: (None, None))

    class Robot:
        standing = True

        def rollout(self, policy, folder, behaviour, meta, episodes):
            folder.mkdir(parents=True)

        def close(self):
            pass

    learner = PPOLearner(standing_policy(spec), ValueNet(spec.observation.dim, (32,)), OnlinePPOConfig(), 0)
    learner.update = lambda rollouts, data: {"critic_only": 1.0}  # V alone: the policy stays as it is
    cfg = OnlineConfig(updates=3, acceptance_episodes=0)
    state = OnlineRun(learner, spec, LogDataConfig(critic_fields=[]), cfg, tmp_path, Robot()).run()
    assert not any("rollback" in h for h in state.history)
    assert state.best_iteration == 2 and state.best["reward_per_step"] == 0.005  # the latest measure of it


def test_a_best_policy_rolled_back_to_the_start_is_not_put_to_acceptance(spec, tmp_path):
    actor = ActorMLP(spec.observation.dim, spec.num_joints, [8])
    for it in (0, 3):  # update 3's rollout measured the starting weights again (after rollbacks)
        save_policy(actor, spec, tmp_path / "policies" / f"update_{it:03d}.pt", {"update": it})

    class Robot:
        def rollout(self, *args):
            raise AssertionError("no acceptance rollouts for an unchanged policy")

    learner = PPOLearner(GaussianPolicyEnsemble.from_actor(actor, 1), ValueNet(spec.observation.dim, (8,)),
                         OnlinePPOConfig(), 0)  # fmt: skip
    run = OnlineRun(learner, spec, LogDataConfig(critic_fields=[]), OnlineConfig(), tmp_path, Robot())
    run.state.best_iteration, run.state.best = 3, {"reward_per_step": 0.03}
    run.finish()
    info = load_policy(tmp_path / "deploy" / "policy.pt", spec).contract["info"]
    assert info["changed"] is False and info["update"] == 0 and info["acceptance"] is None
