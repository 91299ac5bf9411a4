"""RRDB feature extractor (ESRGAN's residual-in-residual dense blocks) that computes flow conditions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sdtool.nets.precision import LowPrecisionOK


def _scaled_init(module: nn.Module, scale: float) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_normal_(m.weight)
            m.weight.data.mul_(scale)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class DenseBlock(nn.Module):
    """Five densely connected 3×3 convs; residual scaled by 0.2."""

    def __init__(self, nf: int, gc: int):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(nf + i * gc, gc if i < 4 else nf, 3, padding=1) for i in range(5)
        )

    def forward(self, x: Tensor) -> Tensor:
        feats = [x]
        for conv in self.convs[:-1]:
            feats.append(F.leaky_relu(conv(torch.cat(feats, 1)), 0.2, inplace=True))
        return self.convs[-1](torch.cat(feats, 1)) * 0.2 + x


class RRDB(nn.Module):
    def __init__(self, nf: int, gc: int):
        super().__init__()
        self.blocks = nn.Sequential(*(DenseBlock(nf, gc) for _ in range(3)))

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x) * 0.2 + x


class ConditionNet(LowPrecisionOK):
    """B×in×H×W → B×out×H×W features: conv, RRDB trunk with a long skip, two output convs."""

    def __init__(self, in_channels: int, out_channels: int, nb: int, nf: int = 64, gc: int = 32):
        super().__init__()
        self.in_conv = nn.Conv2d(in_channels, nf, 3, padding=1, padding_mode="reflect")
        self.trunk = nn.Sequential(*(RRDB(nf, gc) for _ in range(nb)))
        self.trans = nn.Conv2d(nf, nf, 3, padding=1, padding_mode="reflect")
        self.out1 = nn.Conv2d(nf, nf, 3, padding=1, padding_mode="reflect")
        self.out2 = nn.Conv2d(nf, out_channels, 3, padding=1, padding_mode="reflect")
        for m in (self.in_conv, self.trunk, self.out1, self.out2):
            _scaled_init(m, 0.1)

    def forward(self, x: Tensor) -> Tensor:
        return self.in_precision(self._features, x)

    def _features(self, x: Tensor) -> Tensor:
        x = self.in_conv(x)
        x = self.trans(self.trunk(x)) + x
        return self.out2(F.leaky_relu(self.out1(x), 0.2, inplace=True))


class SqueezedConditionNet(LowPrecisionOK):
    """ConditionNet at full size, then space-to-depth and a 1×1 conv: features at half size."""

    def __init__(self, in_channels: int, out_channels: int, nb: int, nf: int = 64, gc: int = 32):
        super().__init__()
        self.features = ConditionNet(in_channels, out_channels, nb, nf, gc)
        self.reduce = nn.Conv2d(4 * out_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.in_precision(self._features, x)

    def _features(self, x: Tensor) -> Tensor:
        return F.leaky_relu(self.reduce(F.pixel_unshuffle(self.features(x), 2)), 0.2, inplace=True)
