"""Typed training preset: environment, networks and PPO settings (configs/train/<preset>.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from robot_spec.config import check_fields, load_config, merge, named_config
from sim_pretrain.env_config import EnvConfig


@dataclass
class NetworkConfig:
    hidden_dims: list[int] = field(default_factory=lambda: [256, 128, 64])
    activation: str = "elu"


@dataclass
class PPOConfig:
    """rsl_rl PPO arguments (names as rsl_rl spells them)."""

    num_steps_per_env: int = 24
    num_learning_epochs: int = 5
    num_mini_batches: int = 4
    clip_param: float = 0.2
    gamma: float = 0.99
    lam: float = 0.95
    value_loss_coef: float = 1.0
    entropy_coef: float = 0.01
    learning_rate: float = 1.0e-3
    max_grad_norm: float = 1.0
    schedule: str = "adaptive"
    desired_kl: float = 0.01
    init_noise_std: float = 1.0

    def __post_init__(self) -> None:
        check_fields(self, "num_steps_per_env num_learning_epochs num_mini_batches", 1, integer=True)
        check_fields(self, "clip_param learning_rate max_grad_norm desired_kl init_noise_std", 0.0, low_open=True)
        check_fields(self, "gamma lam", 0.0, 1.0)
        check_fields(self, "value_loss_coef entropy_coef", 0.0)


@dataclass
class TrainConfig:
    iterations: int = 500
    seed: int = 1
    save_interval: int = 50
    torch_threads: int = 2
    obs_normalization: bool = True
    actor: NetworkConfig = field(default_factory=NetworkConfig)
    critic: NetworkConfig = field(default_factory=NetworkConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    env: EnvConfig = field(default_factory=EnvConfig)

    def __post_init__(self) -> None:  # --iterations -1 exported an untrained policy with exit 0
        check_fields(self, "iterations save_interval torch_threads", 1, integer=True)

    def rsl_rl_dict(self, run_name: str) -> dict:
        """The train_cfg dictionary rsl_rl's OnPolicyRunner expects."""
        ppo = {k: v for k, v in vars(self.ppo).items() if k not in ("num_steps_per_env", "init_noise_std")}
        distribution = {"class_name": "GaussianDistribution", "init_std": self.ppo.init_noise_std, "std_type": "scalar"}
        return {
            "algorithm": {"class_name": "PPO", **ppo},
            "actor": {
                "class_name": "MLPModel", "hidden_dims": self.actor.hidden_dims, "activation": self.actor.activation,
                "obs_normalization": self.obs_normalization, "distribution_cfg": distribution,
            },
            "critic": {
                "class_name": "MLPModel", "hidden_dims": self.critic.hidden_dims, "activation": self.critic.activation,
                "obs_normalization": self.obs_normalization,
            },
            "obs_groups": {"actor": ["policy"], "critic": ["policy", "privileged"]},
            "num_steps_per_env": self.ppo.num_steps_per_env,
            "save_interval": self.save_interval,
            "logger": "tensorboard",
            "check_for_nan": True,
            "run_name": run_name,
        }  # fmt: skip


def load_train_config(robot: str, preset: str, seed: int | None = None, num_envs: int | None = None,
                      iterations: int | None = None, extra: dict | None = None) -> TrainConfig:
    """configs/train/<robot>_<preset>.yaml (or `preset`, a .yaml file) for `robot`, with what a command line may
    change (None: the preset's); `extra` (`--set`, parse_overrides) is merged last, checked like the file."""
    path = Path(preset) if preset.endswith((".yaml", ".yml")) else named_config("train", f"{robot}_{preset}")
    overrides: dict = {"env": {"robot": robot}}
    if num_envs is not None:
        overrides["env"]["num_envs"] = num_envs
    if iterations is not None:
        overrides["iterations"] = iterations
    if seed is not None:
        overrides["seed"] = seed
        overrides["env"]["seed"] = seed
    return load_config(TrainConfig, path, merge(overrides, extra or {}))
