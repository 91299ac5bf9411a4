"""Functions a Python user calls; the CLI calls the same ones."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

from sdtool.errors import CheckpointError, UsageError
from sdtool.resources import default_sdflow_weights as default_weights  # noqa: F401 - part of this module's API

if TYPE_CHECKING:  # pragma: no cover
    import torch

SR_COMPACT_WEIGHTS = "sr-compact.safetensors"
# `upscale --model NAME`: the shipped upscalers by name ("sdflow" is the default SDFlow checkpoint).
SHIPPED_UPSCALERS = ("sdflow", "sr-compact")


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


def shipped_upscaler(name: str) -> Path:
    """The weights file of a shipped upscaler named by `upscale --model` (sdflow, sr-compact)."""
    from sdtool.errors import OptionError
    from sdtool.resources import weights_path

    if name not in SHIPPED_UPSCALERS:
        raise OptionError("model", f"must be one of {', '.join(SHIPPED_UPSCALERS)}, got {name!r}")
    return weights_file(default_weights()) if name == "sdflow" else weights_path(SR_COMPACT_WEIGHTS)


def checkpoint_kind(path: Union[str, os.PathLike]) -> str:
    """What a weights file holds, from its header alone: "sdflow", "sr" (an sdtool SR network), "pdm", "redeg", or
    "foreign" (anything else: left to spandrel). CheckpointError for a missing path or a folder."""
    from safetensors import safe_open

    path = weights_file(path)
    if path.suffix != ".safetensors":
        return "foreign"
    try:
        with safe_open(str(path), framework="numpy") as f:  # the header only: torch is not needed
            meta = f.metadata() or {}
    except Exception:  # unreadable here: load_model / spandrel name the problem
        return "sdflow"
    fmt = meta.get("format", "")
    if fmt == "sdtool-sdflow":
        return "sdflow"
    if fmt == "sdtool-sr":
        return "sr"
    if meta.get("kind") == "pdm" or fmt == "sdtool-pdm":
        return "pdm"
    if meta.get("kind") == "redeg":
        return "redeg"
    return "foreign"


def load_upscaler(path: Optional[Union[str, os.PathLike]] = None, device: Union[str, "torch.device"] = "auto"):
    """Any x4 model `upscale` runs, in eval mode: an SDFlow checkpoint (default: the shipped weights), an sdtool
    SR network (`sdtool train --model sr`), or any single-image x4 model spandrel reads (.pth, .safetensors…).
    The SR networks and spandrel models have `deterministic = True`."""
    if path is None:
        return load_model(None, device)
    kind = checkpoint_kind(path)
    if kind == "sdflow":
        return load_model(path, device)
    if kind in ("pdm", "redeg"):
        raise CheckpointError(f"{path}: a {kind.upper() if kind == 'pdm' else 'ReDeg'} degradation model; it downscales "
                              f"(sample-degradation --model {kind}), it does not upscale")
    dev = resolve_device(device)
    if kind == "sr":
        from sdtool.model.sr import load_sr

        model = load_sr(path, dev)
        model.source_path = Path(path)
        return model
    from sdtool.model.sr import SpandrelUpscaler, load_spandrel

    return SpandrelUpscaler(load_spandrel(path, dev), Path(path))
