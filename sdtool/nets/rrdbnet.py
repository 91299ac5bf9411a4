"""ESRGAN's generator (Wang et al. 2018, "ESRGAN", Fig. 4): residual-in-residual dense blocks at LR
resolution, then two nearest ×2 upsamplings each followed by a conv, for GPUs.

Parameter names follow the layout of BasicSR's RRDBNet (`conv_first`, `body.N.rdbK.convJ`, `conv_body`,
`conv_up1`, `conv_up2`, `conv_hr`, `conv_last`), which Real-ESRGAN's released x4 weights use and spandrel
recognises as ESRGAN; `sdtool.nets.rrdb` keeps its own layout for SDFlow's condition networks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.2, inplace=True)


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3×3 convs (growth `num_grow`); the last one's output, scaled by 0.2, is added."""

    def __init__(self, num_feat: int, num_grow: int):
        super().__init__()
        for j in range(5):
            cout = num_grow if j < 4 else num_feat
            setattr(self, f"conv{j + 1}", nn.Conv2d(num_feat + j * num_grow, cout, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        feats = [x]
        for j in range(1, 5):
            feats.append(_lrelu(getattr(self, f"conv{j}")(torch.cat(feats, 1))))
        return self.conv5(torch.cat(feats, 1)) * 0.2 + x


class RRDBlock(nn.Module):
    """Three dense blocks in a residual scaled by 0.2 (the "residual in residual")."""

    def __init__(self, num_feat: int, num_grow: int):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow)

    def forward(self, x: Tensor) -> Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """N×3×h×w in [0, 1] → N×3×4h×4w, unclamped. Real-ESRGAN x4plus: num_feat 64, num_block 23, num_grow 32."""

    def __init__(self, num_feat: int = 64, num_block: int = 23, num_grow: int = 32):
        super().__init__()
        self.conv_first = nn.Conv2d(3, num_feat, 3, padding=1)
        self.body = nn.Sequential(*(RRDBlock(num_feat, num_grow) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.conv_last = nn.Conv2d(num_feat, 3, 3, padding=1)
        for m in self.body.modules():  # small residual branches at the start: ESRGAN's ×0.1 initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
                m.weight.data.mul_(0.1)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = _lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = _lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(_lrelu(self.conv_hr(feat)))
