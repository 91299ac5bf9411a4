"""LR content extractor with degradation modulation: maps an LR image to its content latent z_c."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sdtool.nets.precision import LowPrecisionOK


def _conv3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, padding_mode="reflect")


class FeatureModulation(nn.Module):
    """feat · s + b with (s, b) from modulation features; s = tanh(s'/a)·a bounds the gain by a = exp(log_scale)."""

    def __init__(self, channels: int, mf_channels: int):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(1))
        self.affine = nn.Conv2d(mf_channels, 2 * channels, 1)

    def forward(self, feat: Tensor, mfeat: Tensor) -> Tensor:
        s, b = torch.chunk(self.affine(mfeat), 2, dim=1)
        a = torch.exp(self.log_scale)
        return feat * (torch.tanh(s / (a + 1e-6)) * a) + b


class ModulatedResBlock(nn.Module):
    def __init__(self, nc: int, res_scale: float = 0.1):
        super().__init__()
        self.res_scale = res_scale
        self.fm1 = FeatureModulation(nc, nc)
        self.conv1 = _conv3(nc, nc)
        self.fm2 = FeatureModulation(nc, nc)
        self.conv2 = _conv3(nc, nc)

    def forward(self, feat: Tensor, mfeat: Tensor) -> Tensor:
        x = F.leaky_relu(self.conv1(self.fm1(feat, mfeat)), 0.2, inplace=True)
        x = self.conv2(self.fm2(x, mfeat))
        return feat + x * self.res_scale


class ContentExtractor(LowPrecisionOK):
    """x: B×3×h×w in [-1, 1] → z_c: B×3×h×w.

    A residual trunk whose features are modulated by a second convolution branch that sees the same
    input: the branch learns what the degradation looks like so the trunk can discount it
    ("degradation modulation", SDFlow section on the LR content extractor).
    """

    def __init__(self, nc: int = 64, n_blocks: int = 16, n_mf_convs: int = 8):
        super().__init__()
        self.in_conv = _conv3(3, nc)
        self.mf_convs = nn.ModuleList(_conv3(nc, nc) for _ in range(n_mf_convs))
        self.trunk = nn.ModuleList(ModulatedResBlock(nc) for _ in range(n_blocks))
        self.out1 = _conv3(nc, nc)
        self.out2 = nn.Conv2d(nc, 3, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.in_precision(self._content, x)

    def _content(self, x: Tensor) -> Tensor:
        x = F.leaky_relu(self.in_conv(x), 0.2, inplace=True)
        mf = x
        for conv in self.mf_convs:
            mf = F.leaky_relu(conv(mf), 0.2, inplace=True)
        h = x
        for block in self.trunk:
            h = block(h, mf)
        return self.out2(F.leaky_relu(self.out1(x + h), 0.2, inplace=True))
