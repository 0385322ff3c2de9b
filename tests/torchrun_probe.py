"""`sim_pretrain train` (the argv) in one torchrun process, recording what tests/test_distributed.py checks per rank:
the environments it built, the steps it took, and its actor and critic after every PPO update
($PROBE_DIR/rank<RANK>.pt). Only records: the command runs as it would under torchrun."""

import os
import sys
from pathlib import Path

import torch
from rsl_rl.algorithms import PPO

from sim_pretrain import cli
from sim_pretrain.env import Go1Env

record: dict = {"envs": [], "steps": 0, "updates": []}
env_init, env_step, ppo_update = Go1Env.__init__, Go1Env.step, PPO.update


def recording_init(self, cfg, device="cpu"):
    env_init(self, cfg, device)
    record["envs"].append({"num_envs": cfg.num_envs, "num_threads": cfg.num_threads, "seed": cfg.seed})


def counting_step(self, actions):
    record["steps"] += 1
    return env_step(self, actions)


def recording_update(self):
    losses = ppo_update(self)
    record["updates"].append({name: {k: v.clone() for k, v in model.state_dict().items()}
                              for name, model in (("actor", self._raw_actor), ("critic", self._raw_critic))})
    return losses


Go1Env.__init__, Go1Env.step, PPO.update = recording_init, counting_step, recording_update
code = cli.main(sys.argv[1:])
record["torch_threads"] = torch.get_num_threads()
torch.save(record, Path(os.environ["PROBE_DIR"]) / f"rank{os.environ['RANK']}.pt")
sys.exit(code)
