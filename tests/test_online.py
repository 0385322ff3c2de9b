"""uni_o4.online on the stand-in robot over the real protocol: checkpoint, SIGKILL, resume; rollback on regression."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from real_robot.datalog import read_log_folder
from robot_spec.policy_io import ActorMLP
from uni_o4.log_dataset import LogDataConfig
from uni_o4.networks import GaussianPolicyEnsemble, ValueNet
from uni_o4.online import OnlineConfig, OnlineRun, PPOLearner, is_regression, stand_in_rollout
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
from uni_o4.online import OnlineConfig, OnlineRun, PPOLearner, RegressionConfig, stand_in_rollout
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
    return OnlineConfig(updates=updates, episodes_per_rollout=1, episode_s=2.0, schedule="stand",
                        regression=RegressionConfig(tolerance=tolerance, max_incident_increase=1.0))
"""

RUN = SETUP + """
spec = load_robot("go1")
cfg = config(int(sys.argv[2]))
OnlineRun(standing_learner(spec), spec, LogDataConfig(critic_fields=[]), cfg, Path(sys.argv[1]),
          stand_in_rollout("none", cfg)).run()
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
    deadline = time.monotonic() + 120
    while _checkpoint_iteration(out) < 1:  # the first update is checkpointed
        assert first.poll() is None, first.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.1)
    time.sleep(1.0)  # into the next rollout
    os.killpg(first.pid, signal.SIGKILL)  # the loop, the stand-in and the bridge, all at once
    first.wait()
    done_before = _checkpoint_iteration(out)
    assert 1 <= done_before < 3

    second = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=180)
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
        assert len(read_log_folder(folder)) >= 1
    assert (out / "deploy" / "policy.pt").is_file() and (out / "online_curve.png").is_file()


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
    torch.manual_seed(0)
    actor = ActorMLP(spec.observation.dim, spec.num_joints, [32])
    torch.nn.init.zeros_(actor.mlp[-1].weight), torch.nn.init.zeros_(actor.mlp[-1].bias)
    policy = GaussianPolicyEnsemble.from_actor(actor, 1, init_std=0.05)
    learner = SabotagingLearner(policy, ValueNet(spec.observation.dim, (32,)), OnlinePPOConfig(epochs=1), 0)
    cfg = OnlineConfig(updates=3, episodes_per_rollout=1, episode_s=2.0, schedule="stand")
    run = OnlineRun(learner, spec, LogDataConfig(critic_fields=[]), cfg, tmp_path, stand_in_rollout("none", cfg))
    state = run.run()
    first, second, third = state.history
    assert "rollback" not in first and "rollback" in second and second["rollback"]["to_update"] == 0
    assert second["fall_rate"] + second["trip_rate"] > 0 or second["reward_per_step"] < first["reward_per_step"]
    assert "rollback" not in third  # the restored policy stands again
    assert third["fall_rate"] == 0 and third["trip_rate"] == 0
    history = json.loads((tmp_path / "online_history.json").read_text())
    assert history[1]["rollback"]["reasons"]


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
