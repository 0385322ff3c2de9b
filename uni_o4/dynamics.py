"""Learned dynamics for offline policy evaluation: an ensemble of Gaussian MLPs (MBPO/MOPO style).

Each of M members predicts a Gaussian over [Δstate, reward] (state = policy obs ⊕ critic measurements),
in normalised target units, with learnable soft bounds on the log-variance. Members train on their own
shuffles of the data; a holdout set (whole episodes when there are several) picks each member's best
weights and the `num_elites` best members. Training stops when no member improved its holdout error by
`improvement` (relative) for `patience` epochs. The model is used only to evaluate policies (AM-Q).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from robot_spec.config import ConfigError, check_fields
from uni_o4.artifacts import GeneratorState
from uni_o4.dataset import OfflineDataset
from uni_o4.networks import EnsembleMLP, Normalizer, copy_member, fused_adam


@dataclass
class DynamicsConfig:
    num_members: int = 7
    num_elites: int = 5
    hidden_dims: list[int] = field(default_factory=lambda: [200, 200, 200, 200])
    activation: str = "swish"
    weight_decay: list[float] = field(default_factory=lambda: [2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4])  # per layer
    lr: float = 1.0e-3
    batch_size: int = 256
    holdout_fraction: float = 0.15
    max_epochs: int = 100
    patience: int = 5  # epochs without any member improving by `improvement` before stopping
    improvement: float = 0.01  # relative holdout-error decrease that counts as improving
    logvar_bound_coef: float = 0.01  # keeps the learnable log-variance bounds tight

    def __post_init__(self) -> None:
        check_fields(self, "num_members batch_size max_epochs", 1, integer=True)
        check_fields(self, "patience", 0, integer=True)
        check_fields(self, "lr", 0.0, low_open=True)
        check_fields(self, "holdout_fraction", 0.0, 1.0, low_open=True)
        check_fields(self, "improvement logvar_bound_coef", 0.0)
        if not 0 < self.num_elites <= self.num_members:
            raise ConfigError(f"dynamics.num_elites must be in 1..{self.num_members}, got {self.num_elites}")
        layers = len(self.hidden_dims) + 1
        if len(self.weight_decay) != layers:
            raise ConfigError(f"dynamics.weight_decay needs {layers} values (one per layer), got {len(self.weight_decay)}")


class EnsembleDynamics(nn.Module):
    def __init__(self, state_dim: int, action_dim: int, cfg: DynamicsConfig):
        super().__init__()
        out_dim = state_dim + 1  # Δstate and reward
        m = cfg.num_members
        self.state_dim = state_dim
        self.input_norm = Normalizer(state_dim + action_dim)
        self.target_norm = Normalizer(out_dim)
        self.net = EnsembleMLP(m, state_dim + action_dim, 2 * out_dim, cfg.hidden_dims, cfg.activation)
        self.max_logvar = nn.Parameter(torch.full((m, 1, out_dim), 0.5))
        self.min_logvar = nn.Parameter(torch.full((m, 1, out_dim), -10.0))
        self.register_buffer("elites", torch.arange(cfg.num_elites))

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of the normalised [Δstate, reward], each (M, B, state_dim + 1)."""
        mean, raw_logvar = self.net(self.input_norm(torch.cat([state, action], dim=-1))).chunk(2, dim=-1)
        logvar = self.max_logvar - F.softplus(self.max_logvar - raw_logvar)
        return mean, self.min_logvar + F.softplus(logvar - self.min_logvar)

    @torch.no_grad()
    def step(
        self, state: torch.Tensor, action: torch.Tensor, elite_choice: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """Next state and reward (B, ·): the mean prediction of one elite per row.

        `elite_choice` (B,) picks the elite of each row (values in [0, num_elites)); by default it is drawn
        at random with `generator`.
        """
        if elite_choice is None:
            device = generator.device if generator is not None else state.device
            elite_choice = torch.randint(len(self.elites), (len(state),), generator=generator, device=device)
        mean, _ = self(state, action)
        rows = torch.arange(len(state), device=state.device)
        prediction = mean[self.elites[elite_choice.to(state.device)], rows]
        prediction = prediction * self.target_norm.std + self.target_norm.mean
        return state + prediction[:, :-1], prediction[:, -1]

    def targets(self, data: OfflineDataset) -> torch.Tensor:
        return torch.cat([data.next_state - data.state, data.rewards[:, None]], dim=-1)


def holdout_split(data: OfflineDataset, fraction: float, seed: int) -> tuple[OfflineDataset, OfflineDataset]:
    """Whole episodes held out when there are several (unseen states), else a random share of transitions."""
    if data.num_episodes >= 2:
        return data.split_by_episode(fraction, seed)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data), generator=generator).to(data.device)
    n_hold = max(1, round(fraction * len(data)))
    return data.subset(order[n_hold:]), data.subset(order[:n_hold])


@dataclass
class DynamicsProgress:
    """What early stopping and the elite choice need, checkpointed with the model."""

    best_holdout: list[float] = field(default_factory=list)
    epochs_since_update: int = 0
    epochs: int = 0
    holdout_history: list[list[float]] = field(default_factory=list)

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)


class DynamicsTrainer:
    """Epoch-wise training with per-member holdout snapshots; `finish()` installs the best members and elites."""

    def __init__(
        self, model: EnsembleDynamics, train: OfflineDataset, holdout: OfflineDataset, cfg: DynamicsConfig,
        generator: torch.Generator,
    ):  # fmt: skip
        self.model, self.cfg, self.generator = model, cfg, generator
        self.num_train = len(train)
        states, actions, targets = train.state, train.actions, model.targets(train)
        inputs = torch.cat([states, actions], dim=-1)
        model.input_norm.set_stats(inputs.mean(0), inputs.std(0, unbiased=False).clamp(min=1e-3))
        model.target_norm.set_stats(targets.mean(0), targets.std(0, unbiased=False).clamp(min=1e-3))
        # Everything the loops index, computed once (normalised targets).
        self.train_data = (states, actions, model.target_norm(targets))
        self.holdout_data = (holdout.state, holdout.actions, model.target_norm(model.targets(holdout)))
        self.optimizer = fused_adam(model.parameters(), cfg.lr)
        self.snapshot = copy.deepcopy(model)
        self.progress = DynamicsProgress(best_holdout=[math.inf] * cfg.num_members)

    def loss(self, indices: torch.Tensor) -> torch.Tensor:
        """Gaussian NLL per member (summed over members), weight decay and the log-variance bound term.

        indices (M, B): member i trains on its own rows.
        """
        model = self.model
        states, actions, targets = (x[indices] for x in self.train_data)
        mean, logvar = model(states, actions)
        nll = ((mean - targets).square() * torch.exp(-logvar) + logvar).mean(dim=(1, 2)).sum()
        layers = zip(self.cfg.weight_decay, model.net.layers)
        decay = sum(wd * 0.5 * layer.weight.square().sum() for wd, layer in layers)
        bounds = self.cfg.logvar_bound_coef * (model.max_logvar.sum() - model.min_logvar.sum())
        return nll + decay + bounds

    def epoch(self, _epoch: int = 0) -> bool:
        """One pass over the data for every member (each its own shuffle); returns True to stop."""
        m, n, b = self.cfg.num_members, self.num_train, self.cfg.batch_size
        device = self.generator.device
        order = torch.rand(m, n, generator=self.generator, device=device).argsort(dim=1).to(self.train_data[0].device)
        for start in range(0, n, b):
            loss = self.loss(order[:, start : start + b])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return self._update_snapshots(self.holdout_error())

    @torch.no_grad()
    def holdout_error(self, chunk: int = 8192) -> torch.Tensor:
        """Mean squared error of each member's mean prediction on the holdout set (normalised units), (M,)."""
        states, actions, targets = self.holdout_data
        total = torch.zeros(self.cfg.num_members, device=states.device)
        for start in range(0, len(states), chunk):
            rows = slice(start, start + chunk)
            mean, _ = self.model(states[rows], actions[rows])
            total += (mean - targets[rows]).square().mean(-1).sum(-1)
        return total / len(states)

    def _update_snapshots(self, errors: torch.Tensor) -> bool:
        p = self.progress
        improved = False
        for i, (best, error) in enumerate(zip(p.best_holdout, errors.tolist())):
            if not math.isfinite(best) or best - error > self.cfg.improvement * abs(best):
                p.best_holdout[i] = error
                copy_member(self.snapshot, self.model, i)
                improved = True
        p.epochs += 1
        p.epochs_since_update = 0 if improved else p.epochs_since_update + 1
        p.holdout_history.append(errors.tolist())
        return p.epochs_since_update >= self.cfg.patience

    def finish(self) -> EnsembleDynamics:
        """Each member's best weights; elites = the members with the lowest holdout error."""
        self.model.load_state_dict(self.snapshot.state_dict())
        best = torch.tensor(self.progress.best_holdout)
        self.model.elites.copy_(best.argsort()[: self.cfg.num_elites].to(self.model.elites.device))
        return self.model

    def state(self) -> dict:
        """Everything a resumed run needs (for uni_o4.artifacts.run_resumable)."""
        return {"model": self.model, "snapshot": self.snapshot, "optimizer": self.optimizer, "progress": self.progress,
                "generator": GeneratorState(self.generator)}  # fmt: skip
