"""Cal-QL: calibrated conservative Q-learning (Nakamoto et al., 2023) with a SAC actor.

Critic (twin Q, Polyak target): TD error to r + γ·(1 − terminal)·Q_target(s', a'), a' ~ π(s') (with
`max_target_backup`: the max over `num_action_samples` such a', each scored by the min over the heads), plus
`cql_alpha` × the conservative term, per head:

    τ·logsumexp_j(Q̃_j / τ) − Q(s, a_data),    over 3·n sampled actions j, importance-weighted:
        Q̃ = Q(s, a_unif) − log U(a_unif)                    n uniform actions in the safe box
        Q̃ = max(Q(s, a_π), G(s)) − log π(a_π|·)             n policy actions at s and n at s'

The calibration is the max with G(s), the Monte-Carlo return-to-go of the data: the push-down never drives
Q at policy actions below what the behaviour policy is known to achieve. `calibrated: false` gives plain CQL.

Precision. The 3n sampled actions are nearly all of Cal-QL's arithmetic (3n + 1 Q evaluations per state, with
gradients). `penalty_precision` runs those in bfloat16 (float32 accumulation) where the hardware has it: a
push-down through a softmax over samples tolerates 3 significant digits. Q at the data's actions, the TD
target and the actor stay float32, because a TD error is a small difference of large values.

Actor: SAC with an automatically tuned entropy temperature. Actions are bounded to the robot's safe
action box by a two-sided tanh, a = tanh(u)·(high if u ≥ 0 else −low), which maps u = 0 to the zero
action (the default pose) although the box is not centred on it. Online, batches mix offline and online
data by `mix_ratio` (see common.mixed_batch) and the loss stays the same.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from robot_spec.config import ConfigError, check_fields
from robot_spec.policy_io import ACTIVATIONS as DEPLOYABLE_ACTIVATIONS
from robot_spec.policy_io import ActorMLP
from uni_o4.baselines.common import (
    PRECISIONS,
    SafeActionSet,
    Stats,
    adam,
    as_batch,
    autocast,
    frozen,
    gradient_step,
    resolve_precision,
    seeded,
)
from uni_o4.dataset import Batch
from uni_o4.networks import GaussianPolicyEnsemble, QEnsemble


@dataclass
class CalQLConfig:
    seed: int = 0
    actor_hidden_dims: list[int] = field(default_factory=lambda: [256, 256])
    actor_activation: str = "relu"
    critic_hidden_dims: list[int] = field(default_factory=lambda: [256, 256])
    critic_activation: str = "relu"
    num_q: int = 2
    discount: float = 0.99
    polyak: float = 0.005
    actor_lr: float = 1.0e-4
    critic_lr: float = 3.0e-4
    temperature_lr: float = 1.0e-4  # SAC entropy temperature
    init_temperature: float = 1.0
    target_entropy: float | None = None  # None: −action_dim
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    cql_alpha: float = 5.0  # weight of the conservative term
    cql_temperature: float = 1.0  # τ of the logsumexp
    num_action_samples: int = 10  # per group: uniform, policy at s, policy at s'
    max_target_backup: bool = True
    calibrated: bool = True  # false: plain CQL
    reward_scale: float = 1.0  # rewards and the Monte-Carlo returns alike
    batch_size: int = 256
    offline_steps: int = 100_000
    mix_ratio: float = 0.5  # online: fraction of each batch drawn from the online data
    penalty_precision: str = "auto"  # the sampled actions' Q: auto (bfloat16 where native), float32, bfloat16

    def __post_init__(self) -> None:
        if self.penalty_precision not in PRECISIONS:
            raise ConfigError(f"penalty_precision must be one of {PRECISIONS}, got {self.penalty_precision!r}")
        if self.actor_activation not in DEPLOYABLE_ACTIVATIONS:
            raise ConfigError(f"actor_activation must be one of {sorted(DEPLOYABLE_ACTIVATIONS)}")
        if self.num_q < 2 or self.num_action_samples < 1:
            raise ConfigError("num_q must be ≥ 2 and num_action_samples ≥ 1")
        if not 0.0 <= self.mix_ratio <= 1.0:
            raise ConfigError(f"mix_ratio must be in [0, 1], got {self.mix_ratio}")
        check_fields(self, "batch_size", 1, integer=True)
        check_fields(self, "offline_steps", 0, integer=True)
        check_fields(self, "actor_lr critic_lr temperature_lr init_temperature cql_temperature reward_scale", 0.0,
                     low_open=True)  # fmt: skip
        check_fields(self, "discount polyak", 0.0, 1.0)
        check_fields(self, "cql_alpha", 0.0)
        check_fields(self, "target_entropy log_std_min log_std_max")


class SquashedGaussianPolicy(nn.Module):
    """u ~ N(mean(obs), std(obs)), a = tanh(u)·(high if u ≥ 0 else −low): a bijection onto (low, high), 0 ↦ 0."""

    def __init__(self, gaussian: GaussianPolicyEnsemble, low: torch.Tensor, high: torch.Tensor):
        super().__init__()
        if gaussian.num_members != 1:
            raise ValueError("the squashed policy wraps a one-member Gaussian")
        self.gaussian = gaussian
        self.register_buffer("low", low.clone())
        self.register_buffer("high", high.clone())

    def squash(self, u: torch.Tensor) -> torch.Tensor:
        return torch.tanh(u) * torch.where(u >= 0, self.high, -self.low)

    def sample(
        self, obs: torch.Tensor, num_samples: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(actions (n, B, A), log π(a|obs) (n, B)); reparameterised, so gradients reach the policy."""
        mean, std = (x[0] for x in self.gaussian(obs))
        eps = torch.randn((num_samples, *mean.shape), generator=generator, device=mean.device)
        u = mean + std * eps
        # log N(u) − log|da/du|, with log(1 − tanh²u) = 2·(log 2 − u − softplus(−2u)) (stable for large |u|)
        scale = torch.where(u >= 0, self.high, -self.low)
        log_det = scale.log() + 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
        log_prob = (-0.5 * eps.square() - std.log() - 0.5 * math.log(2 * math.pi) - log_det).sum(-1)
        return self.squash(u), log_prob

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """The deterministic action: the squashed mean, (B, A)."""
        return self.squash(self.gaussian(obs)[0][0])


@dataclass
class ConservativeTerms:
    """The push-down side of the CQL term, kept for diagnostics and tests. Shapes: (num_q, n or 2n, B)."""

    random_q: torch.Tensor  # Q(s, a_unif)
    policy_q: torch.Tensor  # Q(s, a_π) for a_π ~ π(s) then π(s'), before calibration
    policy_q_calibrated: torch.Tensor  # max(policy_q, G(s)) (= policy_q when not calibrated)
    policy_log_prob: torch.Tensor  # (2n, B)
    push_down: torch.Tensor  # (num_q, B) τ·logsumexp of the importance-weighted values
    data_q: torch.Tensor  # (num_q, B) Q(s, a_data), with gradient


class CalQL:
    config_type = CalQLConfig
    starts_from_actor = False
    why_no_init = "its policy is tanh-squashed"

    def __init__(
        self, cfg: CalQLConfig, obs_dim: int, action_dim: int, safe_set: SafeActionSet, state_dim: int | None = None,
        device: str | torch.device = "cpu",
    ):  # fmt: skip
        if safe_set.action_dim != action_dim:
            raise ValueError(f"safe set has {safe_set.action_dim} actions, the algorithm {action_dim}")
        self.cfg, self.device = cfg, torch.device(device)
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.state_dim = obs_dim if state_dim is None else state_dim
        self.safe_set = safe_set.to(self.device)
        self.target_entropy = -float(action_dim) if cfg.target_entropy is None else cfg.target_entropy
        with seeded(cfg.seed):
            gaussian = GaussianPolicyEnsemble(
                1, obs_dim, action_dim, cfg.actor_hidden_dims, cfg.actor_activation, state_dependent_std=True,
                init_std=1.0, log_std_bounds=(cfg.log_std_min, cfg.log_std_max),
            )  # fmt: skip
            self.policy = SquashedGaussianPolicy(gaussian, safe_set.low, safe_set.high)
            self.q = QEnsemble(self.state_dim, action_dim, cfg.critic_hidden_dims, cfg.num_q, cfg.critic_activation)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.nets = nn.ModuleDict({"policy": self.policy, "q": self.q, "q_target": self.q_target}).to(self.device)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(cfg.init_temperature), device=self.device))
        self.optimizer = adam(
            [(self.policy, cfg.actor_lr), (self.q, cfg.critic_lr), ([self.log_temperature], cfg.temperature_lr)]
        )
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.penalty_dtype = resolve_precision(cfg.penalty_precision, self.device)
        self.num_updates = 0

    def restart_policy_mean(self, actor: ActorMLP) -> None:
        raise ValueError(f"Cal-QL cannot restart from another policy ({self.why_no_init})")

    def set_normalization(self, obs_stats: Stats | None, state_stats: Stats) -> None:
        if obs_stats is not None:
            self.policy.gaussian.normalizer.set_stats(*obs_stats)
        for net in (self.q, self.q_target):
            net.normalizer.set_stats(*state_stats)

    # ----------------------------------------------------------------- learning
    @torch.no_grad()
    def td_target(self, batch: Batch) -> torch.Tensor:
        """r + γ·(1 − terminal)·Q_target(s', a'): no bootstrap after a true terminal, a timeout bootstraps."""
        cfg = self.cfg
        n = cfg.num_action_samples if cfg.max_target_backup else 1
        next_actions, _ = self.policy.sample(batch.next_obs, n, self.generator)
        next_q = self.q_target.many(batch.next_state, next_actions).min(0).values.max(0).values
        return cfg.reward_scale * batch.rewards + cfg.discount * (1.0 - batch.terminals) * next_q

    def conservative_terms(self, batch: Batch) -> ConservativeTerms:
        """Q at data, uniform and policy actions in one pass; the policy side floored by G(s) when calibrated."""
        cfg, n = self.cfg, self.cfg.num_action_samples
        low, high = self.safe_set.low, self.safe_set.high
        with torch.no_grad():
            shape = (n, len(batch.obs), self.action_dim)
            random_actions = low + (high - low) * torch.rand(shape, generator=self.generator, device=self.device)
            here, here_log_prob = self.policy.sample(batch.obs, n, self.generator)
            there, there_log_prob = self.policy.sample(batch.next_obs, n, self.generator)
        data_q = self.q(batch.state, batch.actions)
        with autocast(self.device, self.penalty_dtype):
            sampled_q = self.q.many(batch.state, torch.cat([random_actions, here, there])).float()  # (M, 3n, B)
        random_q, policy_q = sampled_q[:, :n], sampled_q[:, n:]
        returns = cfg.reward_scale * batch.returns
        policy_q_calibrated = torch.maximum(policy_q, returns) if cfg.calibrated else policy_q
        log_uniform = -(high - low).log().sum()
        policy_log_prob = torch.cat([here_log_prob, there_log_prob])
        weighted = torch.cat([random_q - log_uniform, policy_q_calibrated - policy_log_prob], dim=1)
        push_down = cfg.cql_temperature * torch.logsumexp(weighted / cfg.cql_temperature, dim=1)
        return ConservativeTerms(random_q, policy_q, policy_q_calibrated, policy_log_prob, push_down, data_q)

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        temperature = self.log_temperature.exp().detach()
        # actor and entropy temperature (Q's parameters get no gradient from the actor loss)
        actions, log_prob = self.policy.sample(batch.obs, 1, self.generator)
        with frozen(self.q):
            policy_value = self.q(batch.state, actions[0]).min(0).values
        actor_loss = (temperature * log_prob[0] - policy_value).mean()
        temperature_loss = -(self.log_temperature * (log_prob.detach() + self.target_entropy)).mean()
        # critic: TD + conservative term, each head on its own
        terms = self.conservative_terms(batch)
        td_loss = (terms.data_q - self.td_target(batch)).square().mean(-1).sum()
        conservative = (terms.push_down - terms.data_q).mean(-1).sum()
        return {
            "actor_loss": actor_loss,
            "temperature_loss": temperature_loss,
            "critic_loss": td_loss + cfg.cql_alpha * conservative,
            "td_loss": td_loss.detach(),
            "conservative_loss": conservative.detach(),
            "calibration_rate": (terms.policy_q_calibrated != terms.policy_q).float().mean(),
            "q_mean": terms.data_q.detach().mean(),
            "temperature": temperature,
            "entropy": -log_prob.detach().mean(),
        }

    def update(self, batch: Batch) -> dict[str, float]:
        return gradient_step(self, self.losses(batch), ("actor_loss", "temperature_loss", "critic_loss"))

    def warm_up(self, batch: Batch) -> None:
        """Nothing to prepare: Cal-QL runs eagerly."""

    # ----------------------------------------------------------------- acting
    @torch.no_grad()
    def act(
        self, obs: torch.Tensor, deterministic: bool = False, last_action: torch.Tensor | None = None
    ) -> torch.Tensor:
        obs, single = as_batch(obs.to(self.device))
        actions = self.policy(obs) if deterministic else self.policy.sample(obs, 1, self.generator)[0][0]
        actions = self.safe_set.project(actions, None if last_action is None else last_action.to(self.device))
        return actions[0] if single else actions

    def export_actor(self) -> ActorMLP:
        """obs → squashed mean action (CPU), as a deployable ActorMLP with output bounds."""
        mean = self.policy.gaussian.export_member(0)
        bounds = [self.safe_set.low.tolist(), self.safe_set.high.tolist()]
        actor = ActorMLP(**mean.architecture, output_bounds=bounds)
        actor.load_state_dict({**mean.state_dict(), "out_low": actor.out_low, "out_high": actor.out_high})
        return actor.cpu().eval()

    # ----------------------------------------------------------------- persistence
    def state_dict(self) -> dict:
        return {"nets": self.nets.state_dict(), "log_temperature": self.log_temperature.detach().clone(),
                "optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
                "num_updates": self.num_updates}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        self.nets.load_state_dict(state["nets"])
        with torch.no_grad():
            self.log_temperature.copy_(state["log_temperature"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.num_updates = state["num_updates"]
