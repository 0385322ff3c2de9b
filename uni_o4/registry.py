"""The fine-tuning methods by name: the one place a method is chosen from (`uni_o4 finetune --algo`, the
pipeline, the benchmarks). Adding a method = its module (a `uni_o4.method.FineTuningMethod`, or a gradient-step
`Algorithm` for `OffPolicy`), its configs/finetune/<name>.yaml (+ <name>_quick.yaml) and one line here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from robot_spec.config import load_config, named_config
from robot_spec.policy_io import ActorMLP
from uni_o4.baselines.calql import CalQL
from uni_o4.baselines.common import Algorithm, SafeActionSet
from uni_o4.baselines.iql import IQL
from uni_o4.baselines.o3f import O3F
from robot_spec.spec import RobotSpec
from uni_o4.dataset import OfflineDataset
from uni_o4.log_dataset import LogDataConfig
from uni_o4.method import FineTuningMethod
from uni_o4.methods import OffPolicy, UniO4
from uni_o4.methods import make_algorithm as _make_algorithm
from uni_o4.online import Learner, OnlineConfig


@dataclass(frozen=True)
class Registered:
    method: type[FineTuningMethod]
    preset: str  # configs/finetune/<preset>.yaml: the full run's config
    quick_preset: str  # the pipeline's default
    algorithm: type | None = None  # OffPolicy: the gradient-step Algorithm it drives


METHODS: dict[str, Registered] = {
    "uni_o4": Registered(UniO4, "uni_o4", "uni_o4_quick"),
    "iql": Registered(OffPolicy, "iql", "iql_quick", IQL),
    "calql": Registered(OffPolicy, "calql", "calql_quick", CalQL),
    "o3f": Registered(OffPolicy, "o3f", "o3f_quick", O3F),
}
ALGOS = tuple(METHODS)
BASELINES = tuple(name for name, entry in METHODS.items() if entry.algorithm is not None)  # gradient-step methods


def make_method(name: str) -> FineTuningMethod:
    if name not in METHODS:
        raise ValueError(f"unknown fine-tuning method {name!r}; known: {', '.join(METHODS)}")
    entry = METHODS[name]
    return entry.method(name, entry.algorithm)


def build_learner(result_dir: Path, source: dict, spec: RobotSpec, cfg: OnlineConfig,
                  device: str = "cpu") -> tuple[Learner, LogDataConfig]:  # fmt: skip
    """The online learner that continues an offline run (`uni_o4 finetune --offline` output folder, `source` its
    finetune.json) by the method that made it, and the log→data config its updates read rollouts with."""
    return make_method(source["algo"]).online_learner(Path(result_dir), source, spec, cfg, device)


def _algorithm(name: str) -> type:
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
    return METHODS[name].algorithm


def load_baseline_config(name: str, path: str | Path | None = None, overrides: dict | None = None):
    """A gradient-step method's config from `path`, or from its preset in configs/finetune/."""
    return load_config(_algorithm(name).config_type, path or named_config("finetune", METHODS[name].preset), overrides)


def make_algorithm(
    name: str, cfg, data: OfflineDataset, safe_set: SafeActionSet, device: str | torch.device = "cpu",
    init_actor: ActorMLP | None = None,
) -> Algorithm:  # fmt: skip
    """The gradient-step method `name`, sized and normalised for `data` (uni_o4.methods.make_algorithm)."""
    return _make_algorithm(_algorithm(name), cfg, data, safe_set, device, init_actor)
