"""`sim_pretrain train` under torchrun: 2 CPU processes on gloo over loopback train one policy into one run folder
(tests/torchrun_probe.py records what each rank did), resume it, and refuse environments they cannot share."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from robot_spec.policy_io import load_policy
from sim_pretrain.cli import main
from sim_pretrain.distributed import Ranks, rank_config
from sim_pretrain.train_config import load_train_config

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(probe_dir: Path, argv: list[str]) -> list[dict]:
    """Run `sim_pretrain <argv>` in 2 processes on this host; each rank's record."""
    probe_dir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "PROBE_DIR": str(probe_dir), "GLOO_SOCKET_IFNAME": "lo",
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
               "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
               str(REPO / "tests" / "torchrun_probe.py"), *argv]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("exported policy:") == 1  # rank 0 alone reports
    return [torch.load(probe_dir / f"rank{r}.pt") for r in (0, 1)]


def assert_same_models(ranks: list[dict], updates: int) -> None:
    """Every update left both ranks with the very same actor and critic (normalisers included), and changed them."""
    assert len(ranks[0]["updates"]) == len(ranks[1]["updates"]) == updates
    for mine, theirs in zip(ranks[0]["updates"], ranks[1]["updates"]):
        for model in ("actor", "critic"):
            assert mine[model].keys() == theirs[model].keys()
            for key in mine[model]:
                assert torch.equal(mine[model][key], theirs[model][key]), f"{model}.{key} differs between ranks"
    first, last = ranks[0]["updates"][0]["actor"], ranks[0]["updates"][-1]["actor"]
    assert not torch.equal(first["mlp.0.weight"], last["mlp.0.weight"])


def test_two_processes_train_one_policy_and_resume(tmp_path):
    runs = tmp_path / "runs"
    ranks = torchrun(tmp_path / "first", ["train", "--preset", "tiny", "--runs", str(runs), "--seed", "3"])
    # tiny: 8 environments, 1 physics thread, 1 torch thread, 2 iterations of 8 steps per environment
    assert [r["envs"] for r in ranks] == [[{"num_envs": 4, "num_threads": 1, "seed": 3}],
                                          [{"num_envs": 4, "num_threads": 1, "seed": 4}]]  # fmt: skip
    assert [r["steps"] for r in ranks] == [16, 16] and [r["torch_threads"] for r in ranks] == [1, 1]
    assert_same_models(ranks, updates=2)

    (run,) = (runs / "go1").iterdir()  # one run folder, rank 0's
    assert sorted(p.name for p in run.glob("model_*.pt")) == ["model_0.pt", "model_1.pt"]
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    checkpoint = torch.load(run / "model_1.pt", weights_only=False)
    for key, value in ranks[1]["updates"][-1]["actor"].items():
        assert torch.equal(checkpoint["actor_state_dict"][key], value)
    policy = load_policy(run / "policy.pt")
    assert policy.contract["info"]["iteration"] == 1 and (run / "policy.onnx").is_file()

    # Both ranks continue from the checkpoint (weights and optimiser state), so they stay in step.
    resumed = torchrun(tmp_path / "resumed", ["train", "--preset", "tiny", "--resume", str(run), "--iterations", "3"])
    assert [r["steps"] for r in resumed] == [16, 16]  # iterations 1 and 2 (model_1.pt's iter is 1)
    assert_same_models(resumed, updates=2)
    assert torch.load(run / "model_2.pt", weights_only=False)["iter"] == 2
    assert list((runs / "go1").iterdir()) == [run]


def test_each_rank_takes_its_share():
    cfg = load_train_config("go1", "quick")  # 512 environments, 2 physics threads, 2 torch threads, seed 0
    assert rank_config(cfg, Ranks()) is cfg  # without torchrun: the config as it is
    share = rank_config(cfg, Ranks(rank=3, local_rank=1, world_size=4, local_world_size=2))
    assert (share.env.num_envs, share.env.num_threads, share.torch_threads) == (128, 1, 1)
    assert (share.seed, share.env.seed) == (cfg.seed + 3, cfg.env.seed + 3)
    assert Ranks.from_env({"RANK": "2", "LOCAL_RANK": "0", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"}) == Ranks(2, 0, 4, 2)


def test_a_world_size_that_does_not_divide_the_environments_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert main(["train", "--preset", "tiny", "--runs", str(tmp_path)]) == 2
    assert "3 processes cannot share 8 environments evenly: use a --num-envs divisible by 3" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
