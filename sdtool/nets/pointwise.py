"""1×1 convolutions as one matrix product over the pixels of a channels-last tensor.

PyTorch sends a 1×1 convolution of a channels-last (NHWC) tensor to its generic im2col path on the CPU, which first
copies the input to NCHW and the output back: those copies cost more than the arithmetic (measured, `paper` SR:
about a seventh of the time went to 1×1 convolutions and their copies). An NHWC tensor is already a
pixels × channels matrix, so one GEMM does the same map with no copy.
"""

from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn


def pointwise(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """x: B×C×H×W, weight: O×C (or O×C×1×1), bias: (O,) → B×O×H×W (channels-last), the 1×1 convolution."""
    return F.linear(x.permute(0, 2, 3, 1), weight.reshape(weight.shape[0], -1), bias).permute(0, 3, 1, 2)


class Conv1x1(nn.Conv2d):
    """nn.Conv2d(in, out, 1) with the same parameters (and state-dict keys), run by `pointwise`."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True):
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return pointwise(x, self.weight, self.bias)
