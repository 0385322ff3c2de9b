"""`sim_pretrain train` / `eval` end to end on the tiny preset: save, resume, export, evaluate, clear errors."""

import json

import pytest
import torch
import yaml

from robot_spec.policy_io import load_policy
from sim_pretrain.cli import main


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    assert main(["train", "--robot", "go1", "--preset", "tiny", "--runs", str(runs), "--seed", "5"]) == 0
    (run_dir,) = (runs / "go1").iterdir()
    return run_dir


def test_train_writes_config_checkpoints_and_contracted_policy(tiny_run, spec):
    config = yaml.safe_load((tiny_run / "config.yaml").read_text())
    assert config["seed"] == 5 and config["env"]["num_envs"] == 8
    assert (tiny_run / "model_1.pt").is_file()
    assert list(tiny_run.glob("events.out.tfevents.*"))
    policy = load_policy(tiny_run / "policy.pt", spec)
    assert policy.contract["info"]["source"] == "sim_pretrain"
    assert policy(torch.zeros(1, spec.observation.dim)).shape == (1, 12)
    assert (tiny_run / "policy.onnx").is_file()


def test_exported_policy_equals_the_trained_actor(tiny_run, spec):
    checkpoint = torch.load(tiny_run / "model_1.pt", weights_only=False)
    actor_state = checkpoint["actor_state_dict"]
    policy = load_policy(tiny_run / "policy.pt", spec)
    obs = torch.randn(5, spec.observation.dim)
    norm = (obs - actor_state["obs_normalizer._mean"]) / (actor_state["obs_normalizer._std"] + 1e-2)
    weights = [v for k, v in actor_state.items() if k.startswith("mlp.") and k.endswith("weight")]
    biases = [v for k, v in actor_state.items() if k.startswith("mlp.") and k.endswith("bias")]
    x = norm
    for i, (w, b) in enumerate(zip(weights, biases)):
        x = x @ w.T + b
        if i < len(weights) - 1:
            x = torch.nn.functional.elu(x)
    torch.testing.assert_close(policy(obs), x, atol=1e-5, rtol=1e-5)


def test_resume_continues_from_the_checkpoint(tiny_run):
    assert main(["train", "--preset", "tiny", "--resume", str(tiny_run), "--iterations", "4"]) == 0
    assert (tiny_run / "model_3.pt").is_file()
    assert torch.load(tiny_run / "model_3.pt", weights_only=False)["iter"] == 3


def test_eval_writes_metrics_and_plot(tiny_run, tmp_path):
    assert main(["eval", "--policy", str(tiny_run / "policy.pt"), "--preset", "forward", "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert len(metrics["per_command"]) == 5 and 0.0 <= metrics["fall_rate"] <= 1.0
    assert (tmp_path / "tracking.png").stat().st_size > 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--robot", "go9"], "unknown robots 'go9'; known: go1"),
        (["train", "--preset", "huge"], "unknown train 'go1_huge'; known: go1_quick, go1_tiny"),
        (["train", "--preset", "tiny", "--resume", "/nonexistent/run"], "no checkpoint or run folder"),
        (["eval", "--policy", "/nonexistent/policy.pt"], "policy file not found"),
    ],
)
def test_bad_input_is_answered_clearly(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_run_stopped_with_ctrl_c_is_never_taken_for_a_finished_one(tmp_path):
    """Ctrl-C saves a checkpoint and exports the policy so far into stopped/, not as the run's policy.pt (a
    pipeline's rerun takes that for a finished run's), and the command exits as stopped."""
    import os
    import signal
    import threading
    import time

    from robot_spec.exit_codes import ExitCode

    def stop_after_the_first_checkpoint():
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("go1/*/model_*.pt")) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)  # the training loop's handler: finish the iteration, save, stop

    threading.Thread(target=stop_after_the_first_checkpoint, daemon=True).start()
    argv = ["train", "--preset", "tiny", "--iterations", "1000", "--runs", str(tmp_path), "--seed", "5"]
    assert main(argv) == ExitCode.ABORTED
    (run_dir,) = (tmp_path / "go1").iterdir()
    assert not (run_dir / "policy.pt").exists() and (run_dir / "stopped" / "policy.pt").is_file()
    checkpoints = sorted(run_dir.glob("model_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
    assert torch.load(checkpoints[-1], weights_only=False)["iter"] < 1000
