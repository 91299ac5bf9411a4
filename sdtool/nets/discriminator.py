"""Small patch discriminators: one on content latents z_c, one per image domain."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class PatchDiscriminator(nn.Module):
    """B×C×H×W → B×1×H'×W' logits; `n_down` stride-2 convs (spectral-normalised for stable training), each
    doubling the channels up to `max_width`."""

    def __init__(self, in_channels: int = 3, width: int = 64, n_down: int = 2, max_width: int = 256):
        super().__init__()
        sn = nn.utils.spectral_norm
        layers: list[nn.Module] = [sn(nn.Conv2d(in_channels, width, 3, padding=1))]
        ch = width
        for _ in range(n_down):
            layers.append(sn(nn.Conv2d(ch, min(2 * ch, max_width), 4, stride=2, padding=1)))
            ch = min(2 * ch, max_width)
        self.body = nn.ModuleList(layers)
        self.head = sn(nn.Conv2d(ch, 1, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.body:
            x = F.leaky_relu(layer(x), 0.2)
        return self.head(x)
