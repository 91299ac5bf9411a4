"""Functions a Python user calls; the CLI calls the same ones."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import torch

from sdtool.errors import CheckpointError, UsageError
from sdtool.resources import default_sdflow_weights as default_weights  # noqa: F401 - part of this module's API


def resolve_device(device: Union[str, torch.device, None] = "auto") -> torch.device:
    """"auto" → CUDA (the local rank's GPU under torchrun) when available, else CPU; checks a requested GPU exists."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise UsageError(f"unknown device '{device}': use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise UsageError(f"device '{device}' is not supported: use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device '{device}' requested but CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"device '{device}' requested but only {torch.cuda.device_count()} GPU(s) exist")
    return dev


def load_model(path: Optional[Union[str, os.PathLike]] = None, device: Union[str, torch.device] = "auto"):
    """Load an SDFlow checkpoint (default: the shipped weights) in eval mode on `device`."""
    from sdtool.checkpoint import load_checkpoint

    path = Path(path) if path is not None else default_weights()
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file (.safetensors)")
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    model, provenance = load_checkpoint(path, resolve_device(device))
    model.provenance = provenance
    model.source_path = path
    return model
