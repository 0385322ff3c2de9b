"""IQL: implicit Q-learning (Kostrikov et al., 2021), offline and online with the same objective.

    V(s)    ← expectile_τ of min_i Q_target,i(s, a) over dataset actions   (an in-sample soft maximum)
    Q_i(s,a)← r + γ·(1 − terminal)·V(s')                                   (a timeout still bootstraps)
    π       ← maximise exp(β·(Q_target(s,a) − V(s))) clipped at max_weight, times log π(a|s)

The three losses touch disjoint parameters (every target is detached), so one backward pass and one fused
Adam step update them together. All of them read the networks as they were before the step (the paper's
code updates V first and then uses the new V for the actor and Q; the one-step lag is immaterial).
The actor is a Gaussian with a state-independent std whose mean network is a deployable ActorMLP (actions
are unbounded offsets); acting clips into the robot's safe action set. Critics see `Batch.state`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from robot_spec.config import ConfigError, check_fields
from robot_spec.policy_io import ACTIVATIONS as DEPLOYABLE_ACTIVATIONS
from robot_spec.policy_io import ActorMLP
from uni_o4.baselines.common import MaybeCompiled, SafeActionSet, Stats, adam, as_batch, gradient_step, seeded
from uni_o4.critics import expectile_loss
from uni_o4.dataset import Batch
from uni_o4.networks import GaussianPolicyEnsemble, QEnsemble, ValueNet


TRAINED_LOSSES = ("value_loss", "q_loss", "actor_loss")  # summed into one backward pass


@dataclass
class IQLConfig:
    seed: int = 0
    actor_hidden_dims: list[int] = field(default_factory=lambda: [256, 256])
    actor_activation: str = "relu"  # must be deployable (an ActorMLP activation)
    critic_hidden_dims: list[int] = field(default_factory=lambda: [256, 256])  # every Q head and V
    critic_activation: str = "relu"
    num_q: int = 2  # twin Q, min over the heads
    discount: float = 0.99
    expectile: float = 0.7
    temperature: float = 3.0  # β of the advantage weights exp(β·A)
    max_weight: float = 100.0
    polyak: float = 0.005
    actor_lr: float = 3.0e-4
    critic_lr: float = 3.0e-4
    value_lr: float = 3.0e-4
    init_std: float = 1.0
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    reward_scale: float = 1.0  # every reward, terminal ones included
    batch_size: int = 256
    offline_steps: int = 100_000
    mix_ratio: float = 0.5  # online: fraction of each batch drawn from the online data
    compile: bool = False  # the losses through torch.compile: faster steps after seconds of compilation

    def __post_init__(self) -> None:
        if self.actor_activation not in DEPLOYABLE_ACTIVATIONS:
            raise ConfigError(f"actor_activation must be one of {sorted(DEPLOYABLE_ACTIVATIONS)} to be deployable")
        if not 0.5 <= self.expectile < 1.0:
            raise ConfigError(f"expectile must be in [0.5, 1), got {self.expectile}")
        if self.num_q < 2:
            raise ConfigError(f"num_q must be ≥ 2 (a min over heads), got {self.num_q}")
        if not 0.0 <= self.mix_ratio <= 1.0:
            raise ConfigError(f"mix_ratio must be in [0, 1], got {self.mix_ratio}")
        check_fields(self, "batch_size", 1, integer=True)
        check_fields(self, "offline_steps", 0, integer=True)
        check_fields(self, "actor_lr critic_lr value_lr init_std max_weight reward_scale", 0.0, low_open=True)
        check_fields(self, "discount polyak", 0.0, 1.0)
        check_fields(self, "temperature log_std_min log_std_max")


class IQL:
    config_type = IQLConfig
    starts_from_actor = True  # the policy mean can start from a (sim-pretrained) actor

    def __init__(
        self, cfg: IQLConfig, obs_dim: int, action_dim: int, safe_set: SafeActionSet, state_dim: int | None = None,
        device: str | torch.device = "cpu", init_actor: ActorMLP | None = None,
    ):  # fmt: skip
        """`state_dim`: what the critics see (obs ⊕ extra critic measurements; default obs only).
        `init_actor`: start the policy mean from a (sim-pretrained) actor; its architecture wins over the config."""
        if safe_set.action_dim != action_dim:
            raise ValueError(f"safe set has {safe_set.action_dim} actions, the algorithm {action_dim}")
        self.cfg, self.device = cfg, torch.device(device)
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.state_dim = obs_dim if state_dim is None else state_dim
        self.safe_set = safe_set.to(self.device)
        with seeded(cfg.seed):
            self.policy = self._build_policy(init_actor)
            self.q = QEnsemble(self.state_dim, action_dim, cfg.critic_hidden_dims, cfg.num_q, cfg.critic_activation)
            self.value = ValueNet(self.state_dim, cfg.critic_hidden_dims, cfg.critic_activation)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.nets = nn.ModuleDict(
            {"policy": self.policy, "q": self.q, "q_target": self.q_target, "value": self.value}
        ).to(self.device)
        self.optimizer = adam([(self.policy, cfg.actor_lr), (self.q, cfg.critic_lr), (self.value, cfg.value_lr)])
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.num_updates = 0
        self.training_losses = MaybeCompiled(self.losses, cfg.compile)

    def _build_policy(self, init_actor: ActorMLP | None) -> GaussianPolicyEnsemble:
        cfg = self.cfg
        std_kwargs = {"state_dependent_std": False, "init_std": cfg.init_std,
                      "log_std_bounds": (cfg.log_std_min, cfg.log_std_max)}  # fmt: skip
        if init_actor is not None:
            return GaussianPolicyEnsemble.from_actor(init_actor, 1, **std_kwargs)
        return GaussianPolicyEnsemble(
            1, self.obs_dim, self.action_dim, cfg.actor_hidden_dims, cfg.actor_activation, **std_kwargs
        )

    def restart_policy_mean(self, actor: ActorMLP) -> None:
        """The policy mean (and its input normalisation) back to `actor`, critics and std kept: online fine-tuning
        starts from the policy the gate kept deployed when it refused this one's offline result."""
        fresh = self._build_policy(actor).to(self.device)
        self.policy.mean_net.load_state_dict(fresh.mean_net.state_dict())
        self.policy.normalizer.load_state_dict(fresh.normalizer.state_dict())

    def set_normalization(self, obs_stats: Stats | None, state_stats: Stats) -> None:
        """Fix input normalisation from the offline data; obs_stats None keeps the policy's (a pretrained actor's)."""
        if obs_stats is not None:
            self.policy.normalizer.set_stats(*obs_stats)
        for net in (self.q, self.q_target, self.value):
            net.normalizer.set_stats(*state_stats)

    # ----------------------------------------------------------------- learning
    @torch.no_grad()
    def td_target(self, batch: Batch) -> torch.Tensor:
        """r + γ·(1 − terminal)·V(s'): no bootstrap after a true terminal, a timeout bootstraps."""
        cfg = self.cfg
        next_v = self.value(batch.next_state)
        return cfg.reward_scale * batch.rewards + cfg.discount * (1.0 - batch.terminals) * next_v

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        state = batch.state
        with torch.no_grad():
            target_q = self.q_target(state, batch.actions).min(0).values
            q_target = self.td_target(batch)
        v = self.value(state)
        advantage = target_q - v.detach()
        weights = torch.exp(cfg.temperature * advantage).clamp(max=cfg.max_weight)
        log_prob = self.policy.log_prob(batch.obs, batch.actions)[0]
        q = self.q(state, batch.actions)
        return {
            "value_loss": expectile_loss(target_q - v, cfg.expectile),
            "q_loss": (q - q_target).square().mean(-1).sum(),  # summed over the heads: each its own regression
            "actor_loss": -(weights * log_prob).mean(),
            "q_mean": q.detach().mean(),
            "advantage_mean": advantage.mean(),
            "weight_mean": weights.mean(),
        }

    def update(self, batch: Batch) -> dict[str, float]:
        return gradient_step(self, self.training_losses(batch), TRAINED_LOSSES)

    def warm_up(self, batch: Batch) -> None:
        """Compile the losses now, where configured, not in the first update: tracing holds the interpreter for
        hundreds of ms, enough to starve a control thread holding the robot (benchmarks/standing_hold.py
        --workload o3f_cold). Forward and backward run, the gradients are dropped: nothing changes."""
        if self.training_losses.compiled is None:
            return
        losses = self.training_losses(batch)
        sum(losses[name] for name in TRAINED_LOSSES).backward()
        self.optimizer.zero_grad(set_to_none=True)

    # ----------------------------------------------------------------- acting
    @torch.no_grad()
    def act(
        self, obs: torch.Tensor, deterministic: bool = False, last_action: torch.Tensor | None = None
    ) -> torch.Tensor:
        obs, single = as_batch(obs.to(self.device))
        mean, std = self.policy(obs)
        actions = mean[0] if deterministic else mean[0] + std[0] * self._noise(mean[0].shape)
        actions = self.safe_set.project(actions, None if last_action is None else last_action.to(self.device))
        return actions[0] if single else actions

    def _noise(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator, device=self.device)

    def export_actor(self) -> ActorMLP:
        """The policy mean as a deployable ActorMLP (CPU), ready for robot_spec.policy_io.save_policy."""
        return self.policy.export_member(0).cpu()

    # ----------------------------------------------------------------- persistence
    def state_dict(self) -> dict:
        return {"nets": self.nets.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(), "num_updates": self.num_updates}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        self.nets.load_state_dict(state["nets"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.num_updates = state["num_updates"]
