"""Feed-forward x4 SR networks (deterministic: one output per input), their checkpoints, and any x4 model
spandrel reads, all behind the interface `sdtool.infer.sampling.sample` drives.

  compact  SRVGG-style, convolutions at LR size only (`sdtool.nets.srvgg`): fast on a CPU.
  rrdb     ESRGAN's RRDBNet (`sdtool.nets.rrdbnet`): for users with GPUs.
A checkpoint is one safetensors file: the network's state dict under the names spandrel recognises (so
spandrel-based tools load it as it is) and, in the metadata, format "sdtool-sr" and the config as JSON (so the
file alone rebuilds the model). `export_state_dict` writes the same tensors as a plain `.pth` / `.safetensors`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from sdtool.config import JsonConfig
from sdtool.errors import CheckpointError, NonFiniteOutputError, OptionError
from sdtool.nets.rrdbnet import RRDBNet
from sdtool.nets.srvgg import CompactSRNet

SR_FORMAT = "sdtool-sr"
ARCHS = ("compact", "rrdb")
PathLike = Union[str, Path]


@dataclass(frozen=True)
class SRConfig(JsonConfig):
    """Sizes of an x4 SR network. compact: num_feat, num_conv; rrdb: num_feat, num_block, num_grow (spandrel's ESRGAN
    reads growth 32 only, so other values are for sdtool alone)."""

    name: str = "compact"
    arch: str = "compact"
    num_feat: int = 48
    num_conv: int = 8
    num_block: int = 23
    num_grow: int = 32
    scale: int = 4


SR_PRESETS: dict[str, SRConfig] = {
    "compact": SRConfig(),  # 48 features, 8 body convs: 0.19 s a training step (batch 16, LR 32²) on 1 CPU thread
    "rrdb": SRConfig(name="rrdb", arch="rrdb", num_feat=64, num_block=23, num_grow=32),  # ESRGAN / Real-ESRGAN x4plus
    "compact-tiny": SRConfig(name="compact-tiny", num_feat=8, num_conv=2),
    "rrdb-tiny": SRConfig(name="rrdb-tiny", arch="rrdb", num_feat=8, num_block=1, num_grow=32),
}


def sr_config(arch: str, size: str = "") -> SRConfig:
    """The preset of `arch` (compact or rrdb); size "tiny" gives its test size (anything else the full one)."""
    if arch not in ARCHS:
        raise OptionError("arch", f"must be one of {', '.join(ARCHS)}, got {arch!r}")
    return SR_PRESETS[f"{arch}-tiny" if size == "tiny" else arch]


def _finite(t: Tensor) -> Tensor:
    if not bool(torch.isfinite(t).all()):
        raise NonFiniteOutputError("the model produced NaN or infinite values (are the weights corrupt?)")
    return t


class DeterministicUpscaler:
    """What `sdtool.infer.sampling.sample` needs from an x4 model that has no randomness: `upscale` (noise and
    temperature accepted and ignored), a one-channel dummy noise shape, `device`, `deterministic = True`, and the
    colour guard the commands apply by default (`default_color_fix`).
    Subclasses define `_forward(x)`: N×3×h×w in [0, 1] on the model's device → N×3×4h×4w."""

    deterministic = True
    n_components = 1
    default_color_fix = "none"  # what `upscale` and `benchmark` apply unless told: other tools' models as they are

    @staticmethod
    def upscale_noise_shape(n: int, h: int, w: int) -> tuple[int, int, int, int]:
        # The tiled runner cuts a noise field per tile; a deterministic net reads none, one channel keeps it cheap.
        return (n, 1, max(h, 2), max(w, 2))

    @torch.no_grad()
    def upscale(self, x: Tensor, temperature: float = 0.0, generator: Optional[torch.Generator] = None,
                noise: Optional[Tensor] = None, delattice: bool = True) -> Tensor:
        """x4 SR. x: float N×3×h×w in [0, 1] → N×3×4h×4w in [0, 1] on x's device, without colour guard (that is
        `sdtool.infer`'s). temperature, generator, noise and delattice (SDFlow's decoder lattice; these networks
        have none) are accepted for the common interface and ignored."""
        y = _finite(self._forward(x.to(self.device, torch.float32)).float()).clamp(0, 1)
        return y.to(x.device)


class SRNetMixin(DeterministicUpscaler):
    config: SRConfig
    default_color_fix = "wavelet"  # at detail SR_NET_DETAIL (sdtool.config)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _forward(self, x: Tensor) -> Tensor:
        return self(x)


class CompactSR(SRNetMixin, CompactSRNet):
    def __init__(self, config: SRConfig):
        super().__init__(config.num_feat, config.num_conv, config.scale)
        self.config = config


class RRDBSR(SRNetMixin, RRDBNet):
    def __init__(self, config: SRConfig):
        super().__init__(config.num_feat, config.num_block, config.num_grow)
        self.config = config


def build_sr(config: SRConfig) -> nn.Module:
    """A fresh network of `config` (weights from the global RNG)."""
    if config.scale != 4:
        raise OptionError("config", f"only x4 networks are supported, got x{config.scale}")
    return CompactSR(config) if config.arch == "compact" else RRDBSR(config)


def sr_metadata(model: nn.Module) -> dict[str, str]:
    return {"format": SR_FORMAT, "format_version": "1", "config": model.config.to_json()}


def save_sr(model: nn.Module, path: PathLike, provenance: Optional[dict[str, Any]] = None) -> None:
    """The network's state dict (spandrel's names) with format, config and provenance in the metadata."""
    from sdtool.checkpoint import atomic_save_tensors

    meta = {**sr_metadata(model), "provenance": json.dumps(provenance or {}, sort_keys=True)}
    atomic_save_tensors(dict(model.state_dict()), path, meta)


def load_sr(path: PathLike, device: Union[str, torch.device] = "cpu") -> nn.Module:
    """Rebuild an SR network from its checkpoint alone, strictly; CheckpointError naming what is wrong."""
    from sdtool.checkpoint import load_state_strict, read_safetensors

    tensors, meta = read_safetensors(path)
    if meta.get("format") != SR_FORMAT:
        raise CheckpointError(f"{path}: expected an sdtool SR checkpoint (metadata format '{SR_FORMAT}'), found "
                              + (f"format '{meta['format']}'" if meta.get("format") else "no sdtool metadata"))
    try:
        config = SRConfig.from_json(meta["config"])
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: the model config in the metadata is unusable ({exc})") from None
    model = build_sr(config)
    load_state_strict(model, tensors, path)
    try:
        model.provenance = json.loads(meta.get("provenance", "{}"))
    except json.JSONDecodeError:
        model.provenance = {}
    return model.to(device).eval()


def export_state_dict(model: nn.Module, path: PathLike) -> Path:
    """Write the bare state dict for other tools: `.pth` (torch.save of a dict of tensors) or `.safetensors`
    (no sdtool metadata). spandrel recognises it as "RealESRGAN Compact" or "ESRGAN"."""
    from sdtool.checkpoint import atomic_save_tensors

    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        atomic_save_tensors(tensors, path, {})
    elif path.suffix in (".pth", ".pt"):
        from sdtool.files import write_bytes_atomic

        write_bytes_atomic(path, lambda fh: torch.save(tensors, fh))
    else:
        raise OptionError("output", f"{path}: give a .pth or .safetensors file name")
    return path


SPANDREL_NAMES = {"compact": "RealESRGAN Compact", "rrdb": "ESRGAN"}


def export_sr(weights: PathLike, out: PathLike, overwrite: bool = False) -> str:
    """`sdtool export-sr`: the SR checkpoint `weights` as a plain state dict at `out` (.pth or .safetensors);
    returns the architecture name spandrel gives it. OptionError when `out` exists (unless overwrite)."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise OptionError("overwrite", f"{out}: exists; give another OUT or {{overwrite}}", ("overwrite",))
    model = load_sr(weights)
    export_state_dict(model, out)
    return SPANDREL_NAMES[model.config.arch]


class SpandrelUpscaler(DeterministicUpscaler):
    """Any single-image x4 model spandrel reads (ESRGAN, Real-ESRGAN Compact, SwinIR, HAT, …), as an upscaler."""

    def __init__(self, descriptor: Any, path: Path):
        self.descriptor = descriptor
        self.architecture = str(descriptor.architecture.name)
        self.source_path = path

    @property
    def device(self) -> torch.device:
        return torch.device(self.descriptor.device)

    def eval(self) -> "SpandrelUpscaler":
        self.descriptor.eval()
        return self

    def _forward(self, x: Tensor) -> Tensor:
        return self.descriptor(x)


SPANDREL_HINT = "install the optional extra: pip install 'sdtool[baselines]' (or pip install spandrel)"


def load_spandrel(path: PathLike, device: torch.device, option: str = "weights") -> Any:
    """A spandrel ImageModelDescriptor of an x4 single-image SR file, in eval mode; OptionError (naming
    `option`) when spandrel is missing or the file is not such a model."""
    path = Path(path)
    if not path.is_file():
        raise OptionError(option, f"{path}: no such file")
    try:
        from spandrel import ImageModelDescriptor, ModelLoader
    except ImportError:
        raise OptionError(option, f"{path}: not an sdtool checkpoint, and reading other models needs spandrel: "
                          f"{SPANDREL_HINT}") from None
    try:
        desc = ModelLoader(device).load_from_file(path)
    except Exception as exc:  # noqa: BLE001 - spandrel raises many types for foreign files
        raise OptionError(option, f"{path}: not a model spandrel can load ({type(exc).__name__}: {exc})") from None
    if not isinstance(desc, ImageModelDescriptor) or desc.scale != 4:
        raise OptionError(option, f"{path}: a x{getattr(desc, 'scale', '?')} model; x4 is needed")
    desc.eval()
    return desc
