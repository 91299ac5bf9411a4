"""Affine coupling (RealNVP/Glow) and affine injector (SRFlow), with SDFlow's soft-clamped scale."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from sdtool.flows.base import Transform
from sdtool.nets.subnet import CouplingNet


def soft_clamp(s: Tensor) -> Tensor:
    """0.318·atan(2s): a smooth bound |scale| < 0.5 that keeps exp(scale) well conditioned."""
    return 0.318 * torch.atan(2.0 * s)


def _scale_shift(h: Tensor) -> tuple[Tensor, Tensor]:
    # Interleaved channels: even = scale, odd = shift (the authors' "cross" split).
    return soft_clamp(h[:, 0::2]), h[:, 1::2]


class AffineCoupling(Transform):
    """Split channels into (a, b); b ← (b + shift(a, cond)) · exp(scale(a, cond)); a passes unchanged.

    x: B×C×H×W; cond (optional): B×Cc×H×W features concatenated to a. logdet = Σ scale.
    """

    def __init__(self, channels: int, hidden: int, cond_channels: int = 0):
        super().__init__()
        self.ca = channels // 2
        self.cb = channels - self.ca
        self.cond_channels = cond_channels
        self.net = CouplingNet(self.ca + cond_channels, 2 * self.cb, hidden)

    def _params(self, a: Tensor, cond: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        if self.cond_channels:
            if cond is None:
                raise ValueError("this coupling needs a condition")
            a = torch.cat([a, cond], dim=1)
        return _scale_shift(self.net(a))

    def forward(self, x: Tensor, cond: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        a, b = torch.split(x, [self.ca, self.cb], dim=1)
        scale, shift = self._params(a, cond)
        b = (b + shift) * torch.exp(scale)
        return torch.cat([a, b], dim=1), scale.sum(dim=(1, 2, 3))

    def inverse(self, z: Tensor, cond: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        a, b = torch.split(z, [self.ca, self.cb], dim=1)
        scale, shift = self._params(a, cond)
        b = b * torch.exp(-scale) - shift
        return torch.cat([a, b], dim=1), -scale.sum(dim=(1, 2, 3))


class AffineInjector(Transform):
    """x ← (x + shift(cond)) · exp(scale(cond)) on all channels: the condition alone sets the affine map."""

    def __init__(self, channels: int, hidden: int, cond_channels: int):
        super().__init__()
        self.net = CouplingNet(cond_channels, 2 * channels, hidden)

    def forward(self, x: Tensor, cond: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        if cond is None:
            raise ValueError("an affine injector needs a condition")
        scale, shift = _scale_shift(self.net(cond))
        return (x + shift) * torch.exp(scale), scale.sum(dim=(1, 2, 3))

    def inverse(self, z: Tensor, cond: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        if cond is None:
            raise ValueError("an affine injector needs a condition")
        scale, shift = _scale_shift(self.net(cond))
        return z * torch.exp(-scale) - shift, -scale.sum(dim=(1, 2, 3))
