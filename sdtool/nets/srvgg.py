"""A compact VGG-style x4 SR network (the layout of Real-ESRGAN's SRVGGNetCompact, Wang et al. 2021):
convolutions at LR resolution only, one pixel shuffle at the end, and the nearest-neighbour upscale of the
input added, so the body learns a residual. Fast on a CPU because nothing runs at HR resolution.

The parameter names (`body.0`, `body.1`, …: conv, PReLU, conv, PReLU, …, last conv) are those spandrel
recognises as "RealESRGAN Compact", so a state dict of this module loads in spandrel-based tools."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class CompactSRNet(nn.Module):
    """N×3×h×w in [0, 1] → N×3×(s·h)×(s·w), unclamped. `num_conv` 3×3 convs of `num_feat` channels, each
    followed by a per-channel PReLU, between a first conv (3 → num_feat) and a last one (num_feat → 3·s²)."""

    def __init__(self, num_feat: int = 48, num_conv: int = 8, scale: int = 4):
        super().__init__()
        self.scale = scale
        layers: list[nn.Module] = [nn.Conv2d(3, num_feat, 3, padding=1), nn.PReLU(num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, padding=1), nn.PReLU(num_feat)]
        layers.append(nn.Conv2d(num_feat, 3 * scale * scale, 3, padding=1))
        self.body = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        return F.pixel_shuffle(out, self.scale) + F.interpolate(x, scale_factor=self.scale, mode="nearest")
