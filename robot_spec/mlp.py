"""The project's MLP: Linear → activation → … → Linear, and the activations a policy file may name."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "elu": nn.ELU, "relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU, "swish": nn.SiLU,
}  # fmt: skip
IN_PLACE = ("relu", "elu")  # their backward needs only their output: safe in place after a matmul


def activation(name: str, in_place: bool = False) -> nn.Module:
    """`in_place`: overwrite the input (no new activation buffer) where the backward allows it."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name](inplace=True) if in_place and name in IN_PLACE else ACTIVATIONS[name]()


def mlp(in_dim: int, out_dim: int, hidden_dims: Sequence[int], activation_name: str = "relu") -> nn.Sequential:
    """Linear → activation → … → Linear; the output layer is linear (no activation). Every MLP of the project."""
    sizes = [in_dim, *hidden_dims]
    layers: list[nn.Module] = []
    for i in range(len(hidden_dims)):
        layers += [nn.Linear(sizes[i], sizes[i + 1]), activation(activation_name)]
    layers.append(nn.Linear(sizes[-1], out_dim))
    return nn.Sequential(*layers)
