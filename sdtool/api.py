"""Functions a Python user calls; the CLI calls the same ones."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

from sdtool.errors import CheckpointError, UsageError
from sdtool.resources import default_sdflow_weights as default_weights  # noqa: F401 - part of this module's API

if TYPE_CHECKING:  # pragma: no cover
    import torch


def resolve_device(device: Union[str, "torch.device", None] = "auto") -> "torch.device":
    """"auto" → CUDA (the local rank's GPU under torchrun) when available, else CPU; checks a requested GPU exists."""
    import torch

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


def weights_file(path: Optional[Union[str, os.PathLike]] = None) -> Path:
    """The checkpoint file `path` names (default: `default_weights()`); CheckpointError when there is none."""
    path = Path(path) if path is not None else default_weights()
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file (.safetensors)")
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    return path


def load_model(path: Optional[Union[str, os.PathLike]] = None, device: Union[str, "torch.device"] = "auto"):
    """Load an SDFlow checkpoint (default: the shipped weights) in eval mode on `device`. The file is checked
    before any model is built (`sdtool.checkpoint.load_checkpoint`): CheckpointError in one line otherwise."""
    from sdtool.checkpoint import load_checkpoint

    path = weights_file(path)
    model, provenance = load_checkpoint(path, resolve_device(device))
    model.provenance = provenance
    model.source_path = path
    return model
