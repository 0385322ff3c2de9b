"""What the seed baselines share: the `Algorithm` interface, the robot's safe action set, batch mixing and
a many-actions-per-state Q evaluation.

Safe action set. A policy action `a` is an offset from the default pose (robot_spec.policy_map.ActionMap). An
action is safe when
- the map leaves its PD target unclamped (inside the joint limits: the URDF range ∩ the Unitree SDK clamp, less
  the spec's target margin) and |a| ≤ the spec's action_clip, which makes a per-joint box [low, high];
- it moves at most `max_delta` per control step: |a − last_action| ≤ max_delta (the deploy safety monitor's
  action-rate limit, configs/safety/<robot>.yaml).
Both constraints are boxes, so clipping to their intersection is the Euclidean projection onto the safe set.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Protocol, runtime_checkable

import torch
from torch import nn
from tqdm import tqdm

from robot_spec.policy_map import ActionMap
from robot_spec.spec import RobotSpec
from uni_o4.dataset import Batch, OfflineDataset
from uni_o4.networks import soft_update

Stats = tuple[torch.Tensor, torch.Tensor]  # (mean, std) for input normalisation


@runtime_checkable
class Algorithm(Protocol):
    """A gradient-step method (IQL, Cal-QL, O3F), as uni_o4.methods.OffPolicy drives it offline and online."""

    config_type: type  # its config dataclass (configs/finetune/<name>.yaml)
    starts_from_actor: bool  # the policy mean can start from a pretrained actor (`init_actor`)

    def set_normalization(self, obs_stats: Stats | None, state_stats: Stats) -> None:
        """Fix input normalisation from the offline data; obs_stats None keeps the policy's (a pretrained actor's)."""
        ...

    def restart_policy_mean(self, actor: nn.Module) -> None:
        """The policy mean back to `actor`, critics kept (online: start from the policy the gate kept deployed);
        ValueError where the policy cannot (not `starts_from_actor`)."""
        ...

    def update(self, batch: Batch) -> dict[str, float]:
        """One gradient step on `batch`; returns scalar diagnostics (losses, mean Q, ...)."""
        ...

    def warm_up(self, batch: Batch) -> None:
        """Do now the one-time work of the first `update` on batches shaped like `batch` (compilation, where
        configured), changing nothing: the online loop calls it before the robot starts."""
        ...

    def act(
        self, obs: torch.Tensor, deterministic: bool = False, last_action: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Actions for `obs` ((B, obs_dim) or (obs_dim,)), always inside the safe set (relative to last_action)."""
        ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    def export_actor(self) -> nn.Module:
        """The deterministic policy as a plain module: raw observation in, action out (CPU, eval mode)."""
        ...


# --------------------------------------------------------------------------------------------- safe actions
RATE_LIMIT_MARGIN = 1e-3  # relative: the safe set's action-rate limit inside the safety monitor's


def project_to_safe_set(
    actions: torch.Tensor, low: torch.Tensor, high: torch.Tensor, max_delta: float,
    last_action: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """Clip `actions` into the action-rate box around `last_action`, then into the joint-limit box [low, high].

    Shapes broadcast (e.g. candidates (N, B, A) against last_action (B, A)). If the two boxes do not meet
    (only when last_action itself lies more than max_delta outside [low, high]), the joint limits win.
    """
    if last_action is not None:
        actions = torch.minimum(torch.maximum(actions, last_action - max_delta), last_action + max_delta)
    return torch.minimum(torch.maximum(actions, low), high)


@dataclass(frozen=True)
class SafeActionSet:
    low: torch.Tensor  # (A,) per-joint action bounds from the joint limits; low < 0 < high
    high: torch.Tensor
    max_delta: float  # largest |a_t − a_(t−1)| per control step, action units

    def __post_init__(self) -> None:
        if self.low.shape != self.high.shape or self.low.dim() != 1:
            shapes = f"{tuple(self.low.shape)}, {tuple(self.high.shape)}"
            raise ValueError(f"low/high must be 1-D of equal shape, got {shapes}")
        if not (bool((self.low < 0).all()) and bool((self.high > 0).all())):
            raise ValueError("the safe action box must contain the zero action (the default pose) strictly inside")
        if not self.max_delta > 0:
            raise ValueError(f"max_delta must be > 0, got {self.max_delta}")

    @classmethod
    def from_spec(cls, spec: RobotSpec, max_delta: float) -> SafeActionSet:
        """Actions whose PD targets stay inside both the URDF and the SDK joint ranges, |a| ≤ action_clip, and
        whose rate stays a hair inside the runtime's action-rate monitor (`max_delta`): an action projected onto
        the limit in float32 must not read as beyond it in float64 and trip the monitor."""
        low, high = ActionMap.from_spec(spec).action_bounds()
        as_tensor = lambda x: torch.as_tensor(x, dtype=torch.float32)  # noqa: E731
        return cls(as_tensor(low), as_tensor(high), float(max_delta) * (1 - RATE_LIMIT_MARGIN))

    @classmethod
    def for_robot(cls, robot: str) -> SafeActionSet:
        """From configs/robots/<robot>.yaml and the action-rate limit of configs/safety/<robot>.yaml."""
        from deploy.safety import load_safety_config  # the deploy runtime owns the safety limits
        from robot_spec.spec import load_robot

        return cls.from_spec(load_robot(robot), load_safety_config(robot).max_action_delta)

    @property
    def action_dim(self) -> int:
        return len(self.low)

    def to(self, device: str | torch.device) -> SafeActionSet:
        return SafeActionSet(self.low.to(device), self.high.to(device), self.max_delta)

    def project(self, actions: torch.Tensor, last_action: torch.Tensor | None = None) -> torch.Tensor:
        return project_to_safe_set(actions, self.low, self.high, self.max_delta, last_action)

    def contains(
        self, actions: torch.Tensor, last_action: torch.Tensor | None = None, tol: float = 1e-6
    ) -> torch.Tensor:
        """Per action (last dim reduced): inside the box and, given last_action, within the rate limit."""
        ok = ((actions >= self.low - tol) & (actions <= self.high + tol)).all(-1)
        if last_action is not None:
            ok &= ((actions - last_action).abs() <= self.max_delta + tol).all(-1)
        return ok


# --------------------------------------------------------------------------------------------- data
def concat_batches(parts: list[Batch]) -> Batch:
    """One Batch with the rows of `parts` stacked (critic_obs only if every part has it)."""
    joined = {}
    for f in fields(Batch):
        values = [getattr(p, f.name) for p in parts]
        joined[f.name] = None if any(v is None for v in values) else torch.cat(values)
    return Batch(**joined)


def mixed_batch(
    offline: OfflineDataset, online: OfflineDataset | None, batch_size: int, mix_ratio: float,
    generator: torch.Generator | None = None,
) -> Batch:  # fmt: skip
    """`mix_ratio` of the rows from the online data, the rest from the offline data (all offline if no online)."""
    if not 0.0 <= mix_ratio <= 1.0:
        raise ValueError(f"mix_ratio must be in [0, 1], got {mix_ratio}")
    n_online = round(batch_size * mix_ratio) if online is not None and len(online) else 0
    parts = [offline.sample(batch_size - n_online, generator)]
    if n_online:
        parts.append(online.sample(n_online, generator))
    return concat_batches(parts) if len(parts) > 1 else parts[0]


def train(algorithm: Algorithm, sample: Callable[[], Batch], steps: int, progress: bool = False) -> list[dict]:
    """`steps` updates on freshly sampled batches; returns every update's diagnostics."""
    history = []
    for _ in tqdm(range(steps), desc=type(algorithm).__name__, disable=not progress):
        history.append(algorithm.update(sample()))
    return history


# --------------------------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Network initialisation from `seed` without disturbing the caller's global random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Evaluate `module` without building gradients for its parameters (they still flow to its inputs)."""
    module.requires_grad_(False)
    try:
        yield
    finally:
        module.requires_grad_(True)


def as_batch(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(x with a leading batch dim, whether one was added)."""
    return (x[None], True) if x.dim() == 1 else (x, False)


def critic_input(obs: torch.Tensor, critic_obs: torch.Tensor | None, state_dim: int) -> torch.Tensor:
    """The critic's state obs ⊕ critic_obs, checked against what the critic was built for."""
    state = obs if critic_obs is None else torch.cat([obs, critic_obs], dim=-1)
    if state.shape[-1] != state_dim:
        raise ValueError(
            f"the critic takes {state_dim}-d states but got {state.shape[-1]} "
            f"(obs {obs.shape[-1]}{'' if critic_obs is None else f' + critic_obs {critic_obs.shape[-1]}'})"
        )
    return state


def gradient_step(algorithm, losses: dict[str, torch.Tensor], summed: tuple[str, ...]) -> dict[str, float]:
    """One step of `algorithm.optimizer` on the sum of the `summed` losses, then the Polyak update of the target
    Q; every entry of `losses` as a float (the diagnostics)."""
    algorithm.optimizer.zero_grad(set_to_none=True)
    sum(losses[name] for name in summed).backward()
    algorithm.optimizer.step()
    soft_update(algorithm.q_target, algorithm.q, algorithm.cfg.polyak)
    algorithm.num_updates += 1
    return {name: float(value.detach()) for name, value in losses.items()}


# --------------------------------------------------------------------------------------------- precision
PRECISIONS = ("auto", "float32", "bfloat16")


def native_bfloat16(device: torch.device) -> bool:
    """Whether `device` multiplies bfloat16 matrices in hardware (elsewhere bf16 is emulated, slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":  # AVX512-BF16 or AMX; the probes are private, so their absence reads as "no"
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)
    return False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """float32 or bfloat16 for `precision` in PRECISIONS ("auto": bfloat16 where the device has it natively)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return torch.bfloat16 if native_bfloat16(device) else torch.float32
    return getattr(torch, precision)


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Matrix products in `dtype` (bfloat16 with float32 accumulation) inside; a no-op for float32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)


class MaybeCompiled:
    """`fn` through torch.compile when `enabled`: it fuses the elementwise work between the matrix products
    (IQL's update alone on 2 CPU cores: +8–13 % over three runs of benchmarks/offpolicy_speed.py). It compiles on
    the first call, in seconds.
    Where it fails (inductor on CPU needs a C++ compiler), the call is repeated eagerly and, if that works,
    everything from then on runs eagerly, with one warning. A bug in `fn` itself raises from the eager call."""

    def __init__(self, fn: Callable, enabled: bool):
        self.fn = fn
        self.compiled = torch.compile(fn) if enabled else None

    def __call__(self, *args):
        if self.compiled is None:
            return self.fn(*args)
        try:
            return self.compiled(*args)
        except Exception as error:  # noqa: BLE001 — the eager call below re-raises a real error
            result = self.fn(*args)
            warnings.warn(f"torch.compile failed, running eagerly from now on: {error!r:.300}", stacklevel=2)
            self.compiled = None
            return result


def adam(groups: list[tuple[nn.Module | list[nn.Parameter], float]]) -> torch.optim.Adam:
    """One Adam over several modules with their own learning rates: one fused step per update."""
    params = [{"params": list(m.parameters()) if isinstance(m, nn.Module) else m, "lr": lr} for m, lr in groups]
    return torch.optim.Adam(params, fused=True)
