"""argparse types shared by the command lines: a bad value is argparse's one-line error with exit 2."""

from __future__ import annotations

import argparse
from pathlib import Path


def device_arg(text: str) -> str:
    """A torch device that exists here: `cpu`, `cuda`, `cuda:1` (only with a GPU), ..."""
    import torch

    try:
        device = torch.device(text)
    except RuntimeError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device (cpu, cuda, cuda:1, ...)") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: no CUDA device on this machine")
    return text


def out_dir_arg(text: str) -> Path:
    """A folder to write into: may exist (as a folder) or not yet; never an existing file."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} exists and is not a folder")
    return path
