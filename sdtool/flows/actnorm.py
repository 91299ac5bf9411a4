"""ActNorm (Glow, Kingma & Dhariwal 2018): per-channel affine map with data-dependent initialisation."""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor, nn

from sdtool.flows.base import Transform


def _identity(t: Tensor) -> Tensor:
    return t


class ActNorm(Transform):
    """z = exp(log_scale) * (x + loc), per channel; x, z: B×C×H×W; logdet = H·W·Σ log_scale.

    The first forward pass in training mode sets loc = -mean and log_scale = -log(std) from the batch
    (averaged over processes under DDP, so every rank starts identical). The `initialized` buffer is
    saved with the weights so a loaded model never re-initialises. `reduce_mean` averages the statistics over
    processes; the trainer sets it under torch.distributed (train/dist.py), so this layer imports none of it.
    """

    reduce_mean: Callable[[Tensor], Tensor] = staticmethod(_identity)

    def __init__(self, channels: int):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        mean = self.reduce_mean(x.mean(dim=(0, 2, 3), keepdim=True))
        var = ((x - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
        # Constant channels (e.g. zero padding) would blow up the scale: leave them unscaled.
        var = torch.where(var < 1e-4, torch.ones_like(var), var)
        var = self.reduce_mean(var)
        self.loc.copy_(-mean)
        self.log_scale.copy_(torch.log(1.0 / (var.sqrt() + 1e-6)))
        self.initialized.fill_(1)

    def _logdet(self, x: Tensor) -> Tensor:
        h, w = x.shape[2:]
        return (h * w * self.log_scale.sum()).expand(x.shape[0])

    def forward(self, x: Tensor, cond: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        if self.training and not bool(self.initialized):
            self.initialize(x)
        return torch.exp(self.log_scale) * (x + self.loc), self._logdet(x)

    def inverse(self, z: Tensor, cond: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        return z * torch.exp(-self.log_scale) - self.loc, -self._logdet(z)

    def affine(self, inverse: bool, dtype: torch.dtype = torch.float64):
        s = torch.exp(self.log_scale.to(dtype).flatten())
        loc = self.loc.to(dtype).flatten()
        ld = self.log_scale.to(dtype).sum()
        if inverse:  # x = z / s − loc
            return torch.diag(1 / s), -loc, -ld
        return torch.diag(s), s * loc, ld
