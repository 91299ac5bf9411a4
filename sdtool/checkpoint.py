"""Safetensors checkpoints whose metadata holds the model config, so a file alone rebuilds its model."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

from sdtool.config import SDFlowConfig
from sdtool.errors import CheckpointError

FORMAT = "sdtool-sdflow"
FORMAT_VERSION = "1"
PathLike = Union[str, os.PathLike]


def atomic_save_tensors(tensors: dict[str, torch.Tensor], path: PathLike, metadata: dict[str, str]) -> None:
    """Write a safetensors file via a temporary file in the same folder and an atomic rename."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.chmod(tmp, 0o644)  # mkstemp makes owner-only files; a weights file is for everyone to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(model: nn.Module, path: PathLike, provenance: Optional[dict[str, Any]] = None) -> None:
    """Save an SDFlow model: every parameter and buffer (ActNorm `initialized` flags included) as tensors,
    the config and provenance as JSON metadata."""
    config: SDFlowConfig = model.config  # type: ignore[assignment]
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config.to_json(),
        "provenance": json.dumps(provenance or {}, sort_keys=True),
    }
    atomic_save_tensors(dict(model.state_dict()), path, meta)


def read_safetensors(path: PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file, with one-line errors for missing or damaged files."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises several types for bad headers and short files
        size = path.stat().st_size
        raise CheckpointError(
            f"{path}: expected a safetensors checkpoint, found an unreadable or truncated file "
            f"({size} bytes: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from None
    return tensors, meta


def read_config(meta: dict[str, str], path: PathLike) -> SDFlowConfig:
    fmt = meta.get("format")
    if fmt != FORMAT:
        raise CheckpointError(
            f"{path}: expected an sdtool SDFlow checkpoint (metadata format '{FORMAT}'), found "
            + (f"format '{fmt}'" if fmt else "no sdtool metadata")
            + (" — convert the authors' files with `sdtool convert-official`" if fmt is None else "")
        )
    try:
        return SDFlowConfig.from_json(meta["config"])
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: the model config in the metadata is unusable ({exc})") from None


def load_state_strict(model: nn.Module, tensors: dict[str, torch.Tensor], path: PathLike) -> None:
    """Load every tensor; name the first missing, unexpected or wrongly shaped key if any."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s), first '{missing[0]}'")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), first '{unexpected[0]}'")
        raise CheckpointError(f"{path}: weights do not match the model config: " + "; ".join(parts))
    for k, v in expected.items():
        if tuple(tensors[k].shape) != tuple(v.shape):
            raise CheckpointError(
                f"{path}: tensor '{k}' has shape {tuple(tensors[k].shape)}, the config expects {tuple(v.shape)}"
            )
    model.load_state_dict(tensors, strict=True)


def load_checkpoint(path: PathLike, device: Union[str, torch.device] = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild an SDFlow model from a checkpoint file alone; returns (model in eval mode, provenance)."""
    from sdtool.model.sdflow import SDFlow

    tensors, meta = read_safetensors(path)
    config = read_config(meta, path)
    model = SDFlow(config)
    load_state_strict(model, tensors, path)
    try:
        provenance = json.loads(meta.get("provenance", "{}"))
    except json.JSONDecodeError:
        provenance = {}
    return model.to(device).eval(), provenance
