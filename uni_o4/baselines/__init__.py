"""Seed baselines for offline → online fine-tuning: IQL, Cal-QL and O3F (optimistic action selection on IQL).

Every algorithm implements `common.Algorithm` (update / act / normalisation / state_dict / load_state_dict /
export_actor), is configured by a typed dataclass (its `config_type`, loaded from configs/finetune/<name>.yaml),
and acts only inside the robot's safe action set (`common.SafeActionSet`). They are chosen by name in
uni_o4/registry.py and driven by uni_o4.methods.OffPolicy:

    cfg = load_baseline_config("calql")                         # uni_o4.registry
    algo = make_algorithm("calql", cfg, data, SafeActionSet.for_robot("go1"))
    train(algo, lambda: data.sample(cfg.batch_size), cfg.offline_steps, progress=True)
"""

from __future__ import annotations

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

__all__ = [
    "Algorithm", "CalQL", "CalQLConfig", "IQL", "IQLConfig", "O3F", "O3FConfig", "SafeActionSet", "concat_batches",
    "mixed_batch", "project_to_safe_set", "train",
]  # fmt: skip
