"""Functions a Python user calls; the CLI calls the same ones."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import torch

from sdtool.errors import CheckpointError, UsageError

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "sdflow-lite.safetensors"
DEFAULT_PDM_WEIGHTS = WEIGHTS_DIR / "pdm-realsr.safetensors"
SR_COMPACT_WEIGHTS = WEIGHTS_DIR / "sr-compact.safetensors"
# `upscale --model NAME`: the shipped upscalers by name ("sdflow" means the default SDFlow weights).
SHIPPED_UPSCALERS: dict[str, Path] = {"sdflow": DEFAULT_WEIGHTS, "sr-compact": SR_COMPACT_WEIGHTS}


def default_weights() -> Path:
    """The shipped SDFlow weights, or $SDTOOL_WEIGHTS when set."""
    env = os.environ.get("SDTOOL_WEIGHTS")
    return Path(env) if env else DEFAULT_WEIGHTS


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
        hint = " (the shipped default weights are missing: reinstall or pass --weights)" if path == DEFAULT_WEIGHTS else ""
        raise CheckpointError(f"{path}: no such checkpoint file{hint}")
    model, provenance = load_checkpoint(path, resolve_device(device))
    model.provenance = provenance
    model.source_path = path
    return model


def shipped_upscaler(name: str) -> Path:
    """The weights file of a shipped upscaler named by `upscale --model` (sdflow, sr-compact)."""
    from sdtool.errors import OptionError

    if name not in SHIPPED_UPSCALERS:
        raise OptionError("model", f"must be one of {', '.join(SHIPPED_UPSCALERS)}, got {name!r}")
    path = default_weights() if name == "sdflow" else SHIPPED_UPSCALERS[name]
    if not path.is_file():
        raise CheckpointError(f"{path}: the shipped '{name}' weights are missing (reinstall or pass --weights)")
    return path


def checkpoint_kind(path: Union[str, os.PathLike]) -> str:
    """What a weights file holds, from its header alone: "sdflow", "sr" (an sdtool SR network), "pdm", or
    "foreign" (anything else: left to spandrel). CheckpointError for a missing path or a folder."""
    from safetensors import safe_open

    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file (.safetensors)")
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix != ".safetensors":
        return "foreign"
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
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
    return "foreign"


def load_upscaler(path: Optional[Union[str, os.PathLike]] = None, device: Union[str, torch.device] = "auto"):
    """Any x4 model `upscale` runs, in eval mode: an SDFlow checkpoint (default: the shipped weights), an sdtool
    SR network (`sdtool train --model sr`), or any single-image x4 model spandrel reads (.pth, .safetensors…).
    The SR networks and spandrel models have `deterministic = True`."""
    if path is None:
        return load_model(None, device)
    kind = checkpoint_kind(path)
    if kind == "sdflow":
        return load_model(path, device)
    if kind == "pdm":
        raise CheckpointError(f"{path}: a PDM degradation model; it downscales (sample-degradation --model pdm), "
                              "it does not upscale")
    dev = resolve_device(device)
    if kind == "sr":
        from sdtool.model.sr import load_sr

        model = load_sr(path, dev)
        model.source_path = Path(path)
        return model
    from sdtool.model.sr import SpandrelUpscaler, load_spandrel

    return SpandrelUpscaler(load_spandrel(path, dev), Path(path))
