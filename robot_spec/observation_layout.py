"""The policy's observation layout: which measured terms, in which order, with which scales.

Torch loads only when a frame is scaled: the stand-in robot and the SDK bridge read the layout from the robot spec
and never build an observation, and each of their processes would otherwise pay for importing torch at start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ObsTerm:
    name: str
    dim: int
    scale: list[float]  # one value for the whole term, or one per element

    def scale_vector(self) -> torch.Tensor:
        import torch

        if len(self.scale) not in (1, self.dim):
            raise ValueError(f"observation term {self.name}: scale needs 1 or {self.dim} values, got {len(self.scale)}")
        return torch.tensor(self.scale, dtype=torch.float32).expand(self.dim).clone()


@dataclass(frozen=True)
class ObservationLayout:
    terms: list[ObsTerm]
    history_length: int = 1
    clip: float = 100.0

    @property
    def frame_dim(self) -> int:
        return sum(t.dim for t in self.terms)

    @property
    def dim(self) -> int:
        return self.frame_dim * self.history_length

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.terms]

    def slices(self) -> dict[str, slice]:
        """Where each term sits inside one frame."""
        out, start = {}, 0
        for term in self.terms:
            out[term.name] = slice(start, start + term.dim)
            start += term.dim
        return out

    def scale_vector(self) -> torch.Tensor:
        import torch

        return torch.cat([t.scale_vector() for t in self.terms])

    def describe(self) -> dict:
        return {
            "terms": [{"name": t.name, "dim": t.dim, "scale": list(t.scale)} for t in self.terms],
            "history_length": self.history_length,
            "clip": self.clip,
        }

    def frame(self, measurements: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scale and clip one frame from raw measurements of shape (batch, dim) keyed by term name."""
        import torch

        missing = [n for n in self.names if n not in measurements]
        if missing:
            raise KeyError(f"observation terms missing from measurements: {missing}")
        raw = torch.cat([measurements[name] for name in self.names], dim=-1)
        scale = self.scale_vector().to(raw.device)
        return torch.clamp(raw * scale, -self.clip, self.clip)
