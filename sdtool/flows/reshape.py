"""Squeeze (space-to-depth) and its inverse; volume preserving, so logdet is 0."""

from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor

from sdtool.flows.base import Transform, zero_logdet


class Squeeze(Transform):
    """B×C×H×W → B×4C×H/2×W/2; output channel c·4 + 2i + j holds pixel (2y+i, 2x+j) of channel c."""

    def forward(self, x: Tensor, cond: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        if x.shape[2] % 2 or x.shape[3] % 2:
            raise ValueError(f"squeeze needs even height and width, got {tuple(x.shape[2:])}")
        return F.pixel_unshuffle(x, 2), zero_logdet(x)

    def inverse(self, z: Tensor, cond: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        return F.pixel_shuffle(z, 2), zero_logdet(z)


class Unsqueeze(Transform):
    """The inverse of Squeeze as a forward transform: B×4C×H×W → B×C×2H×2W."""

    def forward(self, x: Tensor, cond: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        return F.pixel_shuffle(x, 2), zero_logdet(x)

    def inverse(self, z: Tensor, cond: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        return F.pixel_unshuffle(z, 2), zero_logdet(z)
