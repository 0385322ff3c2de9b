"""Seed baselines for offline → online fine-tuning: IQL, Cal-QL and O3F (optimistic action selection on IQL).

Every algorithm implements `common.Algorithm` (update / act / state_dict / load_state_dict / export_actor),
is configured by a typed dataclass loaded from configs/finetune/<name>.yaml, and acts only inside the
robot's safe action set (`common.SafeActionSet`).

    cfg = load_baseline_config("calql")
    algo = make_algorithm("calql", cfg, data, SafeActionSet.for_robot("go1"))
    train(algo, lambda: data.sample(cfg.batch_size), cfg.offline_steps, progress=True)
"""

from __future__ import annotations

from pathlib import Path

import torch

from robot_spec.config import load_config, named_config
from robot_spec.policy_io import ActorMLP
from uni_o4.baselines.calql import CalQL, CalQLConfig
from uni_o4.baselines.common import (
    Algorithm,
    SafeActionSet,
    concat_batches,
    mixed_batch,
    project_to_safe_set,
    train,
)
from uni_o4.baselines.iql import IQL, IQLConfig
from uni_o4.baselines.o3f import O3F, O3FConfig
from uni_o4.dataset import OfflineDataset
from uni_o4.log_dataset import LogDataConfig

ALGORITHMS: dict[str, tuple[type, type]] = {
    "iql": (IQLConfig, IQL),
    "calql": (CalQLConfig, CalQL),
    "o3f": (O3FConfig, O3F),
}

__all__ = [
    "ALGORITHMS", "Algorithm", "CalQL", "CalQLConfig", "IQL", "IQLConfig", "O3F", "O3FConfig", "SafeActionSet",
    "baseline_data_config", "concat_batches", "load_baseline_config", "make_algorithm", "mixed_batch",
    "project_to_safe_set", "train",
]  # fmt: skip


def baseline_data_config() -> LogDataConfig:
    """How logs become the baselines' data: critics on the policy's observation only, because O3F scores
    candidate actions with Q while acting, where the runtime has just the observation at hand."""
    return LogDataConfig(critic_fields=[])


def _check_name(name: str) -> None:
    if name not in ALGORITHMS:
        raise ValueError(f"unknown baseline {name!r}; known: {', '.join(ALGORITHMS)}")


def load_baseline_config(name: str, path: str | Path | None = None, overrides: dict | None = None):
    """The algorithm's config from `path`, or from configs/finetune/<name>.yaml."""
    _check_name(name)
    return load_config(ALGORITHMS[name][0], path or named_config("finetune", name), overrides)


def make_algorithm(
    name: str, cfg, data: OfflineDataset, safe_set: SafeActionSet, device: str | torch.device = "cpu",
    init_actor: ActorMLP | None = None,
) -> Algorithm:  # fmt: skip
    """An algorithm sized and normalised for `data` (critics see data.state, the policy data.obs).

    `init_actor` (IQL, O3F): start the policy mean from a pretrained actor, keeping its normalisation.
    """
    _check_name(name)
    config_cls, algo_cls = ALGORITHMS[name]
    if type(cfg) is not config_cls:
        raise TypeError(f"{name} needs a {config_cls.__name__}, got {type(cfg).__name__}")
    if abs(cfg.discount - data.discount) > 1e-9:
        raise ValueError(f"config discount {cfg.discount} differs from the dataset's {data.discount} "
                         "(its Monte-Carlo returns were computed with the latter)")  # fmt: skip
    kwargs = {"state_dim": data.state_dim, "device": device}
    if init_actor is not None:
        if algo_cls is CalQL:
            raise ValueError("calql cannot start from a pretrained actor (its policy is tanh-squashed)")
        kwargs["init_actor"] = init_actor
    algo = algo_cls(cfg, data.obs_dim, data.action_dim, safe_set, **kwargs)
    obs_stats = None if init_actor is not None else tuple(x.to(device) for x in data.obs_stats())
    algo.set_normalization(obs_stats, tuple(x.to(device) for x in data.state_stats()))
    return algo
