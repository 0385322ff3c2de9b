"""The environment factory: every simulator environment of the project is built by `make_env`.

A backend is a VecEnv class constructed as `Env(cfg: EnvConfig, device)`; a second simulator is one module and one
line in BACKENDS. The robot comes from configs/robots/<robot>.yaml, the dynamics (nominal, or centred on a reality-gap
profile) from `cfg.dynamics`.
"""

from __future__ import annotations

import dataclasses

from rsl_rl.env import VecEnv

from robot_spec.config import ConfigError
from sim_pretrain.env import Go1Env
from sim_pretrain.env_config import EnvConfig

BACKENDS: dict[str, type[VecEnv]] = {"mujoco": Go1Env}


def make_env(robot: str, backend: str, cfg: EnvConfig, device: str = "cpu") -> VecEnv:
    """The `backend` simulator of `robot` with the task `cfg` (its robot and backend set to these)."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown simulator backend {backend!r}; known: {', '.join(sorted(BACKENDS))}")
    return BACKENDS[backend](dataclasses.replace(cfg, robot=robot, backend=backend), device=device)
