"""Training spread over processes, GPUs and nodes with rsl_rl's own distributed path, started by torchrun.

torchrun sets RANK, LOCAL_RANK, WORLD_SIZE and LOCAL_WORLD_SIZE in each process; rsl_rl then all-reduces the
gradients, the KL-adapted learning rate and the observation normalisers, and writes logs and checkpoints from rank 0
only. Each rank steps its own share of the environments (seed + rank) with its share of its node's CPU threads.
rsl-rl-lib assumes CUDA and NCCL: on the CPU, Runner sets up gloo instead (the CUDA path stays the library's).
Without torchrun (WORLD_SIZE unset) everything here is the identity.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from rsl_rl.runners import OnPolicyRunner

from sim_pretrain.train_config import TrainConfig


@dataclass(frozen=True)
class Ranks:
    """This process's place among torchrun's processes (one process: rank 0 of 1)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1  # processes on this node, which share its CPU cores

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Ranks:
        try:
            return cls(rank=int(environ.get("RANK", 0)), local_rank=int(environ.get("LOCAL_RANK", 0)),
                       world_size=int(environ.get("WORLD_SIZE", 1)),
                       local_world_size=int(environ.get("LOCAL_WORLD_SIZE", 1)))  # fmt: skip
        except ValueError as err:
            raise ValueError(f"torchrun environment: {err}") from None


def rank_config(cfg: TrainConfig, ranks: Ranks) -> TrainConfig:
    """What this rank trains with: its share of the environments and of its node's threads, its own seeds."""
    if ranks.world_size == 1:
        return cfg
    if cfg.env.num_envs % ranks.world_size:
        raise ValueError(f"{ranks.world_size} processes cannot share {cfg.env.num_envs} environments evenly: "
                         f"use a --num-envs divisible by {ranks.world_size}")  # fmt: skip

    def share(threads: int) -> int:
        return max(1, threads // ranks.local_world_size)

    env = dataclasses.replace(cfg.env, num_envs=cfg.env.num_envs // ranks.world_size,
                              num_threads=share(cfg.env.num_threads), seed=cfg.env.seed + ranks.rank)  # fmt: skip
    return dataclasses.replace(cfg, env=env, seed=cfg.seed + ranks.rank, torch_threads=share(cfg.torch_threads))


def rank_device(device: str, ranks: Ranks) -> str:
    """`cuda` means this rank's own GPU (cuda:<local rank>), as rsl_rl requires."""
    return f"cuda:{ranks.local_rank}" if device == "cuda" and ranks.world_size > 1 else device


def any_rank(flag: bool) -> bool:
    """True on every rank if it is true on one (a Ctrl-C seen by one rank stops all at the same iteration)."""
    if not dist.is_initialized():
        return flag
    value = torch.tensor([float(flag)], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def close() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class Runner(OnPolicyRunner):
    """rsl_rl's OnPolicyRunner whose multi-GPU setup also runs on the CPU: gloo there, the library's NCCL on CUDA."""

    def _configure_multi_gpu(self) -> None:
        ranks = Ranks.from_env()
        if torch.device(self.device).type == "cuda" or ranks.world_size == 1:
            return super()._configure_multi_gpu()
        self.is_distributed = True
        self.gpu_world_size, self.gpu_local_rank, self.gpu_global_rank = ranks.world_size, ranks.local_rank, ranks.rank
        self.cfg["multi_gpu"] = {"global_rank": ranks.rank, "local_rank": ranks.local_rank,
                                 "world_size": ranks.world_size}  # fmt: skip
        dist.init_process_group(backend="gloo", rank=ranks.rank, world_size=ranks.world_size)
