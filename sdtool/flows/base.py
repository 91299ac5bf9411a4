"""The one interface of every invertible piece, and their composition (in the spirit of nflows)."""

from __future__ import annotations

from typing import Iterable, Optional

import torch
from torch import Tensor, nn


class Transform(nn.Module):
    """An invertible map with a tractable Jacobian.

    forward(x, cond) -> (z, logdet) maps data to latent; inverse(z, cond) -> (x, logdet) maps back.
    logdet has shape (B,) and is log|det dz/dx| for forward, log|det dx/dz| for inverse, so the two add
    up to zero. Pieces that ignore the condition still accept it, so a sequence can pass it on.
    """

    def forward(self, x: Tensor, cond: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def inverse(self, z: Tensor, cond: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError


def zero_logdet(x: Tensor) -> Tensor:
    return torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)


class Sequential(Transform):
    """Composition: forward runs the pieces in order, inverse in reverse order; log-dets add."""

    def __init__(self, transforms: Iterable[Transform]):
        super().__init__()
        self.transforms = nn.ModuleList(transforms)

    def forward(self, x: Tensor, cond: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        total = zero_logdet(x)
        for t in self.transforms:
            x, ld = t(x, cond)
            total = total + ld
        return x, total

    def inverse(self, z: Tensor, cond: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        total = zero_logdet(z)
        for t in reversed(self.transforms):
            z, ld = t.inverse(z, cond)
            total = total + ld
        return z, total
