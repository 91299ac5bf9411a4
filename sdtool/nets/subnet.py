"""The small CNN inside affine couplings and injectors."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sdtool.nets.folding import folds, inference_cached


class ZeroConv(nn.Module):
    """3×3 convolution (zero padding) starting at zero, output scaled by exp(3·logs).

    Starting at zero makes every coupling the identity at initialisation (Glow); the log-scale
    lets the output magnitude be learned quickly.
    """

    def __init__(self, in_channels: int, out_channels: int, logscale_factor: float = 3.0):
        super().__init__()
        self.logscale_factor = logscale_factor
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.logs = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        if folds(self):  # inference: the scale folded into the conv, once per weight state
            weight, bias = inference_cached(self, "_fold_cache", self._folded)
            out = F.conv2d(x, weight, bias, padding=1)
            return out if out.shape[1] == self.conv.out_channels else out[:, : self.conv.out_channels]
        return self.conv(x) * torch.exp(self.logs * self.logscale_factor)

    def _folded(self) -> tuple[Tensor, Tensor]:
        """The scaled weights, with zero filters up to a multiple of 8 outputs: oneDNN's AVX2 kernels work in
        8-channel blocks, and 12 or 90 outputs ran 1.3× slower than 16 or 96 (a 3×3 conv at 256², 64 inputs)."""
        s = torch.exp(self.logs.detach() * self.logscale_factor).flatten()
        weight, bias = self.conv.weight.detach() * s[:, None, None, None], self.conv.bias.detach() * s
        extra = -weight.shape[0] % 8
        if extra:
            weight = torch.cat([weight, weight.new_zeros(extra, *weight.shape[1:])])
            bias = torch.cat([bias, bias.new_zeros(extra)])
        return weight.contiguous(memory_format=torch.channels_last), bias


class CouplingNet(nn.Module):
    """conv3×3 (reflect) → LeakyReLU → conv1×1 → LeakyReLU → ZeroConv; B×in×H×W → B×out×H×W."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, hidden, 3, padding=1, padding_mode="reflect")
        self.conv2 = nn.Conv2d(hidden, hidden, 1)
        self.out = ZeroConv(hidden, out_channels)
        for conv in (self.conv1, self.conv2):
            nn.init.xavier_normal_(conv.weight)
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        # LeakyReLU slope 0.01 (PyTorch default), as in the authors' coupling nets.
        x = F.leaky_relu(self.conv1(x), 0.01, inplace=True)
        x = F.leaky_relu(self.conv2(x), 0.01, inplace=True)
        return self.out(x)
