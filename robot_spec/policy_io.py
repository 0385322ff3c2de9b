"""The one policy file format, written by pretraining and fine-tuning and read by deploy.

A policy file is TorchScript (`policy.pt`) holding an `ActorMLP` (observation normalisation + MLP, raw
observation in, action out) with the robot contract as an extra file, so it can never be run with an
observation layout or robot it was not trained for. An ONNX twin carries the same contract in its metadata.
Loading rebuilds a plain eager `ActorMLP` from the stored architecture, so fine-tuning can start from its weights.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from robot_spec.mlp import ACTIVATIONS, IN_PLACE, activation, mlp  # noqa: F401 (their home before mlp.py)
from robot_spec.spec import RobotSpec, check_policy_contract
from robot_spec.wtw_actor import WalkTheseWaysActor

CONTRACT_FILE = "contract.json"
class ActorMLP(nn.Module):
    """actions = mlp((obs − mean) / std): the deployable part of every policy we train.

    With `output_bounds` (low, high per action) the output is squashed into them by a two-sided tanh,
    u ↦ tanh(u)·(high if u ≥ 0 else −low): the form of a SAC-style policy (Cal-QL)."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_dims: list[int], activation: str = "elu",
                 output_bounds: list[list[float]] | None = None):  # fmt: skip
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; known: {sorted(ACTIVATIONS)}")
        self.architecture = {
            "obs_dim": obs_dim, "action_dim": action_dim, "hidden_dims": list(hidden_dims), "activation": activation
        }  # fmt: skip
        self.squashed = output_bounds is not None
        low, high = output_bounds if output_bounds is not None else ([-1.0] * action_dim, [1.0] * action_dim)
        if self.squashed:
            self.architecture["output_bounds"] = [[float(v) for v in low], [float(v) for v in high]]
        self.register_buffer("out_low", torch.tensor(low, dtype=torch.float32))
        self.register_buffer("out_high", torch.tensor(high, dtype=torch.float32))
        self.mlp = mlp(obs_dim, action_dim, hidden_dims, activation)
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        u = self.mlp((obs - self.obs_mean) / self.obs_std)
        if self.squashed:
            u = torch.tanh(u) * torch.where(u >= 0, self.out_high, -self.out_low)
        return u

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.obs_mean) / self.obs_std


# In-place forms of the activations (the same kernels as the modules, writing over their input).
_ACTIVATE_IN_PLACE = {
    nn.ELU: lambda module, x: nn.functional.elu(x, module.alpha, inplace=True),
    nn.ReLU: lambda module, x: x.relu_(),
    nn.Tanh: lambda module, x: x.tanh_(),
    nn.SiLU: lambda module, x: nn.functional.silu(x, inplace=True),
}


class PreallocatedActor:
    """`actor(obs)` for one observation, every intermediate in a buffer made once: the 50 Hz runtime's forward
    pass, with no allocation per call. The same operations as ActorMLP.forward (Linear is addmm), so the same
    bits (tests/test_policy_io.py compares them). Reads the actor's weights live: an update in place is seen.

        fast = PreallocatedActor(actor)   # a CPU ActorMLP
        action = fast(obs)                # (1, action_dim), overwritten by the next call
    """

    def __init__(self, actor: ActorMLP):
        self.actor = actor
        self.layers = []  # (weight transposed, bias, output buffer, in-place activation or None)
        for i, module in enumerate(actor.mlp):
            if isinstance(module, nn.Linear):
                self.layers.append([module.weight.t(), module.bias, torch.zeros(1, module.out_features), None])
            else:
                act = _ACTIVATE_IN_PLACE[type(module)]
                self.layers[-1][3] = lambda x, act=act, module=module: act(module, x)
        self.output = self.layers[-1][2]  # what a call returns
        self.normalized = torch.zeros(1, actor.architecture["obs_dim"])
        if actor.squashed:
            self.neg_low = -actor.out_low
            self.positive = torch.zeros(1, actor.architecture["action_dim"], dtype=torch.bool)
            self.bound = torch.zeros(1, actor.architecture["action_dim"])

    @classmethod
    def supports(cls, actor: nn.Module) -> bool:
        """An ActorMLP on the CPU with the project's activations (imports keep their own forward)."""
        return isinstance(actor, ActorMLP) and next(actor.parameters()).device.type == "cpu" and all(
            isinstance(m, nn.Linear) or type(m) in _ACTIVATE_IN_PLACE for m in actor.mlp
        )

    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        """obs (1, obs_dim) float32 -> action (1, action_dim); call under torch.inference_mode()."""
        actor, x = self.actor, self.normalized
        torch.sub(obs, actor.obs_mean, out=x)
        torch.div(x, actor.obs_std, out=x)
        for weight_t, bias, out, act in self.layers:
            torch.addmm(bias, x, weight_t, out=out)
            if act is not None:
                act(out)
            x = out
        if actor.squashed:  # tanh(u) * (high if u >= 0 else -low)
            torch.ge(x, 0, out=self.positive)
            torch.where(self.positive, actor.out_high, self.neg_low, out=self.bound)
            x.tanh_().mul_(self.bound)
        return x


@dataclass
class LoadedPolicy:
    actor: ActorMLP
    contract: dict
    policy_id: str  # content hash: every log record names the exact policy that produced it
    path: Path

    @torch.no_grad()
    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor(obs)


# Policies shipped in the repository: policies/<robot>_<name>/ (actor, its run's config and last checkpoint,
# source.yaml).
SHIPPED_POLICIES = Path(__file__).resolve().parent.parent / "policies"


def shipped_policy(robot: str, name: str = "robust") -> Path:
    """policies/<robot>_<name>/policy.pt; one clear error where there is none (a wheel install ships none)."""
    path = SHIPPED_POLICIES / f"{robot}_{name}" / "policy.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no shipped {name} policy for {robot} ({path}): give a policy, or pretrain one")
    return path


def save_policy(actor: ActorMLP, spec: RobotSpec, path: str | Path, info: dict | None = None) -> dict:
    """Write `path` (TorchScript) and `path.with_suffix('.onnx')`; returns the contract written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if actor.architecture["obs_dim"] != spec.observation.dim or actor.architecture["action_dim"] != spec.num_joints:
        raise ValueError(
            f"actor maps {actor.architecture['obs_dim']} -> {actor.architecture['action_dim']}, "
            f"robot '{spec.name}' needs {spec.observation.dim} -> {spec.num_joints}"
        )
    contract = {**spec.policy_contract(), "architecture": actor.architecture, "info": info or {}}
    actor = _cpu_copy(actor)
    scripted = torch.jit.script(actor)
    torch.jit.save(scripted, str(path), _extra_files={CONTRACT_FILE: json.dumps(contract)})
    _save_onnx(actor, contract, path.with_suffix(".onnx"))
    return contract


def load_policy(path: str | Path, spec: RobotSpec | None = None, device: str = "cpu") -> LoadedPolicy:
    """Load a policy file; with `spec`, refuse one trained for another robot or observation layout."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"policy file not found: {path}")
    extra = {CONTRACT_FILE: ""}
    try:
        scripted = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except RuntimeError as err:
        raise ValueError(f"{path} is not a policy file written by save_policy: {err}") from err
    if not extra[CONTRACT_FILE]:
        raise ValueError(f"{path} carries no robot contract; export it with save_policy")
    contract = json.loads(extra[CONTRACT_FILE])
    if spec is not None:
        check_policy_contract(contract, spec, source=str(path))
    try:  # a contract whose architecture does not match the weights: one line, not a size-mismatch traceback
        actor = _rebuild(contract["architecture"])
        state = scripted.state_dict()
        if isinstance(actor, ActorMLP):
            for name in ("out_low", "out_high"):  # files written before squashed outputs existed
                state.setdefault(name, getattr(actor, name))
        else:  # an imported policy's running state (its history) is saved by TorchScript but starts empty
            state = {k: v for k, v in state.items() if k not in actor._non_persistent_buffers_set}
        actor.load_state_dict(state)
    except (KeyError, TypeError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: the contract's architecture does not fit the weights ({first})") from err
    actor.eval()
    policy_id = policy_digest(path)[:16]
    return LoadedPolicy(actor.to(device), contract, policy_id, path)


def policy_digest(path: str | Path) -> str:
    """sha256 of a policy file's bytes: the same policy wherever it lies (its first 16 digits are its policy_id)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def require_feed_forward(policy: LoadedPolicy, purpose: str) -> LoadedPolicy:
    """`policy`, if its network is an ActorMLP (what fine-tuning updates); else a clear refusal."""
    if not isinstance(policy.actor, ActorMLP):
        kind = policy.contract["architecture"].get("kind")
        raise ValueError(f"{policy.path} is a {kind} import (history and gait clock kept inside the network): "
                         f"{purpose} needs a feed-forward policy, as legged_gym / unitree_rl_gym imports are")  # fmt: skip
    return policy


def _rebuild(architecture: dict) -> nn.Module:
    """The eager actor an architecture describes: an ActorMLP, or an imported policy's wrapper (foreign.py)."""
    if architecture.get("kind") == "walk_these_ways":
        return WalkTheseWaysActor(**{k: v for k, v in architecture.items() if k != "kind"})
    return ActorMLP(**architecture)


def _cpu_copy(actor: ActorMLP) -> ActorMLP:
    copy = _rebuild(actor.architecture)
    copy.load_state_dict({k: v.detach().cpu() for k, v in actor.state_dict().items()})
    return copy.eval()


def _save_onnx(actor: ActorMLP, contract: dict, path: Path) -> None:
    import onnx

    if "kind" in actor.architecture:  # a stateful imported policy (its history lives in the module): TorchScript only
        path.unlink(missing_ok=True)
        return
    dummy = torch.zeros(1, actor.architecture["obs_dim"])
    torch.onnx.export(
        actor, (dummy,), str(path), input_names=["obs"], output_names=["actions"],
        dynamic_axes={"obs": {0: "batch"}, "actions": {0: "batch"}}, opset_version=18, dynamo=False,
    )  # fmt: skip
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = CONTRACT_FILE, json.dumps(contract)
    onnx.save(model, str(path))
