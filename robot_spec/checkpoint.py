"""Reading torch checkpoint files without running code from them.

Every checkpoint the project writes (stage artefacts, offline results, online and PPO checkpoints) holds only
tensors and plain Python data, so it is read weights-only: a crafted pickle (an object whose `__reduce__`
calls anything) is refused instead of executed. Policies are TorchScript/ONNX and go through policy_io.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch


class CheckpointError(ValueError):
    """A checkpoint file is unreadable or holds more than tensors and plain data; the message is one line."""


def load_checkpoint(path: str | Path) -> Any:
    """torch.load(path, weights_only=True) on the CPU, with a one-line CheckpointError naming the file."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"{path}: refused: not a plain checkpoint of tensors and data ({_reason(err)}); "
                              "nothing in it was run") from None  # fmt: skip
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable checkpoint ({_reason(err)})") from None


def _reason(err: Exception) -> str:
    """The informative line of torch's multi-paragraph message (e.g. 'Unsupported global: GLOBAL posix.system')."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or "Unsupported" in line:
            return line.rstrip(".")
    return lines[-1][:200] if lines else type(err).__name__
