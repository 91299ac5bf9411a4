"""Invertible 1×1 convolution with an LU-decomposed weight (Glow, section 3.2)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sdtool.flows.base import Transform


class InvConv1x1(Transform):
    """z = W x per pixel, W = P · (L + I) · (U + diag(sign · exp(w_s))); logdet = H·W·Σ w_s.

    P (permutation) and the signs are fixed buffers; L (strictly lower), U (strictly upper) and w_s are
    learned. Initialised from the LU decomposition of a random rotation.
    """

    def __init__(self, channels: int, generator: Optional[torch.Generator] = None):
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(channels, channels, generator=generator, dtype=torch.float64))
        p, lower, upper = torch.linalg.lu(q)
        s = torch.diagonal(upper)
        self.register_buffer("w_p", p.float())
        self.register_buffer("s_sign", torch.sign(s).float())
        self.w_l = nn.Parameter(torch.tril(lower, -1).float())
        self.w_s = nn.Parameter(torch.log(s.abs()).float())
        self.w_u = nn.Parameter(torch.triu(upper, 1).float())

    def weight(self) -> Tensor:
        c = self.w_s.shape[0]
        eye = torch.eye(c, device=self.w_s.device, dtype=self.w_s.dtype)
        lower = torch.tril(self.w_l, -1) + eye
        upper = torch.triu(self.w_u, 1) + torch.diag(self.s_sign * torch.exp(self.w_s))
        return self.w_p @ lower @ upper

    def _logdet(self, x: Tensor) -> Tensor:
        h, w = x.shape[2:]
        return (h * w * self.w_s.sum()).expand(x.shape[0])

    def forward(self, x: Tensor, cond: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        w = self.weight()
        return F.conv2d(x, w[:, :, None, None]), self._logdet(x)

    def inverse(self, z: Tensor, cond: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        w_inv = torch.inverse(self.weight())
        return F.conv2d(z, w_inv[:, :, None, None]), -self._logdet(z)

    def affine(self, inverse: bool, dtype: torch.dtype = torch.float64):
        w = self.weight().to(dtype)
        zero = torch.zeros(w.shape[0], dtype=dtype, device=w.device)
        ld = self.w_s.to(dtype).sum()
        return (torch.linalg.inv(w), zero, -ld) if inverse else (w, zero, ld)
