"""Artefact cache and resumable training loops for the offline stages.

An artefact (behaviour ensemble, critics, dynamics model, improved policies) is stored under a key hashed
from everything that determines it: the exact data (content hash), the stage's full config, the seed, the
initial actor and upstream artefact keys. A changed setting gives a new key, so stale models are never
reused (a pitfall of the reference code). While a stage trains, a checkpoint with the same key is written
every `checkpoint_every` steps; an interrupted run resumes from it, and it is deleted once the artefact exists.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm import tqdm

from robot_spec.checkpoint import load_checkpoint
from robot_spec.config import to_dict

CACHE_VERSION = 1  # bump when a stage's training code changes what it produces


class Stateful(Protocol):
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> Any: ...


class GeneratorState:
    """Adapts a torch.Generator to the state_dict protocol, so random streams resume exactly."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    def state_dict(self) -> dict:
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["state"])


def artifact_key(**parts: Any) -> str:
    """Short hash of the parts (dataclass configs, strings, numbers, nested dicts)."""
    text = json.dumps({"version": CACHE_VERSION, **to_dict(parts)}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def module_hash(module: torch.nn.Module) -> str:
    """Hash of a module's weights and buffers (identifies the initial actor)."""
    digest = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class ArtifactStore:
    """Files `<root>/<name>-<key>.pt` (finished artefacts) and `.ckpt` (in-progress checkpoints)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, name: str, key: str) -> Path:
        return self.root / f"{name}-{key}.pt"

    def checkpoint_path(self, name: str, key: str) -> Path:
        return self.root / f"{name}-{key}.ckpt"

    def load(self, name: str, key: str) -> dict | None:
        path = self.path(name, key)
        return load_checkpoint(path) if path.is_file() else None

    def save(self, name: str, key: str, payload: dict) -> Path:
        path = self.path(name, key)
        atomic_save(payload, path)
        self.checkpoint_path(name, key).unlink(missing_ok=True)
        return path


def atomic_save(payload: dict, path: Path) -> None:
    """Write then rename, so a crash never leaves a half-written file under the real name."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


@dataclass
class TrainContext:
    """How a stage's loop runs: where it checkpoints, where scalars go, whether a progress bar shows."""

    checkpoint: Path | None = None
    checkpoint_every: int = 1000
    writer: Any = None  # anything with add_scalar(tag, value, step), e.g. a TensorBoard SummaryWriter
    log_every: int = 100
    progress: bool = True

    def log(self, prefix: str, values: dict[str, Any], step: int) -> None:
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(f"{prefix}/{name}", float(value), step)

    def run(self, desc: str, total: int, step_fn: Callable[[int], bool | None], state: dict[str, Stateful]) -> int:
        return run_resumable(desc, total, step_fn, state, self.checkpoint, self.checkpoint_every, self.progress)


def run_resumable(
    desc: str, total: int, step_fn: Callable[[int], bool | None], state: dict[str, Stateful],
    checkpoint: Path | None = None, checkpoint_every: int = 1000, progress: bool = True,
) -> int:  # fmt: skip
    """Call step_fn(step) for step in [start, total); returns the number of steps done.

    `state` names everything that must survive an interruption (modules, optimisers, GeneratorState,
    histories). If `checkpoint` exists the loop restarts where it stopped. step_fn returns True to stop early
    (e.g. early stopping); a stopped loop is checkpointed at once, so a resume ends immediately too.
    """
    start, stopped = 0, False
    if checkpoint is not None and checkpoint.is_file():
        saved = load_checkpoint(checkpoint)
        for name, obj in state.items():
            obj.load_state_dict(saved["state"][name])
        start, stopped = saved["step"], saved["stopped"]
        tqdm.write(f"{desc}: resumed from {checkpoint.name} at step {start}")

    def save(step: int, stop: bool) -> None:
        if checkpoint is not None:
            states = {name: obj.state_dict() for name, obj in state.items()}
            atomic_save({"step": step, "stopped": stop, "state": states}, checkpoint)

    step = start
    with tqdm(total=total, initial=start, desc=desc, disable=not progress or stopped, dynamic_ncols=True) as bar:
        while step < total and not stopped:
            stopped = bool(step_fn(step))
            step += 1
            bar.update(1)
            if stopped or step % checkpoint_every == 0:
                save(step, stopped)
    return step
