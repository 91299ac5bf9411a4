"""LPIPS (Zhang et al. 2018), AlexNet variant, version 0.1 — offline and differentiable.

The official `lpips` package downloads the torchvision AlexNet backbone on first use. sdtool ships that
backbone as weights/lpips_alex.safetensors (found by `sdtool.resources`; converted by
scripts/convert_lpips_alexnet.py; provenance in weights/lpips_alex.md) and takes the learned linear layers from
the installed `lpips` package (lpips/weights/v0.1/alex.pth). The network is written here in plain torch (no
torchvision import).

Tensor contract: inputs N×3×H×W float in [0,1] (RGB), H, W >= 32 (ValueError otherwise); output N distances (float32),
0 for identical images, larger is more different. Gradients flow to both inputs (usable as a loss).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from sdtool.errors import CheckpointError
from sdtool.resources import LPIPS_BACKBONE, weights_path

# Per-channel input normalisation of LPIPS (applied to inputs in [-1, 1]).
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_CHANNELS = (64, 192, 384, 256, 256)
MIN_SIDE = 32  # smallest image side AlexNet's trunk accepts


class _AlexFeatures(nn.Module):
    """AlexNet conv trunk; returns the five ReLU outputs LPIPS compares (torchvision numbering 0..11)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, stride=4, padding=2),  # 0
            nn.ReLU(),  # 1 -> relu1
            nn.MaxPool2d(3, 2),  # 2
            nn.Conv2d(64, 192, 5, padding=2),  # 3
            nn.ReLU(),  # 4 -> relu2
            nn.MaxPool2d(3, 2),  # 5
            nn.Conv2d(192, 384, 3, padding=1),  # 6
            nn.ReLU(),  # 7 -> relu3
            nn.Conv2d(384, 256, 3, padding=1),  # 8
            nn.ReLU(),  # 9 -> relu4
            nn.Conv2d(256, 256, 3, padding=1),  # 10
            nn.ReLU(),  # 11 -> relu5
        )
        self._taps = (1, 4, 7, 9, 11)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs: list[torch.Tensor] = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._taps:
                outs.append(x)
        return outs


def _default_lin_path() -> Path:
    """The learned linear layers, a data file of the installed `lpips` package (not ours: see sdtool.resources)."""
    from importlib.util import find_spec

    # find_spec locates the package without running it: importing `lpips` imports torchvision (seconds of CPU in
    # every process that trains or benchmarks), and only the data file is needed.
    spec = find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:  # pragma: no cover - lpips is a dependency
        raise CheckpointError("the `lpips` package is not installed; `pip install lpips`")
    return Path(next(iter(spec.submodule_search_locations))).joinpath("weights/v0.1/alex.pth")


class LPIPS(nn.Module):
    """LPIPS-alex v0.1 distance. forward(a, b): N×3×H×W in [0,1] each → N (float32)."""

    def __init__(self, backbone_path: Optional[Path] = None, lin_path: Optional[Path] = None) -> None:
        super().__init__()
        self.net = _AlexFeatures()
        self.lins = nn.ModuleList([nn.Conv2d(c, 1, 1, bias=False) for c in _CHANNELS])
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self._load(backbone_path or weights_path(LPIPS_BACKBONE), lin_path or _default_lin_path())
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    def _load(self, backbone_path: Path, lin_path: Path) -> None:
        from safetensors.torch import load_file

        if not Path(backbone_path).is_file():
            raise CheckpointError(f"LPIPS backbone not found: {backbone_path}")
        if not Path(lin_path).is_file():
            raise CheckpointError(f"LPIPS linear layers not found: {lin_path}")
        try:
            backbone = load_file(str(backbone_path))
            self.net.load_state_dict(backbone, strict=True)
            lin = torch.load(str(lin_path), map_location="cpu", weights_only=True)
            # Official keys are lin{k}.model.1.weight (index 1 after a dropout layer).
            self.lins.load_state_dict({f"{k}.weight": lin[f"lin{k}.model.1.weight"] for k in range(5)}, strict=True)
        except (RuntimeError, KeyError, OSError, ValueError) as exc:
            raise CheckpointError(f"cannot load LPIPS weights: {exc}") from exc

    def train(self, mode: bool = True) -> "LPIPS":
        # Always evaluation mode: LPIPS is a fixed metric, even inside a training loop.
        return super().train(False)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.shape != b.shape or a.dim() != 4 or a.shape[1] != 3:
            raise ValueError(f"LPIPS expects two N×3×H×W tensors of the same shape, got {tuple(a.shape)}, "
                             f"{tuple(b.shape)}")
        if min(a.shape[-2:]) < MIN_SIDE:
            # Two stride-2 poolings after the stride-4 conv leave no pixels below this size.
            raise ValueError(f"LPIPS needs images of at least {MIN_SIDE}×{MIN_SIDE}, got {a.shape[-1]}×{a.shape[-2]}")
        dtype = self.shift.dtype
        xa = ((a.to(dtype) * 2 - 1) - self.shift) / self.scale
        xb = ((b.to(dtype) * 2 - 1) - self.shift) / self.scale
        fa, fb = self.net(xa), self.net(xb)
        total = torch.zeros(a.shape[0], device=a.device, dtype=dtype)
        for lin, ta, tb in zip(self.lins, fa, fb):
            # Unit-normalise each feature vector along channels (eps as in the reference implementation).
            na = ta / (torch.sqrt(torch.sum(ta * ta, dim=1, keepdim=True)) + 1e-10)
            nb = tb / (torch.sqrt(torch.sum(tb * tb, dim=1, keepdim=True)) + 1e-10)
            total = total + lin((na - nb) ** 2).mean(dim=(1, 2, 3))
        return total


_CACHE: dict[str, LPIPS] = {}
_LOCK = threading.Lock()


def get_lpips(device: Union[str, torch.device] = "cpu") -> LPIPS:
    """One shared, frozen LPIPS-alex module per device (loaded on first use)."""
    dev = torch.device(device)
    key = str(dev)
    with _LOCK:
        mod = _CACHE.get(key)
        if mod is None:
            mod = LPIPS().to(dev)
            _CACHE[key] = mod
        return mod


@torch.no_grad()
def lpips_distance(a: torch.Tensor, b: torch.Tensor, device: Union[str, torch.device, None] = None) -> torch.Tensor:
    """LPIPS between batches a, b (N×3×H×W or 3×H×W, [0,1]) without gradients; returns N floats on CPU."""
    if a.dim() == 3:
        a, b = a.unsqueeze(0), b.unsqueeze(0)
    dev = torch.device(device) if device is not None else a.device
    mod = get_lpips(dev)
    return mod(a.to(dev), b.to(dev)).float().cpu()
