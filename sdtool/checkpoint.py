"""Safetensors checkpoints whose metadata holds the model config, so a file alone rebuilds its model: the one
checkpoint module for SDFlow and PDM (`save_model`, `load_checkpoint`, keyed on the metadata's format), written
through the one atomic writer (`sdtool.files`). The SR networks' files (`sdtool.model.sr`) use its writer and
strict loader too."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Optional, Union

import numpy as np

from sdtool.config import PDMConfig, SDFlowConfig
from sdtool.errors import CheckpointError
from sdtool.files import write_bytes_atomic

if TYPE_CHECKING:  # pragma: no cover - torch is imported where tensors are made, so the checks below run without it
    import torch
    from torch import nn

FORMAT = "sdtool-sdflow"
FORMAT_VERSION = "1"
PDM_FORMAT = "sdtool-pdm"
PathLike = Union[str, os.PathLike]


def atomic_save_tensors(tensors: dict[str, "torch.Tensor"], path: PathLike, metadata: dict[str, str]) -> None:
    """Write a safetensors file through the one atomic writer (`sdtool.files`); WriteError when the file system
    refuses (a full disk, a read-only folder), and the file that was there is kept."""
    from safetensors.torch import save

    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata)
    write_bytes_atomic(path, data)


def model_metadata(model: "nn.Module") -> dict[str, str]:
    """The metadata that makes a file of `model` rebuild it: its format and config (SDFlow or PDM)."""
    config: Any = model.config
    if isinstance(config, PDMConfig):
        return {"format": PDM_FORMAT, "kind": "pdm", "config": config.to_json()}
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "config": config.to_json()}


def save_model(model: "nn.Module", path: PathLike, provenance: Optional[dict[str, Any]] = None,
               extra: Optional[dict[str, Any]] = None) -> None:
    """Save an SDFlow or PDM model: every parameter and buffer (ActNorm `initialized` flags included) as tensors,
    the format, config and provenance (and any `extra` entries) as metadata."""
    meta = {**model_metadata(model), "provenance": json.dumps(provenance or {}, sort_keys=True)}
    meta.update({str(k): str(v) for k, v in (extra or {}).items()})
    atomic_save_tensors(dict(model.state_dict()), path, meta)


def format_kind(meta: dict[str, str]) -> str:
    """"pdm" for a PDM checkpoint's metadata, "sdflow" otherwise (`read_config` names a wrong format)."""
    return "pdm" if meta.get("format") == PDM_FORMAT or meta.get("kind", meta.get("model")) == "pdm" else "sdflow"


def _unreadable(path: Path, exc: Exception) -> CheckpointError:
    size = path.stat().st_size if path.is_file() else 0
    why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return CheckpointError(f"{path}: expected a safetensors checkpoint, found an unreadable or truncated file "
                           f"({size} bytes: {why})")


def read_header(path: PathLike) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Tensor shapes and metadata of a safetensors file, read from its header alone (no tensor is loaded, torch is
    not needed); one-line CheckpointError for a missing or damaged file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="numpy") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}, f.metadata() or {}
    except Exception as exc:  # safetensors raises several types for bad headers and short files
        raise _unreadable(path, exc) from None


def _numpy_tensors(path: PathLike) -> Iterator[tuple[str, np.ndarray]]:
    """The tensors of a safetensors file one at a time as numpy arrays, those numpy has a type for (bfloat16 and
    the float8 types are left to the torch check of `load_checkpoint`)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        for k in f.keys():
            if f.get_slice(k).get_dtype() in ("F16", "F32", "F64"):
                yield k, f.get_tensor(k)


def read_safetensors(path: PathLike) -> tuple[dict[str, "torch.Tensor"], dict[str, str]]:
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
        raise _unreadable(path, exc) from None
    return tensors, meta


def read_config(meta: dict[str, str], path: PathLike) -> SDFlowConfig:
    """The SDFlow config in a checkpoint's metadata, each field checked for type and range (`JsonConfig`)."""
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


def read_pdm_config(meta: dict[str, str], path: PathLike) -> PDMConfig:
    """The PDM config in a checkpoint's metadata, each field checked for type and range (`JsonConfig`)."""
    if meta.get("kind", meta.get("model")) != "pdm" and meta.get("format") != PDM_FORMAT:
        raise CheckpointError(f"{path} is not a PDM checkpoint (metadata kind={meta.get('kind')!r})")
    try:
        return PDMConfig.from_json(meta["config"])
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: bad PDM config in metadata: {exc}") from None


def check_config_fits(config: Any, shapes: dict[str, tuple[int, ...]], path: PathLike) -> None:
    """CheckpointError unless every size of `config` (an SDFlowConfig or a PDMConfig) is what the tensors in the
    file hold, so that no model is built (nor memory allocated) for a config the file does not back
    (`sdtool.model.layout`)."""
    from sdtool.model.layout import pdm_sizes, sdflow_sizes

    try:
        sizes = sdflow_sizes(shapes) if isinstance(config, SDFlowConfig) else pdm_sizes(shapes)
    except KeyError as exc:
        kind = "an SDFlow" if isinstance(config, SDFlowConfig) else "a PDM"
        raise CheckpointError(f"{path}: not {kind} checkpoint: tensor {exc} is missing") from None
    wrong = [f"{name} is {getattr(config, name)}, the file holds {held} ({source})"
             for name, (held, source) in sizes.items() if getattr(config, name) != held]
    if wrong:
        raise CheckpointError(f"{path}: the config in the metadata does not match the tensors in the file: "
                              + "; ".join(wrong[:3]) + (f" (and {len(wrong) - 3} more)" if len(wrong) > 3 else ""))


def _finite(v: Any) -> bool:
    if isinstance(v, np.ndarray):
        return v.dtype.kind != "f" or bool(np.isfinite(v).all())
    import torch

    return not v.is_floating_point() or bool(torch.isfinite(v).all())


def check_finite(tensors: Any, path: PathLike) -> None:
    """CheckpointError naming the first tensor holding NaN or infinite values (a corrupt or diverged file).
    tensors: (name, numpy array or torch tensor) pairs, or a dict of them."""
    for k, v in (tensors.items() if isinstance(tensors, Mapping) else tensors):
        if not _finite(v):
            raise CheckpointError(f"{path}: tensor '{k}' holds NaN or infinite values (corrupt or diverged weights)")


def check_weights(path: PathLike, kind: str = "sdflow") -> tuple[Any, dict[str, str]]:
    """Everything about an SDFlow (kind "sdflow") or PDM ("pdm") checkpoint that can be known without building the
    model, and without torch: the header, the config in the metadata (types and ranges), the config against the
    tensor shapes in the file, and NaN / inf in the tensors (read one at a time). Returns (config, metadata);
    CheckpointError in one line."""
    shapes, meta = read_header(path)
    config = read_config(meta, path) if kind == "sdflow" else read_pdm_config(meta, path)
    check_config_fits(config, shapes, path)
    try:
        check_finite(_numpy_tensors(path), path)
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - data shorter than the header says, …
        raise _unreadable(Path(path), exc) from None
    return config, meta


def check_shapes(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], path: PathLike) -> None:
    """CheckpointError naming the first missing, unexpected or wrongly shaped key, if any."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s), first '{missing[0]}'")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), first '{unexpected[0]}'")
        raise CheckpointError(f"{path}: weights do not match the model config: " + "; ".join(parts))
    for k, shape in expected.items():
        if tuple(found[k]) != tuple(shape):
            raise CheckpointError(f"{path}: tensor '{k}' has shape {tuple(found[k])}, the config expects "
                                  f"{tuple(shape)}")


def load_state_strict(model: "nn.Module", tensors: dict[str, "torch.Tensor"], path: PathLike) -> None:
    """Load every tensor; name the first missing, unexpected or wrongly shaped key if any."""
    check_shapes({k: tuple(v.shape) for k, v in model.state_dict().items()},
                 {k: tuple(v.shape) for k, v in tensors.items()}, path)
    model.load_state_dict(tensors, strict=True)


def load_checkpoint(path: PathLike, device: Union[str, "torch.device"] = "cpu", kind: Optional[str] = None
                    ) -> tuple["nn.Module", dict[str, Any]]:
    """Rebuild an SDFlow or PDM model from a checkpoint file alone, by the format in its metadata (or `kind`, which
    it must then be); returns (model in eval mode on `device`, provenance). device: as `sdtool.api.resolve_device`.

    The file is checked before the model is built (`check_weights`; tensors numpy cannot hold, such as bfloat16,
    are checked for NaN / inf once loaded). Raises CheckpointError in one line."""
    import torch

    from sdtool.api import resolve_device

    kind = kind or format_kind(read_header(path)[1])
    config, meta = check_weights(path, kind)
    tensors, _ = read_safetensors(path)
    checked = (torch.float16, torch.float32, torch.float64)  # by check_weights
    check_finite({k: v for k, v in tensors.items() if v.dtype not in checked}, path)
    model = _build(kind, config)
    load_state_strict(model, tensors, path)
    try:
        provenance = json.loads(meta.get("provenance", "{}"))
    except json.JSONDecodeError:
        provenance = {}
    return model.to(resolve_device(device)).eval(), provenance


def _build(kind: str, config: Any) -> "nn.Module":
    if kind == "pdm":
        from sdtool.model.pdm import PDM

        return PDM(config)
    from sdtool.model.sdflow import SDFlow

    return SDFlow(config)


def load_pdm(path: PathLike, device: Union[str, "torch.device"] = "cpu") -> Any:
    """A PDM from its checkpoint (`save_model` of a PDM, or an exported `sdtool train --model pdm` run);
    CheckpointError in one line when the file is missing, truncated, not a PDM or does not match its config."""
    return load_checkpoint(path, device, kind="pdm")[0]
