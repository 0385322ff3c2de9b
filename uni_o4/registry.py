"""The fine-tuning methods by name: the one place a method is chosen from."""

from __future__ import annotations

ALGOS = ("uni_o4", "iql", "calql", "o3f")
