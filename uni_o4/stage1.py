"""Uni-O4 stage 1 (supervised): the behaviour policy ensemble, the critics and the dynamics model.

Behaviour ensemble: M Gaussian policies, started from the sim-pretrained actor (`init: policy`, the
real-robot recipe) or from scratch (`init: bc`), fitted by maximum likelihood to the logged actions. Each
member draws its own minibatch, and a diversity term penalises each member whose KL divergence to its
closest other member is below a margin. Unlike the reference code's detached "disagreement", the gradient
of this term reaches the member's weights (the other member is the fixed target).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from robot_spec.config import ConfigError, check_fields
from robot_spec.policy_io import ACTIVATIONS as DEPLOYABLE_ACTIVATIONS
from robot_spec.policy_io import ActorMLP
from uni_o4.artifacts import GeneratorState, TrainContext
from uni_o4.critics import CriticConfig, Critics, CriticTrainer
from uni_o4.dataset import OfflineDataset
from uni_o4.dynamics import DynamicsConfig, DynamicsTrainer, EnsembleDynamics, holdout_split
from uni_o4.networks import GaussianPolicyEnsemble, fused_adam, gaussian_kl


@dataclass
class BehaviourConfig:
    num_members: int = 4
    init: str = "policy"  # "policy": members start from the sim-pretrained actor; "bc": from scratch
    hidden_dims: list[int] = field(default_factory=lambda: [256, 256, 256])  # init "bc" only
    activation: str = "elu"  # init "bc" only; must be deployable (an ActorMLP activation)
    state_dependent_std: bool = True
    init_std: float = 0.3
    log_std_min: float = -5.0
    log_std_max: float = 0.0
    steps: int = 2000
    lr: float = 1.0e-4
    batch_size: int = 512
    diversity_coef: float = 0.1
    diversity_margin: float = 0.5  # nats: members closer than this (KL to the closest one) are pushed apart

    def __post_init__(self) -> None:
        if self.init not in ("policy", "bc"):
            raise ConfigError(f"behaviour.init must be 'policy' or 'bc', got {self.init!r}")
        if self.activation not in DEPLOYABLE_ACTIVATIONS:
            raise ConfigError(f"behaviour.activation must be one of {sorted(DEPLOYABLE_ACTIVATIONS)} to be deployable")
        check_fields(self, "num_members batch_size", 1, integer=True)
        check_fields(self, "steps", 0, integer=True)
        check_fields(self, "lr init_std", 0.0, low_open=True)
        check_fields(self, "log_std_min log_std_max diversity_coef diversity_margin")


def build_behaviour_policy(
    cfg: BehaviourConfig, data: OfflineDataset, init_actor: ActorMLP | None
) -> GaussianPolicyEnsemble:
    std_kwargs = {
        "state_dependent_std": cfg.state_dependent_std, "init_std": cfg.init_std,
        "log_std_bounds": (cfg.log_std_min, cfg.log_std_max),
    }  # fmt: skip
    if cfg.init == "policy":
        if init_actor is None:
            raise ValueError("behaviour.init is 'policy' but no pretrained actor was given")
        arch = init_actor.architecture
        if (arch["obs_dim"], arch["action_dim"]) != (data.obs_dim, data.action_dim):
            raise ValueError(
                f"pretrained actor maps {arch['obs_dim']} -> {arch['action_dim']}, "
                f"the data has obs {data.obs_dim} and actions {data.action_dim}"
            )
        return GaussianPolicyEnsemble.from_actor(init_actor, cfg.num_members, **std_kwargs).to(data.device)
    policy = GaussianPolicyEnsemble(
        cfg.num_members, data.obs_dim, data.action_dim, cfg.hidden_dims, cfg.activation, **std_kwargs
    )
    policy.normalizer.set_stats(*data.obs_stats())
    return policy.to(data.device)


def diversity_penalty(policy: GaussianPolicyEnsemble, obs: torch.Tensor, margin: float) -> torch.Tensor:
    """relu(margin − KL(π_i ‖ closest π_j)) per member, (M,); the other members are fixed targets."""
    mean, std = policy(obs)  # (M, B, A)
    m = len(mean)
    if m < 2:
        return torch.zeros(m, device=obs.device)
    kl = gaussian_kl(mean[:, None], std[:, None], mean[None].detach(), std[None].detach()).mean(-1)  # (M, M)
    kl = kl + torch.diag(torch.full((m,), float("inf"), device=obs.device))
    return F.relu(margin - kl.min(dim=1).values)


class BehaviourTrainer:
    def __init__(
        self, policy: GaussianPolicyEnsemble, data: OfflineDataset, cfg: BehaviourConfig, generator: torch.Generator
    ):
        self.policy, self.data, self.cfg, self.generator = policy, data, cfg, generator
        self.optimizer = fused_adam(policy.parameters(), cfg.lr)

    def losses(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        """indices (M, B): member i's own rows. Negative log-likelihood and diversity penalty, each (M,)."""
        obs, actions = self.data.obs[indices], self.data.actions[indices]
        nll = -self.policy.log_prob(obs, actions).mean(-1)
        diversity = diversity_penalty(self.policy, obs[0], self.cfg.diversity_margin)
        return {"nll": nll, "diversity": diversity, "loss": nll.sum() + self.cfg.diversity_coef * diversity.sum()}

    def step(self) -> dict[str, torch.Tensor]:
        indices = self.data.sample_indices((self.cfg.num_members, self.cfg.batch_size), self.generator)
        losses = self.losses(indices)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        self.optimizer.step()
        return {name: value.detach() for name, value in losses.items()}

    def state(self) -> dict:
        """Everything a resumed run needs (for uni_o4.artifacts.run_resumable)."""
        return {"policy": self.policy, "optimizer": self.optimizer, "generator": GeneratorState(self.generator)}


# --------------------------------------------------------------------------------------------- stage loops
def train_behaviour(
    data: OfflineDataset, init_actor: ActorMLP | None, cfg: BehaviourConfig, seed: int, ctx: TrainContext
) -> GaussianPolicyEnsemble:
    torch.manual_seed(seed)
    policy = build_behaviour_policy(cfg, data, init_actor)
    trainer = BehaviourTrainer(policy, data, cfg, torch.Generator().manual_seed(seed))

    def step(i: int) -> None:
        losses = trainer.step()
        if (i + 1) % ctx.log_every == 0:
            ctx.log("behaviour", {"nll": losses["nll"].mean(), "diversity": losses["diversity"].mean()}, i + 1)

    ctx.run("stage 1: behaviour ensemble", cfg.steps, step, trainer.state())
    return trainer.policy


def train_critics(data: OfflineDataset, cfg: CriticConfig, seed: int, ctx: TrainContext) -> Critics:
    torch.manual_seed(seed + 1)
    critics = Critics(data.state_dim, data.action_dim, cfg).to(data.device)
    critics.set_normalization(*data.state_stats())
    trainer = CriticTrainer(critics, data, cfg, torch.Generator().manual_seed(seed + 1))

    def step(i: int) -> None:
        losses = trainer.step()
        if (i + 1) % ctx.log_every == 0:
            ctx.log("critics", losses, i + 1)

    ctx.run(f"stage 1: critics ({cfg.kind})", cfg.steps, step, trainer.state())
    return critics


def train_dynamics(
    data: OfflineDataset, cfg: DynamicsConfig, seed: int, ctx: TrainContext
) -> tuple[EnsembleDynamics, dict]:
    """Returns the model (best members, elites set) and its report (holdout errors per member and epoch)."""
    torch.manual_seed(seed + 2)
    train, holdout = holdout_split(data, cfg.holdout_fraction, seed)
    model = EnsembleDynamics(data.state_dim, data.action_dim, cfg).to(data.device)
    trainer = DynamicsTrainer(model, train, holdout, cfg, torch.Generator().manual_seed(seed + 2))

    def epoch(i: int) -> bool:
        stop = trainer.epoch(i)
        errors = trainer.progress.holdout_history[-1]
        ctx.log("dynamics", {"holdout_mse_mean": sum(errors) / len(errors), "holdout_mse_min": min(errors)}, i + 1)
        return stop

    ctx.run("stage 1: dynamics (epochs)", cfg.max_epochs, epoch, trainer.state())
    model = trainer.finish()
    p = trainer.progress
    report = {"epochs": p.epochs, "best_holdout": p.best_holdout, "elites": model.elites.tolist(),
              "holdout_history": p.holdout_history}  # fmt: skip
    return model, report
