"""Networks for offline RL: MLPs, batched ensembles, twin Q, V and the Gaussian policy ensemble.

Ensemble convention (every class here): an ensemble of M members stores each layer's weights stacked as
(M, in, out) and runs one batched matmul per layer. It accepts inputs of shape (B, in) — the same inputs for
every member — or (M, B, in) — each member its own inputs — and returns (M, B, out). Every parameter of an
ensemble module has the member index as its leading dimension, so `copy_member` can move one member's weights.

Used by Uni-O4 (stage 1/2) and by the baselines in uni_o4/baselines/ (IQL, Cal-QL, O3F); keep the API stable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from robot_spec.policy_io import ActorMLP, activation, mlp

LOG_2PI = math.log(2 * math.pi)


class Normalizer(nn.Module):
    """(x − mean) / std with fixed statistics (set from the offline data; stored in the state dict)."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean.copy_(mean)
        self.std.copy_(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


# --------------------------------------------------------------------------------------------- ensembles
class EnsembleLinear(nn.Module):
    """M independent linear layers in one batched matmul: (B, in) or (M, B, in) → (M, B, out)."""

    def __init__(self, num_members: int, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_members, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(num_members, 1, out_dim))
        bound = 1.0 / math.sqrt(in_dim)  # nn.Linear's default initialisation, per member
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a one-column batched matmul is slower on CPU than a dot, except in bfloat16 autocast (no mixed-dtype dot)
        if self.weight.shape[-1] == 1 and not torch.is_autocast_enabled(x.device.type):
            return (x * self.weight.transpose(1, 2)).sum(-1, keepdim=True) + self.bias
        if x.dim() == 2:  # a shared (B, in) input, broadcast over the members without a copy
            x = x.expand(self.weight.shape[0], *x.shape)
        return torch.baddbmm(self.bias, x, self.weight)  # the bias added inside the matmul

    @torch.no_grad()
    def load_linear(self, member: int, linear: nn.Linear) -> None:
        self.weight[member].copy_(linear.weight.T)
        self.bias[member, 0].copy_(linear.bias)

    @torch.no_grad()
    def to_linear(self, member: int) -> nn.Linear:
        in_dim, out_dim = self.weight.shape[1:]
        linear = nn.Linear(in_dim, out_dim)
        linear.weight.copy_(self.weight[member].T)
        linear.bias.copy_(self.bias[member, 0])
        return linear


class EnsembleMLP(nn.Module):
    """M MLPs of the same shape evaluated together; linear output layer."""

    def __init__(
        self, num_members: int, in_dim: int, out_dim: int, hidden_dims: Sequence[int], activation_name: str = "relu"
    ):
        super().__init__()
        self.num_members = num_members
        self.activation_name = activation_name
        sizes = [in_dim, *hidden_dims, out_dim]
        self.layers = nn.ModuleList(EnsembleLinear(num_members, a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.activation = activation(activation_name, in_place=True)  # applied only to fresh layer outputs

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Output of the last hidden layer, (M, B, hidden[-1])."""
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers[-1](self.features(x))

    def load_member(self, member: int, sequential: nn.Sequential) -> None:
        """Copy a plain MLP (nn.Sequential of Linear/activation, same sizes) into member `member`."""
        linears = [m for m in sequential if isinstance(m, nn.Linear)]
        if len(linears) != len(self.layers):
            raise ValueError(f"MLP has {len(linears)} linear layers, the ensemble {len(self.layers)}")
        for dst, src in zip(self.layers, linears):
            if tuple(src.weight.T.shape) != tuple(dst.weight.shape[1:]):
                raise ValueError(f"layer shape {tuple(src.weight.T.shape)} != ensemble {tuple(dst.weight.shape[1:])}")
            dst.load_linear(member, src)

    def member_mlp(self, member: int) -> nn.Sequential:
        """Member `member` as a plain nn.Sequential (a copy)."""
        layers: list[nn.Module] = []
        for i, layer in enumerate(self.layers):
            layers.append(layer.to_linear(member))
            if i < len(self.layers) - 1:
                layers.append(activation(self.activation_name))
        return nn.Sequential(*layers).to(self.layers[0].weight.device)


@torch.no_grad()
def copy_member(dst: nn.Module, src: nn.Module, member: int, src_member: int | None = None) -> None:
    """dst's member `member` ← src's member `src_member` (default: the same index), for every parameter.

    Both modules must be ensembles of the same architecture (every parameter has the member dim first).
    Buffers (e.g. normalisation shared by all members) are left alone.
    """
    src_member = member if src_member is None else src_member
    for (name, p_dst), (_, p_src) in zip(dst.named_parameters(), src.named_parameters(), strict=True):
        if p_dst.shape[1:] != p_src.shape[1:]:
            raise ValueError(f"parameter {name}: shapes {tuple(p_dst.shape)} and {tuple(p_src.shape)} differ")
        p_dst[member].copy_(p_src[src_member])


# --------------------------------------------------------------------------------------------- critics
class QEnsemble(nn.Module):
    """num_q Q-functions Q(s, a) in one pass (twin Q by default); returns (num_q, B).

    `state` is whatever the critic sees (policy obs, optionally with the extra critic measurements appended);
    it is normalised by `normalizer` (identity until `normalizer.set_stats` is called).
    """

    def __init__(
        self, state_dim: int, action_dim: int, hidden_dims: Sequence[int] = (1024, 1024), num_q: int = 2,
        activation_name: str = "relu",
    ):  # fmt: skip
        super().__init__()
        self.normalizer = Normalizer(state_dim)
        self.net = EnsembleMLP(num_q, state_dim + action_dim, 1, hidden_dims, activation_name)

    @property
    def num_q(self) -> int:
        return self.net.num_members

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.normalizer(state), action], dim=-1)
        return self.net(x).squeeze(-1)

    def min(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Pessimistic value: the minimum over the ensemble, (B,)."""
        return self(state, action).min(dim=0).values

    def many(self, state: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Q of n actions per state, (num_q, n, B) = q(state[b], actions[j, b]); state (B, S), actions (n, B, A).

        The same function as `forward`, with less work for many actions per state (CQL's sampled actions, an
        ensemble's actions): the state's share of the first layer is computed once per state, not n times.
        """
        layers, n, b = self.net.layers, actions.shape[0], actions.shape[1]
        first = layers[0]
        state = self.normalizer(state)
        w_state, w_action = first.weight.split([state.shape[-1], actions.shape[-1]], dim=1)
        from_state = torch.baddbmm(first.bias, state.expand(self.num_q, *state.shape), w_state)  # (M, B, H)
        from_action = torch.matmul(actions.reshape(n * b, -1), w_action).view(self.num_q, n, b, -1)  # (M, n, B, H)
        h = self.net.activation(from_action + from_state[:, None]).view(self.num_q, n * b, -1)
        for layer in layers[1:-1]:
            h = self.net.activation(layer(h))
        return layers[-1](h).view(self.num_q, n, b)


class ValueNet(nn.Module):
    """V(s) with a linear head (a ReLU head could not represent negative returns); returns (B,)."""

    def __init__(self, state_dim: int, hidden_dims: Sequence[int] = (512, 512, 512), activation_name: str = "relu"):
        super().__init__()
        self.normalizer = Normalizer(state_dim)
        self.net = mlp(state_dim, 1, hidden_dims, activation_name)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalizer(state)).squeeze(-1)


# --------------------------------------------------------------------------------------------- policy
class GaussianPolicyEnsemble(nn.Module):
    """M diagonal-Gaussian policies π_i(a|obs) = N(mean_i(obs), std_i(obs)), evaluated together.

    The mean network of each member has exactly the deployable `ActorMLP` structure (shared observation
    normalisation, Linear/activation chain, linear output: actions are unbounded offsets, not tanh-squashed),
    so a member can be initialised from the sim-pretrained actor and exported back with `export_member`.
    The log-std is either state-dependent (a linear head on the mean network's last hidden layer) or one
    learned vector per member; it is softly bounded to `log_std_bounds` (a sigmoid, so gradients never die).
    All outputs have shape (M, B, ·).
    """

    def __init__(
        self, num_members: int, obs_dim: int, action_dim: int, hidden_dims: Sequence[int],
        activation_name: str = "elu", state_dependent_std: bool = True, init_std: float = 0.3,
        log_std_bounds: tuple[float, float] = (-5.0, 0.0),
    ):  # fmt: skip
        super().__init__()
        low, high = log_std_bounds
        if not low < math.log(init_std) < high:
            raise ValueError(f"init_std {init_std} must lie strictly inside exp({log_std_bounds})")
        self.architecture = {  # ActorMLP's constructor arguments, for export
            "obs_dim": obs_dim, "action_dim": action_dim, "hidden_dims": list(hidden_dims),
            "activation": activation_name,
        }  # fmt: skip
        self.log_std_bounds = (float(low), float(high))
        self.init_kwargs = {  # rebuilds an empty twin (member_policy, loading saved results)
            "num_members": num_members, **{k: v for k, v in self.architecture.items() if k != "activation"},
            "activation_name": activation_name, "state_dependent_std": state_dependent_std, "init_std": init_std,
            "log_std_bounds": self.log_std_bounds,
        }  # fmt: skip
        self.normalizer = Normalizer(obs_dim)
        self.mean_net = EnsembleMLP(num_members, obs_dim, action_dim, hidden_dims, activation_name)
        raw = math.log((math.log(init_std) - low) / (high - math.log(init_std)))  # sigmoid⁻¹ of the init
        if state_dependent_std:
            self.log_std_head = EnsembleLinear(num_members, hidden_dims[-1] if hidden_dims else obs_dim, action_dim)
            nn.init.zeros_(self.log_std_head.weight)
            nn.init.constant_(self.log_std_head.bias, raw)
            self.log_std_param = None
        else:
            self.log_std_head = None
            self.log_std_param = nn.Parameter(torch.full((num_members, 1, action_dim), raw))

    @property
    def num_members(self) -> int:
        return self.mean_net.num_members

    @classmethod
    def from_actor(cls, actor: ActorMLP, num_members: int, **kwargs) -> GaussianPolicyEnsemble:
        """Every member's mean network (and the normalisation) an exact copy of a deployable actor."""
        arch = actor.architecture
        policy = cls(
            num_members, arch["obs_dim"], arch["action_dim"], arch["hidden_dims"], arch["activation"], **kwargs
        )
        policy.normalizer.set_stats(actor.obs_mean, actor.obs_std)
        for i in range(num_members):
            policy.mean_net.load_member(i, actor.mlp)
        return policy.to(actor.obs_mean.device)

    def export_member(self, member: int) -> ActorMLP:
        """Member `member`'s mean as a deployable ActorMLP (same normalisation), ready for `save_policy`."""
        actor = ActorMLP(**self.architecture)
        actor.mlp.load_state_dict(self.mean_net.member_mlp(member).state_dict())
        actor.obs_mean.copy_(self.normalizer.mean)
        actor.obs_std.copy_(self.normalizer.std)
        return actor.to(self.normalizer.mean.device).eval()

    def member_policy(self, member: int) -> GaussianPolicyEnsemble:
        """Member `member` alone (mean and std), as a one-member ensemble copy: what online fine-tuning starts from."""
        single = GaussianPolicyEnsemble(**{**self.init_kwargs, "num_members": 1})
        single.normalizer.load_state_dict(self.normalizer.state_dict())
        single = single.to(self.normalizer.mean.device)
        copy_member(single, self, 0, src_member=member)
        return single

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std), each (M, B, action_dim). obs: (B, obs_dim) shared or (M, B, obs_dim) per member."""
        mean, log_std = self.mean_and_log_std(obs)
        return mean, log_std.exp().expand_as(mean)

    def mean_and_log_std(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean (M, B, A), log std): the log std is (M, 1, A) when it does not depend on the state."""
        features = self.mean_net.features(self.normalizer(obs))
        mean = self.mean_net.layers[-1](features)
        raw = self.log_std_head(features) if self.log_std_head is not None else self.log_std_param
        low, high = self.log_std_bounds
        return mean, low + (high - low) * torch.sigmoid(raw)

    def distribution(self, obs: torch.Tensor) -> torch.distributions.Normal:
        mean, std = self(obs)
        return torch.distributions.Normal(mean, std)

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """log π_i(a|obs) summed over action dims, (M, B); actions (B, A) shared or (M, B, A).

        Written out rather than through torch.distributions.Normal, whose argument checks and per-dimension
        log σ cost about a tenth of an IQL step."""
        mean, log_std = self.mean_and_log_std(obs)
        z = (actions - mean) * torch.exp(-log_std)
        return -0.5 * z.square().sum(-1) - log_std.sum(-1) - 0.5 * mean.shape[-1] * LOG_2PI

    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """(M, B, A): the mean, or a sample."""
        mean, std = self(obs)
        return mean if deterministic else mean + std * torch.randn_like(mean)


def gaussian_kl(mean_p: torch.Tensor, std_p: torch.Tensor, mean_q: torch.Tensor, std_q: torch.Tensor) -> torch.Tensor:
    """KL(N_p ‖ N_q) of diagonal Gaussians, summed over the last dim."""
    var_ratio = (std_p / std_q).square()
    return 0.5 * (var_ratio + ((mean_p - mean_q) / std_q).square() - 1.0 - var_ratio.log()).sum(-1)


@torch.no_grad()
def clip_grad_norm_per_member_(parameters: Sequence[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Clip each ensemble member's gradient to `max_norm` on its own (members stay independent); returns norms (M,).

    Every parameter must have the member index as its leading dimension (true of every ensemble here).
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    norms = torch.stack([g.flatten(1).square().sum(1) for g in grads]).sum(0).sqrt()
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))
    return norms


def fused_adam(parameters, lr: float) -> torch.optim.Adam:
    """Adam as one fused kernel per step: the default Adam's update up to rounding, and faster on CPU, where the
    stacked ensembles' few large tensors make the optimizer step a visible share of each step (profile:
    benchmarks/uni_o4_speed.py)."""
    return torch.optim.Adam(parameters, lr=lr, fused=True)


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging: target ← (1 − τ)·target + τ·source (parameters only)."""
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters(), strict=True):
            t.lerp_(s, tau)
